"""/metrics in the Prometheus text format (0.0.4), written fast: byte for byte what
prometheus_client's `generate_latest` writes, and served as its `make_wsgi_app` serves it.

At 10,000 rollouts /metrics holds ~90,000 per-rollout series and `generate_latest` spends
~1.5 s of CPU on them: per sample it validates and escapes every label name, escapes every
label value and formats each pair. Our per-rollout families have fixed label names, so a
family here (`TextFamily`) writes its lines from a str.format template that prometheus_client
itself wrote once (`FamilyTemplates`), with a placeholder per label value: label order, name and
quoting, the HELP and TYPE lines stay prometheus_client's. What the template leaves to us is
the escaping of label values (`escape`) and the value, which `floatToGoString` formats.

Every other metric of the registry (the Counters, Histograms, the webhook notifier's) is
written by `generate_latest` itself, in registration order between ours. `metrics_app` takes
the fast path for a plain scrape (GET, no OpenMetrics, no `name[]` filter, gzip or not) and
hands every other request to `make_wsgi_app`.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, gzip_accepted
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

WSGIApp = Callable[[dict[str, Any], Callable[..., object]], Iterable[bytes]]

# How the text format writes a value (NaN, +Inf, 1e+06, ...): prometheus_client's own
# function, unannotated there.
format_value = cast(Callable[[float], str], floatToGoString)


def escape(value: str) -> str:
    """A label value as the text format quotes it (prometheus_client's escaping of label
    values, which are always UTF-8): backslash, newline and double quote."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Escapes(dict[str, str]):
    """Label values escaped, by value, for one rendering: the rollout, namespace and route
    of a rollout recur in every family, and a hit costs a dict lookup, not three replaces.
    Made per rendering, so it holds no value that is no longer exported."""

    def __missing__(self, value: str) -> str:
        escaped = self[value] = escape(value)
        return escaped


class _Metrics:
    """Metrics already collected, as a collector: what `generate_latest` is given to write
    some of a registry's metrics."""

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics


def placeholder(index: int) -> str:
    """A label value standing for the index-th in `FamilyTemplates.lines`: one that
    prometheus_client writes as it is (no character it escapes), and no name contains."""
    return f"\x00{index}\x00"


class FamilyTemplates:
    """One gauge family's text as prometheus_client writes it, asked once: its header
    (HELP and TYPE lines) and, for samples of given labels, their lines as a str.format
    string where `{i}` stands for the i-th label value (escaped)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.header = self._text([])
        # One sample of value 0, written `name{...} 0.0`: its value becomes the last slot.
        written = " " + format_value(0.0) + "\n"
        count = len(self.labelnames)
        line = self.lines([([placeholder(i) for i in range(count)], 0.0)], count)
        if not line.endswith(written):
            raise RuntimeError(f"{name}: prometheus_client wrote an unexpected sample {line!r}")
        self.line = f"{line[: -len(written)]} {{{count}}}\n"

    def _text(self, samples: Sequence[tuple[Sequence[str], float]]) -> str:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in samples:
            family.add_metric(labels, value)
        return generate_latest(_Metrics([family])).decode()

    def lines(self, samples: Sequence[tuple[Sequence[str], float]], placeholders: int) -> str:
        """The samples' lines, label values `placeholder(i)` (i < placeholders) made `{i}`,
        other label values written as they are."""
        body = self._text(samples)[len(self.header) :].replace("{", "{{").replace("}", "}}")
        for index in range(placeholders):
            if placeholder(index) not in body:
                # prometheus_client escaped or dropped the placeholder: a template made from
                # this would be wrong, so refuse at start-up rather than serve it.
                raise RuntimeError(f"{self.name}: label {index} not found in {body!r}")
            body = body.replace(placeholder(index), f"{{{index}}}")
        return body

    def series(self, series: Iterable[tuple[Sequence[str], float]], escapes: Escapes) -> str:
        """The family's text: header, then one line per (label values, value)."""
        line = self.line.format
        escaped = escapes.__getitem__
        return self.header + "".join(
            [line(*map(escaped, labels), format_value(value)) for labels, value in series]
        )


class TextFamily(GaugeMetricFamily):
    """A gauge family, collected, that writes its own text (`text(escapes)`) and makes its
    prometheus_client samples only when they are asked for (`generate_latest`,
    `get_sample_value`, the OpenMetrics and `name[]` paths): a fast scrape makes none."""

    def __init__(
        self,
        templates: FamilyTemplates,
        add_samples: Callable[[GaugeMetricFamily], None],
        text: Callable[[Escapes], str],
    ) -> None:
        self._add_samples: Callable[[GaugeMetricFamily], None] | None = None
        super().__init__(templates.name, templates.documentation, labels=templates.labelnames)
        self._add_samples = add_samples
        self.text = text

    # Metric.samples is a plain attribute; a property with a setter keeps every reader and
    # writer of it (Metric.__init__, add_metric, _restricted_metric) working.
    @property
    def samples(self) -> list[Sample]:
        add_samples, self._add_samples = self._add_samples, None
        if add_samples is not None:
            add_samples(self)  # appends through this property, to self._samples
        return self._samples

    @samples.setter
    def samples(self, samples: list[Sample]) -> None:
        self._samples = samples


def render_text(registry: CollectorRegistry) -> bytes:
    """`generate_latest(registry)`, byte for byte: each TextFamily writes itself, and the
    metrics between them are written by `generate_latest`, in the registry's order."""
    out: list[bytes] = []
    others: list[Metric] = []
    escapes = Escapes()
    for metric in registry.collect():
        if isinstance(metric, TextFamily):
            if others:
                out.append(generate_latest(_Metrics(others)))
                others = []
            out.append(metric.text(escapes).encode())
        else:
            others.append(metric)
    if others:
        out.append(generate_latest(_Metrics(others)))
    return b"".join(out)


def _plain_scrape(environ: dict[str, Any]) -> bool:
    """Whether make_wsgi_app would answer with `generate_latest(registry)` (gzipped or not):
    a GET of the default text format without a `name[]` filter."""
    if environ.get("REQUEST_METHOD") != "GET" or environ.get("PATH_INFO") == "/favicon.ico":
        return False
    if "name[]" in parse_qs(str(environ.get("QUERY_STRING", ""))):
        return False
    encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))  # type: ignore[arg-type]
    return encoder is generate_latest and content_type == CONTENT_TYPE_PLAIN_0_0_4


def metrics_app(registry: CollectorRegistry) -> WSGIApp:
    """prometheus_client's `make_wsgi_app(registry)`, with a plain scrape written by
    `render_text`: the same status, headers and bytes (gzipped when asked), ~10x sooner."""
    fallback = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterable[bytes]:
        if not _plain_scrape(environ):
            return fallback(environ, start_response)  # type: ignore[no-any-return]
        output = render_text(registry)
        headers = [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):  # type: ignore[arg-type]
            output = gzip.compress(output)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [output]

    return app
