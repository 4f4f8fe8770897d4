"""Models of the AI Gateway objects this project manages, validated at construction.

The models describe intent; `rollout.gateway.manifests` translates them to and from the
Kubernetes manifests (field names, defaults and CEL rules come from the upstream CRDs of Envoy AI
Gateway v1.1 and Envoy Gateway v1.8).

Conventions:
- Models are frozen. Change one with `Model.model_validate({**m.model_dump(), ...})` or by
  constructing a new one; `model_copy(update=...)` skips validation and must not be used to
  change fields.
- `labels` hold the caller's labels only. The ownership label `managed-by: model-registry` is
  added by the manifest builders and is never part of a model: passing it is accepted and
  dropped (so labels copied from a parsed object can be reused), any other `managed-by` value is
  refused because the builders would overwrite it.
- Stricter than the CRDs where the project needs it: weights are 0..100, a route has 1..16
  backends with unique names and gap-free priorities 0..N, ports are 1..65535.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from rollout.config import DNS1123Label, DNS1123Subdomain, check_dns1123_subdomain
from rollout.gateway.constants import (
    ACCEPTED_CONDITION,
    ENVOY_GATEWAY_GROUP,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    NOT_ACCEPTED_CONDITION,
)
from rollout.gateway.errors import InvalidError

MAX_WEIGHT = 100
# What the weight patch (the controller's write path) accepts: the generated HTTPRoute caps
# each backendRef weight at 1,000,000 (the AIGatewayRoute CRD allows int32), so sub-percent
# steps are written on a total of 1,000,000 (percent x 10,000). AIGatewayRoute (the model)
# keeps 0..MAX_WEIGHT; RouteSnapshot reads any weight.
MAX_PATCH_WEIGHT = 1_000_000
MAX_INT32 = 2**31 - 1
# BackendTrafficPolicy limit.requests: `maximum: 4294967295` in the EG v1.8 CRD.
MAX_RATE_LIMIT_REQUESTS = 2**32 - 1
# The HTTPRoute the AI Gateway generates allows at most 16 backendRefs per rule.
MAX_BACKENDS_PER_ROUTE = 16
MAX_LLM_REQUEST_COSTS = 36  # CRD maxItems
MAX_ENDPOINTS = 256  # CRD maxItems
MAX_MODEL_NAME_LENGTH = 4096  # CRD maxLength of a header match value
RESERVED_RULE_NAME = "route-not-found"

# --- labels ----------------------------------------------------------------------------------

_LABEL_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_NAME_MAX = 63


def check_qualified_name(key: str) -> str:
    """Label and annotation keys: `[prefix/]name`, prefix a DNS subdomain, name <= 63 chars."""
    prefix, slash, name = key.rpartition("/")
    problem = None
    if slash and not prefix:
        problem = "the prefix before '/' is empty"
    elif prefix:
        try:
            check_dns1123_subdomain(prefix)
        except ValueError:
            problem = f"the prefix {prefix!r} is not a DNS-1123 subdomain"
    if problem is None and (len(name) > _LABEL_NAME_MAX or not _LABEL_NAME_RE.fullmatch(name)):
        problem = (
            f"the name part must be 1..{_LABEL_NAME_MAX} letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    if problem:
        raise ValueError(f"{key!r} is not a valid label/annotation key: {problem}")
    return key


def check_label_value(value: str) -> str:
    if value and (len(value) > _LABEL_NAME_MAX or not _LABEL_NAME_RE.fullmatch(value)):
        raise ValueError(
            f"{value!r} is not a valid label value: use at most {_LABEL_NAME_MAX} letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return value


def _user_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        check_qualified_name(key)
        check_label_value(value)
    owner = labels.get(MANAGED_BY_LABEL)
    if owner is None:
        return labels
    if owner != MANAGED_BY_VALUE:
        raise ValueError(
            f"label {MANAGED_BY_LABEL!r} is reserved: this project always sets it to "
            f"{MANAGED_BY_VALUE!r}, got {owner!r}"
        )
    # A new dict: the caller's mapping is never mutated.
    return {k: v for k, v in labels.items() if k != MANAGED_BY_LABEL}


UserLabels = Annotated[dict[str, str], AfterValidator(_user_labels)]

# --- small field types -----------------------------------------------------------------------

# RFC 7230 token, as the Gateway API and AI Gateway CRDs require for header names.
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}")


def _check_header_name(value: str) -> str:
    if not _HEADER_NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid HTTP header name: use 1..256 letters, digits or "
            "!#$%&'*+-.^_`|~ (no spaces or ':')"
        )
    return value


def _check_metadata_key(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"{value!r} is not a valid metadata key: it must be non-empty, no spaces")
    return value


def _check_rule_name(value: str) -> str:
    check_dns1123_subdomain(value)
    if value == RESERVED_RULE_NAME:
        raise ValueError(f"rule name {RESERVED_RULE_NAME!r} is reserved by the AI Gateway")
    return value


HeaderName = Annotated[str, AfterValidator(_check_header_name)]
MetadataKey = Annotated[str, AfterValidator(_check_metadata_key)]
RuleName = Annotated[str, AfterValidator(_check_rule_name)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- AIGatewayRoute --------------------------------------------------------------------------


class VariantTag(StrEnum):
    """Our role for a backend of a route; not an AI Gateway concept (kept in an annotation)."""

    STABLE = "stable"
    CANARY = "canary"
    SHADOW = "shadow"


class WeightedBackend(_Model):
    """One backendRef of the route: an AIServiceBackend and its share of traffic."""

    name: DNS1123Subdomain  # the AIServiceBackend
    namespace: DNS1123Label | None = None  # None: the route's namespace
    weight: StrictInt = Field(default=1, ge=0, le=MAX_WEIGHT)
    # 0 = primary; a higher number only receives traffic on failover/retry.
    priority: StrictInt = Field(default=0, ge=0, le=MAX_INT32)
    variant_tag: VariantTag | None = None
    # Model name sent upstream instead of the client's; None keeps the client's.
    model_name_override: NonEmptyStr | None = None


class LLMRequestCostType(StrEnum):
    INPUT_TOKEN = "InputToken"
    CACHED_INPUT_TOKEN = "CachedInputToken"
    CACHE_CREATION_INPUT_TOKEN = "CacheCreationInputToken"
    OUTPUT_TOKEN = "OutputToken"
    REASONING_TOKEN = "ReasoningToken"
    TOTAL_TOKEN = "TotalToken"
    CEL = "CEL"


class LLMRequestCost(_Model):
    """Token usage the gateway writes to Envoy metadata `io.envoy.ai_gateway/<metadata_key>`."""

    metadata_key: MetadataKey
    type: LLMRequestCostType
    cel: NonEmptyStr | None = None  # only, and always, with type CEL

    @model_validator(mode="after")
    def _cel_iff_type_cel(self) -> Self:
        if self.type is LLMRequestCostType.CEL and self.cel is None:
            raise ValueError(f"llm request cost {self.metadata_key!r}: type CEL needs a cel rule")
        if self.type is not LLMRequestCostType.CEL and self.cel is not None:
            raise ValueError(
                f"llm request cost {self.metadata_key!r}: cel is only allowed with type CEL, "
                f"not {self.type.value}"
            )
        return self


class BudgetPeriod(StrEnum):
    """Token budget window; each maps to exactly one Envoy Gateway rate-limit unit."""

    PER_SECOND = "per_second"
    PER_MINUTE = "per_minute"
    HOURLY = "hourly"
    DAILY = "daily"
    MONTHLY = "monthly"
    YEARLY = "yearly"


class RateLimitTarget(StrEnum):
    """What the BackendTrafficPolicy attaches to."""

    # The HTTPRoute the AI Gateway generates with the AIGatewayRoute's name: limits one route.
    HTTP_ROUTE = "HTTPRoute"
    # The whole Gateway: one budget per tenant across every route that writes the cost key.
    GATEWAY = "Gateway"


class RateLimitConfig(_Model):
    """Per-tenant token budget (and optional request rate) enforced by Envoy Gateway."""

    tenant_header: HeaderName  # one budget per distinct value of this header
    token_budget: StrictInt = Field(ge=1, le=MAX_RATE_LIMIT_REQUESTS)
    budget_period: BudgetPeriod
    requests_per_min: StrictInt | None = Field(default=None, ge=1, le=MAX_RATE_LIMIT_REQUESTS)
    target: RateLimitTarget = RateLimitTarget.HTTP_ROUTE
    # The llmRequestCosts metadata key that is charged against the budget. None: the route's
    # TotalToken cost (resolved when the route is constructed or the policy is built).
    cost_metadata_key: MetadataKey | None = None

    @field_validator("budget_period", mode="before")
    @classmethod
    def _no_weekly(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() in {"weekly", "week", "per_week"}:
            raise ValueError(
                f"budget_period {value!r} is not supported: Envoy Gateway 1.8 rate limits have "
                "no Week unit (only Second, Minute, Hour, Day, Month, Year; Week arrives in "
                "1.9). Use 'daily' with a seventh of the budget, or 'monthly'"
            )
        return value

    def resolved(self, costs: Sequence[LLMRequestCost]) -> RateLimitConfig:
        """This config with `cost_metadata_key` checked against, and filled from, `costs`.

        Raises InvalidError when the key names no cost of the route, or when it is None and the
        route has no single TotalToken cost to default to: a budget charged from a key nobody
        writes would never count anything.
        """
        keys = [cost.metadata_key for cost in costs]
        if self.cost_metadata_key is not None:
            if self.cost_metadata_key not in keys:
                raise InvalidError(
                    f"rate limit cost_metadata_key {self.cost_metadata_key!r} is not written by "
                    f"any llm_request_cost of the route (keys: {', '.join(keys) or 'none'})"
                )
            return self
        totals = [c.metadata_key for c in costs if c.type is LLMRequestCostType.TOTAL_TOKEN]
        if len(totals) != 1:
            found = "none" if not totals else ", ".join(totals)
            raise InvalidError(
                "rate limit needs cost_metadata_key, or exactly one TotalToken "
                f"llm_request_cost on the route to default to (TotalToken costs: {found})"
            )
        return RateLimitConfig.model_validate({**self.model_dump(), "cost_metadata_key": totals[0]})


class AIGatewayRoute(_Model):
    """One AIGatewayRoute with a single rule: requests for `model_name` go to `backends`.

    `rate_limit` is not part of the AIGatewayRoute object; it is stored as a separate
    BackendTrafficPolicy (see manifests.build_rate_limit_policy_manifest). It is resolved at
    construction, so `rate_limit.cost_metadata_key` is never None on a route.
    """

    name: DNS1123Subdomain
    namespace: DNS1123Label | None = None  # None: the configured default namespace
    model_name: str = Field(min_length=1, max_length=MAX_MODEL_NAME_LENGTH)
    backends: list[WeightedBackend] = Field(min_length=1, max_length=MAX_BACKENDS_PER_ROUTE)
    rate_limit: RateLimitConfig | None = None
    labels: UserLabels = Field(default_factory=dict)
    llm_request_costs: list[LLMRequestCost] = Field(
        default_factory=list, max_length=MAX_LLM_REQUEST_COSTS
    )
    rule_name: RuleName | None = None

    @field_validator("backends")
    @classmethod
    def _unique_names_and_gap_free_priorities(
        cls, backends: list[WeightedBackend]
    ) -> list[WeightedBackend]:
        names = [b.name for b in backends]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"backend names must be unique in a route; repeated: {dupes}")
        # Weight only splits traffic within a priority; a gap would leave a level that never
        # gets traffic in the order operators expect.
        levels = sorted({b.priority for b in backends})
        if levels != list(range(len(levels))):
            raise ValueError(
                f"backend priorities must be 0..N without gaps (0 = primary), got {levels}"
            )
        return backends

    @field_validator("llm_request_costs")
    @classmethod
    def _unique_cost_keys(cls, costs: list[LLMRequestCost]) -> list[LLMRequestCost]:
        keys = [c.metadata_key for c in costs]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"llm_request_costs metadata keys must be unique; repeated: {dupes}")
        return costs

    @model_validator(mode="after")
    def _resolve_rate_limit(self) -> Self:
        if self.rate_limit is not None:
            # Frozen model: the resolved config is set once, during validation.
            object.__setattr__(self, "rate_limit", self.rate_limit.resolved(self.llm_request_costs))
        return self


class Condition(_Model):
    """A status condition as the AI Gateway controller writes it."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: str | None = None  # RFC 3339, as stored
    observed_generation: StrictInt | None = None


class AIGatewayRouteStatus(_Model):
    ready: bool  # the controller accepted the route (condition Accepted=True)
    conditions: list[Condition] = Field(default_factory=list)
    last_updated: str | None = None  # latest lastTransitionTime among the conditions

    @property
    def messages(self) -> list[str]:
        return [c.message for c in self.conditions if c.message]

    @property
    def reconciled(self) -> bool:
        """Whether the AI Gateway controller has written any condition yet."""
        return bool(self.conditions)

    @property
    def rejection(self) -> str | None:
        """Why the controller refused the route (its NotAccepted message), else None."""
        for condition in self.conditions:
            if condition.type == NOT_ACCEPTED_CONDITION or (
                condition.type == ACCEPTED_CONDITION and condition.status == "False"
            ):
                return condition.message or condition.reason or condition.type
        return None


# --- AIServiceBackend ------------------------------------------------------------------------


class APISchemaName(StrEnum):
    OPENAI = "OpenAI"
    COHERE = "Cohere"
    AWS_BEDROCK = "AWSBedrock"
    AZURE_OPENAI = "AzureOpenAI"
    GCP_VERTEX_AI = "GCPVertexAI"
    GCP_ANTHROPIC = "GCPAnthropic"
    ANTHROPIC = "Anthropic"
    AWS_ANTHROPIC = "AWSAnthropic"


class APISchema(_Model):
    """The API the upstream speaks (the gateway translates the client's OpenAI calls to it)."""

    name: APISchemaName
    version: NonEmptyStr | None = None
    prefix: NonEmptyStr | None = None


class BackendRef(_Model):
    """Reference to an Envoy Gateway Backend; the CRD's CEL rule demands group and kind."""

    name: DNS1123Subdomain
    namespace: DNS1123Label | None = None
    group: Literal["gateway.envoyproxy.io"] = ENVOY_GATEWAY_GROUP
    kind: Literal["Backend"] = "Backend"


class AIServiceBackend(_Model):
    """An upstream model server as the AI Gateway sees it.

    The field is `api_schema`, not `schema`, because `schema` shadows a BaseModel method; the
    manifest field is still `spec.schema`.
    """

    name: DNS1123Subdomain
    namespace: DNS1123Label | None = None
    api_schema: APISchema
    backend_ref: BackendRef
    labels: UserLabels = Field(default_factory=dict)


# --- Backend ---------------------------------------------------------------------------------

# The CRD's own pattern; it accepts fewer IPv6 spellings than ipaddress does.
_CRD_IP_RE = re.compile(
    r"((25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
    r"|(([0-9a-fA-F]{1,4}:){1,7}[0-9a-fA-F]{1,4}|::|(([0-9a-fA-F]{1,4}:){0,5})?"
    r"(:[0-9a-fA-F]{1,4}){1,2})"
)


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if not _CRD_IP_RE.fullmatch(value):
        raise ValueError(f"{value!r}: this IPv6 spelling is refused by the Backend CRD")
    return value


class FQDNEndpoint(_Model):
    hostname: DNS1123Subdomain
    port: Port


class IPEndpoint(_Model):
    address: Annotated[str, AfterValidator(_check_ip)]
    port: Port


class Backend(_Model):
    """An Envoy Gateway Backend: where the model server listens (e.g. a KServe Service)."""

    name: DNS1123Subdomain
    namespace: DNS1123Label | None = None
    endpoints: list[FQDNEndpoint | IPEndpoint] = Field(min_length=1, max_length=MAX_ENDPOINTS)
    labels: UserLabels = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_mixed_endpoints(self) -> Self:
        fqdn = sum(isinstance(e, FQDNEndpoint) for e in self.endpoints)
        if 0 < fqdn < len(self.endpoints):
            raise ValueError("fqdn endpoints cannot be mixed with ip endpoints (Backend CRD rule)")
        return self


# --- BackendTrafficPolicy --------------------------------------------------------------------


class RateLimitPolicy(_Model):
    """A parsed rate-limit BackendTrafficPolicy: the config plus where it lives and points."""

    name: DNS1123Subdomain
    namespace: DNS1123Label
    route_name: DNS1123Subdomain  # the AIGatewayRoute the policy was derived from
    target_name: DNS1123Subdomain  # the HTTPRoute (= route name) or the Gateway it attaches to
    config: RateLimitConfig


# --- what a controller reads each tick -------------------------------------------------------


class RuleWeights(_Model):
    """The weights of one rule's backendRefs, by AIServiceBackend name (CRD default 1)."""

    name: str | None = None
    weights: dict[str, int]
    # For routing as the gateway would (the simulator): each match's header matches as
    # {name, type, value} dicts (type as stored; absent means Exact), and per backend its
    # modelNameOverride (only those that have one) and priority (CRD default 0).
    header_matches: list[list[dict[str, str]]] = Field(default_factory=list)
    model_name_overrides: dict[str, str] = Field(default_factory=dict)
    priorities: dict[str, int] = Field(default_factory=dict)


class RouteSnapshot(_Model):
    """One read of a route, reduced to what a traffic controller needs: weights per rule and
    annotations. Unlike AIGatewayRoute it describes ANY route (several rules, weights > 100)."""

    namespace: str
    name: str
    uid: str | None = None
    resource_version: str | None = None
    api_version: str
    annotations: dict[str, str] = Field(default_factory=dict)
    rules: list[RuleWeights] = Field(default_factory=list)
    # What the AI Gateway controller says of the route (no condition: it has not seen it).
    status: AIGatewayRouteStatus = Field(default_factory=lambda: AIGatewayRouteStatus(ready=False))
    # The sticky-session cohort rule (`<canary>-cohort`), if the route has one: its canary, its
    # session header and the exact share of sessions its regex selects (None when the regex is
    # not one manifests.cohorts writes: someone edited it).
    cohort_backend: str | None = None
    cohort_header: str | None = None
    cohort_percent: float | None = None
    # The tenant opt-in rule (`<canary>-opt-in`), if any: its canary, header and values.
    opt_in_backend: str | None = None
    opt_in_header: str | None = None
    opt_in_values: list[str] = Field(default_factory=list)

    def rule_for(self, backends: Sequence[str], rule: int | str | None = None) -> RuleWeights:
        """The rule `rule_index_for` finds."""
        return self.rules[self.rule_index_for(backends, rule)]

    def rule_index_for(self, backends: Sequence[str], rule: int | str | None = None) -> int:
        """The rule named/indexed by `rule`, else the one rule holding all `backends`.

        Raises LookupError naming what is missing, and when `rule` is None and several rules
        hold all `backends`: the weight writer (manifests.weight_patch_operations) refuses that
        case as ambiguous, so reading the first one would judge weights nobody writes.
        """
        if isinstance(rule, int):
            if not 0 <= rule < len(self.rules):
                raise LookupError(f"route has {len(self.rules)} rule(s), no rule index {rule}")
            index = rule
        elif isinstance(rule, str):
            named = [i for i, r in enumerate(self.rules) if r.name == rule]
            if not named:
                raise LookupError(f"route has no rule named {rule!r}")
            index = named[0]
        else:
            holding = [i for i, r in enumerate(self.rules) if all(b in r.weights for b in backends)]
            if not holding:
                raise LookupError(
                    f"no rule of the route holds all of {list(backends)}; rules hold "
                    f"{[sorted(r.weights) for r in self.rules]}"
                )
            if len(holding) > 1:
                raise LookupError(
                    f"rules {holding} of the route all hold {list(backends)}; select one by "
                    "name or index"
                )
            index = holding[0]
        found = self.rules[index]
        missing = [b for b in backends if b not in found.weights]
        if missing:
            label = f"{found.name!r}" if found.name else f"#{index}"
            raise LookupError(
                f"rule {label} does not hold backend(s) {missing}; it holds {sorted(found.weights)}"
            )
        return index


# --- the HTTPRoute the AI Gateway controller generates (read-only for us) ----------------------


class GeneratedBackendRef(_Model):
    """One backendRef of a generated HTTPRoute rule: an Envoy Gateway Backend (not the
    AIServiceBackend our route names) with the weight copied from our route."""

    name: str
    namespace: str | None = None
    weight: int = 1


class GeneratedRouteRule(_Model):
    name: str | None = None
    backend_refs: list[GeneratedBackendRef] = Field(default_factory=list)
    # The header matches, as {name, type, value} dicts, one list per HTTPRoute match.
    header_matches: list[list[dict[str, str]]] = Field(default_factory=list)


class GeneratedRoute(_Model):
    """The HTTPRoute the AI Gateway controller made of an AIGatewayRoute: rule i of our route is
    rule i here, backendRef j is backendRef j; the controller appends a `route-not-found` rule.
    This is what Envoy Gateway turns into Envoy's configuration."""

    namespace: str
    name: str
    owner_uid: str | None = None  # the AIGatewayRoute it was generated from
    rules: list[GeneratedRouteRule] = Field(default_factory=list)

    def weights_of_rule(self, index: int) -> list[int] | None:
        """The weights of rule `index`'s backendRefs in order, None if there is no such rule."""
        if not 0 <= index < len(self.rules):
            return None
        return [ref.weight for ref in self.rules[index].backend_refs]

    def weights_by_backend(self, index: int, names: Sequence[str]) -> dict[str, int] | None:
        """Rule `index`'s weights by the names of our rule's backends (`names`, in order: the
        HTTPRoute's backendRefs carry the Envoy Gateway Backend's name, not ours); None while
        the HTTPRoute has no such rule, or one of another length (not generated from this
        shape of our route yet)."""
        weights = self.weights_of_rule(index)
        if weights is None or len(weights) != len(names):
            return None
        return dict(zip(names, weights, strict=True))
