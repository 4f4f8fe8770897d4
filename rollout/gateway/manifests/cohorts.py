"""Sticky session cohorts: a header-matched rule sending a fixed, growing share of SESSIONS to
the canary, beside the weighted rule (issue 10).

The session header (e.g. `x-session-id`) must end in uniformly distributed hex characters:
UUIDs (any version whose last 12 hex digits are random, e.g. uuid4, in either case), or a hex
hash of the session. Its last `digits` hex characters (default 4) read as a number put the
session in one of 16**digits buckets (65,536); a share of s percent selects buckets
0 .. k-1 with k = floor(s / 100 * 16**digits). Selecting by numeric prefix order makes the set
for a larger share CONTAIN the set for a smaller one: a session on the canary stays there as
the share grows (and a shrinking share moves only the sessions of the dropped buckets back).

Precision: 1/65,536 of the sessions (0.0015 percentage points); the selected share is at most
that below the asked one (0.01% selects 6 buckets, 0.0092%). `cohort_share(regex)` returns the
share a regex selects, exactly; compare it with `cohort_selected_percent(asked)`.

The regex is RE2 (what Envoy uses; Envoy Gateway matches header regexes against the WHOLE
value, like Python's `re.fullmatch`): `(?i).*(ALT|ALT|...)$`, one alternative per non-zero hex
digit of k, e.g. 25% -> `(?i).*([0-3][0-9a-f]{3})$`, 0.5% (k = 327 = 0x0147) ->
`(?i).*(00[0-9a-f]{2}|01[0-3][0-9a-f]|014[0-6])$`. No lookarounds, no backreferences;
`(?i)` makes the hex case-insensitive. At most `digits` alternatives of at most ~30
characters (77 characters in all at most, for 4 digits): far below the CRD's 4096.

Requests without the header, or with a value not ending in `digits` hex characters, do not match
the rule and follow the weighted rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from rollout.gateway.errors import InvalidError
from rollout.gateway.manifests._common import JSONPatch, Manifest
from rollout.gateway.manifests._rules import (
    MAX_HEADER_VALUE,
    canary_backend_refs,
    check_header_name,
    header_match,
    header_rule_name,
    model_header_matches,
    read_rules,
    remove_rule_operations,
    set_rule_operations,
)

COHORT_SUFFIX = "-cohort"
COHORT_HEX_DIGITS = 4
MIN_COHORT_PERCENT = Decimal("0.01")
_HEX = "0123456789abcdef"
_ANY_HEX = "[0-9a-f]"
_PREFIX = "(?i).*("
_SUFFIX = ")$"


def cohort_rule_name(canary_backend: str) -> str:
    """The cohort rule's name: `<canary>-cohort`."""
    return header_rule_name(canary_backend, COHORT_SUFFIX)


def _percent(percent: float | int | str | Decimal) -> Decimal:
    if isinstance(percent, bool) or not isinstance(percent, float | int | str | Decimal):
        raise InvalidError(f"cohort share: expected a number of percent, got {percent!r}")
    try:
        value = Decimal(str(percent))
    except ArithmeticError:
        raise InvalidError(f"cohort share: {percent!r} is not a number") from None
    if not value.is_finite() or not MIN_COHORT_PERCENT <= value <= 100:
        raise InvalidError(f"cohort share must be {MIN_COHORT_PERCENT}..100 percent, got {percent}")
    return value


def cohort_bucket_count(
    percent: float | int | str | Decimal, digits: int = COHORT_HEX_DIGITS
) -> int:
    """k = floor(percent / 100 * _size(digits)): how many buckets the share selects (>= 1)."""
    _check_digits(digits)
    k = int(_percent(percent) * _size(digits) / 100)  # int() truncates: floor of a positive
    return max(k, 1)


def cohort_selected_percent(
    percent: float | int | str | Decimal, digits: int = COHORT_HEX_DIGITS
) -> float:
    """The share the regex for `percent` really selects (what `cohort_share` reads back)."""
    return cohort_bucket_count(percent, digits) * 100 / _size(digits)


def _size(digits: int) -> int:
    return 1 << (4 * digits)  # _size(digits), as an int for the type checker


def _check_digits(digits: int) -> None:
    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 8:
        raise InvalidError(f"cohort hex digits must be 1..8, got {digits!r}")


def _below(d: int) -> str:
    """A character class for the hex digits 0 .. d-1 (d in 1..15)."""
    if d == 1:
        return "0"
    parts = []
    decimal_top = min(d, 10) - 1
    parts.append(
        "0" + ("" if decimal_top == 0 else ("1" if decimal_top == 1 else f"-{decimal_top}"))
    )
    if d > 10:
        top = _HEX[d - 1]
        parts.append("a" if d == 11 else ("ab" if d == 12 else f"a-{top}"))
    return "[" + "".join(parts) + "]"


def _any(n: int) -> str:
    return "" if n == 0 else (_ANY_HEX if n == 1 else f"{_ANY_HEX}{{{n}}}")


def cohort_regex_for_buckets(k: int, digits: int = COHORT_HEX_DIGITS) -> str:
    """The regex selecting buckets 0 .. k-1 of the last `digits` hex characters."""
    _check_digits(digits)
    size = _size(digits)
    if not 1 <= k <= size:
        raise InvalidError(f"bucket count must be 1..{size}, got {k}")
    if k == size:
        return f"{_PREFIX}{_any(digits)}{_SUFFIX}"
    hex_digits = [int(c, 16) for c in f"{k:0{digits}x}"]
    alternatives = [
        "".join(_HEX[p] for p in hex_digits[:i]) + _below(d) + _any(digits - 1 - i)
        for i, d in enumerate(hex_digits)
        if d > 0
    ]
    return _PREFIX + "|".join(alternatives) + _SUFFIX


def cohort_regex(percent: float | int | str | Decimal, digits: int = COHORT_HEX_DIGITS) -> str:
    """The session-header regex selecting `percent` of sessions (see the module docstring)."""
    regex = cohort_regex_for_buckets(cohort_bucket_count(percent, digits), digits)
    assert len(regex) <= MAX_HEADER_VALUE
    return regex


_TOKEN_RE = re.compile(r"\[([0-9a-f-]+)\](?:\{(\d+)\})?|([0-9a-f])")


def _class_size(body: str) -> int:
    size, i = 0, 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            size += int(body[i + 2], 16) - int(body[i], 16) + 1
            i += 3
        else:
            size += 1
            i += 1
    return size


def cohort_share(regex: str) -> float:
    """The percent of sessions `regex` (as `cohort_regex` writes them) selects.

    Raises ValueError for any other regex: a rule someone else edited is not ours to read."""
    if not (regex.startswith(_PREFIX) and regex.endswith(_SUFFIX)):
        raise ValueError(f"not a cohort regex: {regex!r}")
    body = regex[len(_PREFIX) : -len(_SUFFIX)]
    total, digits = 0, None
    for alternative in body.split("|"):
        count, width, pos = 1, 0, 0
        for token in _TOKEN_RE.finditer(alternative):
            if token.start() != pos:
                raise ValueError(f"not a cohort regex: {regex!r}")
            pos = token.end()
            if token.group(3) is not None:
                width += 1
                continue
            repeat = int(token.group(2) or 1)
            count *= _class_size(token.group(1)) ** repeat
            width += repeat
        if pos != len(alternative) or (digits is not None and width != digits):
            raise ValueError(f"not a cohort regex: {regex!r}")
        digits = width
        total += count
    if digits is None or not 1 <= digits <= 8 or not 1 <= total <= _size(digits):
        raise ValueError(f"not a cohort regex: {regex!r}")
    if cohort_regex_for_buckets(total, digits) != regex:
        raise ValueError(f"not a canonical cohort regex: {regex!r}")
    return total * 100 / _size(digits)


def cohort_matches(regex: str, value: str) -> bool:
    """Whether a header value matches, as Envoy matches it (RE2, the whole value)."""
    return re.fullmatch(regex, value) is not None


def cohort_rule(
    obj: Mapping[str, Any],
    *,
    backends: Sequence[str],
    header: str,
    canary_backend: str,
    percent: float | int | str | Decimal,
    rule: int | str | None = None,
    digits: int = COHORT_HEX_DIGITS,
) -> tuple[int, Manifest]:
    """(index of the weighted rule, the cohort rule) for the live route `obj`."""
    check_header_name(header)
    route = read_rules(obj)
    weighted = route.weighted_index(backends, rule)
    if canary_backend not in backends:
        raise route.err(f"canary backend {canary_backend!r} is not one of {list(backends)}")
    regex = cohort_regex(percent, digits)
    matches = [
        {"headers": [model, header_match(header, "RegularExpression", regex)]}
        for model in model_header_matches(route, weighted)
    ]
    return weighted, {
        "name": cohort_rule_name(canary_backend),
        "matches": matches,
        "backendRefs": canary_backend_refs(route, weighted, canary_backend),
    }


def cohort_rule_operations(
    obj: Mapping[str, Any],
    *,
    backends: Sequence[str],
    header: str,
    canary_backend: str,
    percent: float | int | str | Decimal,
    rule: int | str | None = None,
    digits: int = COHORT_HEX_DIGITS,
) -> JSONPatch:
    """JSON Patch (RFC 6902) operations setting the cohort rule of `canary_backend` on the
    live route `obj`: added just before the weighted rule (the one rule holding `backends`, or
    `rule`) the first time, after testing that rule's backendRef names; later its name is
    tested and its matches (the new regex) and backendRefs replaced. It copies the weighted
    rule's `x-ai-eg-model` match, so other models of the route are untouched, and points at
    the canary only (weight 1). Raises InvalidError for a bad header, share, backend, or a
    shape the CRD or the generated HTTPRoute would refuse (16 rules, too many matches)."""
    route = read_rules(obj)
    weighted, new_rule = cohort_rule(
        obj,
        backends=backends,
        header=header,
        canary_backend=canary_backend,
        percent=percent,
        rule=rule,
        digits=digits,
    )
    return set_rule_operations(route, weighted, new_rule, replace_matches=True)


def remove_cohort_rule_operations(obj: Mapping[str, Any], *, canary_backend: str) -> JSONPatch:
    """Test the cohort rule's name at its index and remove it; [] when there is none."""
    return remove_rule_operations(read_rules(obj), cohort_rule_name(canary_backend))


__all__ = [
    "COHORT_HEX_DIGITS",
    "COHORT_SUFFIX",
    "cohort_bucket_count",
    "cohort_matches",
    "cohort_regex",
    "cohort_regex_for_buckets",
    "cohort_rule",
    "cohort_rule_name",
    "cohort_rule_operations",
    "cohort_selected_percent",
    "cohort_share",
    "remove_cohort_rule_operations",
]
