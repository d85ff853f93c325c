"""The recorder on real databases: round trips, drop-oldest under a locked SQLite file, retries, drain."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from streamtap.db.engine import make_engine, upgrade
from streamtap.db.models import Stream
from streamtap.export import choice_to_dict
from streamtap.read import get_streams
from streamtap.recorder import RECORD_COLUMNS, START_COLUMNS, Recorder, _StreamRows, mark_interrupted
from streamtap.records import (
    Choice,
    EventKind,
    EventRecord,
    Outcome,
    StreamRecord,
    StreamStart,
    ToolCall,
    Usage,
    token_event_count,
)

MakeRecord = Callable[..., StreamRecord]
EventsFromBody = Callable[..., tuple[EventRecord, ...]]


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def _rows(engine: sa.Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


def _start(id: str, instance: str = "test:8080") -> StreamStart:
    return StreamStart(
        id=id,
        started_at=datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
        method="POST",
        url="https://api.example.com/v1/chat/completions",
        host="api.example.com",
        path="/v1/chat/completions",
        request_model="gpt-test",
        api_key_fp="fp-1234",
        proxy_instance=instance,
        request_body='{"model": "gpt-test", "stream": true}',
    )


def _varied_records(make_record: MakeRecord, events_from_body: EventsFromBody) -> list[StreamRecord]:
    body = (
        b"\xef\xbb\xbf: keep-alive\r\n\r\n"
        b'event: delta\r\ndata: {"t": "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c"}\r\n\r\n'
        b"data: broken \xff\xfe utf-8\n\n"
        b'data: {"t": "\xf0\x9f\x98\x80"}\n\n'
        b"data: [DONE]\n\n"
        b"data: left over"
    )
    events = (
        *events_from_body(body),
        EventRecord(seq=6, t_ms=9.25, gap_ms=0.5, kind=EventKind.MALFORMED, data=None, raw=b""),
    )
    return [
        make_record(
            events=events,
            usage=None,
            started_at=datetime(
                2026, 11, 24, 14, 30, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))
            ),
            choices=(
                Choice(0, "héllo 世界 😀", "pensé…", None, (), None),
                Choice(1, None, None, "je refuse", (), "content_filter"),
            ),
            extra={"note": "ünïcode", "n": [1, 2.5, None]},
            content_encoding="br",
            tap_errors=2,
            api_key_fp="fp-abcdef",
        ),
        make_record(
            usage=Usage(prompt_tokens=12, completion_tokens=30, total_tokens=42, reasoning_tokens=20),
            choices=(
                Choice(
                    0,
                    None,
                    None,
                    None,
                    (
                        ToolCall(0, "call_1", "get_weather", '{"city": "Zürich"}'),
                        ToolCall(1, "call_2", "get_time", ""),
                    ),
                    "tool_calls",
                ),
            ),
            ttft_ms=None,
            ttfc_ms=None,
        ),
        make_record(
            stream=False,
            events=(),
            status_code=429,
            outcome=Outcome.HTTP_ERROR,
            error="rate limited",
            usage=Usage(prompt_tokens=None, completion_tokens=None, total_tokens=0),
            choices=(),
            response_body='{"error": {"message": "slow down ✋"}}',
            ttft_ms=None,
            ttfc_ms=None,
            model=None,
            api="openai.chat",
        ),
    ]


class TestRoundTrip:
    def test_records_come_back_equal(
        self, engine: sa.Engine, make_record: MakeRecord, events_from_body: EventsFromBody
    ) -> None:
        records = _varied_records(make_record, events_from_body)
        written: list[int] = []
        recorder = Recorder(engine, on_written=written.append)
        recorder.start()
        for rec in records:
            recorder.submit(rec)
        assert recorder.close() is True
        assert (recorder.written, recorder.dropped, sum(written)) == (3, 0, 3)
        with Session(engine) as session:
            got = get_streams(session)
        newest_first = sorted(records, key=lambda r: r.started_at, reverse=True)
        assert [r.id for r in got] == [r.id for r in newest_first]
        for expected, actual in zip(newest_first, got, strict=True):
            assert actual == expected
            assert actual.started_at.tzinfo is not None

    def test_unknown_usage_is_null_never_zero(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        unknown, known = make_record(usage=None), make_record(usage=Usage(3, 4, 7))
        recorder = Recorder(engine)
        recorder.start()
        recorder.submit(unknown)
        recorder.submit(known)
        recorder.close()
        rows = dict(
            (r[0], r[1:])
            for r in _rows(
                engine,
                "SELECT id, prompt_tokens, completion_tokens, total_tokens, reasoning_tokens,"
                " event_count, token_event_count, finish_reason FROM streams",
            )
        )
        assert rows[unknown.id] == (None, None, None, None, 2, 2, "stop")
        assert rows[known.id] == (3, 4, 7, None, 2, 2, "stop")

    def test_raw_bytes_stored_exactly(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        raw = b"data: \xff\x00\xfe\r\n\r\n"
        rec = make_record(events=(EventRecord(0, 1.0, None, EventKind.MALFORMED, "\ufffd\x00\ufffd", raw),))
        recorder = Recorder(engine)
        recorder.start()
        recorder.submit(rec)
        recorder.close()
        assert [bytes(r[0]) for r in _rows(engine, "SELECT raw FROM stream_events")] == [raw]

    def test_keep_events_false(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        rec = make_record()
        recorder = Recorder(engine, keep_events=False)
        recorder.start()
        recorder.submit(rec)
        recorder.close()
        assert _rows(engine, "SELECT count(*) FROM stream_events") == [(0,)]
        assert _rows(engine, "SELECT event_count FROM streams") == [(2,)]


class TestDriverRows:
    """The recorder binds the `streams` rows straight to the driver; they must store what SQLAlchemy's own
    statements on the model would (the read side, the dashboard's SQL and the migrations rely on it)."""

    def test_every_column_is_written(self) -> None:
        columns = [c.name for c in cast(sa.Table, Stream.__table__).c]
        assert sorted(RECORD_COLUMNS) == sorted(columns)
        assert set(START_COLUMNS) <= set(columns)
        assert len(set(RECORD_COLUMNS)) == len(RECORD_COLUMNS)

    def test_stored_as_sqlalchemy_stores_them(
        self, engine: sa.Engine, make_record: MakeRecord, events_from_body: EventsFromBody
    ) -> None:
        records = [
            *_varied_records(make_record, events_from_body),
            make_record(error="cut\x00off", extra={"k": "v\x00"}, duration_ms=None),
        ]
        start = dataclasses.replace(
            _start("s" * 32),
            started_at=datetime(2026, 11, 24, 9, 0, 0, 5, tzinfo=timezone(timedelta(hours=-7))),
            request_body="nul \x00 here",
        )
        submitted_at = datetime(2026, 11, 25, 1, 2, 3, 450000, tzinfo=UTC)
        rows = _StreamRows(engine.dialect)
        with engine.begin() as conn:
            conn.exec_driver_sql(rows.start_sql, [rows.start(start)])
            conn.exec_driver_sql(rows.record_sql, [rows.record(r, submitted_at) for r in records])
        # the same rows through SQLAlchemy's statement, the JSON serializer and the column types
        table = cast(sa.Table, Stream.__table__)
        with engine.begin() as conn:
            conn.execute(sa.insert(table), [_start_dict(start, "S" * 32)])
            conn.execute(sa.insert(table), [_record_dict(r, submitted_at, r.id.upper()) for r in records])
        stored = {r[0]: r[1:] for r in _rows(engine, "SELECT * FROM streams")}
        assert len(stored) == 2 * (len(records) + 1)
        for key in [start.id, *(r.id for r in records)]:
            assert stored[key] == stored[key.upper()], key
        assert stored[start.id][0] == stored["S" * 32][0]  # started_at, in UTC (text in SQLite)
        if engine.dialect.name == "sqlite":
            assert stored[start.id][0] == "2026-11-24 16:00:00.000005"


def _without_nul(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v for k, v in row.items()}


def _start_dict(start: StreamStart, id: str) -> dict[str, Any]:
    return _without_nul(
        {
            **dataclasses.asdict(start),  # every field of the start into its column of the same name
            "id": id,
            "outcome": "in_progress",
            "stream": False,
            "api": "",
            "choices": [],
            "event_count": 0,
            "token_event_count": 0,
            "tap_errors": 0,
            "extra": {},
        }
    )


def _record_dict(rec: StreamRecord, submitted_at: datetime, id: str) -> dict[str, Any]:
    usage = rec.usage or Usage(None, None, None, None)
    same = (
        "started_at",
        "method",
        "url",
        "host",
        "path",
        "status_code",
        "stream",
        "api",
        "request_model",
        "model",
        "finish_reason",
        "error",
        "ttfb_ms",
        "ttft_ms",
        "ttfc_ms",
        "duration_ms",
        "api_key_fp",
        "proxy_instance",
        "content_encoding",
        "request_body",
        "response_body",
        "tap_errors",
        "extra",
    )
    return _without_nul(
        {
            **{f: getattr(rec, f) for f in same},
            **dataclasses.asdict(usage),
            "id": id,
            "outcome": rec.outcome.value,
            "choices": [choice_to_dict(c) for c in rec.choices],
            "event_count": len(rec.events),
            "token_event_count": token_event_count(rec.events),
            "finished_at": (
                submitted_at
                if rec.duration_ms is None
                else rec.started_at + timedelta(milliseconds=rec.duration_ms)
            ),
        }
    )


class TestStartThenFinish:
    def test_in_progress_row_is_completed(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        rec = make_record()
        recorder = Recorder(engine, flush_interval=0)
        recorder.start()
        recorder.submit_start(_start(rec.id))
        _wait_for(lambda: _rows(engine, "SELECT count(*) FROM streams") == [(1,)])
        assert _rows(engine, "SELECT outcome, finished_at, request_body FROM streams") == [
            ("in_progress", None, '{"model": "gpt-test", "stream": true}')
        ]
        recorder.submit(rec)
        recorder.close()
        rows = _rows(engine, "SELECT id, outcome, finished_at FROM streams")
        assert [(r[0], r[1]) for r in rows] == [(rec.id, "completed")]
        assert rows[0][2] is not None
        with Session(engine) as session:
            assert get_streams(session) == [rec]

    def test_late_start_does_not_overwrite(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        rec = make_record()
        recorder = Recorder(engine)
        recorder.start()
        recorder.submit(rec)
        recorder.submit_start(_start(rec.id))
        recorder.close()
        assert _rows(engine, "SELECT outcome FROM streams") == [("completed",)]
        assert _rows(engine, "SELECT count(*) FROM stream_events") == [(2,)]

    def test_same_record_twice_replaces_its_events(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        rec = make_record()
        recorder = Recorder(engine, flush_interval=0)
        recorder.start()
        recorder.submit(rec)
        _wait_for(lambda: recorder.written == 1)
        recorder.submit(rec)
        recorder.close()
        assert (recorder.written, recorder.dropped) == (2, 0)
        assert _rows(engine, "SELECT count(*) FROM stream_events") == [(2,)]

    def test_a_record_again_with_other_events_replaces_them(
        self, engine: sa.Engine, make_record: MakeRecord
    ) -> None:
        rec = make_record()
        recorder = Recorder(engine, flush_interval=0)
        recorder.start()
        recorder.submit(rec)
        _wait_for(lambda: recorder.written == 1)
        recorder.submit(dataclasses.replace(rec, events=rec.events[1:]))
        _wait_for(lambda: recorder.written == 2)
        raws = _rows(engine, "SELECT seq, raw FROM stream_events")
        assert raws == [(0, rec.events[1].raw)]
        recorder.submit(dataclasses.replace(rec, events=()))  # and without any: none left
        recorder.close()
        assert _rows(engine, "SELECT count(*) FROM stream_events") == [(0,)]
        assert _rows(engine, "SELECT count(*) FROM stream_event_packs") == [(0,)]

    def test_mark_interrupted(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        done = make_record(proxy_instance="a:1")
        recorder = Recorder(engine)
        recorder.start()
        recorder.submit_start(_start("1" * 32, "a:1"))
        recorder.submit_start(_start("2" * 32, "b:1"))
        recorder.submit_start(_start(done.id, "a:1"))
        recorder.submit(done)
        recorder.close()
        assert mark_interrupted(engine, "a:1") == 1
        assert mark_interrupted(engine, "a:1") == 0
        rows = dict(_rows(engine, "SELECT id, outcome FROM streams"))
        assert rows == {"1" * 32: "interrupted", "2" * 32: "in_progress", done.id: "completed"}


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def exclusive_lock(sqlite_url: str) -> Iterator[Callable[[], None]]:
    """Hold SQLite's write lock from another connection; call the returned function to release it."""
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            conn.execute("ROLLBACK")
            released = True

    yield release
    release()
    conn.close()


class TestBackPressure:
    def test_drops_oldest_with_exact_count(
        self, sqlite_engine: sa.Engine, exclusive_lock: Callable[[], None], make_record: MakeRecord
    ) -> None:
        records = [make_record() for _ in range(21)]
        dropped: list[int] = []
        recorder = Recorder(sqlite_engine, queue_size=5, flush_interval=0, on_dropped=dropped.append)
        recorder.start()
        recorder.submit(records[0])
        _wait_for(lambda: recorder.depth == 0)  # the writer holds it, blocked on the lock
        for rec in records[1:]:
            recorder.submit(rec)
        assert (recorder.depth, recorder.dropped, sum(dropped), recorder.written) == (5, 15, 15, 0)
        exclusive_lock()
        assert recorder.close() is True
        assert (recorder.written, recorder.dropped) == (6, 15)
        stored = {r[0] for r in _rows(sqlite_engine, "SELECT id FROM streams")}
        assert stored == {r.id for r in [records[0], *records[16:]]}

    def test_lag_is_how_long_the_oldest_item_has_waited(
        self, sqlite_engine: sa.Engine, exclusive_lock: Callable[[], None], make_record: MakeRecord
    ) -> None:
        """The worker raises its priority on it: a writer behind is as far behind as an interpreter."""
        recorder = Recorder(sqlite_engine, flush_interval=0)
        assert recorder.lag() == 0.0
        recorder.start()
        recorder.submit(make_record())
        _wait_for(lambda: recorder.depth == 0)  # the writer holds it, blocked on the lock
        time.sleep(0.2)
        recorder.submit(make_record())
        assert 0.2 <= recorder.lag() < 60  # the batch the writer holds is the oldest
        exclusive_lock()
        assert recorder.close() is True
        assert (recorder.written, recorder.lag()) == (2, 0.0)

    def test_retries_until_the_database_is_back(
        self,
        sqlite_engine: sa.Engine,
        exclusive_lock: Callable[[], None],
        make_record: MakeRecord,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        # A short busy timeout, so each attempt fails fast and the backoff path runs several times.
        sa.event.listen(sqlite_engine, "connect", lambda c, _: c.execute("PRAGMA busy_timeout=20"))
        sqlite_engine.dispose()
        records = [make_record() for _ in range(3)]
        recorder = Recorder(sqlite_engine, flush_interval=0)
        try:
            with caplog.at_level(logging.WARNING, logger="streamtap.recorder"):
                recorder.start()
                for rec in records:
                    recorder.submit(rec)
                _wait_for(lambda: sum("cannot write" in m for m in caplog.messages) >= 3)
                assert recorder.written == 0
                exclusive_lock()
                _wait_for(lambda: recorder.written == 3)
            assert "database is locked" in caplog.text
            assert "writable again" in caplog.text
            assert recorder.close() is True
            assert recorder.dropped == 0
            assert len(_rows(sqlite_engine, "SELECT id FROM streams")) == 3
        finally:
            recorder.close()

    def test_close_gives_up_after_timeout(
        self, sqlite_engine: sa.Engine, exclusive_lock: Callable[[], None], make_record: MakeRecord
    ) -> None:
        sa.event.listen(sqlite_engine, "connect", lambda c, _: c.execute("PRAGMA busy_timeout=20"))
        sqlite_engine.dispose()
        dropped: list[int] = []
        recorder = Recorder(sqlite_engine, flush_interval=0, on_dropped=dropped.append)
        recorder.start()
        for _ in range(4):
            recorder.submit(make_record())
        t0 = time.monotonic()
        assert recorder.close(timeout=0.3) is False
        assert time.monotonic() - t0 < 5
        assert (recorder.written, recorder.dropped, sum(dropped)) == (0, 4, 4)


class TestDrainAndErrors:
    def test_close_drains_everything(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        written: list[int] = []
        recorder = Recorder(engine, batch_max=7, on_written=written.append)
        records = [make_record() for _ in range(300)]
        for rec in records:
            recorder.submit(rec)  # queued before the writer even starts
        assert recorder.depth == 300
        recorder.start()
        assert recorder.close() is True
        assert (recorder.written, recorder.dropped, recorder.depth) == (300, 0, 0)
        assert sum(written) == 300 and max(written) <= 7
        assert _rows(engine, "SELECT count(*), sum(event_count) FROM streams") == [(300, 600)]
        assert _rows(engine, "SELECT count(*) FROM stream_events") == [(600,)]

    def test_close_without_start_still_writes(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        recorder = Recorder(engine)
        recorder.submit(make_record())
        assert recorder.close() is True
        assert recorder.written == 1

    def test_rejected_record_is_dropped_alone(
        self, engine: sa.Engine, make_record: MakeRecord, caplog: pytest.LogCaptureFixture
    ) -> None:
        good = [make_record() for _ in range(4)]
        bad = make_record(extra={"not json": object()})
        naive = make_record(started_at=datetime(2026, 11, 24, 8, 0))
        dropped: list[int] = []
        recorder = Recorder(engine, on_dropped=dropped.append)
        for rec in [good[0], bad, good[1], naive, good[2]]:
            recorder.submit(rec)
        recorder.start()
        recorder.submit(good[3])
        with caplog.at_level(logging.ERROR, logger="streamtap.recorder"):
            assert recorder.close() is False
        assert (recorder.written, recorder.dropped, sum(dropped)) == (4, 2, 2)
        assert {r[0] for r in _rows(engine, "SELECT id FROM streams")} == {r.id for r in good}
        assert "refused" in caplog.text

    def test_nul_in_text_is_stored_on_every_backend(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        rec = make_record(error="bad\x00byte", response_body="x\x00y")
        recorder = Recorder(engine)
        recorder.submit(rec)
        assert recorder.close() is True
        assert _rows(engine, "SELECT error, response_body FROM streams") == [("bad\ufffdbyte", "x\ufffdy")]

    def test_submit_after_close_is_counted(self, engine: sa.Engine, make_record: MakeRecord) -> None:
        recorder = Recorder(engine)
        recorder.start()
        recorder.close()
        recorder.submit(make_record())
        assert (recorder.dropped, recorder.written, recorder.depth) == (1, 0, 0)

    def test_submit_does_not_block_on_a_locked_database(
        self, sqlite_engine: sa.Engine, exclusive_lock: Callable[[], None], make_record: MakeRecord
    ) -> None:
        recorder = Recorder(sqlite_engine, queue_size=100, flush_interval=0)
        recorder.start()
        records = [make_record() for _ in range(1000)]
        # All 1,000 return while the lock is held (a bound on liveness, not on speed: a submit that waited
        # for the database would wait until the lock is released, after the join).
        submitter = threading.Thread(target=lambda: [recorder.submit(rec) for rec in records])
        submitter.start()
        submitter.join(30)
        assert not submitter.is_alive(), "submit() waited for the locked database"
        assert recorder.written == 0  # nothing could be written meanwhile
        assert recorder.depth <= 100
        exclusive_lock()
        recorder.close()
        assert recorder.written + recorder.dropped == 1000

    def test_writer_is_one_named_thread(self, engine: sa.Engine) -> None:
        recorder = Recorder(engine)
        recorder.start()
        recorder.start()
        names = [t.name for t in threading.enumerate() if t.name == "streamtap-recorder"]
        recorder.close()
        assert names == ["streamtap-recorder"]
        assert not any(t.name == "streamtap-recorder" for t in threading.enumerate())
