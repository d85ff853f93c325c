"""The read side (queries, stats in SQL) and the exporters, on data written by the real recorder."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from streamtap.errors import NotFoundError
from streamtap.export import record_to_json, record_to_sse, records_to_json
from streamtap.read import event_data, get_stream, get_streams, stats
from streamtap.recorder import Recorder
from streamtap.records import Choice, EventKind, EventRecord, Outcome, StreamRecord, ToolCall, Usage

MakeRecord = Callable[..., StreamRecord]
EventsFromBody = Callable[..., tuple[EventRecord, ...]]
CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"  # verbatim copies of ../shared/sse-corpus


def _store(engine: sa.Engine, records: list[StreamRecord]) -> None:
    recorder = Recorder(engine)
    for rec in records:
        recorder.submit(rec)
    assert recorder.close() is True
    assert recorder.written == len(records)


def _token_events(times: list[float], *, tokens: list[bool] | None = None) -> tuple[EventRecord, ...]:
    flags = tokens if tokens is not None else [True] * len(times)
    return tuple(
        EventRecord(
            seq=i,
            t_ms=t,
            gap_ms=None if i == 0 else t - times[i - 1],
            kind=EventKind.DATA,
            data="x",
            raw=b"data: x\n\n",
            tokens=flag,
        )
        for i, (t, flag) in enumerate(zip(times, flags, strict=True))
    )


class TestQueries:
    def test_filters_and_order(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        t0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
        recs = [make_record(started_at=t0 + timedelta(minutes=i)) for i in range(5)]
        _store(engine, recs)
        with Session(engine) as s:
            assert [r.id for r in get_streams(s)] == [r.id for r in reversed(recs)]
            assert [r.id for r in get_streams(s, last=2)] == [recs[4].id, recs[3].id]
            assert [r.id for r in get_streams(s, ids=[recs[1].id, recs[3].id, "0" * 32])] == [
                recs[3].id,
                recs[1].id,
            ]
            since = t0 + timedelta(minutes=2, seconds=30)
            assert [r.id for r in get_streams(s, since=since)] == [recs[4].id, recs[3].id]
            naive_since = since.replace(tzinfo=None)
            assert [r.id for r in get_streams(s, since=naive_since)] == [recs[4].id, recs[3].id]
            lean = get_streams(s, last=1, with_events=False)
            assert lean[0].events == () and lean[0].id == recs[4].id

    def test_get_stream_by_id_and_prefix(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        a = make_record(id="abcdef0123" + "0" * 22)
        b = make_record(id="abcdef0456" + "0" * 22)
        c = make_record(id="123456789a" + "0" * 22)
        _store(engine, [a, b, c])
        with Session(engine) as s:
            assert get_stream(s, a.id) == a
            assert get_stream(s, "123456").id == c.id
            assert get_stream(s, "ABCDEF01").id == a.id
            with pytest.raises(NotFoundError, match="no single stream with id abcdef0"):
                get_stream(s, "abcdef0")
            with pytest.raises(NotFoundError, match=r"^no stream with id 12345$"):
                get_stream(s, "12345")  # too short for a prefix
            with pytest.raises(NotFoundError, match=r"^no stream with id ffffff$"):
                get_stream(s, "ffffff")
            with pytest.raises(NotFoundError, match=r"no stream with id 1234%_"):
                get_stream(s, "1234%_")


class TestEventData:
    @pytest.mark.parametrize(
        ("raw", "data"),
        [
            (b"", None),
            (b"data: a\ndata: b\n\n", "a\nb"),
            (b"\r\n\r\ndata: after padding\r\n\r\n", "after padding"),
            (b"event: ping\ndata: {}\n\n", "{}"),
            (b": keep-alive\n", "keep-alive"),
            (b"data: \xff\n\n", "\ufffd"),
            (b"data: no end", "data: no end"),
            (b"\n\n", None),
        ],
    )
    def test_derived_from_raw(self, raw: bytes, data: str | None) -> None:
        assert event_data(raw) == data


class TestStats:
    def test_known_data(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        t0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
        recs = [
            make_record(request_model="a", ttft_ms=float(v), duration_ms=float(10 * v), started_at=t0)
            for v in range(1, 11)
        ]
        recs.append(
            make_record(
                request_model=None,
                model="b",
                ttft_ms=100.0,
                duration_ms=None,
                started_at=t0,
                outcome=Outcome.TRUNCATED,
                choices=(Choice(0, "x", None, None, (), None),),
                # token gaps 10 and 20; the non-token event at 5 does not count
                events=_token_events([0.0, 5.0, 10.0, 30.0], tokens=[True, False, True, True]),
            )
        )
        recs.append(
            make_record(
                request_model=None,
                model=None,
                ttft_ms=None,
                duration_ms=None,
                started_at=t0,
                events=_token_events([1.0, 4.0]),  # one gap of 3
                outcome=Outcome.HTTP_ERROR,
                choices=(),
            )
        )
        old = make_record(request_model="a", ttft_ms=1000.0, started_at=t0 - timedelta(days=2))
        _store(engine, [*recs, old])
        with Session(engine) as s:
            got = stats(s, since=t0 - timedelta(hours=1))
            everything = stats(s)
        # nearest rank: ceil(p/100 * n) of the sorted samples
        assert got["count"] == 12
        assert got["ttft_ms"] == {"p50": 6.0, "p90": 10.0, "p99": 100.0}  # n=11: ranks 6, 10, 11
        assert got["duration_ms"] == {"p50": 50.0, "p90": 90.0, "p99": 100.0}  # n=10: ranks 5, 9, 10
        # a's 10 records carry the default two-event body: one token gap of 1.5 each
        assert got["gap_ms"] == {"p50": 1.5, "p90": 10.0, "p99": 20.0}  # n=13: ranks 7, 12, 13
        assert got["by_model"] == {
            "a": {
                "count": 10,
                "ttft_ms": {"p50": 5.0, "p90": 9.0, "p99": 10.0},
                "gap_ms": {"p50": 1.5, "p90": 1.5, "p99": 1.5},
                "duration_ms": {"p50": 50.0, "p90": 90.0, "p99": 100.0},
            },
            "b": {
                "count": 1,
                "ttft_ms": {"p50": 100.0, "p90": 100.0, "p99": 100.0},
                "gap_ms": {"p50": 10.0, "p90": 20.0, "p99": 20.0},
                "duration_ms": {"p50": None, "p90": None, "p99": None},
            },
            "unknown": {
                "count": 1,
                "ttft_ms": {"p50": None, "p90": None, "p99": None},
                "gap_ms": {"p50": 3.0, "p90": 3.0, "p99": 3.0},
                "duration_ms": {"p50": None, "p90": None, "p99": None},
            },
        }
        assert got["finish_reasons"] == {"stop": 10, "none": 2}
        assert got["outcomes"] == {"completed": 10, "truncated": 1, "http_error": 1}
        assert everything["count"] == 13
        assert everything["by_model"]["a"]["ttft_ms"]["p99"] == 1000.0

    @pytest.mark.parametrize("seed", range(4))
    def test_matches_nearest_rank_in_python(
        self, engine: sa.Engine, make_record: MakeRecord, seed: int
    ) -> None:
        """Random records over a few models (ties, missing values, a model with one sample): every overall
        and per-model percentile equals the sample at rank ceil(p/100 * n), computed here in Python."""
        rng = random.Random(seed)
        models = ["m1", "m2", "m3", "m4"][: rng.randint(1, 4)]
        recs = []
        for _ in range(rng.randint(5, 60)):
            times = [0.0]
            for _ in range(rng.randint(0, 6)):
                times.append(times[-1] + rng.choice([1.0, 2.5, float(rng.randint(1, 400))]))
            recs.append(
                make_record(
                    request_model=rng.choice(models),
                    ttft_ms=rng.choice([None, 7.0, float(rng.randint(1, 1000))]),
                    duration_ms=rng.choice([None, float(rng.randint(1, 10_000))]),
                    events=_token_events(times),
                )
            )
        _store(engine, recs)
        with Session(engine) as s:
            got = stats(s)

        def nearest_rank(values: list[float]) -> dict[str, float | None]:
            ordered = sorted(values)
            return {
                f"p{p}": ordered[-(-p * len(ordered) // 100) - 1] if ordered else None for p in (50, 90, 99)
            }

        def samples(rs: list[StreamRecord]) -> dict[str, list[float]]:
            return {
                "ttft_ms": [r.ttft_ms for r in rs if r.ttft_ms is not None],
                "gap_ms": [g for r in rs for g in r.gaps_ms],
                "duration_ms": [r.duration_ms for r in rs if r.duration_ms is not None],
            }

        for metric, values in samples(recs).items():
            assert got[metric] == nearest_rank(values), metric
        assert set(got["by_model"]) == {r.request_model for r in recs}
        for name, entry in got["by_model"].items():
            mine = [r for r in recs if r.request_model == name]
            assert entry["count"] == len(mine)
            for metric, values in samples(mine).items():
                assert entry[metric] == nearest_rank(values), (name, metric)

    def test_empty_database(self, engine: sa.Engine) -> None:
        with Session(engine) as s:
            got = stats(s)
        empty = {"p50": None, "p90": None, "p99": None}
        assert got == {
            "count": 0,
            "ttft_ms": empty,
            "gap_ms": empty,
            "duration_ms": empty,
            "by_model": {},
            "finish_reasons": {},
            "outcomes": {},
        }


TOP_KEYS = [
    "id",
    "started_at",
    "method",
    "url",
    "status_code",
    "stream",
    "request_model",
    "model",
    "outcome",
    "error",
    "ttfb_ms",
    "ttft_ms",
    "ttfc_ms",
    "duration_ms",
    "usage",
    "choices",
    "events",
    "finish_reason",
    "api",
    "host",
    "api_key_fp",
    "proxy_instance",
]


class TestJsonExport:
    def test_shape(self, make_record: MakeRecord) -> None:
        rec = make_record(
            started_at=datetime(2026, 11, 24, 8, 0, 1, 500000, tzinfo=UTC),
            ttfb_ms=12.3456789,
            ttft_ms=None,
            usage=Usage(1, 2, 3, reasoning_tokens=9),
            choices=(Choice(0, "héllo", "think", None, (ToolCall(0, "c1", "f", '{"a": 1}'),), "tool_calls"),),
            events=(
                EventRecord(0, 1.23456, None, EventKind.COMMENT, "ok", b": ok\n"),
                EventRecord(
                    1, 2.0004, 0.76584, EventKind.DATA, "{}", b"event: delta\ndata: {}\n\n", "delta", True
                ),
            ),
        )
        out = record_to_json(rec)
        assert list(out) == TOP_KEYS
        assert out["started_at"] == "2026-11-24T08:00:01.500000+00:00"
        assert (out["ttfb_ms"], out["ttft_ms"], out["ttfc_ms"], out["duration_ms"]) == (
            12.346,
            None,
            20.0,
            100.0,
        )
        assert out["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        assert out["outcome"] == "completed" and out["stream"] is True and out["error"] is None
        assert out["choices"] == [
            {
                "index": 0,
                "content": "héllo",
                "reasoning_content": "think",
                "refusal": None,
                "tool_calls": [{"index": 0, "id": "c1", "name": "f", "arguments": '{"a": 1}'}],
                "finish_reason": "tool_calls",
            }
        ]
        assert out["events"] == [
            {"seq": 0, "t_ms": 1.235, "gap_ms": None, "kind": "comment", "data": "ok"},
            {"seq": 1, "t_ms": 2.0, "gap_ms": 0.766, "kind": "data", "data": "{}", "event": "delta"},
        ]
        assert out["finish_reason"] == "tool_calls"

    def test_usage_null_and_text(self, make_record: MakeRecord) -> None:
        recs = [make_record(usage=None, error="boom ✗"), make_record()]
        text = records_to_json(recs)
        assert "boom ✗" in text and text.startswith("[\n  {\n")
        parsed = json.loads(text)
        assert [p["id"] for p in parsed] == [r.id for r in recs]
        assert parsed[0]["usage"] is None and parsed[0]["error"] == "boom ✗"
        assert all(list(p) == TOP_KEYS for p in parsed)

    def test_stored_record_exports_like_the_live_one(
        self, engine: sa.Engine, make_record: MakeRecord
    ) -> None:
        rec = make_record(started_at=datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
        _store(engine, [rec])
        with Session(engine) as s:
            stored = get_stream(s, rec.id)
        assert record_to_json(stored) == record_to_json(rec)


def _sse_bodies() -> list[object]:
    body = (
        b"\xef\xbb\xbf: comment\r\n\r\n"
        b'event: delta\rdata: {"t": "\xc3\xa9"}\r\r'
        b"data: line one\ndata: line two\n\n"
        b"data: bad \xff bytes\n\n\n\n"
        b"data: [DONE]\n\n"
        b"data: cut off mid"
    )
    params: list[object] = [pytest.param(body, id="tricky")]
    if CORPUS.is_dir():
        params += [pytest.param(p.read_bytes(), id=p.name) for p in sorted(CORPUS.glob("*.sse"))]
    return params


class TestSseExport:
    @pytest.mark.parametrize("body", _sse_bodies())
    def test_byte_exact_through_the_database(
        self, body: bytes, engine: sa.Engine, make_record: MakeRecord, events_from_body: EventsFromBody
    ) -> None:
        rec = make_record(events=events_from_body(body))
        assert record_to_sse(rec) == body
        _store(engine, [rec])
        with Session(engine) as s:
            stored = get_stream(s, rec.id)
        assert stored.events == rec.events  # data derived from raw equals the decoder's
        assert record_to_sse(stored) == body

    def test_non_streamed_gives_the_body(self, make_record: MakeRecord) -> None:
        rec = make_record(stream=False, events=(), response_body='{"error": "ünïcode"}')
        assert record_to_sse(rec) == '{"error": "ünïcode"}'.encode()
        assert record_to_sse(make_record(stream=False, events=(), response_body=None)) == b""
