"""Validation of the gateway models, and the typed errors (including error_from_status)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from rollout.gateway.errors import (
    DISABLED_MESSAGE,
    AIGatewayError,
    AlreadyExistsError,
    ConflictError,
    DisabledError,
    ForbiddenError,
    InvalidError,
    MalformedObjectError,
    NotFoundError,
    StatusCause,
    UnavailableError,
    UnsupportedObjectError,
    error_from_status,
)
from rollout.gateway.models import (
    AIGatewayRoute,
    AIGatewayRouteStatus,
    AIServiceBackend,
    APISchema,
    APISchemaName,
    Backend,
    BackendRef,
    BudgetPeriod,
    Condition,
    FQDNEndpoint,
    IPEndpoint,
    LLMRequestCost,
    LLMRequestCostType,
    RateLimitConfig,
    VariantTag,
    WeightedBackend,
)

TOTAL = LLMRequestCost(metadata_key="llm_total_token", type=LLMRequestCostType.TOTAL_TOKEN)


def route(**overrides: Any) -> AIGatewayRoute:
    fields: dict[str, Any] = {
        "name": "llama",
        "model_name": "llama-3-8b",
        "backends": [
            WeightedBackend(name="llama-v1", weight=90, variant_tag=VariantTag.STABLE),
            WeightedBackend(name="llama-v2", weight=10, variant_tag=VariantTag.CANARY),
        ],
    }
    fields.update(overrides)
    return AIGatewayRoute(**fields)


def budget(**overrides: Any) -> RateLimitConfig:
    fields: dict[str, Any] = {
        "tenant_header": "x-tenant-id",
        "token_budget": 100_000,
        "budget_period": BudgetPeriod.DAILY,
    }
    fields.update(overrides)
    return RateLimitConfig(**fields)


# --- names and labels ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Llama", "-llama", "llama-", "llama_3", "", "a" * 254, "a..b"])
def test_object_names_must_be_dns1123_subdomains(name: str) -> None:
    with pytest.raises(ValidationError, match="DNS-1123 subdomain"):
        route(name=name)


@pytest.mark.parametrize("name", ["llama", "llama.v1", "a" * 253, "0-a.b-0"])
def test_valid_subdomains_are_accepted(name: str) -> None:
    assert route(name=name).name == name


@pytest.mark.parametrize("namespace", ["model.serving", "Model", "a" * 64, "-ns"])
def test_namespaces_must_be_dns1123_labels(namespace: str) -> None:
    with pytest.raises(ValidationError, match="DNS-1123 label"):
        route(namespace=namespace)


@pytest.mark.parametrize(
    "labels",
    [
        {"team": "ML Ops"},  # space in value
        {"team": "a" * 64},
        {"example.com/": "x"},
        {"/team": "x"},
        {"Example.com/team": "x"},  # prefix must be lower-case
        {"team!": "x"},
        {"a" * 64: "x"},
    ],
)
def test_invalid_labels_are_refused(labels: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="label"):
        route(labels=labels)


def test_valid_labels_are_kept() -> None:
    labels = {"team": "ml", "example.com/tier": "gold", "empty": "", "a_b.c": "X_y.z"}
    assert route(labels=labels).labels == labels


def test_managed_by_label_is_dropped_and_the_callers_dict_is_not_mutated() -> None:
    labels = {"team": "ml", "managed-by": "model-registry"}
    built = route(labels=labels)
    assert built.labels == {"team": "ml"}
    assert labels == {"team": "ml", "managed-by": "model-registry"}


def test_a_foreign_managed_by_label_is_refused() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        route(labels={"managed-by": "argocd"})


def test_extra_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        WeightedBackend.model_validate({"name": "a", "wieght": 3})


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        route().name = "other"  # type: ignore[misc]


# --- routes and backends ---------------------------------------------------------------------


@pytest.mark.parametrize("weight", [-1, 101, 1000])
def test_weight_must_be_0_to_100(weight: int) -> None:
    with pytest.raises(ValidationError, match="weight"):
        WeightedBackend(name="a", weight=weight)


@pytest.mark.parametrize("weight", [True, "50", 50.0])
def test_weight_must_be_an_int_not_a_lookalike(weight: object) -> None:
    with pytest.raises(ValidationError):
        WeightedBackend.model_validate({"name": "a", "weight": weight})


def test_backend_defaults_match_the_crd() -> None:
    backend = WeightedBackend(name="a")
    assert (backend.weight, backend.priority, backend.variant_tag) == (1, 0, None)
    assert backend.model_name_override is None


def test_negative_priority_is_refused() -> None:
    with pytest.raises(ValidationError, match="priority"):
        WeightedBackend(name="a", priority=-1)


def test_empty_model_name_override_is_refused() -> None:
    with pytest.raises(ValidationError, match="model_name_override"):
        WeightedBackend(name="a", model_name_override="")


def test_unknown_variant_tag_is_refused() -> None:
    with pytest.raises(ValidationError, match="variant_tag"):
        WeightedBackend.model_validate({"name": "a", "variant_tag": "blue"})


def test_duplicate_backend_names_are_refused() -> None:
    backends = [WeightedBackend(name="a"), WeightedBackend(name="a", namespace="other")]
    with pytest.raises(ValidationError, match=r"unique.*\['a'\]"):
        route(backends=backends)


@pytest.mark.parametrize("priorities", [[1], [0, 2], [0, 0, 3]])
def test_priorities_must_have_no_gaps(priorities: list[int]) -> None:
    backends = [WeightedBackend(name=f"b{i}", priority=p) for i, p in enumerate(priorities)]
    with pytest.raises(ValidationError, match="without gaps"):
        route(backends=backends)


def test_gap_free_priorities_in_any_order_are_accepted() -> None:
    backends = [WeightedBackend(name=f"b{i}", priority=p) for i, p in enumerate([1, 0, 2, 1])]
    assert [b.priority for b in route(backends=backends).backends] == [1, 0, 2, 1]


def test_a_route_needs_at_least_one_and_at_most_16_backends() -> None:
    with pytest.raises(ValidationError, match="backends"):
        route(backends=[])
    with pytest.raises(ValidationError, match="backends"):
        route(backends=[WeightedBackend(name=f"b{i}") for i in range(17)])


def test_empty_model_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="model_name"):
        route(model_name="")


def test_reserved_rule_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        route(rule_name="route-not-found")


# --- llm request costs -----------------------------------------------------------------------


def test_cost_type_must_be_one_of_the_crd_enum() -> None:
    with pytest.raises(ValidationError, match="type"):
        LLMRequestCost.model_validate({"metadata_key": "k", "type": "Tokens"})


def test_cel_is_required_with_type_cel() -> None:
    with pytest.raises(ValidationError, match="needs a cel rule"):
        LLMRequestCost(metadata_key="k", type=LLMRequestCostType.CEL)


def test_cel_is_refused_with_other_types() -> None:
    with pytest.raises(ValidationError, match="only allowed with type CEL"):
        LLMRequestCost(metadata_key="k", type=LLMRequestCostType.INPUT_TOKEN, cel="input_tokens")


def test_cel_cost_is_accepted() -> None:
    cost = LLMRequestCost(metadata_key="k", type=LLMRequestCostType.CEL, cel="input_tokens * 2")
    assert cost.cel == "input_tokens * 2"


@pytest.mark.parametrize("key", ["", "llm total"])
def test_metadata_key_must_be_non_empty_without_spaces(key: str) -> None:
    with pytest.raises(ValidationError, match="metadata key"):
        LLMRequestCost(metadata_key=key, type=LLMRequestCostType.TOTAL_TOKEN)


def test_duplicate_cost_keys_are_refused() -> None:
    costs = [TOTAL, LLMRequestCost(metadata_key="llm_total_token", type="InputToken")]
    with pytest.raises(ValidationError, match="llm_total_token"):
        route(llm_request_costs=costs)


# --- rate limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("period", ["weekly", "Weekly", "week"])
def test_weekly_budget_is_refused_with_the_reason(period: str) -> None:
    with pytest.raises(ValidationError, match=r"no Week unit.*Envoy Gateway|Envoy Gateway.*Week"):
        budget(budget_period=period)


def test_unknown_budget_period_is_refused() -> None:
    with pytest.raises(ValidationError, match="budget_period"):
        budget(budget_period="fortnightly")


@pytest.mark.parametrize("field", ["token_budget", "requests_per_min"])
@pytest.mark.parametrize("value", [0, -5, 2**32])
def test_limits_are_1_to_uint32(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        budget(**{field: value})


def test_tenant_header_must_be_a_header_name() -> None:
    with pytest.raises(ValidationError, match="HTTP header name"):
        budget(tenant_header="x tenant")


def test_route_resolves_the_budget_key_from_its_total_token_cost() -> None:
    built = route(llm_request_costs=[TOTAL], rate_limit=budget())
    assert built.rate_limit is not None
    assert built.rate_limit.cost_metadata_key == "llm_total_token"


def test_route_refuses_a_budget_without_a_total_token_cost() -> None:
    costs = [LLMRequestCost(metadata_key="in", type=LLMRequestCostType.INPUT_TOKEN)]
    with pytest.raises(ValidationError, match="TotalToken"):
        route(llm_request_costs=costs, rate_limit=budget())


def test_route_refuses_a_budget_key_no_cost_writes() -> None:
    with pytest.raises(ValidationError, match="'llm_output' is not written"):
        route(llm_request_costs=[TOTAL], rate_limit=budget(cost_metadata_key="llm_output"))


def test_explicit_budget_key_may_name_any_cost() -> None:
    costs = [TOTAL, LLMRequestCost(metadata_key="out", type=LLMRequestCostType.OUTPUT_TOKEN)]
    built = route(llm_request_costs=costs, rate_limit=budget(cost_metadata_key="out"))
    assert built.rate_limit is not None
    assert built.rate_limit.cost_metadata_key == "out"


def test_resolved_raises_invalid_error_when_ambiguous() -> None:
    costs = [TOTAL, LLMRequestCost(metadata_key="t2", type=LLMRequestCostType.TOTAL_TOKEN)]
    with pytest.raises(InvalidError, match="exactly one TotalToken"):
        budget().resolved(costs)


# --- service backends, backends, status ------------------------------------------------------


def test_backend_ref_defaults_to_the_only_group_and_kind_the_crd_accepts() -> None:
    ref = BackendRef(name="llama-v1")
    assert (ref.group, ref.kind) == ("gateway.envoyproxy.io", "Backend")


@pytest.mark.parametrize("override", [{"group": ""}, {"kind": "Service"}])
def test_backend_ref_refuses_other_groups_and_kinds(override: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        BackendRef.model_validate({"name": "a", **override})


def test_schema_name_must_be_one_of_the_crd_enum() -> None:
    with pytest.raises(ValidationError, match="name"):
        APISchema.model_validate({"name": "Mistral"})


def test_service_backend_constructs() -> None:
    backend = AIServiceBackend(
        name="llama-v1",
        api_schema=APISchema(name=APISchemaName.OPENAI, version="v1"),
        backend_ref=BackendRef(name="llama-v1"),
    )
    assert backend.api_schema.name is APISchemaName.OPENAI


def test_backend_refuses_mixed_fqdn_and_ip_endpoints() -> None:
    with pytest.raises(ValidationError, match="mixed"):
        Backend(
            name="b",
            endpoints=[
                FQDNEndpoint(hostname="a.svc", port=80),
                IPEndpoint(address="10.0.0.1", port=80),
            ],
        )


@pytest.mark.parametrize("address", ["10.0.0.256", "example.com", "::ffff:1.2.3.4"])
def test_ip_endpoint_refuses_bad_addresses(address: str) -> None:
    with pytest.raises(ValidationError, match="address"):
        IPEndpoint(address=address, port=80)


@pytest.mark.parametrize("port", [0, 65536])
def test_ports_are_1_to_65535(port: int) -> None:
    with pytest.raises(ValidationError, match="port"):
        FQDNEndpoint(hostname="a.svc", port=port)


def test_backend_needs_an_endpoint() -> None:
    with pytest.raises(ValidationError, match="endpoints"):
        Backend(name="b", endpoints=[])


def test_status_messages_skip_empty_ones() -> None:
    status = AIGatewayRouteStatus(
        ready=False,
        conditions=[
            Condition(
                type="NotAccepted", status="False", reason="ReconciliationFailed", message="boom"
            ),
            Condition(type="Other", status="Unknown", reason="R", message=""),
        ],
    )
    assert status.messages == ["boom"]


# --- errors ----------------------------------------------------------------------------------


def _status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


REF = {"kind": "AIGatewayRoute", "namespace": "model-serving", "name": "llama"}


def test_404_is_not_found() -> None:
    body = _status(
        404,
        "NotFound",
        'aigatewayroutes.aigateway.envoyproxy.io "llama" not found',
        name="llama",
        group="aigateway.envoyproxy.io",
        kind="aigatewayroutes",
    )
    err = error_from_status(404, json.dumps(body), **REF)
    assert type(err) is NotFoundError
    assert (err.kind, err.namespace, err.name) == ("AIGatewayRoute", "model-serving", "llama")
    assert err.status_code == 404 and err.reason == "NotFound"
    assert err.message == 'aigatewayroutes.aigateway.envoyproxy.io "llama" not found'
    assert str(err).startswith("AIGatewayRoute model-serving/llama: ")


def test_409_already_exists() -> None:
    body = _status(
        409, "AlreadyExists", 'aigatewayroutes.aigateway.envoyproxy.io "llama" already exists'
    )
    assert type(error_from_status(409, body, **REF)) is AlreadyExistsError


def test_409_otherwise_is_a_conflict() -> None:
    body = _status(
        409,
        "Conflict",
        'Operation cannot be fulfilled on aigatewayroutes.aigateway.envoyproxy.io "llama": the '
        "object has been modified; please apply your changes to the latest version and try again",
    )
    assert type(error_from_status(409, body, **REF)) is ConflictError


def test_422_is_invalid_with_field_causes() -> None:
    cause_msg = (
        "Invalid value: -1: spec.rules[0].backendRefs[0].weight in body should be greater "
        "than or equal to 0"
    )
    body = _status(
        422,
        "Invalid",
        f'AIGatewayRoute.aigateway.envoyproxy.io "llama" is invalid: '
        f"spec.rules[0].backendRefs[0].weight: {cause_msg}",
        name="llama",
        group="aigateway.envoyproxy.io",
        kind="AIGatewayRoute",
        causes=[
            {
                "reason": "FieldValueInvalid",
                "message": cause_msg,
                "field": "spec.rules[0].backendRefs[0].weight",
            }
        ],
    )
    err = error_from_status(422, json.dumps(body), **REF)
    assert isinstance(err, InvalidError)
    assert isinstance(err, ValueError)
    assert err.causes == (
        StatusCause(
            message=cause_msg,
            field="spec.rules[0].backendRefs[0].weight",
            reason="FieldValueInvalid",
        ),
    )
    assert "is invalid" in err.message


def test_failed_json_patch_test_is_a_conflict_not_invalid() -> None:
    # What the API server answers when a `test` op of a JSON Patch fails.
    body = _status(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        causes=[
            {
                "reason": "UnexpectedServerResponse",
                "message": "testing value /metadata/resourceVersion failed: test failed",
            }
        ],
    )
    err = error_from_status(422, body, **REF)
    assert type(err) is ConflictError
    assert "testing value /metadata/resourceVersion failed" in err.message


def test_400_is_invalid() -> None:
    body = _status(400, "BadRequest", 'strict decoding error: unknown field "spec.targetRefs"')
    err = error_from_status(400, body, **REF)
    assert type(err) is InvalidError and err.causes == ()


@pytest.mark.parametrize("code", [401, 403])
def test_401_and_403_are_forbidden(code: int) -> None:
    body = _status(
        code,
        "Forbidden",
        'aigatewayroutes.aigateway.envoyproxy.io "llama" is forbidden: User '
        '"system:serviceaccount:model-registry:model-registry" cannot patch resource '
        '"aigatewayroutes" in API group "aigateway.envoyproxy.io" in the namespace "model-serving"',
    )
    assert type(error_from_status(code, body, **REF)) is ForbiddenError


@pytest.mark.parametrize("code", [0, 429, 500, 503, 504])
def test_throttling_server_errors_and_no_response_are_unavailable(code: int) -> None:
    body = _status(code, "ServiceUnavailable", "etcdserver: leader changed", retryAfterSeconds=2)
    err = error_from_status(code, body, **REF)
    assert type(err) is UnavailableError
    assert err.retry_after_seconds == 2


def test_bytes_bodies_are_decoded() -> None:
    body = json.dumps(_status(409, "AlreadyExists", "exists")).encode()
    assert type(error_from_status(409, body)) is AlreadyExistsError


def test_non_json_and_empty_bodies_keep_a_message() -> None:
    err = error_from_status(404, "404 page not found\n")
    assert type(err) is NotFoundError and err.message == "404 page not found"
    assert str(error_from_status(0, None)) == "no response from the API server"
    assert error_from_status(502, "").message == "HTTP 502"


def test_unexpected_status_falls_back_to_the_base_error() -> None:
    err = error_from_status(418, _status(418, "Teapot", "short and stout"))
    assert type(err) is AIGatewayError and err.message == "short and stout"


def test_disabled_error_message() -> None:
    assert str(DisabledError()) == DISABLED_MESSAGE
    assert DISABLED_MESSAGE == "AI Gateway integration is disabled (AIGATEWAY_ENABLED=false)"


def test_malformed_error_names_object_and_path() -> None:
    err = UnsupportedObjectError(
        "expected a string, got integer",
        path="spec.rules[0].backendRefs[1].name",
        kind="AIGatewayRoute",
        namespace="ns",
        name="foo",
    )
    assert isinstance(err, MalformedObjectError)
    assert str(err) == (
        "AIGatewayRoute ns/foo: spec.rules[0].backendRefs[1].name: expected a string, got integer"
    )
