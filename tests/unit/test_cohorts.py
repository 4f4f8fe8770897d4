"""Cohort and opt-in rules: the regex share on random UUIDs, stickiness, RE2-safe syntax, the
CRD's limits, and the JSON Patch operations applied to a route object."""

from __future__ import annotations

import copy
import random
import re
import uuid
from typing import Any

import pytest

from rollout.gateway.errors import InvalidError
from rollout.gateway.manifests import parse_route_snapshot, weight_patch_operations
from rollout.gateway.manifests.cohorts import (
    cohort_matches,
    cohort_regex,
    cohort_rule_operations,
    cohort_selected_percent,
    cohort_share,
    remove_cohort_rule_operations,
)
from rollout.gateway.manifests.opt_in import opt_in_rule_operations, remove_opt_in_rule_operations

SHARES = [0.01, 0.1, 0.5, 1, 5, 12.5, 25, 33.33, 50, 99.99, 100]
MODEL = {"name": "x-ai-eg-model", "type": "Exact", "value": "llama-3-8b"}


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A tiny RFC 6902 applier (add/remove/replace/test), enough for these operations."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        key: Any = int(last) if isinstance(parent, list) else last
        if op["op"] == "test":
            assert parent[key] == op["value"], f"test failed at {op['path']}"
        elif op["op"] == "add" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(op["value"]))
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace":
                assert key in parent if isinstance(parent, dict) else key < len(parent)
            parent[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[key]
        else:  # pragma: no cover
            raise AssertionError(op)
    return doc


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    weighted = {
        "name": "chat",
        "matches": [{"headers": [MODEL]}],
        "backendRefs": [
            {"name": "llama-v1", "weight": 100, "modelNameOverride": "m-v1"},
            {"name": "llama-v2", "weight": 0, "modelNameOverride": "m-v2"},
        ],
    }
    return {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIGatewayRoute",
        "metadata": {"name": "r", "namespace": "ns", "resourceVersion": "7"},
        "spec": {"rules": [*rules, weighted]},
    }


def cohort_ops(obj: dict[str, Any], percent: float) -> list[dict[str, Any]]:
    return cohort_rule_operations(
        obj,
        backends=["llama-v1", "llama-v2"],
        header="x-session-id",
        canary_backend="llama-v2",
        percent=percent,
    )


@pytest.fixture(scope="module")
def sessions() -> list[str]:
    rng = random.Random(20240610)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(10_000)]


@pytest.mark.parametrize("share", [0.5, 1, 5, 25, 50])
def test_the_share_of_10000_random_uuids_matches_the_step(
    sessions: list[str], share: float
) -> None:
    regex = cohort_regex(share)
    matched = sum(cohort_matches(regex, s) for s in sessions) / len(sessions) * 100
    # Binomial: 4 standard deviations of a 10,000-sample share, plus the 1/65536 floor.
    sd = (share * (100 - share) / len(sessions)) ** 0.5
    assert abs(matched - share) <= 4 * sd + 100 / 65536, (share, matched)


def test_real_uuid4_values_and_upper_case_match_too() -> None:
    values = [str(uuid.uuid4()) for _ in range(10_000)]
    regex = cohort_regex(50)
    matched = [v for v in values if cohort_matches(regex, v)]
    assert 4_600 < len(matched) < 5_400
    assert all(cohort_matches(regex, v.upper()) for v in matched)
    assert not cohort_matches(regex, "no-hex-tail-zz")
    assert not cohort_matches(regex, "")


def test_a_larger_share_contains_every_session_of_a_smaller_one(sessions: list[str]) -> None:
    previous: set[str] = set()
    for share in SHARES:
        regex = cohort_regex(share)
        now = {s for s in sessions if cohort_matches(regex, s)}
        assert previous <= now, share
        previous = now
    assert previous == set(sessions)  # 100% takes every UUID


def test_buckets_are_exact_on_every_four_digit_tail() -> None:
    for share in SHARES:
        regex = cohort_regex(share)
        count = sum(cohort_matches(regex, f"s-{i:04x}") for i in range(65536))
        assert count == int(share * 65536 / 100 + 1e-9), share
        # buckets 0..k-1 exactly: the lowest k tails, nothing above
        assert cohort_matches(regex, "s-0000")
        assert count == 65536 or not cohort_matches(regex, f"s-{count:04x}")
        assert cohort_share(regex) == pytest.approx(count * 100 / 65536)
        assert cohort_share(regex) == cohort_selected_percent(share)


def test_regex_is_re2_safe_and_short_for_every_share() -> None:
    longest = 0
    for hundredths in range(1, 10_001):
        regex = cohort_regex(hundredths / 100)
        longest = max(longest, len(regex))
        # RE2: no lookaround, backreference, possessive or atomic group; only these tokens.
        assert re.fullmatch(r"\(\?i\)\.\*\((?:[0-9a-f\[\]{}|-]|\{\d\})+\)\$", regex), regex
        assert "(?=" not in regex and "(?!" not in regex and "(?<" not in regex
        assert not re.search(r"\\\d", regex)
    assert longest <= 100  # the CRD allows 4096


def test_cohort_share_refuses_foreign_regexes() -> None:
    for regex in [".*", "(?i).*(0[0-9a-f]{3}|0[0-9a-f]{3})$", "(?i).*([0-9a-f]{4}|x)$"]:
        with pytest.raises(ValueError):
            cohort_share(regex)


@pytest.mark.parametrize("bad", [0, 0.001, 100.01, -1, True, "x", float("nan")])
def test_bad_shares_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidError):
        cohort_regex(bad)


def test_cohort_rule_added_before_the_weighted_rule_then_widened_then_removed() -> None:
    obj = route()
    ops = cohort_ops(obj, 1)
    assert [o["op"] for o in ops] == ["test", "test", "add"]
    assert ops[-1]["path"] == "/spec/rules/0"
    added = apply_patch(obj, ops)
    cohort, weighted = added["spec"]["rules"]
    assert cohort["name"] == "llama-v2-cohort"
    assert cohort["backendRefs"] == [
        {"name": "llama-v2", "modelNameOverride": "m-v2", "weight": 1, "priority": 0}
    ]
    [[model, session]] = [m["headers"] for m in cohort["matches"]]
    assert model == MODEL
    assert session == {
        "name": "x-session-id",
        "type": "RegularExpression",
        "value": cohort_regex(1),
    }
    assert weighted == obj["spec"]["rules"][0]
    snapshot = parse_route_snapshot(added)
    assert (snapshot.cohort_backend, snapshot.cohort_header) == ("llama-v2", "x-session-id")
    assert snapshot.cohort_percent == cohort_selected_percent(1)

    widened = apply_patch(added, cohort_ops(added, 25))
    assert len(widened["spec"]["rules"]) == 2
    assert parse_route_snapshot(widened).cohort_percent == 25.0

    removed = apply_patch(
        widened, remove_cohort_rule_operations(widened, canary_backend="llama-v2")
    )
    assert removed["spec"]["rules"] == obj["spec"]["rules"]
    assert parse_route_snapshot(removed).cohort_percent is None
    assert remove_cohort_rule_operations(removed, canary_backend="llama-v2") == []


def test_weights_and_rule_in_one_patch_keep_their_indexes() -> None:
    obj = route()
    ops = weight_patch_operations(obj, {"llama-v1": 999_000, "llama-v2": 1_000}) + cohort_ops(
        obj, 5
    )
    patched = apply_patch(obj, ops)
    snapshot = parse_route_snapshot(patched)
    assert snapshot.rule_for(["llama-v1", "llama-v2"]).weights == {
        "llama-v1": 999_000,
        "llama-v2": 1_000,
    }
    assert snapshot.rules[0].name == "llama-v2-cohort"


def test_a_stale_index_fails_the_test_operation() -> None:
    obj = route()
    ops = cohort_ops(obj, 1)
    moved = copy.deepcopy(obj)
    moved["spec"]["rules"].insert(0, {"name": "other", "backendRefs": [{"name": "x"}]})
    with pytest.raises(AssertionError, match="test failed"):
        apply_patch(moved, ops)


def test_other_owners_rules_are_kept_and_limits_are_checked() -> None:
    other = {"name": "mistral", "matches": [{"headers": [{**MODEL, "value": "m"}]}]}
    obj = route(other)
    patched = apply_patch(obj, cohort_ops(obj, 1))
    assert [r.get("name") for r in patched["spec"]["rules"]] == [
        "mistral",
        "llama-v2-cohort",
        "chat",
    ]
    full = route(*[{"name": f"r{i}", "backendRefs": [{"name": f"b{i}"}]} for i in range(14)])
    with pytest.raises(InvalidError, match="at most 15"):
        cohort_ops(full, 1)
    with pytest.raises(InvalidError, match="model header"):
        cohort_rule_operations(
            obj,
            backends=["llama-v1", "llama-v2"],
            header="X-AI-EG-Model",
            canary_backend="llama-v2",
            percent=1,
        )
    with pytest.raises(InvalidError, match="header name"):
        cohort_rule_operations(
            obj,
            backends=["llama-v1", "llama-v2"],
            header="x y",
            canary_backend="llama-v2",
            percent=1,
        )


def test_opt_in_rule_one_match_per_tenant_with_the_model_match() -> None:
    obj = route()
    ops = opt_in_rule_operations(
        obj,
        backends=["llama-v1", "llama-v2"],
        header="x-tenant-id",
        values=["internal", "beta-customer"],
        canary_backend="llama-v2",
    )
    patched = apply_patch(obj, ops)
    rule = patched["spec"]["rules"][0]
    assert rule["name"] == "llama-v2-opt-in"
    assert rule["matches"] == [
        {"headers": [MODEL, {"name": "x-tenant-id", "type": "Exact", "value": v}]}
        for v in ["internal", "beta-customer"]
    ]
    snapshot = parse_route_snapshot(patched)
    assert snapshot.opt_in_values == ["internal", "beta-customer"]
    assert snapshot.opt_in_header == "x-tenant-id"
    removed = apply_patch(
        patched, remove_opt_in_rule_operations(patched, canary_backend="llama-v2")
    )
    assert removed == obj
    for values in [[], ["a", "a"], ["bad\nvalue"], [f"t{i}" for i in range(65)]]:
        with pytest.raises(InvalidError):
            opt_in_rule_operations(
                obj,
                backends=["llama-v1", "llama-v2"],
                header="x-tenant-id",
                values=values,
                canary_backend="llama-v2",
            )
