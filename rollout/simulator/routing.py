"""How the gateway picks a backend for a request, as a pure table (for the simulator).

Built from the HTTPRoute the AI Gateway controller generates (what Envoy is configured from)
and our AIGatewayRoute (what the HTTPRoute does not carry: the AIServiceBackend names behind its
Envoy Gateway Backends, their modelNameOverride and priority; rule i, backendRef j of one is
rule i, backendRef j of the other). Gateway API precedence among rules that match: the rule
with more header matches first, then the order of the rules; a match matches when all its
headers do (Exact: equal; RegularExpression: a full match, as Envoy's RE2). Within a rule,
the primary (priority 0) backends split the requests by weight.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from rollout.gateway.constants import ROUTE_NOT_FOUND_RULE
from rollout.gateway.models import GeneratedRoute, RouteSnapshot


@dataclass(frozen=True)
class ServedBackend:
    name: str  # the AIServiceBackend
    weight: int
    model_name_override: str | None = None


@dataclass(frozen=True)
class ServedRule:
    name: str | None
    matches: tuple[tuple[tuple[str, str, str], ...], ...]  # per match: (header, type, value)
    backends: tuple[ServedBackend, ...]  # primary backends only

    @property
    def precedence(self) -> int:
        return max((len(m) for m in self.matches), default=0)

    def matches_request(self, headers: Mapping[str, str]) -> bool:
        if not self.matches:
            return True
        return any(all(_header_matches(h, headers) for h in match) for match in self.matches)


@dataclass(frozen=True)
class RoutingTable:
    rules: tuple[ServedRule, ...]  # in precedence order
    model_name: str | None  # the x-ai-eg-model value the route serves

    def pick(self, headers: Mapping[str, str], rng: random.Random) -> ServedBackend | None:
        """The backend the gateway sends this request to; None if no rule matches or the
        matching rule has no weight left (every primary weight 0)."""
        for rule in self.rules:
            if rule.matches_request(headers):
                live = [b for b in rule.backends if b.weight > 0]
                if not live:
                    return None
                return rng.choices(live, weights=[b.weight for b in live])[0]
        return None

    @property
    def weights(self) -> tuple[tuple[str, int], ...]:
        return tuple((b.name, b.weight) for rule in self.rules for b in rule.backends)


def routing_table(snapshot: RouteSnapshot, generated: GeneratedRoute | None) -> RoutingTable | None:
    """The table Envoy would route by; None while nothing is served (no HTTPRoute, or one
    generated from another shape of the route). `generated` None: our route's own weights
    (no AI Gateway controller)."""
    rules: list[ServedRule] = []
    for index, ours in enumerate(snapshot.rules):
        if generated is None:
            weights = dict(ours.weights)
            matches = ours.header_matches
        else:
            served = generated.weights_by_backend(index, list(ours.weights))
            if served is None:
                return None
            weights = served
            matches = generated.rules[index].header_matches
        backends = tuple(
            ServedBackend(name, weight, ours.model_name_overrides.get(name))
            for name, weight in weights.items()
            if ours.priorities.get(name, 0) == 0
        )
        rules.append(
            ServedRule(
                name=ours.name,
                matches=tuple(
                    tuple(
                        (h.get("name", "").lower(), h.get("type", "Exact"), h.get("value", ""))
                        for h in match
                    )
                    for match in matches
                ),
                backends=backends,
            )
        )
    rules = [r for r in rules if r.name != ROUTE_NOT_FOUND_RULE]
    ordered = sorted(rules, key=lambda r: -r.precedence)  # stable: rule order among equals
    return RoutingTable(tuple(ordered), _model_name(ordered))


def _model_name(rules: Sequence[ServedRule]) -> str | None:
    for rule in reversed(rules):  # the weighted rule comes last among our shapes
        for match in rule.matches:
            for header, kind, value in match:
                if header == "x-ai-eg-model" and kind == "Exact":
                    return value
    return None


def _header_matches(header: tuple[str, str, str], headers: Mapping[str, str]) -> bool:
    name, kind, value = header
    actual = headers.get(name)
    if actual is None:
        return False
    if kind == "RegularExpression":
        return _compiled(value).fullmatch(actual) is not None
    return actual == value


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
