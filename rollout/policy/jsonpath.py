"""A tiny, safe subset of JSONPath: the number a `kind: webhook` check reads from an answer.

Contract: pure, no eval, no regex-driven evaluation of user code. A path is `$` followed by any
number of steps:

- `.name` (letters, digits, `_` and `-`, not starting with a digit or `-`),
- `[0]` (a list index, >= 0),
- `['any key']` or `["any key"]` (a key with other characters; `\\` escapes the quote).

Examples: `$` (the answer is the number), `$.score`, `$.results[0].value`, `$['judge score']`.
Filters, wildcards, slices and recursive descent are refused: a check reads one number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_REST = _NAME_START | frozenset("0123456789-")
_DIGITS = frozenset("0123456789")
MAX_PATH_LENGTH = 256


class JsonPathError(ValueError):
    """A path that does not parse, or a document it does not lead to a number in."""


@dataclass(frozen=True)
class JsonPath:
    """A parsed path: its steps (str: a key, int: a list index) and the text it came from."""

    text: str
    steps: tuple[str | int, ...]

    def evaluate(self, document: object) -> float:
        """The number at this path in a decoded JSON document. Raises JsonPathError naming
        the step that is missing or the value that is not a number (bools are not numbers)."""
        node = document
        for position, step in enumerate(self.steps):
            where = format_steps(self.steps[:position])
            if isinstance(step, int):
                if not isinstance(node, list):
                    raise JsonPathError(
                        f"{where} is {_kind(node)}, not a list: cannot take [{step}]"
                    )
                if step >= len(node):
                    raise JsonPathError(f"{where} has {len(node)} item(s): no index [{step}]")
                node = node[step]
            else:
                if not isinstance(node, dict):
                    raise JsonPathError(f"{where} is {_kind(node)}, not an object: no key {step!r}")
                if step not in node:
                    keys = ", ".join(sorted(str(k) for k in node)[:10]) or "none"
                    raise JsonPathError(f"{where} has no key {step!r} (keys: {keys})")
                node = node[step]
        if isinstance(node, bool) or not isinstance(node, int | float):
            raise JsonPathError(f"{self.text} is {_kind(node)}, not a number")
        value = float(node)
        if not math.isfinite(value):
            raise JsonPathError(f"{self.text} is {value}, not a finite number")
        return value


def parse_json_path(text: str) -> JsonPath:
    """Parse a path (see the module doc); JsonPathError says where it goes wrong."""
    if not isinstance(text, str):
        raise JsonPathError(f"a JSONPath is a string such as $.score, not {text!r}")
    if len(text) > MAX_PATH_LENGTH:
        raise JsonPathError(f"the JSONPath is longer than {MAX_PATH_LENGTH} characters")
    if not text.startswith("$"):
        raise JsonPathError(f"a JSONPath starts with $ (e.g. $.score), not {text[:1]!r}")
    steps: list[str | int] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == ".":
            start = i + 1
            if start >= len(text) or text[start] not in _NAME_START:
                raise JsonPathError(
                    f"expected a key name after '.' at position {start} of {text!r} "
                    "(use ['key'] for other characters)"
                )
            end = start + 1
            while end < len(text) and text[end] in _NAME_REST:
                end += 1
            steps.append(text[start:end])
            i = end
        elif char == "[":
            i = _bracket(text, i, steps)
        else:
            raise JsonPathError(
                f"unexpected {char!r} at position {i} of {text!r}: only .key, [index] and "
                "['key'] are supported"
            )
    return JsonPath(text=text, steps=tuple(steps))


def _bracket(text: str, i: int, steps: list[str | int]) -> int:
    """Parse `[...]` starting at text[i] == '['; append its step, return the index after ']'."""
    start = i + 1
    if start < len(text) and text[start] in "'\"":
        quote = text[start]
        key: list[str] = []
        j = start + 1
        while j < len(text) and text[j] != quote:
            if text[j] == "\\" and j + 1 < len(text):
                j += 1
            key.append(text[j])
            j += 1
        if j + 1 >= len(text) or text[j + 1] != "]":
            raise JsonPathError(f"unterminated [{quote}...{quote}] at position {i} of {text!r}")
        steps.append("".join(key))
        return j + 2
    j = start
    while j < len(text) and text[j] in _DIGITS:
        j += 1
    if j == start or j >= len(text) or text[j] != "]":
        raise JsonPathError(
            f"expected a list index (a whole number >= 0) or a quoted key in [...] at "
            f"position {i} of {text!r}"
        )
    steps.append(int(text[start:j]))
    return j + 1


def format_steps(steps: Sequence[str | int]) -> str:
    """Steps as a path again, for messages: ("results", 0) -> "$.results[0]"."""
    text = "$"
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        elif step and step[0] in _NAME_START and all(c in _NAME_REST for c in step):
            text += f".{step}"
        else:
            escaped = step.replace("\\", "\\\\").replace("'", "\\'")
            text += f"['{escaped}']"
    return text


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"
