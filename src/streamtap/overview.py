"""The dashboard's read functions: aggregations over a time window and filters, in SQL both SQLite and
PostgreSQL run.

Latency percentiles come from histograms the database computes: each value falls in a bucket two
significant digits wide (0.01 ms below 1 ms, 0.1 ms below 10 ms, 1 ms below 100 ms, 10 ms below 1 s, ...), the
query returns the count per bucket (per model and time bucket), and a percentile is interpolated linearly
inside the bucket that holds its rank, as Prometheus' `histogram_quantile` does. The error is below one
bucket width (at most 10 %, typically under 1 %), and no query loads samples.

Inter-chunk gaps are the times between consecutive token-carrying events of a stream (`StreamRecord.gaps_ms`,
as `streamtap stats` and the Prometheus histogram count them), read from each stream's event pack. When a
window holds more than `GAP_SAMPLE_LIMIT` of them, they are read from a uniform sample of the window's
streams (those whose random id falls below a bound), so the overview stays fast on large databases;
`Overview.gap_sample` says which share was read.
"""

from __future__ import annotations

import json
import math
import sqlite3
import string
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .db.models import Stream, StreamEventPack
from .db.packs import json_values, number
from .records import Outcome, StreamRecord

GAP_SAMPLE_LIMIT = 250_000
ERROR_OUTCOMES = (Outcome.HTTP_ERROR.value, Outcome.MODEL_ERROR.value)
DISCONNECT_OUTCOMES = (Outcome.CLIENT_DISCONNECT.value, Outcome.UPSTREAM_DISCONNECT.value)
WINDOWS: dict[str, timedelta | None] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "all": None,
}
# Time-bucket widths, seconds: the smallest that cuts the window into at most MAX_TIME_BUCKETS.
BUCKET_WIDTHS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800)
MAX_TIME_BUCKETS = 90
# Latency buckets: below each limit (ms), values are floored to a multiple of 10**exponent ms.
_LATENCY_STEPS: tuple[tuple[float, int], ...] = (
    (1.0, -2),
    (10.0, -1),
    (100.0, 0),
    (1_000.0, 1),
    (10_000.0, 2),
    (100_000.0, 3),
    (math.inf, 4),
)
# Display bins of the histograms: these multiples of each power of ten (all are latency-bucket bounds).
_DISPLAY_EDGES = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
_MIX_TOP = 4  # finish reasons named in a model's mix


# -- dialect-portable SQL pieces ------------------------------------------------------------------


class latency_bucket(FunctionElement[float]):
    """The lower bound (ms) of the latency bucket a non-negative value falls in."""

    type = sa.Double()
    inherit_cache = True
    name = "latency_bucket"


class time_bucket(FunctionElement[int]):
    """`floor(epoch seconds of a timestamp / width)`: time_bucket(column, literal width)."""

    type = sa.BigInteger()
    inherit_cache = True
    name = "time_bucket"


def _latency_case(v: str, floor: str, multiply: str) -> str:
    whens = []
    for limit, exponent in _LATENCY_STEPS:
        if exponent < 0:
            scale = 10**-exponent
            expr = f"{floor.format(f'{v} * {scale}')} / {scale}{multiply}"
        else:
            scale = 10**exponent
            expr = f"{floor.format(f'{v} / {scale}')} * {scale}{multiply}"
        whens.append(expr if math.isinf(limit) else f"WHEN {v} < {limit:g} THEN {expr}")
    return "CASE " + " ".join(whens[:-1]) + f" ELSE {whens[-1]} END"


@compiles(latency_bucket)
def _latency_bucket_default(element: latency_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    return _latency_case(compiler.process(element.clauses, **kw), "FLOOR({})", "")


@compiles(latency_bucket, "sqlite")
def _latency_bucket_sqlite(element: latency_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite has FLOOR only when built with its math functions; CAST truncates, which floors values >= 0.
    # The `.0` makes the divisions real.
    return _latency_case(compiler.process(element.clauses, **kw), "CAST({} AS INTEGER)", ".0")


@compiles(time_bucket)
def _time_bucket_default(element: time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    col, width = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {col}) / {width}) AS BIGINT)"


@compiles(time_bucket, "sqlite")
def _time_bucket_sqlite(element: time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    col, width = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CAST(strftime('%s', {col}) AS INTEGER) / {width})"


def model_expr() -> sa.ColumnElement[str]:
    """A stream's model: the requested one, else the one the upstream reported, else "unknown"."""
    return sa.func.coalesce(Stream.request_model, Stream.model, "unknown")


# -- filters -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """What every dashboard view is narrowed to. Empty tuples mean "any"."""

    since: datetime | None = None
    models: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()

    @classmethod
    def for_window(
        cls,
        window: str,
        *,
        now: datetime | None = None,
        models: tuple[str, ...] = (),
        hosts: tuple[str, ...] = (),
        outcomes: tuple[str, ...] = (),
        api_keys: tuple[str, ...] = (),
    ) -> Filters:
        """Filters for one of `WINDOWS` ("15m" ... "all") ending at `now`."""
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}: expected one of {', '.join(WINDOWS)}")
        span = WINDOWS[window]
        since = None if span is None else (now or datetime.now(UTC)) - span
        return cls(since=since, models=models, hosts=hosts, outcomes=outcomes, api_keys=api_keys)

    def where(self) -> list[sa.ColumnElement[bool]]:
        clauses: list[sa.ColumnElement[bool]] = []
        if self.since is not None:
            since = self.since if self.since.tzinfo else self.since.replace(tzinfo=UTC)
            clauses.append(Stream.started_at >= since)
        if self.models:
            clauses.append(model_expr().in_(self.models))
        if self.hosts:
            clauses.append(Stream.host.in_(self.hosts))
        if self.outcomes:
            clauses.append(Stream.outcome.in_(self.outcomes))
        if self.api_keys:
            clauses.append(Stream.api_key_fp.in_(self.api_keys))
        return clauses


@dataclass(frozen=True, slots=True)
class FilterOptions:
    """The values each filter can take, from what is recorded."""

    models: tuple[str, ...]
    hosts: tuple[str, ...]
    outcomes: tuple[str, ...]
    api_keys: tuple[str, ...]


def filter_options(session: Session) -> FilterOptions:
    def distinct(col: Any) -> tuple[str, ...]:
        rows = session.execute(sa.select(col).where(col.is_not(None)).group_by(col)).scalars()
        return tuple(sorted(str(v) for v in rows))

    return FilterOptions(
        models=distinct(model_expr()),
        hosts=distinct(Stream.host),
        outcomes=distinct(Stream.outcome),
        api_keys=distinct(Stream.api_key_fp),
    )


def default_window(session: Session, *, now: datetime | None = None) -> str:
    """The window the dashboard opens with: the smallest of the last 15 minutes, hour, 6 or 24 hours that
    holds every stream of the last 24 hours (a store that started recording minutes ago fills the page instead
    of a sliver of a day), or "all" when none is that recent (an older or imported store)."""
    end = now or datetime.now(UTC)
    first = session.scalar(
        sa.select(sa.func.min(Stream.started_at)).where(Stream.started_at >= end - timedelta(hours=24))
    )
    if first is None:
        return "all"
    age = end - _aware(first)
    return next((name for name in ("15m", "1h", "6h") if age <= (WINDOWS[name] or age)), "24h")


def has_streams(session: Session) -> bool:
    """Whether anything at all is recorded (ignoring filters)."""
    return session.execute(sa.select(Stream.id).limit(1)).first() is not None


# -- the raw aggregates ---------------------------------------------------------------------------


class CountRow(NamedTuple):
    """Streams of one model, time bucket, outcome and finish reason."""

    model: str
    bucket: int
    outcome: str
    finish_reason: str | None
    streams: int
    gaps: int  # token events after the first: the stream's gap samples
    completion_tokens: int  # of the streams with usage and a first token
    generation_ms: float  # their time from first token to the end


class Cell(NamedTuple):
    """How many values of one model and time bucket fell in the latency bucket starting at `lo` (ms)."""

    model: str
    bucket: int
    lo: float
    n: int


def time_range(
    session: Session, filters: Filters, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The span the overview's time axis covers: the window up to `now`, or for no window what is recorded."""
    end = now or datetime.now(UTC)
    if filters.since is not None:
        return filters.since, end
    first, last = session.execute(
        sa.select(sa.func.min(Stream.started_at), sa.func.max(Stream.started_at)).where(*filters.where())
    ).one()
    if first is None:
        return end - timedelta(hours=1), end
    return _aware(first), max(_aware(last), _aware(first) + timedelta(minutes=1))


def bucket_width(start: datetime, end: datetime) -> int:
    """The time-bucket width (s) for a span: the smallest of `BUCKET_WIDTHS` giving <= MAX_TIME_BUCKETS."""
    span = max((end - start).total_seconds(), 1.0)
    return next((w for w in BUCKET_WIDTHS if span / w <= MAX_TIME_BUCKETS), BUCKET_WIDTHS[-1])


def stream_counts(session: Session, filters: Filters, *, width: int) -> list[CountRow]:
    s = Stream
    usable = sa.and_(s.completion_tokens.is_not(None), s.ttft_ms.is_not(None), s.duration_ms > s.ttft_ms)
    inner = (
        sa.select(
            model_expr().label("model"),
            time_bucket(s.started_at, sa.literal_column(str(int(width)))).label("bucket"),
            s.outcome,
            s.finish_reason,
            sa.case((s.token_event_count > 1, s.token_event_count - 1), else_=0).label("gaps"),
            sa.case((usable, s.completion_tokens), else_=0).label("tokens"),
            sa.case((usable, s.duration_ms - s.ttft_ms), else_=0.0).label("gen_ms"),
        )
        .where(*filters.where())
        .subquery()
    )
    c = inner.c
    stmt = sa.select(
        c.model,
        c.bucket,
        c.outcome,
        c.finish_reason,
        sa.func.count(),
        sa.func.sum(c.gaps),
        sa.func.sum(c.tokens),
        sa.func.sum(c.gen_ms),
    ).group_by(c.model, c.bucket, c.outcome, c.finish_reason)
    return [
        CountRow(m, int(b), o, r, int(n), int(g or 0), int(t or 0), float(ms or 0.0))
        for m, b, o, r, n, g, t, ms in session.execute(stmt)
    ]


def _cells(session: Session, inner: sa.Subquery) -> list[Cell]:
    c = inner.c
    stmt = sa.select(c.model, c.bucket, c.lo, sa.func.count()).group_by(c.model, c.bucket, c.lo)
    return [Cell(m, int(b), float(lo), int(n)) for m, b, lo, n in session.execute(stmt)]


def ttft_cells(session: Session, filters: Filters, *, width: int) -> list[Cell]:
    """The TTFT histogram per model and time bucket."""
    s = Stream
    inner = (
        sa.select(
            model_expr().label("model"),
            time_bucket(s.started_at, sa.literal_column(str(int(width)))).label("bucket"),
            latency_bucket(s.ttft_ms).label("lo"),
        )
        .where(s.ttft_ms.is_not(None), *filters.where())
        .subquery()
    )
    return _cells(session, inner)


def duration_cells(session: Session, filters: Filters) -> list[Cell]:
    """The histogram of stream durations, as cells of model "" and time bucket 0."""
    s = Stream
    inner = (
        sa.select(latency_bucket(s.duration_ms).label("lo"))
        .where(s.duration_ms.is_not(None), *filters.where())
        .subquery()
    )
    stmt = sa.select(inner.c.lo, sa.func.count()).group_by(inner.c.lo)
    return [Cell("", 0, float(lo), int(n)) for lo, n in session.execute(stmt)]


def gap_cells(session: Session, filters: Filters, *, width: int, sample: float = 1.0) -> list[Cell]:
    """The inter-chunk gap histogram per model and time bucket: the gaps between consecutive token-carrying
    events of each stream (`StreamRecord.gaps_ms`, what `stats` and the Prometheus histogram sample).

    `sample` < 1 reads only the streams whose id falls below that share of the id space (ids are random).
    """
    s, p = Stream, StreamEventPack
    where = [s.ttft_ms.is_not(None), *filters.where()]
    if sample < 1.0:
        where.append(s.id < id_bound(sample))
    streams = (
        sa.select(
            s.id,
            model_expr().label("model"),
            time_bucket(s.started_at, sa.literal_column(str(int(width)))).label("bucket"),
        )
        .where(*where)
        .cte("window_streams")
    )
    # The model and time bucket are computed once per stream, not once per gap. Both databases accept the
    # hint (SQLite since 3.35; PostgreSQL since 12, where it also keeps the CTE from being inlined).
    streams = streams.prefix_with("MATERIALIZED", dialect="postgresql")
    if sqlite3.sqlite_version_info >= (3, 35):
        streams = streams.prefix_with("MATERIALIZED", dialect="sqlite")
    gaps = json_values(session, p.token_gaps_ms, "gap")
    inner = (
        sa.select(streams.c.model, streams.c.bucket, latency_bucket(number(gaps.c.value)).label("lo"))
        .select_from(streams)
        .join(p, p.stream_id == streams.c.id)
        .join(gaps, sa.true())
        .subquery()
    )
    return _cells(session, inner)


def id_bound(share: float) -> str:
    """An id such that about `share` of random hex ids sort below it."""
    return f"{min(max(int(share * 16**8), 1), 16**8 - 1):08x}"


# -- histograms and percentiles --------------------------------------------------------------------


def bucket_step(lo: float) -> float:
    """The width of the latency bucket starting at `lo`."""
    for limit, exponent in _LATENCY_STEPS:
        if lo < limit:
            return 10.0**exponent
    return 10.0 ** _LATENCY_STEPS[-1][1]


def percentile(buckets: Sequence[tuple[float, int]], p: float) -> float | None:
    """The p-th percentile of a histogram given as ascending (lower bound, count), interpolated linearly
    inside its bucket; None when empty."""
    total = sum(n for _, n in buckets)
    if total == 0:
        return None
    rank = p / 100.0 * total
    seen = 0
    for lo, n in buckets:
        if n and seen + n >= rank:
            return lo + bucket_step(lo) * (rank - seen) / n
        seen += n
    lo = buckets[-1][0]
    return lo + bucket_step(lo)


def merge(cells: Iterable[Cell]) -> list[tuple[float, int]]:
    counts: dict[float, int] = defaultdict(int)
    for cell in cells:
        counts[cell.lo] += cell.n
    return sorted(counts.items())


@dataclass(frozen=True, slots=True)
class Bin:
    """One bar of a histogram: values in [lo, hi) ms."""

    lo: float
    hi: float
    count: int


def display_bins(buckets: Sequence[tuple[float, int]]) -> list[Bin]:
    """A histogram regrouped into log-spaced bins (1, 1.5, 2, 3, 5, 7 x 10^k ms), empty ones dropped."""
    out: dict[float, int] = defaultdict(int)
    for lo, n in buckets:
        out[_display_lo(lo)] += n
    return [Bin(lo, _display_hi(lo), n) for lo, n in sorted(out.items()) if n]


def _display_lo(v: float) -> float:
    if v <= 0:
        return 0.0
    power = 10.0 ** math.floor(math.log10(v) + 1e-9)
    mantissa = v / power
    edge = max(e for e in _DISPLAY_EDGES if e <= mantissa + 1e-9)
    return round(edge * power, 10)


def _display_hi(lo: float) -> float:
    if lo <= 0:
        return 0.01
    power = 10.0 ** math.floor(math.log10(lo) + 1e-9)
    i = _DISPLAY_EDGES.index(round(lo / power, 6))
    nxt = _DISPLAY_EDGES[i + 1] * power if i + 1 < len(_DISPLAY_EDGES) else 10 * power
    return round(nxt, 10)


# -- the overview --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    streams: int
    finished: int  # streams with a final outcome (not in progress)
    ttft_p50: float | None
    ttft_p95: float | None
    ttft_p99: float | None
    gap_p50: float | None
    gap_p99: float | None
    duration_p50: float | None
    error_rate: float | None  # http and model errors, of the finished streams
    disconnect_rate: float | None  # client and upstream disconnects, of the finished streams
    tokens_per_s: float | None  # completion tokens / time from first token to the end


@dataclass(frozen=True, slots=True)
class TimePoint:
    start: datetime
    streams: int
    ttft_p50: float | None
    ttft_p95: float | None
    ttft_p99: float | None
    gap_p50: float | None
    gap_p95: float | None
    gap_p99: float | None


@dataclass(frozen=True, slots=True)
class ModelRow:
    model: str
    streams: int
    ttft_p50: float | None
    ttft_p95: float | None
    gap_p50: float | None
    gap_p99: float | None
    tokens_per_s: float | None  # completion tokens / time from first token to the end
    error_rate: float | None
    finish_reasons: tuple[tuple[str, int], ...]  # most frequent first

    @property
    def finish_mix(self) -> str:
        """The finish reasons as "stop 91% · length 6% · ..." (the top four)."""
        total = sum(n for _, n in self.finish_reasons)
        if not total:
            return ""
        parts = [f"{name} {_share(n, total)}" for name, n in self.finish_reasons[:_MIX_TOP]]
        rest = len(self.finish_reasons) - _MIX_TOP
        return " · ".join(parts) + (f" · +{rest} more" if rest > 0 else "")


def _share(n: int, total: int) -> str:
    share = 100 * n / total
    return "<1%" if 0 < share < 0.5 else f"{share:.0f}%"


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page shows, for one window and set of filters."""

    summary: Summary
    width: int  # time-bucket width, s
    series: tuple[TimePoint, ...]
    ttft_bins: tuple[Bin, ...]
    gap_bins: tuple[Bin, ...]
    finish_reasons: tuple[tuple[str, int], ...]
    outcomes: tuple[tuple[str, int], ...]
    models: tuple[ModelRow, ...]
    start: datetime  # the time axis
    end: datetime
    gap_sample: float = 1.0  # share of the window's streams the gaps were read from
    gap_samples: int = 0  # gaps read


def overview(
    session: Session,
    filters: Filters,
    *,
    now: datetime | None = None,
    gap_sample_limit: int | None = GAP_SAMPLE_LIMIT,
) -> Overview:
    """The overview of the streams `filters` select. `gap_sample_limit=None` always reads every gap."""
    start, end = time_range(session, filters, now=now)
    width = bucket_width(start, end)
    counts = stream_counts(session, filters, width=width)
    expected_gaps = sum(r.gaps for r in counts)
    sample = 1.0
    if gap_sample_limit is not None and expected_gaps > gap_sample_limit:
        sample = gap_sample_limit / expected_gaps
    ttft = ttft_cells(session, filters, width=width) if counts else []
    gaps = gap_cells(session, filters, width=width, sample=sample) if counts else []
    durations = duration_cells(session, filters) if counts else []
    return build_overview(counts, ttft, gaps, durations, width=width, start=start, end=end, sample=sample)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _speed(counts: Iterable[CountRow]) -> float | None:
    tokens = gen_ms = 0.0
    for r in counts:
        tokens += r.completion_tokens
        gen_ms += r.generation_ms
    return tokens / (gen_ms / 1000.0) if tokens and gen_ms > 0 else None


def _ranked(counter: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def build_overview(
    counts: Sequence[CountRow],
    ttft: Sequence[Cell],
    gaps: Sequence[Cell],
    durations: Sequence[Cell],
    *,
    width: int,
    start: datetime,
    end: datetime,
    sample: float = 1.0,
) -> Overview:
    """Assemble the overview from the aggregates (pure: no database)."""
    streams = sum(r.streams for r in counts)
    finished = sum(r.streams for r in counts if r.outcome != Outcome.IN_PROGRESS.value)
    errors = sum(r.streams for r in counts if r.outcome in ERROR_OUTCOMES)
    disconnects = sum(r.streams for r in counts if r.outcome in DISCONNECT_OUTCOMES)
    ttft_all, gap_all = merge(ttft), merge(gaps)
    summary = Summary(
        streams=streams,
        finished=finished,
        ttft_p50=percentile(ttft_all, 50),
        ttft_p95=percentile(ttft_all, 95),
        ttft_p99=percentile(ttft_all, 99),
        gap_p50=percentile(gap_all, 50),
        gap_p99=percentile(gap_all, 99),
        duration_p50=percentile(merge(durations), 50),
        error_rate=_rate(errors, finished),
        disconnect_rate=_rate(disconnects, finished),
        tokens_per_s=_speed(counts),
    )

    per_bucket: dict[int, int] = defaultdict(int)
    for r in counts:
        per_bucket[r.bucket] += r.streams
    ttft_by_bucket = _group(ttft, lambda c: c.bucket)
    gap_by_bucket = _group(gaps, lambda c: c.bucket)
    first = int(start.timestamp()) // width
    last = int(end.timestamp()) // width
    keys = set(per_bucket) | set(range(first, last + 1))
    series = []
    for b in sorted(keys):
        t, g = merge(ttft_by_bucket.get(b, ())), merge(gap_by_bucket.get(b, ()))
        series.append(
            TimePoint(
                start=datetime.fromtimestamp(b * width, UTC),
                streams=per_bucket.get(b, 0),
                ttft_p50=percentile(t, 50),
                ttft_p95=percentile(t, 95),
                ttft_p99=percentile(t, 99),
                gap_p50=percentile(g, 50),
                gap_p95=percentile(g, 95),
                gap_p99=percentile(g, 99),
            )
        )

    reasons: dict[str, int] = defaultdict(int)
    outcomes: dict[str, int] = defaultdict(int)
    for r in counts:
        outcomes[r.outcome] += r.streams
        if r.finish_reason is not None:
            reasons[r.finish_reason] += r.streams

    return Overview(
        summary=summary,
        width=width,
        series=tuple(series),
        ttft_bins=tuple(display_bins(ttft_all)),
        gap_bins=tuple(display_bins(gap_all)),
        finish_reasons=_ranked(reasons),
        outcomes=_ranked(outcomes),
        models=tuple(_model_rows(counts, ttft, gaps)),
        gap_sample=sample,
        gap_samples=sum(n for _, n in gap_all),
        start=start,
        end=end,
    )


def _group(cells: Iterable[Cell], key: Any) -> dict[Any, list[Cell]]:
    out: dict[Any, list[Cell]] = defaultdict(list)
    for cell in cells:
        out[key(cell)].append(cell)
    return out


def _model_rows(counts: Sequence[CountRow], ttft: Sequence[Cell], gaps: Sequence[Cell]) -> list[ModelRow]:
    ttft_by = _group(ttft, lambda c: c.model)
    gap_by = _group(gaps, lambda c: c.model)
    by_model: dict[str, list[CountRow]] = defaultdict(list)
    for r in counts:
        by_model[r.model].append(r)
    rows = []
    for model, rs in by_model.items():
        t, g = merge(ttft_by.get(model, ())), merge(gap_by.get(model, ()))
        reasons: dict[str, int] = defaultdict(int)
        for r in rs:
            if r.finish_reason is not None:
                reasons[r.finish_reason] += r.streams
        finished = sum(r.streams for r in rs if r.outcome != Outcome.IN_PROGRESS.value)
        rows.append(
            ModelRow(
                model=model,
                streams=sum(r.streams for r in rs),
                ttft_p50=percentile(t, 50),
                ttft_p95=percentile(t, 95),
                gap_p50=percentile(g, 50),
                gap_p99=percentile(g, 99),
                tokens_per_s=_speed(rs),
                error_rate=_rate(sum(r.streams for r in rs if r.outcome in ERROR_OUTCOMES), finished),
                finish_reasons=_ranked(reasons),
            )
        )
    rows.sort(key=lambda m: (-m.streams, m.model))
    return rows


# -- the stream explorer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRow:
    """One line of the stream explorer."""

    id: str
    started_at: datetime
    model: str
    host: str
    outcome: str
    finish_reason: str | None
    status_code: int | None
    ttft_ms: float | None
    duration_ms: float | None
    completion_tokens: int | None
    events: int
    api_key_fp: str | None
    preview: str


PREVIEW_CHARS = 120


def search_streams(
    session: Session, filters: Filters, *, query: str = "", limit: int = 200
) -> list[StreamRow]:
    """The newest streams the filters select; `query` matches an id prefix, a model, or answer text."""
    s = Stream
    stmt = (
        sa.select(
            s.id,
            s.started_at,
            model_expr().label("model"),
            s.host,
            s.outcome,
            s.finish_reason,
            s.status_code,
            s.ttft_ms,
            s.duration_ms,
            s.completion_tokens,
            s.event_count,
            s.api_key_fp,
            s.choices,
        )
        .where(*filters.where())
        .order_by(s.started_at.desc(), s.id.desc())
        .limit(limit)
    )
    q = query.strip()
    if q:
        matches = [
            model_expr().icontains(q, autoescape=True),
            sa.cast(s.choices, sa.Text).icontains(q, autoescape=True),
        ]
        if all(ch in string.hexdigits for ch in q):
            matches.append(s.id.startswith(q.lower(), autoescape=True))
        stmt = stmt.where(sa.or_(*matches))
    return [
        StreamRow(
            id=row.id,
            started_at=_aware(row.started_at),
            model=row.model,
            host=row.host,
            outcome=row.outcome,
            finish_reason=row.finish_reason,
            status_code=row.status_code,
            ttft_ms=row.ttft_ms,
            duration_ms=row.duration_ms,
            completion_tokens=row.completion_tokens,
            events=row.event_count,
            api_key_fp=row.api_key_fp,
            preview=_preview(row.choices),
        )
        for row in session.execute(stmt)
    ]


def _preview(choices: Any) -> str:
    if isinstance(choices, str):  # a JSON column read back as text by some drivers
        choices = json.loads(choices)
    for choice in choices or ():
        if not isinstance(choice, dict):
            continue
        text = choice.get("content") or choice.get("refusal")
        if not text and choice.get("tool_calls"):
            calls = choice["tool_calls"]
            text = "tool call: " + ", ".join(str(c.get("name") or "?") for c in calls)
        if not text:
            text = choice.get("reasoning_content")
        if text:
            flat = " ".join(str(text).split())
            return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"
    return ""


# -- one stream's chunk timeline -------------------------------------------------------------------

STALL_FACTOR = 3.0
STALL_FLOOR_MS = 100.0


class TimelinePoint(NamedTuple):
    seq: int
    t_ms: float
    gap_ms: float | None  # since the previous token-carrying event (None for the first)
    kind: str
    tokens: bool
    stall: bool


@dataclass(frozen=True, slots=True)
class Timeline:
    points: tuple[TimelinePoint, ...]
    median_gap_ms: float | None
    threshold_ms: float | None  # gaps above it are stalls

    @property
    def stalls(self) -> tuple[TimelinePoint, ...]:
        return tuple(p for p in self.points if p.stall)


def timeline(rec: StreamRecord) -> Timeline:
    """The arrival time of each event, with stalls marked: a gap between token-carrying events longer than
    `STALL_FACTOR` times the stream's median gap and at least `STALL_FLOOR_MS`."""
    gaps: list[float | None] = []
    last: float | None = None
    for ev in rec.events:
        if ev.tokens:
            gaps.append(None if last is None else ev.t_ms - last)
            last = ev.t_ms
        else:
            gaps.append(None)
    known = sorted(g for g in gaps if g is not None)
    median = known[len(known) // 2] if known else None
    threshold = max(STALL_FACTOR * median, STALL_FLOOR_MS) if median is not None else None
    points = tuple(
        TimelinePoint(
            seq=ev.seq,
            t_ms=ev.t_ms,
            gap_ms=g,
            kind=ev.kind.value,
            tokens=ev.tokens,
            stall=g is not None and threshold is not None and g > threshold,
        )
        for ev, g in zip(rec.events, gaps, strict=True)
    )
    return Timeline(points=points, median_gap_ms=median, threshold_ms=threshold)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
