"""The GenAI metrics Envoy AI Gateway exports, served on a loopback port.

Names and labels follow the gateway (v0.5 .. v1.1): histograms `gen_ai_client_token_usage`
(label gen_ai_token_type), `gen_ai_server_request_duration_seconds` (failed attempts carry
error_type="_OTHER"), `gen_ai_server_time_to_first_token_seconds` and
`gen_ai_server_time_per_output_token_seconds` (streaming only), all with the common labels
gen_ai_operation_name, gen_ai_provider_name, gen_ai_original_model, gen_ai_request_model
(= the backendRef's modelNameOverride when set) and gen_ai_response_model.
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
    input_tokens: int
    output_tokens: int
    error: bool = False
    time_to_first_token_seconds: float | None = None  # streaming only
    time_per_output_token_seconds: float | None = None  # streaming only
    operation: str = "chat"
    provider: str = "openai"


class GenAIMetricsExporter:
    """Histograms with the gateway's names, served over HTTP for Prometheus to scrape."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "GenAI server request duration",
            [*COMMON_LABELS, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to first token (streaming)",
            COMMON_LABELS,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token (streaming)",
            COMMON_LABELS,
            buckets=TPOT_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per request",
            [*COMMON_LABELS, "gen_ai_token_type"],
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
        # An empty label value is the same series as no label at all in Prometheus.
        error_type = ERROR_TYPE_OTHER if request.error else ""
        self.duration.labels(**common, error_type=error_type).observe(request.duration_seconds)
        if request.error:
            return
        if request.time_to_first_token_seconds is not None:
            self.ttft.labels(**common).observe(request.time_to_first_token_seconds)
        if request.time_per_output_token_seconds is not None:
            self.tpot.labels(**common).observe(request.time_per_output_token_seconds)
        self.tokens.labels(**common, gen_ai_token_type="input").observe(request.input_tokens)
        self.tokens.labels(**common, gen_ai_token_type="output").observe(request.output_tokens)
