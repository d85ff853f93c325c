"""Prometheus metrics: every series streamtap exports, declared in one place.

`build_metrics(registry)` declares them and returns a `Metrics`, whose methods the proxy addon calls on the
event loop; `serve()` exposes the registry over HTTP. The names are a public contract (docs/metrics.md, the
Grafana dashboard and the alert rules in deploy/ use them).

Label values come from clients and upstreams, so they are bounded: see `normalize_label` and `Metrics`.
"""

from __future__ import annotations

import errno
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streamtap.anthropic_api import normalized_finish_reason
from streamtap.errors import ConfigError
from streamtap.records import FINAL_OUTCOMES, StreamRecord

DEFAULT_PORT = 9464

# OpenTelemetry's advisory boundaries for gen_ai.server.time_to_first_token (semantic-conventions,
# docs/gen-ai/gen-ai-metrics.md), extended past 10 s the way vLLM's vllm:time_to_first_token_seconds is
# (vLLM goes on 20, 40, 80, 160, 640, 2560); we stop at 120 s: a first token slower than two minutes is
# an outage, and +Inf still counts it.
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 120.0,
)  # fmt: skip
# OpenTelemetry's gen_ai.server.time_per_output_token boundaries (0.01 .. 2.5) continued to 10 s like vLLM's
# vllm:inter_token_latency_seconds, with 1-7.5 ms in front: a proxy sees chunks of fast providers arrive
# a few milliseconds apart, or in the same network read.
GAP_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
# vLLM's vllm:e2e_request_latency_seconds boundaries, with 10-100 ms in front for fast error responses.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

UNKNOWN = "unknown"
OTHER = "other"
NONE = "none"
MAX_LABEL_LENGTH = 64
# Pre-created at zero for every (model, upstream), so rate() and ratios see a series before the first event.
COMMON_FINISH_REASONS: tuple[str, ...] = ("stop", "length", "tool_calls", "content_filter", NONE)
# Accepted as label values without being pre-created; any other finish_reason becomes "other".
_KNOWN_FINISH_REASONS = frozenset((*COMMON_FINISH_REASONS, "function_call"))
TOKEN_TYPES: tuple[str, ...] = ("input", "output", "reasoning")

_SERIES_LABELS = ("model", "upstream")


def normalize_label(raw: str | None, max_length: int = MAX_LABEL_LENGTH) -> str:
    """A label value fit for exposition: no control or invisible characters, at most `max_length` long.

    Empty (or nothing left after cleaning) gives "unknown". Lone surrogates are dropped too: they would make
    the UTF-8 encoding of the whole exposition fail.
    """
    if not raw:
        return UNKNOWN
    if len(raw) > max_length or not raw.isprintable():
        raw = "".join(ch for ch in raw[: 4 * max_length] if ch.isprintable())[:max_length]
    return raw.strip() or UNKNOWN


def finish_reason_label(reason: str | None) -> str:
    """The `finish_reason` label: a known reason, "none" when absent, "other" for anything else."""
    if reason is None:
        return NONE
    return reason if reason in _KNOWN_FINISH_REASONS else OTHER


class _BoundedLabel:
    """Admits the first `limit` distinct normalized values of a label; later new values become "other"."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, raw: str | None) -> str:
        value = normalize_label(raw)
        if value in self._seen:
            return value
        with self._lock:
            if value in self._seen or len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


@dataclass(slots=True)
class _Series:
    """The label children of one (model, upstream), created once so each observation is a dict lookup."""

    model: str
    upstream: str
    ttft: Histogram
    ttfb: Histogram
    gap: Histogram
    tpot: Histogram
    duration: Histogram
    input_tokens: Counter
    output_tokens: Counter
    reasoning_tokens: Counter
    streams: dict[tuple[str, str], Counter] = field(default_factory=dict)


class Metrics:
    """Every streamtap metric, and the cheap calls that update them.

    The proxy addon calls `stream_started` and `stream_finished` (exactly once each per stream) and
    `tap_error` on the event loop; the recorder calls `recorder_written` / `recorder_dropped` from its
    writer thread and hands its queue-depth function to `bind_recorder`. All of them only inc()/observe()
    on label children cached per (model, upstream).

    `model` is the model the client asked for (falling back to the one the response named); `upstream` is
    the upstream host. At most `max_models` model values and `max_upstreams` upstream values are exported,
    later new ones are counted as "other"; and at most `max_pairs` (model, upstream) combinations, later new
    ones counted as ("other", "other"). A forward proxy's clients choose both the model and the host, so the
    pair bound is what caps the exposition (each pair costs about 200 series).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        ttft_buckets: Sequence[float] = TTFT_BUCKETS,
        gap_buckets: Sequence[float] = GAP_BUCKETS,
        duration_buckets: Sequence[float] = DURATION_BUCKETS,
        max_models: int = 50,
        max_upstreams: int = 50,
        max_pairs: int = 200,
    ) -> None:
        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, _SERIES_LABELS, registry=registry, buckets=buckets)

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.ttft = histogram(
            "streamtap_time_to_first_token_seconds",
            "Time from the complete client request to the first event carrying generated tokens.",
            ttft_buckets,
        )
        self.ttfb = histogram(
            "streamtap_time_to_first_byte_seconds",
            "Time from the complete client request to the first response body byte from upstream.",
            ttft_buckets,
        )
        self.gap = histogram(
            "streamtap_inter_chunk_gap_seconds",
            "Gap between consecutive token-carrying events of a stream (one sample per gap).",
            gap_buckets,
        )
        self.tpot = histogram(
            "streamtap_time_per_output_token_seconds",
            "Per stream: (duration - time to first token) / (completion tokens - 1), when usage is reported.",
            gap_buckets,
        )
        self.duration = histogram(
            "streamtap_stream_duration_seconds",
            "Time from the complete client request to the end of the response.",
            duration_buckets,
        )
        self.streams = counter(
            "streamtap_streams",
            "Finished exchanges by outcome and finish reason.",
            (*_SERIES_LABELS, "outcome", "finish_reason"),
        )
        self.tokens = counter(
            "streamtap_tokens",
            "Tokens reported in usage: input (prompt), output (completion, reasoning included), reasoning.",
            (*_SERIES_LABELS, "type"),
        )
        self.active = Gauge(
            "streamtap_active_streams", "Exchanges started and not finished yet.", registry=registry
        )
        self.queue_depth = Gauge(
            "streamtap_recorder_queue_depth",
            "Records waiting for the recorder's writer thread.",
            registry=registry,
        )
        self.written = counter("streamtap_recorder_written", "Records the recorder wrote to the database.")
        self.dropped = counter(
            "streamtap_recorder_dropped", "Records the recorder dropped (queue full or write failed)."
        )
        self.tap_errors = counter(
            "streamtap_tap_errors", "Failures inside the tap; the client's stream passed through unchanged."
        )
        self._model_label = _BoundedLabel(max_models)
        self._upstream_label = _BoundedLabel(max_upstreams)
        self._max_pairs = max_pairs
        self._series: dict[tuple[str, str], _Series] = {}
        self._series_lock = threading.Lock()

    def stream_started(self, model: str | None, upstream: str) -> None:
        """A client request arrived: count it as active and make sure its zero series exist."""
        self.active.inc()
        self._series_for(model, upstream)

    def stream_finished(self, record: StreamRecord) -> None:
        """An exchange ended (any outcome): record every observation it carries."""
        self.active.dec()
        series = self._series_for(record.request_model or record.model, record.host)
        reason = record.finish_reason
        if record.api == "anthropic.messages":
            reason = normalized_finish_reason(reason)  # end_turn -> stop, max_tokens -> length, ...
        self._streams_child(series, record.outcome.value, finish_reason_label(reason)).inc()
        if record.ttfb_ms is not None:
            series.ttfb.observe(record.ttfb_ms / 1000)
        if record.ttft_ms is not None:
            series.ttft.observe(record.ttft_ms / 1000)
        if record.duration_ms is not None:
            series.duration.observe(record.duration_ms / 1000)
        gaps = record.gaps_ms
        if gaps:
            observe_all(series.gap, [gap_ms / 1000 for gap_ms in gaps])
        usage = record.usage
        if usage is None:
            return
        if usage.prompt_tokens:
            series.input_tokens.inc(usage.prompt_tokens)
        if usage.completion_tokens:
            series.output_tokens.inc(usage.completion_tokens)
        if usage.reasoning_tokens:
            series.reasoning_tokens.inc(usage.reasoning_tokens)
        completion = usage.completion_tokens
        if (
            completion is not None
            and completion > 1
            and record.duration_ms is not None
            and record.ttft_ms is not None
            and record.duration_ms >= record.ttft_ms
        ):
            series.tpot.observe((record.duration_ms - record.ttft_ms) / 1000 / (completion - 1))

    def tap_error(self) -> None:
        """The tap failed on a stream (and let it pass through)."""
        self.tap_errors.inc()

    def recorder_written(self, n: int = 1) -> None:
        """The recorder committed `n` records."""
        self.written.inc(n)

    def recorder_dropped(self, n: int = 1) -> None:
        """The recorder lost `n` records."""
        self.dropped.inc(n)

    def bind_recorder(self, depth_fn: Callable[[], float]) -> None:
        """Read the recorder queue depth from `depth_fn` at every scrape (called on the scrape thread)."""

        def depth() -> float:
            # An exception here would fail the whole scrape, hiding every other metric.
            try:
                return float(depth_fn())
            except Exception:
                return math.nan

        self.queue_depth.set_function(depth)

    def _series_for(self, model: str | None, upstream: str | None) -> _Series:
        key = (self._model_label(model), self._upstream_label(upstream))
        series = self._series.get(key)
        if series is not None:
            return series
        with self._series_lock:
            if key not in self._series and len(self._series) >= self._max_pairs:
                key = (OTHER, OTHER)
            series = self._series.get(key)
            if series is None:
                series = self._new_series(*key)
                self._series[key] = series
        return series

    def _new_series(self, model: str, upstream: str) -> _Series:
        series = _Series(
            model=model,
            upstream=upstream,
            ttft=self.ttft.labels(model, upstream),
            ttfb=self.ttfb.labels(model, upstream),
            gap=self.gap.labels(model, upstream),
            tpot=self.tpot.labels(model, upstream),
            duration=self.duration.labels(model, upstream),
            input_tokens=self.tokens.labels(model, upstream, "input"),
            output_tokens=self.tokens.labels(model, upstream, "output"),
            reasoning_tokens=self.tokens.labels(model, upstream, "reasoning"),
        )
        for outcome in FINAL_OUTCOMES:
            for reason in COMMON_FINISH_REASONS:
                series.streams[outcome.value, reason] = self.streams.labels(
                    model, upstream, outcome.value, reason
                )
        return series

    def _streams_child(self, series: _Series, outcome: str, reason: str) -> Counter:
        child = series.streams.get((outcome, reason))
        if child is None:
            child = self.streams.labels(series.model, series.upstream, outcome, reason)
            series.streams[outcome, reason] = child
        return child


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for every v, with one increment per bucket hit instead of two per value.

    A stream's gaps arrive together when it ends; observing them one by one took two locked increments
    each, about a tenth of the worker's time per event. This reaches into the client's histogram child
    (`_upper_bounds`, `_buckets`, `_sum`, unchanged for years); should those change, it falls back to
    `observe()`.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not (
        isinstance(bounds, list)
        and isinstance(buckets, list)
        and len(bounds) == len(buckets)
        and total is not None
    ):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value, as observe() picks it
    total.inc(math.fsum(values))
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)


def build_metrics(
    registry: CollectorRegistry,
    *,
    ttft_buckets: Sequence[float] | None = None,
    gap_buckets: Sequence[float] | None = None,
    duration_buckets: Sequence[float] | None = None,
    max_models: int = 50,
    max_upstreams: int = 50,
    max_pairs: int = 200,
) -> Metrics:
    """Declare every streamtap metric on `registry`.

    `ttft_buckets` serve time to first token and first byte, `gap_buckets` the inter-chunk gap and time per
    output token, `duration_buckets` the stream duration; None means the defaults above.
    """
    return Metrics(
        registry,
        ttft_buckets=TTFT_BUCKETS if ttft_buckets is None else ttft_buckets,
        gap_buckets=GAP_BUCKETS if gap_buckets is None else gap_buckets,
        duration_buckets=DURATION_BUCKETS if duration_buckets is None else duration_buckets,
        max_models=max_models,
        max_upstreams=max_upstreams,
        max_pairs=max_pairs,
    )


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """The HTTP server `serve` started, on its daemon thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return self.server.server_port

    def close(self) -> None:
        """Stop serving, release the port and wait for the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> MetricsServer:
    """Serve `registry` at http://host:port/metrics (any path, in fact) from a daemon thread.

    Port 0 picks a free port (see `MetricsServer.port`). Raises ConfigError if the address cannot be bound.
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"metrics port {port} is in use") from e
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
    return MetricsServer(server, thread)
