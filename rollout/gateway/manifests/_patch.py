"""JSON Patch (RFC 6902) helpers of the route patches: pointers, rule selection, annotations."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rollout.gateway.errors import InvalidError
from rollout.gateway.manifests._common import JSONPatch
from rollout.gateway.manifests._parse import _Node
from rollout.gateway.models import check_qualified_name

# ============================================================================================
# Weight updates (JSON Patch)
# ============================================================================================


def _pointer(*parts: str | int) -> str:
    """RFC 6901 JSON Pointer; '~' and '/' inside a key are escaped as ~0 and ~1."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _rule_backend_names(rule: _Node) -> list[str]:
    refs = rule.get("backendRefs")
    return [] if refs is None else [ref.req("name").string() for ref in refs.items()]


def _select_rule(
    rules: list[_Node],
    names: list[list[str]],
    wanted: set[str],
    rule: int | str | None,
    err: Callable[[str], InvalidError],
) -> int:
    if isinstance(rule, int) and not isinstance(rule, bool):
        if not 0 <= rule < len(rules):
            raise err(f"rule index {rule} out of range: the route has {len(rules)} rule(s)")
        return rule
    if isinstance(rule, str):
        matching = [i for i, r in enumerate(rules) if r.opt_string("name") == rule]
        if not matching:
            raise err(f"no rule named {rule!r}")
        return matching[0]
    holding = [i for i, rule_names in enumerate(names) if wanted <= set(rule_names)]
    if len(holding) == 1:
        return holding[0]
    if len(holding) > 1:
        raise err(f"backends {sorted(wanted)} appear in rules {holding}; select one with rule=")
    known = {n for rule_names in names for n in rule_names}
    unknown = sorted(wanted - known)
    if unknown:
        raise err(f"unknown backend(s) {unknown}; the route has {sorted(known)}")
    raise err(f"backends {sorted(wanted)} are not all in one rule; update one rule at a time")


def _annotation_operations(meta: _Node, annotations: Mapping[str, str]) -> JSONPatch:
    for key, value in annotations.items():
        try:
            check_qualified_name(key)
        except ValueError as exc:
            raise InvalidError(str(exc)) from None
        if not isinstance(value, str):
            raise InvalidError(f"annotation {key!r}: expected a string value, got {value!r}")
    if not annotations:
        return []
    existing = meta.get("annotations")
    if existing is None:
        return [
            {"op": "add", "path": _pointer("metadata", "annotations"), "value": dict(annotations)}
        ]
    existing.string_map()
    # `add` on an existing member replaces it (RFC 6902 4.1), so one op fits both cases.
    return [
        {"op": "add", "path": _pointer("metadata", "annotations", key), "value": value}
        for key, value in annotations.items()
    ]


# --- Memoised pointers and key checks, for the plain (fast) patch writers ------------------
# Every weight step writes the same few paths: escaping and checking them once is enough.
# Both memos are bounded (a full one is emptied), so odd keys cannot grow them without limit.

_MEMO_LIMIT = 1024
_ref_pointers: dict[tuple[int, int], tuple[str, str]] = {}
_annotation_pointers: dict[str, str] = {}


def _backend_ref_pointers(rule: int, ref: int) -> tuple[str, str]:
    """The pointers of spec.rules[rule].backendRefs[ref].name and .weight."""
    key = (rule, ref)
    found = _ref_pointers.get(key)
    if found is None:
        base = ("spec", "rules", rule, "backendRefs", ref)
        found = (_pointer(*base, "name"), _pointer(*base, "weight"))
        if len(_ref_pointers) >= _MEMO_LIMIT:
            _ref_pointers.clear()
        _ref_pointers[key] = found
    return found


def _checked_annotation_pointer(key: str) -> str | None:
    """The pointer of metadata.annotations[key] if `key` (a str) is a valid annotation key,
    else None; valid keys are remembered."""
    found = _annotation_pointers.get(key)
    if found is None:
        try:
            check_qualified_name(key)
        except ValueError:
            return None
        found = _pointer("metadata", "annotations", key)
        if len(_annotation_pointers) >= _MEMO_LIMIT:
            _annotation_pointers.clear()
        _annotation_pointers[key] = found
    return found
