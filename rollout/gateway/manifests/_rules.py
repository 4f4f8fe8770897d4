"""Header-matched rules beside the weighted rule (cohort, opt-in): shared JSON Patch building.

A header rule is ours by NAME (`<canary>-cohort`, `<canary>-opt-in`): the patches find it by
name, test that name at its index before touching it, and never touch another rule. A new rule
is inserted just BEFORE the weighted rule (found by its backends, as the weight patch does, and
tested by its backendRef names), so the index the patch relies on is proved by the patch.

Shapes are checked against what the API server and the AI Gateway controller accept:
- AIGatewayRoute CRD: at most 15 rules, unique rule names, never `route-not-found`, header
  match types Exact | RegularExpression, header names RFC 7230 tokens (1..256), values
  1..4096 printable ASCII, at most 16 headers per match (a map keyed by name: no repeats);
- the HTTPRoute the controller generates (rule i -> rule i, plus its `route-not-found` rule
  with one match): at most 64 matches per rule and 128 in all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rollout.config import check_dns1123_subdomain
from rollout.gateway.constants import AI_GATEWAY_ROUTE, MODEL_HEADER, ROUTE_NOT_FOUND_RULE
from rollout.gateway.errors import InvalidError
from rollout.gateway.manifests._common import JSONPatch, Manifest
from rollout.gateway.manifests._parse import _Node, _root
from rollout.gateway.manifests._patch import _pointer, _rule_backend_names, _select_rule

MAX_RULES = 15  # AIGatewayRoute CRD maxItems (one HTTPRoute slot is the controller's)
MAX_MATCHES_PER_RULE = 64  # generated HTTPRoute rule matches maxItems
MAX_MATCHES_TOTAL = 128  # generated HTTPRoute CEL rule, its route-not-found match included
MAX_HEADER_VALUE = 4096  # CRD maxLength of a header match value
_MAX_NAME = 253
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}")
# Printable US-ASCII, single spaces or tabs between (the Gateway API's value pattern).
_HEADER_VALUE_RE = re.compile(r"[!-~]+([\t ]?[!-~]+)*")


def header_rule_name(canary_backend: str, suffix: str) -> str:
    """`<canary><suffix>`, a DNS-1123 subdomain of at most 253 characters (hashed if longer)."""
    check_dns1123_subdomain(canary_backend)
    name = f"{canary_backend}{suffix}"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(canary_backend.encode()).hexdigest()[:10]
        stem = canary_backend[: _MAX_NAME - len(suffix) - len(digest) - 1].rstrip("-.")
        name = f"{stem}-{digest}{suffix}"
    if name == ROUTE_NOT_FOUND_RULE:  # pragma: no cover - no suffix of ours produces it
        raise InvalidError(f"rule name {ROUTE_NOT_FOUND_RULE!r} is reserved")
    return name


def check_header_name(header: str) -> str:
    if not isinstance(header, str) or not _HEADER_NAME_RE.fullmatch(header):
        raise InvalidError(
            f"{header!r} is not a valid HTTP header name: use 1..256 letters, digits or "
            "!#$%&'*+-.^_`|~"
        )
    if header.lower() == MODEL_HEADER:
        raise InvalidError(f"the header {header!r} is the gateway's model header; use another")
    return header


def check_header_value(value: str, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_HEADER_VALUE:
        raise InvalidError(f"{what}: expected 1..{MAX_HEADER_VALUE} characters, got {value!r}")
    if not _HEADER_VALUE_RE.fullmatch(value):
        raise InvalidError(
            f"{what}: {value!r} is not a header value (printable ASCII, single spaces between)"
        )
    return value


@dataclass(frozen=True)
class RouteRules:
    """The rules of a live route, with what the header-rule patches need to know of them."""

    ref_kind: str
    namespace: str | None
    name: str | None
    rules: list[_Node]
    names: list[str | None]

    def err(self, message: str) -> InvalidError:
        return InvalidError(message, kind=self.ref_kind, namespace=self.namespace, name=self.name)

    def index_of(self, rule_name: str) -> int | None:
        found = [i for i, n in enumerate(self.names) if n == rule_name]
        return found[0] if found else None

    def weighted_index(self, backends: Sequence[str], rule: int | str | None) -> int:
        backend_names = [_rule_backend_names(r) for r in self.rules]
        wanted = set(backends)
        if len(wanted) < 2:
            raise self.err(f"name the weighted rule's stable and canary backends, got {backends}")
        index = _select_rule(self.rules, backend_names, wanted, rule, self.err)
        missing = sorted(wanted - set(backend_names[index]))
        if missing:
            raise self.err(f"backend(s) {missing} not in rule {index}")
        return index

    def match_count(self, skip: int | None = None) -> int:
        total = 0
        for i, rule in enumerate(self.rules):
            matches = rule.get("matches")
            if i != skip:
                total += 0 if matches is None else len(matches.items())
        return total


def read_rules(obj: Mapping[str, Any]) -> RouteRules:
    root = _root(obj, AI_GATEWAY_ROUTE)
    rules = root.req("spec").req("rules").items()
    return RouteRules(
        ref_kind=root.ref.kind,
        namespace=root.ref.namespace,
        name=root.ref.name,
        rules=rules,
        names=[r.opt_string("name") for r in rules],
    )


def model_header_matches(route: RouteRules, index: int) -> list[Manifest]:
    """The `x-ai-eg-model` header match of each match of rule `index` (copied as stored).

    Refused when a match has none: a header rule copying it would catch every model."""
    matches = route.rules[index].get("matches")
    if matches is None or not matches.items():
        raise route.err(f"rule {index} has no {MODEL_HEADER} match to copy")
    out = []
    for match in matches.items():
        headers = match.get("headers")
        found = [
            h
            for h in ([] if headers is None else headers.items())
            if h.req("name").string().lower() == MODEL_HEADER
        ]
        if len(found) != 1:
            raise route.err(f"{match.path}: expected one {MODEL_HEADER} header match")
        header = dict(found[0].mapping())
        if header.get("type", "Exact") not in ("Exact", "RegularExpression"):
            raise route.err(f"{found[0].path}: unsupported match type {header.get('type')!r}")
        out.append(header)
    return out


def weighted_rule_tests(route: RouteRules, index: int) -> JSONPatch:
    """`test` operations proving rule `index` is still the weighted rule we read."""
    return [
        {
            "op": "test",
            "path": _pointer("spec", "rules", index, "backendRefs", j, "name"),
            "value": n,
        }
        for j, n in enumerate(_rule_backend_names(route.rules[index]))
    ]


def set_rule_operations(
    route: RouteRules, weighted: int, rule: Manifest, *, replace_matches: bool
) -> JSONPatch:
    """Add `rule` before the weighted rule, or, if a rule of its name exists, replace its
    matches (`replace_matches`) and backendRefs after testing its name."""
    name = rule["name"]
    existing = route.index_of(name)
    matches = rule["matches"]
    if len(matches) > MAX_MATCHES_PER_RULE:
        raise route.err(
            f"rule {name!r} would have {len(matches)} matches; the generated HTTPRoute allows "
            f"{MAX_MATCHES_PER_RULE} per rule"
        )
    total = route.match_count(skip=existing) + len(matches) + 1  # + route-not-found
    if total > MAX_MATCHES_TOTAL:
        raise route.err(
            f"the generated HTTPRoute would have {total} matches in all; at most "
            f"{MAX_MATCHES_TOTAL} are allowed"
        )
    if existing is None:
        if len(route.rules) >= MAX_RULES:
            raise route.err(
                f"the route has {len(route.rules)} rules; an AIGatewayRoute holds at most "
                f"{MAX_RULES}, so rule {name!r} cannot be added"
            )
        return [
            *weighted_rule_tests(route, weighted),
            {"op": "add", "path": _pointer("spec", "rules", weighted), "value": rule},
        ]
    base = ("spec", "rules", existing)
    ops: JSONPatch = [{"op": "test", "path": _pointer(*base, "name"), "value": name}]
    if replace_matches:
        ops.append({"op": "replace", "path": _pointer(*base, "matches"), "value": matches})
    ops.append(
        {"op": "replace", "path": _pointer(*base, "backendRefs"), "value": rule["backendRefs"]}
    )
    return ops


def remove_rule_operations(route: RouteRules, name: str) -> JSONPatch:
    """Test the name, remove the rule; nothing when no rule has that name (idempotent)."""
    index = route.index_of(name)
    if index is None:
        return []
    path = ("spec", "rules", index)
    return [
        {"op": "test", "path": _pointer(*path, "name"), "value": name},
        {"op": "remove", "path": _pointer(*path)},
    ]


def canary_backend_refs(route: RouteRules, weighted: int, canary_backend: str) -> list[Manifest]:
    """The canary's backendRef as the weighted rule holds it (namespace, modelNameOverride),
    weight 1, priority 0: every request the header rule matches goes to the canary."""
    refs = route.rules[weighted].req("backendRefs").items()
    for ref in refs:
        if ref.req("name").string() == canary_backend:
            out: Manifest = {"name": canary_backend}
            for key in ("namespace", "modelNameOverride"):
                if ref.opt_string(key) is not None:
                    out[key] = ref.opt_string(key)
            out["weight"] = 1
            out["priority"] = 0
            return [out]
    raise route.err(f"canary backend {canary_backend!r} is not in rule {weighted}")


def header_match(name: str, match_type: str, value: str) -> Manifest:
    return {"name": name, "type": match_type, "value": value}


__all__ = [
    "MAX_MATCHES_PER_RULE",
    "MAX_MATCHES_TOTAL",
    "MAX_RULES",
    "RouteRules",
    "canary_backend_refs",
    "check_header_name",
    "check_header_value",
    "header_match",
    "header_rule_name",
    "model_header_matches",
    "read_rules",
    "remove_rule_operations",
    "set_rule_operations",
    "weighted_rule_tests",
]
