"""The GenAI metrics Envoy AI Gateway exports, served on a loopback port.

Names and labels follow the gateway (v0.5 .. v1.1): histograms `gen_ai_client_token_usage`
(label gen_ai_token_type), `gen_ai_server_request_duration_seconds` (failed attempts carry
error_type="_OTHER"), `gen_ai_server_time_to_first_token_seconds` and
`gen_ai_server_time_per_output_token_seconds` (streaming only), all with the common labels
gen_ai_operation_name, gen_ai_provider_name, gen_ai_original_model, gen_ai_request_model
(= the backendRef's modelNameOverride when set) and gen_ai_response_model, plus a tenant label
as the gateway adds when `controller.metricsRequestHeaderAttributes` maps the tenant header
(e.g. `x-tenant-id:tenant.id`, exported as `tenant_id`).

Token accounting as the gateway's (internal/metrics, v1.1.0): `input` is the unified total
input and INCLUDES `cached_input` and `cache_creation_input`; `reasoning` is part of `output`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, start_http_server

COMMON_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_original_model",
    "gen_ai_request_model",
    "gen_ai_response_model",
)
ERROR_TYPE_OTHER = "_OTHER"
TENANT_LABEL = "tenant_id"

# OpenTelemetry GenAI semantic-convention bucket boundaries, as the gateway's exporter uses.
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the gateway would observe it."""

    request_model: str
    original_model: str
    duration_seconds: float
    input_tokens: int  # total input, cached and cache-creation tokens included
    output_tokens: int  # reasoning tokens included
    error: bool = False
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0
    tenant: str = ""
    time_to_first_token_seconds: float | None = None  # streaming only
    time_per_output_token_seconds: float | None = None  # streaming only
    operation: str = "chat"
    provider: str = "openai"


class GenAIMetricsExporter:
    """Histograms with the gateway's names, served over HTTP for Prometheus to scrape."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tenant_label: str | None = TENANT_LABEL
    ) -> None:
        self.host = host
        self._requested_port = port
        self.registry = CollectorRegistry()
        self._tenant_label = tenant_label
        labels = [*COMMON_LABELS, *([tenant_label] if tenant_label else [])]
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "GenAI server request duration",
            [*labels, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to first token (streaming)",
            labels,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token (streaming)",
            labels,
            buckets=TPOT_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per request",
            [*labels, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        self._server, self._thread = start_http_server(
            self._requested_port, addr=self.host, registry=self.registry
        )
        self.port = int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def record(self, request: RequestRecord) -> None:
        common = {
            "gen_ai_operation_name": request.operation,
            "gen_ai_provider_name": request.provider,
            "gen_ai_original_model": request.original_model,
            "gen_ai_request_model": request.request_model,
            "gen_ai_response_model": request.request_model,
        }
        if self._tenant_label:
            common[self._tenant_label] = request.tenant
        # An empty label value is the same series as no label at all in Prometheus.
        error_type = ERROR_TYPE_OTHER if request.error else ""
        self.duration.labels(**common, error_type=error_type).observe(request.duration_seconds)
        if request.error:
            return
        if request.time_to_first_token_seconds is not None:
            self.ttft.labels(**common).observe(request.time_to_first_token_seconds)
        if request.time_per_output_token_seconds is not None:
            self.tpot.labels(**common).observe(request.time_per_output_token_seconds)
        for token_type, count in (
            ("input", request.input_tokens),
            ("cached_input", request.cached_input_tokens),
            ("cache_creation_input", request.cache_creation_input_tokens),
            ("output", request.output_tokens),
            ("reasoning", request.reasoning_tokens),
        ):
            self.tokens.labels(**common, gen_ai_token_type=token_type).observe(count)
