"""Which queries PrometheusMetricsProvider sends by GET and which by POST."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from rollout.analysis.prometheus import PrometheusMetricsProvider

AT = 1_700_000_000.0


class FakeResponse:
    status_code = 200
    content = b'{"status": "success", "data": {"resultType": "vector", "result": []}}'


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> tuple[PrometheusMetricsProvider, list[str]]:
    provider = PrometheusMetricsProvider("http://prometheus.invalid:9090", post_above=100)
    methods: list[str] = []

    def get(query: str, params: Any = None) -> Any:
        methods.append("GET")
        return []

    def post(url: str, data: Any = None, **kwargs: Any) -> FakeResponse:
        methods.append("POST")
        assert data["query"]
        return FakeResponse()

    monkeypatch.setattr(provider._client, "custom_query", get)
    monkeypatch.setattr(provider._client._session, "post", post)
    return provider, methods


def encoded_length(promql: str) -> int:
    return len(urlencode({"query": promql, "time": f"{AT:.3f}"}))


def test_get_up_to_the_encoded_limit_and_post_beyond(
    sent: tuple[PrometheusMetricsProvider, list[str]],
) -> None:
    provider, methods = sent
    base = encoded_length("")
    at_limit = "x" * (100 - base)
    assert encoded_length(at_limit) == 100
    provider._query(at_limit, AT)
    provider._query(at_limit + "x", AT)
    # short as text, long once encoded (each '"' is %22)
    quoted = '"' * 30
    assert len(quoted) <= 100 < encoded_length(quoted)
    provider._query(quoted, AT)
    provider._query("x" * 5000, AT)
    assert methods == ["GET", "POST", "POST", "POST"]
    assert provider.queries_posted == 3
