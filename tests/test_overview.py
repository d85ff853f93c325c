"""The dashboard's read functions (`streamtap.overview`) and the synthetic data generator (`streamtap.seed`),
on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from streamtap import overview as ov
from streamtap.chat import ChatInterpreter
from streamtap.db.engine import make_engine, upgrade
from streamtap.db.models import Stream, StreamEventPack
from streamtap.export import choice_to_dict, record_to_sse
from streamtap.read import get_stream, stats
from streamtap.recorder import Recorder
from streamtap.records import Choice, EventKind, EventRecord, Outcome, StreamRecord, ToolCall, Usage
from streamtap.seed import PROFILES, seed_database
from streamtap.sse import decode_all

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY_A = "sha256:aaaaaaaaaaaa"
KEY_B = "sha256:bbbbbbbbbbbb"


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


def close_to(estimate: float | None, exact: float) -> bool:
    """The histogram estimate is within one bucket of the exact (nearest-rank) percentile."""
    return estimate is not None and abs(estimate - exact) <= ov.bucket_step(exact) + 1e-9


def token_events(
    ttft: float, gaps: list[float], *, done: bool = True, error: bool = False
) -> tuple[EventRecord, ...]:
    """A role chunk, a token event at `ttft` and one after each gap, then [DONE] or an error event."""
    times = [ttft]
    for g in gaps:
        times.append(times[-1] + g)
    evs = [EventRecord(0, ttft / 2, None, EventKind.DATA, "{}", b'data: {"role":1}\n\n')]
    for t in times:
        evs.append(
            EventRecord(len(evs), t, t - evs[-1].t_ms, EventKind.DATA, "{}", b"data: {}\n\n", tokens=True)
        )
    if done or error:
        kind, raw = (
            (EventKind.ERROR, b'data: {"error":{}}\n\n') if error else (EventKind.DONE, b"data: [DONE]\n\n")
        )
        t = times[-1] + 1.0
        evs.append(EventRecord(len(evs), t, 1.0, kind, None, raw))
    return tuple(evs)


class Dataset:
    """55 streams with known values: 40 recent "alpha", 10 "beta" errors and disconnects 3 h ago, and 5 old
    slow "alpha" from 3 days ago."""

    def __init__(self, make_record: Callable[..., StreamRecord]) -> None:
        self.records: list[StreamRecord] = []
        for i in range(40):
            ttft = 100.0 + 10 * i
            gaps = [float((i % 5 + 1) * 10)] * 9
            finish = "length" if i % 10 == 0 else "tool_calls" if i % 10 == 1 else "stop"
            self.records.append(
                make_record(
                    started_at=NOW - timedelta(minutes=i + 1),
                    request_model="alpha",
                    host="a.example",
                    api_key_fp=KEY_A,
                    ttft_ms=ttft,
                    duration_ms=ttft + sum(gaps) + 5,
                    usage=Usage(20, 10, 30),
                    choices=(Choice(0, f"answer number {i} about 100% of cases", None, None, (), finish),),
                    events=token_events(ttft, gaps),
                )
            )
        beta: list[tuple[Outcome, int]] = [(Outcome.HTTP_ERROR, 4), (Outcome.MODEL_ERROR, 3)]
        beta += [(Outcome.CLIENT_DISCONNECT, 2), (Outcome.UPSTREAM_DISCONNECT, 1)]
        n = 0
        for outcome, count in beta:
            for _ in range(count):
                n += 1
                common: dict[str, Any] = {
                    "started_at": NOW - timedelta(hours=3, minutes=n),
                    "request_model": "beta",
                    "host": "b.example",
                    "api_key_fp": KEY_B,
                    "outcome": outcome,
                    "usage": None,
                }
                if outcome is Outcome.HTTP_ERROR:
                    rec = make_record(
                        **common,
                        status_code=429,
                        stream=False,
                        ttft_ms=None,
                        ttfc_ms=None,
                        choices=(),
                        events=(),
                    )
                else:
                    ttft = 1000.0 + 100 * n
                    rec = make_record(
                        **common,
                        ttft_ms=ttft,
                        duration_ms=ttft + 50,
                        choices=(Choice(0, "partial", None, None, (), None),),
                        events=token_events(
                            ttft, [25.0, 25.0], done=False, error=outcome is Outcome.MODEL_ERROR
                        ),
                    )
                self.records.append(rec)
        for i in range(5):
            ttft = 5000.0 + i
            self.records.append(
                make_record(
                    started_at=NOW - timedelta(days=3, minutes=i),
                    request_model="alpha",
                    host="a.example",
                    api_key_fp=KEY_A,
                    ttft_ms=ttft,
                    duration_ms=ttft + 305,
                    usage=Usage(20, 7, 27),
                    choices=(Choice(0, "old", None, None, (), "stop"),),
                    events=token_events(ttft, [100.0, 200.0]),
                )
            )

    def select(self, **where: Any) -> list[StreamRecord]:
        since = where.pop("since", None)
        out = [r for r in self.records if since is None or r.started_at >= since]
        for name, value in where.items():
            out = [r for r in out if getattr(r, name) == value]
        return out

    @staticmethod
    def gaps(records: list[StreamRecord]) -> list[float]:
        """The inter-chunk gap samples as the overview defines them: `StreamRecord.gaps_ms`."""
        return [gap for r in records for gap in r.gaps_ms]


def write(engine: sa.Engine, records: list[StreamRecord]) -> None:
    recorder = Recorder(engine)
    recorder.start()
    for rec in records:
        recorder.submit(rec)
    assert recorder.close(timeout=30)


@pytest.fixture
def data(engine: sa.Engine, make_record: Callable[..., StreamRecord]) -> Dataset:
    dataset = Dataset(make_record)
    write(engine, dataset.records)
    return dataset


@pytest.fixture
def session(engine: sa.Engine) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


class TestOverview:
    def test_everything(self, session: Session, data: Dataset) -> None:
        o = ov.overview(session, ov.Filters(), now=NOW)
        s = o.summary
        assert (s.streams, s.finished) == (55, 55)
        assert s.error_rate == pytest.approx(7 / 55)
        assert s.disconnect_rate == pytest.approx(3 / 55)
        ttfts = [r.ttft_ms for r in data.records if r.ttft_ms is not None]
        assert close_to(s.ttft_p50, nearest_rank(ttfts, 50))
        assert close_to(s.ttft_p95, nearest_rank(ttfts, 95))
        assert close_to(s.ttft_p99, nearest_rank(ttfts, 99))
        gaps = Dataset.gaps(data.records)
        assert o.gap_samples == len(gaps) == 40 * 9 + 6 * 2 + 5 * 2
        assert close_to(s.gap_p50, nearest_rank(gaps, 50))
        assert close_to(s.gap_p99, nearest_rank(gaps, 99))
        durations = [r.duration_ms for r in data.records if r.duration_ms is not None]
        assert close_to(s.duration_p50, nearest_rank(durations, 50))
        assert dict(o.finish_reasons) == {"stop": 37, "length": 4, "tool_calls": 4}
        assert o.outcomes[0] == ("completed", 45)
        assert dict(o.outcomes) == {
            "completed": 45,
            "http_error": 4,
            "model_error": 3,
            "client_disconnect": 2,
            "upstream_disconnect": 1,
        }
        # the time axis spans what is recorded, in buckets that all add up
        assert o.start == data.records[-1].started_at and o.width == 3600
        assert sum(p.streams for p in o.series) == 55
        # the oldest bucket holds four of the old streams (TTFT 5001-5004 ms)
        assert o.series[0].streams == 4 and close_to(o.series[0].ttft_p50, 5002)

    def test_models(self, session: Session, data: Dataset) -> None:
        o = ov.overview(session, ov.Filters(), now=NOW)
        assert [m.model for m in o.models] == ["alpha", "beta"]
        alpha, beta = o.models
        assert (alpha.streams, beta.streams) == (45, 10)
        assert alpha.error_rate == 0 and beta.error_rate == pytest.approx(0.7)
        assert alpha.finish_reasons == (("stop", 37), ("length", 4), ("tool_calls", 4))
        assert alpha.finish_mix == "stop 82% · length 9% · tool_calls 9%"
        # completion tokens over the time from first token to the end, summed over the streams with usage
        tokens = sum(r.usage.completion_tokens or 0 for r in data.select(request_model="alpha") if r.usage)
        gen_s = (
            sum((r.duration_ms or 0) - (r.ttft_ms or 0) for r in data.select(request_model="alpha")) / 1000
        )
        assert alpha.tokens_per_s == pytest.approx(tokens / gen_s)
        assert beta.tokens_per_s is None
        alpha_ttft = [r.ttft_ms for r in data.select(request_model="alpha") if r.ttft_ms]
        assert close_to(alpha.ttft_p95, nearest_rank(alpha_ttft, 95))
        assert close_to(beta.gap_p50, 25.0)

    def test_window(self, session: Session, data: Dataset) -> None:
        f = ov.Filters.for_window("1h", now=NOW)
        o = ov.overview(session, f, now=NOW)
        recent = data.select(since=NOW - timedelta(hours=1))
        assert o.summary.streams == len(recent) == 40
        assert [m.model for m in o.models] == ["alpha"]
        assert o.summary.error_rate == 0.0
        assert close_to(o.summary.ttft_p50, nearest_rank([r.ttft_ms or 0 for r in recent], 50))
        assert close_to(o.summary.gap_p99, nearest_rank(Dataset.gaps(recent), 99))
        # one-minute buckets over the hour up to now, empty ones included
        assert o.width == 60 and len(o.series) == 61
        assert o.series[-1].start == NOW and o.series[-1].streams == 0 and o.series[-1].ttft_p50 is None
        assert ov.overview(session, ov.Filters.for_window("6h", now=NOW), now=NOW).summary.streams == 50
        assert ov.overview(session, ov.Filters.for_window("15m", now=NOW), now=NOW).summary.streams == 15

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"models": ("beta",)}, 10),
            ({"models": ("alpha", "beta")}, 55),
            ({"hosts": ("a.example",)}, 45),
            ({"outcomes": ("http_error", "model_error")}, 7),
            ({"api_keys": (KEY_B,)}, 10),
            ({"models": ("alpha",), "outcomes": ("http_error",)}, 0),
            ({"models": ("nope",)}, 0),
        ],
    )
    def test_filters(self, session: Session, data: Dataset, filters: dict[str, Any], expected: int) -> None:
        o = ov.overview(session, ov.Filters(**filters), now=NOW)
        assert o.summary.streams == expected
        assert sum(n for _, n in o.outcomes) == expected

    def test_http_errors_have_no_latency(self, session: Session, data: Dataset) -> None:
        o = ov.overview(session, ov.Filters(outcomes=("http_error",)), now=NOW)
        assert o.summary.streams == 4 and o.summary.error_rate == 1.0
        assert o.summary.ttft_p50 is None and o.summary.gap_p50 is None and o.gap_samples == 0
        assert o.ttft_bins == () and o.finish_reasons == ()

    def test_empty(self, session: Session) -> None:
        assert not ov.has_streams(session)
        o = ov.overview(session, ov.Filters.for_window("24h", now=NOW), now=NOW)
        assert o.summary.streams == 0 and o.summary.ttft_p50 is None and o.summary.error_rate is None
        assert o.models == () and all(p.streams == 0 for p in o.series)
        assert ov.filter_options(session) == ov.FilterOptions((), (), (), ())
        assert ov.search_streams(session, ov.Filters()) == []

    def test_filter_options(self, session: Session, data: Dataset) -> None:
        assert ov.has_streams(session)
        opts = ov.filter_options(session)
        assert opts.models == ("alpha", "beta")
        assert opts.hosts == ("a.example", "b.example")
        assert opts.outcomes == (
            "client_disconnect",
            "completed",
            "http_error",
            "model_error",
            "upstream_disconnect",
        )
        assert opts.api_keys == (KEY_A, KEY_B)


@pytest.mark.parametrize(
    ("ages", "window"),
    [
        ([], "all"),  # nothing recorded
        ([timedelta(minutes=5)], "15m"),
        ([timedelta(minutes=1), timedelta(minutes=15)], "15m"),  # the window's own edge is inside
        ([timedelta(minutes=1), timedelta(minutes=16)], "1h"),
        ([timedelta(hours=2)], "6h"),
        ([timedelta(minutes=5), timedelta(hours=10)], "24h"),
        ([timedelta(minutes=5), timedelta(days=3)], "15m"),  # older streams are not the last day's
        ([timedelta(days=3)], "all"),  # an old or imported store: the whole of it, not an empty day
        ([timedelta(minutes=-2)], "15m"),  # a clock a little ahead of ours
    ],
)
def test_default_window_fits_the_last_day(
    engine: sa.Engine, make_record: Callable[..., StreamRecord], ages: list[timedelta], window: str
) -> None:
    write(engine, [make_record(started_at=NOW - age) for age in ages])
    with Session(engine) as session:
        assert ov.default_window(session, now=NOW) == window


def test_gaps_are_token_to_token(
    engine: sa.Engine, session: Session, make_record: Callable[..., StreamRecord]
) -> None:
    """The dashboard's gaps, like `stats` and Prometheus, run from token event to token event: a keep-alive
    comment in between does not split a gap, and two tokens of one read are 0 apart."""
    data, comment = b'data: {"t":1}\n\n', b": keep-alive\n\n"
    events = (
        EventRecord(0, 5.0, None, EventKind.DATA, "{}", b'data: {"role":1}\n\n'),
        EventRecord(1, 20.0, 15.0, EventKind.DATA, "{}", data, tokens=True),
        EventRecord(2, 50.0, 30.0, EventKind.COMMENT, "keep-alive", comment),
        EventRecord(3, 60.0, 10.0, EventKind.DATA, "{}", data, tokens=True),
        EventRecord(4, 60.0, 0.0, EventKind.DATA, "{}", data, tokens=True),
    )
    rec = make_record(started_at=NOW - timedelta(minutes=1), ttft_ms=20.0, events=events)
    assert rec.gaps_ms == [40.0, 0.0]
    write(engine, [rec])
    cells = ov.gap_cells(session, ov.Filters(), width=3600)
    assert sorted((c.lo, c.n) for c in cells) == [(0.0, 1), (40.0, 1)]
    assert stats(session)["gap_ms"] == {"p50": 0.0, "p90": 40.0, "p99": 40.0}


class TestSearch:
    def test_newest_first_and_limit(self, session: Session, data: Dataset) -> None:
        rows = ov.search_streams(session, ov.Filters(), limit=5)
        assert [r.id for r in rows] == [r.id for r in data.records[:5]]
        assert rows[0].model == "alpha" and rows[0].preview == "answer number 0 about 100% of cases"
        assert rows[0].started_at == NOW - timedelta(minutes=1)

    def test_by_id_prefix(self, session: Session, data: Dataset) -> None:
        target = data.records[17].id
        assert target in [r.id for r in ov.search_streams(session, ov.Filters(), query=target[:8].upper())]
        assert [r.id for r in ov.search_streams(session, ov.Filters(), query=target)] == [target]

    def test_by_model_and_text(self, session: Session, data: Dataset) -> None:
        assert len(ov.search_streams(session, ov.Filters(), query="BETA")) == 10
        assert [r.preview for r in ov.search_streams(session, ov.Filters(), query="number 7 ")] == [
            "answer number 7 about 100% of cases"
        ]
        # LIKE wildcards in the query are literal characters
        assert len(ov.search_streams(session, ov.Filters(), query="100%")) == 40
        assert ov.search_streams(session, ov.Filters(), query="1_0") == []

    def test_filters_apply(self, session: Session, data: Dataset) -> None:
        rows = ov.search_streams(session, ov.Filters(outcomes=("http_error",)))
        assert len(rows) == 4 and {r.status_code for r in rows} == {429} and {r.preview for r in rows} == {""}


class TestSqlPieces:
    VALUES = (
        0.0,
        0.004,
        0.5,
        0.999,
        1.0,
        9.99,
        10.0,
        55.55,
        99.5,
        100.0,
        999.9,
        1000.0,
        12345.0,
        99999.0,
        1e5,
        2.5e6,
    )

    def test_latency_bucket_agrees_with_python(self, engine: sa.Engine) -> None:
        with engine.connect() as conn:
            for v in self.VALUES:
                lo = conn.execute(sa.select(ov.latency_bucket(sa.literal(v, sa.Double())))).scalar_one()
                assert lo <= v < lo + ov.bucket_step(lo) + 1e-9, v
                assert ov.bucket_step(lo) <= max(v / 10, 0.01) + 1e-12  # two significant digits

    def test_time_bucket_is_epoch_division(
        self, engine: sa.Engine, make_record: Callable[..., StreamRecord]
    ) -> None:
        rec = make_record(started_at=datetime(2026, 11, 24, 7, 59, 59, 999000, tzinfo=UTC))
        write(engine, [rec])
        with engine.connect() as conn:
            for width in (60, 3600, 86400):
                got = conn.execute(
                    sa.select(ov.time_bucket(Stream.started_at, sa.literal_column(str(width))))
                ).scalar()
                assert got == int(rec.started_at.timestamp()) // width


class TestHistogramMath:
    def test_percentile(self) -> None:
        assert ov.percentile([], 50) is None
        assert ov.percentile([(10.0, 0)], 50) is None
        assert ov.percentile([(10.0, 4)], 50) == pytest.approx(10.5)  # halfway into [10, 11)
        assert ov.percentile([(10.0, 1), (200.0, 1)], 99) == pytest.approx(200 + 10 * 0.98)
        assert ov.percentile([(10.0, 1), (200.0, 1)], 0) == 10.0

    def test_display_bins_keep_every_count(self) -> None:
        buckets = [(0.5, 1), (1.2, 2), (1.5, 3), (29.0, 4), (30.0, 5), (99.0, 6), (7000.0, 7), (20000.0, 8)]
        bins = ov.display_bins(buckets)
        assert sum(b.count for b in bins) == sum(n for _, n in buckets)
        assert [(b.lo, b.hi, b.count) for b in bins] == [
            (0.5, 0.7, 1),
            (1.0, 1.5, 2),
            (1.5, 2.0, 3),
            (20.0, 30.0, 4),
            (30.0, 50.0, 5),
            (70.0, 100.0, 6),
            (7000.0, 10000.0, 7),
            (20000.0, 30000.0, 8),
        ]

    def test_bucket_width(self) -> None:
        assert ov.bucket_width(NOW - timedelta(minutes=15), NOW) == 10
        assert ov.bucket_width(NOW - timedelta(hours=24), NOW) == 1800
        assert ov.bucket_width(NOW - timedelta(days=7), NOW) == 7200
        assert ov.bucket_width(NOW - timedelta(days=3650), NOW) == 604800

    def test_unknown_window(self) -> None:
        with pytest.raises(ValueError, match="unknown window"):
            ov.Filters.for_window("2h")


def test_timeline_marks_stalls(make_record: Callable[..., StreamRecord]) -> None:
    evs = list(token_events(100.0, [10.0, 12.0, 11.0, 900.0, 10.0, 9.0]))
    # a keep-alive comment inside the stall does not split it
    evs.insert(5, EventRecord(5, 500.0, 1.0, EventKind.COMMENT, "ping", b": ping\n\n"))
    evs = [
        EventRecord(i, e.t_ms, e.gap_ms, e.kind, e.data, e.raw, tokens=e.tokens) for i, e in enumerate(evs)
    ]
    t = ov.timeline(make_record(events=tuple(evs)))
    assert t.median_gap_ms == 11.0 and t.threshold_ms == ov.STALL_FLOOR_MS
    assert [(p.seq, p.gap_ms) for p in t.stalls] == [(6, 900.0)]
    assert t.points[0].gap_ms is None and t.points[1].gap_ms is None  # role chunk, first token
    assert ov.timeline(make_record(events=())).threshold_ms is None


# -- the generator ------------------------------------------------------------------------------------


def _rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        cols = [Stream.id, Stream.started_at, Stream.outcome, Stream.ttft_ms, Stream.finish_reason]
        return [tuple(r) for r in conn.execute(sa.select(*cols).order_by(Stream.id))]


class TestSeed:
    def test_realistic_and_consistent(self, sqlite_url: str) -> None:
        engine = make_engine(sqlite_url)
        try:
            upgrade(engine)
            result = seed_database(engine, streams=1500, events_per_stream=12, seed=7, now=NOW)
            assert result.streams == 1500 and 12_000 < result.events < 20_000
            with Session(engine) as session:
                o = ov.overview(session, ov.Filters.for_window("24h", now=NOW), now=NOW)
                assert o.summary.streams == 1500
                assert {name for name, _ in o.finish_reasons} == {
                    "stop",
                    "length",
                    "tool_calls",
                    "content_filter",
                }
                assert {name for name, _ in o.outcomes} >= {"completed", "http_error", "client_disconnect"}
                assert {m.model for m in o.models} == {p.model for p in PROFILES}
                assert 0.005 < (o.summary.error_rate or 0) < 0.08
                reasoner = next(m for m in o.models if m.model == "o3-mini")
                groq = next(m for m in o.models if m.model == "llama-3.3-70b-versatile")
                assert (reasoner.ttft_p50 or 0) > 5 * (groq.ttft_p50 or 0)
                # every stream's events replay into the answer and the token count stored with it
                cols = (Stream.id, Stream.choices, Stream.token_event_count, Stream.completion_tokens)
                streams = session.execute(sa.select(*cols)).all()
                raws: dict[str, list[bytes]] = {}
                for sid, raw in session.execute(sa.select(StreamEventPack.stream_id, StreamEventPack.raw)):
                    raws[sid] = [raw]  # the pack's bytes are its events' bytes, in order
                kinds: set[str] = set()
                for sid, choices, token_events_stored, completion_tokens in streams:
                    chat = ChatInterpreter()
                    meanings = [chat.feed(item) for item in decode_all(b"".join(raws.get(sid, [])))]
                    assert EventKind.MALFORMED not in {m.kind for m in meanings}
                    assert sum(m.tokens for m in meanings) == token_events_stored
                    assert (chat.usage.completion_tokens if chat.usage else None) == completion_tokens
                    if raws.get(sid):
                        assert [choice_to_dict(c) for c in chat.choices()] == choices
                    for c in choices:
                        kinds |= {k for k in ("content", "reasoning_content", "tool_calls") if c[k]}
                assert kinds == {"content", "reasoning_content", "tool_calls"}
                tool = session.scalar(
                    sa.select(Stream.id).where(Stream.finish_reason == "tool_calls").limit(1)
                )
                rec = get_stream(session, str(tool))
                assert isinstance(rec.choices[0].tool_calls[0], ToolCall)
                assert json.loads(rec.choices[0].tool_calls[0].arguments)["unit"] == "celsius"
                assert record_to_sse(rec).endswith(b"data: [DONE]\n\n")
        finally:
            engine.dispose()

    def test_deterministic(self, tmp_path: Any) -> None:
        rows = []
        for name in ("a", "b"):
            engine = make_engine(f"sqlite:///{tmp_path}/{name}.db")
            try:
                upgrade(engine)
                seed_database(engine, streams=50, seed=3, now=NOW)
                rows.append(_rows(engine))
            finally:
                engine.dispose()
        assert rows[0] == rows[1] and len(rows[0]) == 50
        assert all(NOW - timedelta(hours=24) <= r[1] <= NOW for r in rows[0])

    def test_arguments(self, sqlite_url: str) -> None:
        engine = make_engine(sqlite_url)
        try:
            with pytest.raises(ValueError):
                seed_database(engine, streams=1, events_per_stream=0)
        finally:
            engine.dispose()


def rounded(value: Any) -> Any:
    """Dataclasses as dicts, floats to 9 significant digits (sums may add up in another order)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return rounded(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.9g}")
    return value


@pytest.mark.pg
def test_postgresql_gives_the_same_overview(sqlite_url: str, pg_url: str) -> None:
    """Seeded alike, both databases aggregate to the same numbers (the SQL is portable, not just valid)."""
    out = []
    for url in (sqlite_url, pg_url):
        engine = make_engine(url)
        try:
            upgrade(engine)
            seed_database(engine, streams=400, events_per_stream=10, seed=11, now=NOW)
            with Session(engine) as session:
                out.append(
                    (
                        ov.overview(session, ov.Filters.for_window("24h", now=NOW), now=NOW),
                        ov.overview(session, ov.Filters(models=("gpt-4o",)), now=NOW, gap_sample_limit=500),
                        [r.id for r in ov.search_streams(session, ov.Filters(), query="lisbon")],
                    )
                )
        finally:
            engine.dispose()
    (lite, lite_sampled, lite_search), (pg, pg_sampled, pg_search) = out
    assert lite.summary.streams == 400
    assert rounded(lite) == rounded(pg)
    assert rounded(lite_sampled) == rounded(pg_sampled) and lite_sampled.gap_sample < 1
    assert lite_search == pg_search and lite_search
