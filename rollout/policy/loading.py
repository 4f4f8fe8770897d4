"""Reading RolloutPolicy documents from YAML files and directories.

Contract: reads files, never raises for a bad file (errors are returned so the controller keeps
running the good policies), and points each error at a file, policy, field path and line.
"""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from rollout.policy.schema import SHARED_MODELS, RolloutPolicy

POLICY_FILE_SUFFIXES = (".yaml", ".yml")

# Sections that equal inputs share across every policy loaded (schema.SHARED_MODELS), kept
# while a policy holds them: a file re-read after an edit shares with the policies it kept.
_shared: weakref.WeakValueDictionary[object, Any] = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class PolicyError:
    """Why one policy document (or a whole file) could not be used."""

    file: Path
    policy_name: str | None
    field_path: str  # e.g. "spec.analysis.metrics[1].max"; "" for the document or file
    message: str
    line: int | None = None  # 1-based

    def __str__(self) -> str:
        location = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        parts = [location]
        if self.policy_name is not None:
            parts.append(f'policy "{self.policy_name}"')
        if self.field_path:
            parts.append(self.field_path)
        parts.append(self.message)
        return ": ".join(parts)


@dataclass(frozen=True)
class LoadResult:
    """The usable policies and the errors for everything else."""

    policies: list[RolloutPolicy] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # policy name -> file

    @property
    def ok(self) -> bool:
        return not self.errors


class PolicyLoadError(Exception):
    """Raised by load_policy_file, which is for callers that want all or nothing."""

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


def load_policy_file(path: Path) -> list[RolloutPolicy]:
    """All policies in one YAML file (several documents allowed); PolicyLoadError if any is bad."""
    policies, errors = _load_file(path)
    if errors:
        raise PolicyLoadError(errors)
    return policies


def load_policy_paths(paths: Iterable[Path]) -> LoadResult:
    """Policies from files and directories (their *.yaml and *.yml files, not recursive).

    Two policies with the same name, or aimed at the same route, are all dropped and reported:
    the rollout state lives in one annotation per route, so two policies on one route would
    overwrite each other's progress, and picking one of them silently could run the wrong one.

    While no file changed since the last load of the same paths, the answer is that load's
    result itself (read it, do not change it): `result is previous` says nothing changed.
    """
    paths = tuple(paths)
    errors: list[PolicyError] = []
    parses = [(file, _parse_file(file)) for file in _policy_files(paths, errors)]
    # The very parses of the last load of these paths (the files' texts unchanged, no file
    # added or removed, no read error): its result, not a new one. The controller re-reads
    # its files every few seconds, and at 10,000 policies building the result again cost
    # ~0.1 s of CPU each time.
    signature = (tuple(errors), tuple(parses))
    with _parsed_lock:
        last = _results.get(paths)
    if last is not None and _same_parses(last[0], signature):
        return last[1]
    loaded: list[tuple[RolloutPolicy, Path]] = []
    for file, (_, policies, file_errors) in parses:
        loaded.extend((policy, file) for policy in policies)
        errors.extend(file_errors)

    conflicts = _conflicts(loaded)
    errors.extend(conflicts.values())
    kept = [(policy, file) for index, (policy, file) in enumerate(loaded) if index not in conflicts]
    result = LoadResult(
        policies=[policy for policy, _ in kept],
        errors=errors,
        sources={policy.name: file for policy, file in kept},
    )
    with _parsed_lock:
        _results.pop(paths, None)
        _results[paths] = (signature, result)
        while len(_results) > _RESULTS_KEPT:
            del _results[next(iter(_results))]  # the least recently loaded
    return result


def _same_parses(
    last: tuple[tuple[PolicyError, ...], tuple[tuple[Path, _Parse], ...]],
    now: tuple[tuple[PolicyError, ...], tuple[tuple[Path, _Parse], ...]],
) -> bool:
    """The same files, each with the very parse (an object kept while its text is unchanged),
    and the same path errors."""
    return (
        last[0] == now[0]
        and len(last[1]) == len(now[1])
        and all(a[0] == b[0] and a[1] is b[1] for a, b in zip(last[1], now[1], strict=True))
    )


def parse_policy_text(text: str, file: Path) -> tuple[list[RolloutPolicy], list[PolicyError]]:
    """Policies in a YAML text; `file` only names the source in the errors.

    One document at a time: its YAML nodes (kept to turn an error's field path into a line)
    are dropped once it is validated, so a file of 10,000 policies never holds 10,000 node
    trees at once."""
    policies: list[RolloutPolicy] = []
    errors: list[PolicyError] = []
    try:
        for node, data in _documents(text):
            if data is None:
                continue  # an empty document, e.g. after a trailing "---"
            line = node.start_mark.line + 1
            if not isinstance(data, dict):
                errors.append(PolicyError(file, None, "", "expected a mapping (a policy)", line))
                continue
            try:
                policies.append(
                    RolloutPolicy.model_validate(data, context={SHARED_MODELS: _shared})
                )
            except ValidationError as error:
                name = _raw_policy_name(data)
                errors.extend(
                    _policy_error(file, name, node, details)
                    for details in error.errors(include_url=False)
                )
    except yaml.MarkedYAMLError as error:
        # A file that is not YAML (at some document) is not used at all: its other policies
        # may be half of an edit in progress.
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or error.context or "invalid YAML"
        return [], [PolicyError(file, None, "", f"invalid YAML: {problem}", line)]
    except yaml.YAMLError as error:
        return [], [PolicyError(file, None, "", f"invalid YAML: {error}")]
    return policies, errors


# ---------------------------------------------------------------------------------------------


# The last parse of each file, by its text: the controller re-reads its policy files every few
# seconds, and parsing thousands of policies each time would cost seconds of CPU for nothing.
_Parse = tuple[str, list[RolloutPolicy], list[PolicyError]]  # (text, policies, errors)
_parsed: dict[Path, _Parse] = {}
# The last result of each tuple of paths, and the parses it was made of.
_results: dict[
    tuple[Path, ...],
    tuple[tuple[tuple[PolicyError, ...], tuple[tuple[Path, _Parse], ...]], LoadResult],
] = {}
_RESULTS_KEPT = 16
_parsed_lock = threading.Lock()


def _load_file(path: Path) -> tuple[list[RolloutPolicy], list[PolicyError]]:
    _, policies, errors = _parse_file(path)
    return list(policies), list(errors)


def _parse_file(path: Path) -> _Parse:
    """The file's parse: the one kept for it while its text is unchanged (not to be changed
    by the caller), else a new one (kept, unless the file cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return "", [], [PolicyError(path, None, "", f"cannot read: {_describe_os_error(error)}")]
    key = path.resolve()
    with _parsed_lock:
        cached = _parsed.get(key)
    if cached is not None and cached[0] == text:
        return cached
    policies, errors = parse_policy_text(text, path)
    parse = (text, policies, errors)
    with _parsed_lock:
        _parsed[key] = parse
    return parse


def _describe_os_error(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _policy_files(paths: Iterable[Path], errors: list[PolicyError]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    child
                    for child in path.iterdir()
                    if child.is_file() and child.suffix in POLICY_FILE_SUFFIXES
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            errors.append(PolicyError(path, None, "", "no such file or directory"))
    return files


# libyaml's parser when PyYAML has it (about ten times faster than the pure-Python one, the
# same nodes and marks); the constructor stays PyYAML's, so the duplicate-key check is shared.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictKeysLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A safe loader that refuses duplicate keys: PyYAML would keep the last one silently, and
    a second `metrics:` or `max:` key must not quietly replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


def _documents(text: str) -> Iterator[tuple[yaml.Node, Any]]:
    """Each document's node (for error lines) and data, one after the other."""
    loader = _StrictKeysLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node, loader.construct_document(node)
    finally:
        loader.dispose()


def _raw_policy_name(data: dict[Any, Any]) -> str | None:
    metadata = data.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
        return str(metadata["name"])
    return None


def _policy_error(
    file: Path, name: str | None, document: yaml.Node, details: ErrorDetails
) -> PolicyError:
    location = details["loc"]
    message = details["msg"].removeprefix("Value error, ")
    return PolicyError(
        file=file,
        policy_name=name,
        field_path=format_field_path(location),
        message=message,
        line=_line_of(document, location),
    )


def format_field_path(location: Sequence[int | str]) -> str:
    """("spec", "analysis", "metrics", 1, "max") -> "spec.analysis.metrics[1].max"."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _line_of(document: yaml.Node, location: Sequence[int | str]) -> int:
    """Line of the deepest node on the path that exists; a node reached through a mapping key
    is reported at the key's line, so a missing field points at its parent's key."""
    line = document.start_mark.line + 1
    node = document
    for part in location:
        found = _child_node(node, part)
        if found is None:
            break
        key_node, node = found
        line = (key_node or node).start_mark.line + 1
    return line


def _child_node(node: yaml.Node, part: int | str) -> tuple[yaml.Node | None, yaml.Node] | None:
    """(key node or None for a list item, value node) of one step of a field path."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return key_node, value_node
    if (
        isinstance(node, yaml.SequenceNode)
        and isinstance(part, int)
        and 0 <= part < len(node.value)
    ):
        return None, node.value[part]
    return None


def _conflicts(loaded: Sequence[tuple[RolloutPolicy, Path]]) -> dict[int, PolicyError]:
    """Errors for every policy whose name or target route another policy also has."""
    by_name: defaultdict[str, list[int]] = defaultdict(list)
    by_route: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for index, (policy, _) in enumerate(loaded):
        by_name[policy.name].append(index)
        target = policy.spec.route
        by_route[(target.namespace, target.name)].append(index)

    conflicts: dict[int, PolicyError] = {}
    for name, indexes in by_name.items():
        if len(indexes) > 1:
            for index in indexes:
                conflicts[index] = _conflict_error(
                    loaded, index, indexes, "metadata.name", f'name "{name}" is used'
                )
    for (namespace, route_name), indexes in by_route.items():
        if len(indexes) > 1:
            for index in indexes:
                conflicts.setdefault(
                    index,
                    _conflict_error(
                        loaded,
                        index,
                        indexes,
                        "spec.route",
                        f"route {namespace}/{route_name} is targeted",
                    ),
                )
    return conflicts


def _conflict_error(
    loaded: Sequence[tuple[RolloutPolicy, Path]],
    index: int,
    indexes: Sequence[int],
    field_path: str,
    what: str,
) -> PolicyError:
    policy, file = loaded[index]
    others = ", ".join(
        f'"{loaded[other][0].name}" in {loaded[other][1]}' for other in indexes if other != index
    )
    return PolicyError(
        file=file,
        policy_name=policy.name,
        field_path=field_path,
        message=f"{what} by another policy too ({others}); none of them is run",
    )
