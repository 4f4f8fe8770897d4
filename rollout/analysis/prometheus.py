"""The Prometheus adapter of the metrics port, over prometheus_api_client.

Contract: the only module that imports prometheus_api_client. It sends the queries that
`queries.plan_queries` builds, one HTTP request each, and turns every failure into a
`QueryFailure` (hence `Measurement.error`), never an exception: a metrics outage must hold a
rollout, not crash the controller. The client is built once and reused across ticks.

All queries of one tick are evaluated at the same instant (the API's `time` parameter):
increase() extrapolates to the end of its range, so two queries evaluated a few milliseconds
apart would scale their counts differently, and a ratio of two of them (tokens per request,
cost per request) would be off by that much.

A query whose URL-encoded form is longer than `post_above` bytes (a batched query names every
variant: ~138 kB at 1000 rollouts) is sent as a form-encoded POST, which the HTTP API accepts
for /api/v1/query: a proxy in front of Prometheus that limits URLs (nginx's default buffers are
8 kB) would refuse it as a GET.
"""

from __future__ import annotations

import ast
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlencode

import orjson
import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from rollout.analysis.provider import AnalysisRequest, Measurements, QueryEvent
from rollout.analysis.queries import (
    Query,
    QueryFailure,
    QueryResult,
    Sample,
    Scalar,
    Vector,
    assemble_measurements,
    plan_queries,
)

# Statuses worth one more try: a proxy or Prometheus itself momentarily overloaded.
_RETRY_STATUSES = (502, 503, 504)
# prometheus_api_client reports a non-200 answer only as this text, so it is parsed back.
_API_ERROR = re.compile(r"^HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)
_BODY_LIMIT = 300
# Longer queries go by POST: well under the 8 kB URL limits of common proxies.
DEFAULT_POST_ABOVE: Final = 4096


class PrometheusMetricsProvider:
    """`MetricsProvider` over a Prometheus server's HTTP API.

    `queries_issued` counts the queries `measure` has sent (for "queries per tick");
    `on_query` is called after each one.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        disable_ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        retries: int = 1,
        on_query: Callable[[QueryEvent], None] | None = None,
        post_above: int = DEFAULT_POST_ABOVE,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.post_above = post_above
        self.queries_issued = 0
        self.queries_posted = 0  # of queries_issued, those sent by POST
        self._on_query = on_query
        self._lock = threading.Lock()
        client_options: dict[str, Any] = {
            "url": self.url,
            "headers": dict(headers) if headers else None,
            "disable_ssl": disable_ssl,
            "retry": _retry_policy(retries),
            # requests takes float seconds; the library's `int` annotation is too narrow.
            "timeout": timeout,
        }
        self._client = PrometheusConnect(**client_options)

    def __enter__(self) -> PrometheusMetricsProvider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def measure(self, requests: Sequence[AnalysisRequest]) -> Measurements:
        plan = plan_queries(requests)
        return assemble_measurements(plan, self.run(plan.queries))

    def run(self, queries: Sequence[Query], at: float | None = None) -> list[QueryResult]:
        """Send each query, all evaluated at `at` (Unix seconds; default: now); once Prometheus
        is unreachable, the rest of the tick is not sent.

        Skipping matters with many queries per tick: each would otherwise wait for its own
        connect timeout, and the answer would be the same.
        """
        evaluated_at = time.time() if at is None else at
        results: list[QueryResult] = []
        unreachable: str | None = None
        for query in queries:
            if unreachable is not None:
                results.append(QueryFailure(f"not sent: {unreachable}"))
                continue
            result, reachable = self._send(query, evaluated_at)
            if not reachable:
                assert isinstance(result, QueryFailure)
                unreachable = result.message
            results.append(result)
        return results

    def is_online(self) -> bool:
        """Whether the query API answers a trivial query (so URL, path prefix and auth work)."""
        try:
            self._client.custom_query(query="vector(1)")
        except (PrometheusApiClientException, requests.RequestException, ValueError, KeyError):
            return False
        return True

    def _send(self, query: Query, at: float) -> tuple[QueryResult, bool]:
        """(result, whether Prometheus was reachable)."""
        with self._lock:
            self.queries_issued += 1
        started = time.perf_counter()
        reachable = True
        result: QueryResult
        try:
            result = decode_result(self._query(query.promql, at))
        except requests.ConnectionError as exc:  # refused, DNS, TLS, connect timeout, reset
            reachable = False
            result = QueryFailure(f"Prometheus at {self.url} unreachable: {transport_cause(exc)}")
        except requests.Timeout:
            result = QueryFailure(
                f"Prometheus at {self.url} did not answer within {self.timeout:g}s"
            )
        except PrometheusApiClientException as exc:
            result = QueryFailure(describe_api_error(str(exc)))
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            # A 200 whose body is not the query API's JSON: a proxy's page, a wrong URL path.
            result = QueryFailure(f"unexpected answer from {self.url}: {exc!r}"[:_BODY_LIMIT])
        if self._on_query is not None:
            self._on_query(
                QueryEvent(
                    purpose=query.purpose,
                    seconds=time.perf_counter() - started,
                    failed=isinstance(result, QueryFailure),
                )
            )
        return result, reachable

    def _query(self, promql: str, at: float) -> Any:
        """The `data.result` of one instant query; GET, or POST when it is long. Errors are
        raised as prometheus_api_client raises them, so both paths read the same."""
        params = {"query": promql, "time": f"{at:.3f}"}
        # Encoding never shortens the text: a query longer than the limit is sent by POST
        # without being encoded once more only to be measured (~0.1 MB at 1000 rollouts).
        if len(promql) <= self.post_above and len(urlencode(params)) <= self.post_above:
            return self._client.custom_query(query=promql, params={"time": params["time"]})
        with self._lock:
            self.queries_posted += 1
        session = self._client._session  # the client's: same retries, TLS and connection pool
        response = session.post(
            f"{self.url}/api/v1/query",
            data=params,  # application/x-www-form-urlencoded
            headers=self._client.headers,
            verify=session.verify,
            timeout=self.timeout,
        )
        if response.status_code != 200:
            raise PrometheusApiClientException(
                f"HTTP Status Code {response.status_code} ({response.content!r})"
            )
        # orjson: a third of the stdlib's CPU for the ~100 kB answer of a 1000-rollout batch;
        # a body that is not JSON raises a ValueError, as response.json() does.
        return orjson.loads(response.content)["data"]["result"]


def _retry_policy(retries: int) -> Retry:
    # read=False: a read timeout is then raised as such (urllib3 would otherwise wrap it into a
    # "max retries" connection error) and a slow query is not sent again to a busy server.
    # raise_on_status=False: after the last retry the error response comes back, so its body
    # (Prometheus's error text) reaches the message.
    return Retry(
        total=retries,
        connect=retries,
        read=False,
        status=retries,
        backoff_factor=0.2,
        status_forcelist=_RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),
        raise_on_status=False,
    )


# ---------------------------------------------------------------------------------------------
# Pure helpers: Prometheus's answers and errors into our types


def decode_result(raw: object) -> QueryResult:
    """The `data.result` of an instant query as a Vector or a Scalar.

    Values keep Prometheus's special floats: "NaN" is nan, "+Inf"/"-Inf" are infinities.
    """
    if not isinstance(raw, list):
        return QueryFailure(f"unexpected result {_shorten(repr(raw))}")
    if len(raw) == 2 and not isinstance(raw[0], dict):
        # scalar (and string) results are a bare [timestamp, "value"] pair
        value = _float(raw[1])
        if value is None:
            return QueryFailure(f"the query returned a string, not a number: {raw[1]!r}")
        return Scalar(value)
    samples: list[Sample] = []
    for item in raw:
        if not isinstance(item, dict) or "value" not in item:
            if isinstance(item, dict) and "values" in item:
                return QueryFailure("the query returned a range vector; use an instant vector")
            return QueryFailure(f"unexpected series {_shorten(repr(item))}")
        value = _float(item["value"][1])
        if value is None:
            return QueryFailure(f"unexpected sample value {item['value'][1]!r}")
        labels = item.get("metric", {})
        samples.append(Sample(labels={str(k): str(v) for k, v in labels.items()}, value=value))
    return Vector(tuple(samples))


def _float(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return float(text)  # also takes "NaN", "+Inf" and "-Inf"
    except ValueError:
        return None


def describe_api_error(text: str) -> str:
    """prometheus_api_client's "HTTP Status Code 400 (b'{...}')" as "HTTP 400 bad_data: ...".

    Prometheus answers 400 for a query that does not parse, 422 for one that cannot be
    executed and 503 for a timed-out or cancelled one, each with a JSON `error`.
    """
    match = _API_ERROR.match(text)
    if match is None:
        return f"Prometheus error: {_shorten(text)}"
    status, body_repr = match.groups()
    try:
        body = ast.literal_eval(body_repr)
    except (ValueError, SyntaxError):
        body = body_repr
    body_text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        payload = json.loads(body_text)
        error = str(payload["error"])
        error_type = str(payload.get("errorType", "error"))
    except (ValueError, KeyError, TypeError):
        return f"Prometheus answered HTTP {status}: {_shorten(body_text.strip())}"
    return f"Prometheus answered HTTP {status} ({error_type}): {error}"


def transport_cause(exc: BaseException) -> str:
    """The innermost cause of a connection failure ("[Errno 111] Connection refused").

    requests' own message repeats the whole URL, query included, which for a batched query
    is thousands of characters.
    """
    cause = exc
    for _ in range(10):  # the chain is short; a cycle must not hang us
        if isinstance(cause, MaxRetryError) and cause.reason is not None:
            inner: BaseException | None = cause.reason
        elif cause.args and isinstance(cause.args[0], BaseException):
            inner = cause.args[0]
        else:
            inner = cause.__cause__
        if inner is None or inner is cause:
            break
        cause = inner
    return _shorten(str(cause) or type(cause).__name__)


def _shorten(text: str) -> str:
    return text if len(text) <= _BODY_LIMIT else text[: _BODY_LIMIT - 3] + "..."
