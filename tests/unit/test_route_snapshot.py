"""parse_route_snapshot reads ANY route (several rules, weights above 100, CRD defaults), and
RouteSnapshot.rule_for finds the rule a rollout steps, or says precisely why it cannot."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rollout.gateway.errors import MalformedObjectError
from rollout.gateway.manifests import parse_route_snapshot
from rollout.gateway.models import RouteSnapshot, RuleWeights

API_VERSION = "aigateway.envoyproxy.io/v1beta1"


def route_object(rules: list[dict[str, Any]], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AIGatewayRoute",
        "metadata": {
            "name": "chat",
            "namespace": "llm",
            "uid": "0b5a3c8e-1111-2222-3333-444455556666",
            "resourceVersion": "42",
            **metadata,
        },
        "spec": {"parentRefs": [{"name": "ai-gateway"}], "rules": rules},
    }


def ref(name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, **({} if weight is None else {"weight": weight}), **extra}


MULTI_RULE = route_object(
    [
        {
            "name": "llama",
            "matches": [{"headers": [{"name": "x-ai-eg-model", "value": "llama-3-8b"}]}],
            "backendRefs": [
                ref("llama-v1", 150, modelNameOverride="llama-3-8b-v1"),
                ref("llama-v2", 50, priority=0),
            ],
        },
        {
            # unnamed, foreign fields, a backendRef without weight (CRD default 1)
            "matches": [{"headers": [{"name": "x-ai-eg-model", "value": "mistral"}]}],
            "timeouts": {"request": "60s"},
            "backendRefs": [ref("mistral-v1"), ref("mistral-v2", 0)],
        },
        {"name": "fallback", "backendRefs": [ref("llama-v1", 1), ref("mistral-v1", 1)]},
    ],
    annotations={"rollout.model-registry.io/pause": "true", "team": "ml"},
    labels={"app": "chat"},
)


# ---- parse_route_snapshot ---------------------------------------------------------------------


def test_snapshot_of_a_multi_rule_route_keeps_every_rule_and_raw_weight() -> None:
    snapshot = parse_route_snapshot(MULTI_RULE)
    assert snapshot == RouteSnapshot(
        namespace="llm",
        name="chat",
        uid="0b5a3c8e-1111-2222-3333-444455556666",
        resource_version="42",
        api_version=API_VERSION,
        annotations={"rollout.model-registry.io/pause": "true", "team": "ml"},
        rules=[
            RuleWeights(
                name="llama",
                weights={"llama-v1": 150, "llama-v2": 50},
                header_matches=[
                    [{"name": "x-ai-eg-model", "type": "Exact", "value": "llama-3-8b"}]
                ],
                model_name_overrides={"llama-v1": "llama-3-8b-v1"},
                priorities={"llama-v1": 0, "llama-v2": 0},
            ),
            RuleWeights(
                name=None,
                weights={"mistral-v1": 1, "mistral-v2": 0},
                header_matches=[[{"name": "x-ai-eg-model", "type": "Exact", "value": "mistral"}]],
                priorities={"mistral-v1": 0, "mistral-v2": 0},
            ),
            RuleWeights(
                name="fallback",
                weights={"llama-v1": 1, "mistral-v1": 1},
                priorities={"llama-v1": 0, "mistral-v1": 0},
            ),
        ],
    )


def test_snapshot_weight_above_100_is_kept_not_refused() -> None:
    # AIGatewayRoute (the model) refuses weights above 100; a snapshot describes any route.
    snapshot = parse_route_snapshot(route_object([{"backendRefs": [ref("a", 1000)]}]))
    assert snapshot.rules[0].weights == {"a": 1000}


def test_snapshot_missing_weight_defaults_to_1_and_explicit_0_stays_0() -> None:
    snapshot = parse_route_snapshot(
        route_object([{"backendRefs": [ref("a"), ref("b", 0), {"name": "c", "weight": None}]}])
    )
    assert snapshot.rules[0].weights == {"a": 1, "b": 0, "c": 1}


def test_snapshot_without_optional_metadata() -> None:
    obj = route_object([{"backendRefs": [ref("a", 3)]}])
    for key in ("uid", "resourceVersion"):
        del obj["metadata"][key]
    snapshot = parse_route_snapshot(obj)
    assert snapshot.uid is None and snapshot.resource_version is None
    assert snapshot.annotations == {}


def test_snapshot_of_a_rule_without_backend_refs_is_an_empty_rule() -> None:
    # backendRefs is optional in the CRD: such a rule must not make the whole route unreadable.
    snapshot = parse_route_snapshot(
        route_object([{"name": "empty"}, {"name": "llama", "backendRefs": [ref("a", 100)]}])
    )
    assert snapshot.rules == [
        RuleWeights(name="empty", weights={}),
        RuleWeights(name="llama", weights={"a": 100}, priorities={"a": 0}),
    ]
    assert snapshot.rule_for(["a"]).name == "llama"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (
            lambda o: o["spec"]["rules"][0]["backendRefs"][1].update(weight="50"),
            "spec.rules[0].backendRefs[1].weight",
        ),
        (
            lambda o: o["spec"]["rules"][1]["backendRefs"][0].pop("name"),
            "spec.rules[1].backendRefs[0].name",
        ),
        (lambda o: o["spec"].pop("rules"), "spec.rules"),
        (lambda o: o["metadata"].pop("namespace"), "metadata.namespace"),
        (lambda o: o.update(kind="HTTPRoute"), "kind"),
    ],
)
def test_malformed_routes_are_refused_with_the_field_path(mutate: Any, path: str) -> None:
    obj = route_object(
        [
            {"backendRefs": [ref("llama-v1", 100), ref("llama-v2", 0)]},
            {"backendRefs": [ref("mistral-v1")]},
        ]
    )
    mutate(obj)
    with pytest.raises(MalformedObjectError) as caught:
        parse_route_snapshot(obj)
    assert caught.value.path == path
    assert f": {path}: " in str(caught.value)


# ---- RouteSnapshot.rule_for -------------------------------------------------------------------

SNAPSHOT = parse_route_snapshot(MULTI_RULE)


def test_rule_for_by_name() -> None:
    rule = SNAPSHOT.rule_for(["llama-v1", "llama-v2"], "llama")
    assert (rule.name, rule.weights) == ("llama", {"llama-v1": 150, "llama-v2": 50})
    assert SNAPSHOT.rule_for(["llama-v1"], "fallback").name == "fallback"


def test_rule_for_by_index_including_an_unnamed_rule() -> None:
    assert SNAPSHOT.rule_for(["mistral-v1", "mistral-v2"], 1).weights == {
        "mistral-v1": 1,
        "mistral-v2": 0,
    }
    assert SNAPSHOT.rule_for([], 2).name == "fallback"


def test_rule_for_by_backends_finds_the_one_rule_holding_all() -> None:
    assert SNAPSHOT.rule_for(["llama-v1", "llama-v2"]).name == "llama"
    assert SNAPSHOT.rule_for(["mistral-v2", "mistral-v1"]).weights == {
        "mistral-v1": 1,
        "mistral-v2": 0,
    }
    assert SNAPSHOT.rule_for(["llama-v1", "mistral-v1"]).name == "fallback"


def test_rule_for_an_out_of_range_index() -> None:
    with pytest.raises(LookupError, match=re.escape("route has 3 rule(s), no rule index 3")):
        SNAPSHOT.rule_for(["llama-v1"], 3)
    with pytest.raises(LookupError, match="no rule index -1"):
        SNAPSHOT.rule_for(["llama-v1"], -1)


def test_rule_for_an_unknown_name() -> None:
    with pytest.raises(LookupError, match="route has no rule named 'embeddings'"):
        SNAPSHOT.rule_for(["llama-v1"], "embeddings")


def test_rule_for_backends_no_rule_holds() -> None:
    with pytest.raises(LookupError) as caught:
        SNAPSHOT.rule_for(["llama-v2", "mistral-v2"])
    assert str(caught.value) == (
        "no rule of the route holds all of ['llama-v2', 'mistral-v2']; rules hold "
        "[['llama-v1', 'llama-v2'], ['mistral-v1', 'mistral-v2'], ['llama-v1', 'mistral-v1']]"
    )


def test_rule_for_backends_held_by_several_rules_is_ambiguous() -> None:
    # The weight writer refuses this case too: reading one rule and writing none is no good.
    with pytest.raises(LookupError) as caught:
        SNAPSHOT.rule_for(["llama-v1"])
    assert str(caught.value) == (
        "rules [0, 2] of the route all hold ['llama-v1']; select one by name or index"
    )
    # Naming the rule settles it.
    assert SNAPSHOT.rule_for(["llama-v1"], "fallback").weights["llama-v1"] == 1
    assert SNAPSHOT.rule_for(["llama-v1"], 0).weights["llama-v1"] == 150


def test_rule_for_a_selected_rule_missing_a_backend_names_rule_and_backend() -> None:
    with pytest.raises(LookupError) as named:
        SNAPSHOT.rule_for(["llama-v1", "llama-v2"], "fallback")
    assert str(named.value) == (
        "rule 'fallback' does not hold backend(s) ['llama-v2']; it holds ['llama-v1', 'mistral-v1']"
    )
    with pytest.raises(LookupError) as unnamed:
        SNAPSHOT.rule_for(["llama-v1", "mistral-v1"], 1)
    assert str(unnamed.value) == (
        "rule #1 does not hold backend(s) ['llama-v1']; it holds ['mistral-v1', 'mistral-v2']"
    )


def test_rule_for_on_a_route_without_rules() -> None:
    empty = RouteSnapshot(namespace="llm", name="chat", api_version=API_VERSION)
    with pytest.raises(LookupError, match="holds all of"):
        empty.rule_for(["a"])
    with pytest.raises(LookupError, match=re.escape("route has 0 rule(s)")):
        empty.rule_for(["a"], 0)
