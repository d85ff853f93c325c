"""`EventLog`: the tap's events, kept in the event pack's layout, read as a sequence of `EventRecord`s.

The recorder stores an `EventLog`'s rows as they are; everything else reads it as `EventRecord`s. Both must
say the same: the pack written from the log is the pack written from its records, byte for byte, on every
recording of the corpus, read in pieces.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamtap import read
from streamtap.db import packs
from streamtap.db.engine import make_engine, upgrade
from streamtap.privacy import strip_content
from streamtap.recorder import Recorder
from streamtap.records import (
    EventKind,
    EventLog,
    EventRecord,
    StreamRecord,
    StreamStart,
    token_event_count,
    token_gaps,
)
from streamtap.tap import StreamTap

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
FILES = sorted(CORPUS.glob("*.sse"))
PATHS = {"anthropic": "/v1/messages", "responses": "/v1/responses"}


def _path(name: str) -> str:
    return next((p for key, p in PATHS.items() if key in name), "/v1/chat/completions")


def tap_record(body: bytes, *, path: str = "/v1/chat/completions", seed: int = 0) -> StreamRecord:
    """The record of `body` read in random pieces, 2 ms apart."""
    start = StreamStart(
        "s" + str(seed),
        datetime(2026, 11, 24, tzinfo=UTC),
        "POST",
        "https://h" + path,
        "h",
        path,
        None,
        None,
        "t",
    )
    tap = StreamTap(start, 0.0)
    tap.response_headers(0.001, 200, "text/event-stream", None)
    rng = random.Random(seed)
    at, t = 0, 0.002
    while at < len(body):
        n = rng.choice([1, 7, 64, 300, 4096])
        tap.feed(body[at : at + n], t)
        at += n
        t += 0.002
    return tap.finish(t)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_the_pack_of_the_log_is_the_pack_of_its_records(path: Path) -> None:
    body = path.read_bytes()
    for seed in range(3):
        record = tap_record(body, path=_path(path.name), seed=seed)
        log = record.events
        assert type(log) is EventLog
        records = tuple(log)
        assert packs.pack("x", log) == packs.pack("x", records)
        assert b"".join(e.raw for e in log) == body
        assert token_gaps(log) == token_gaps(records) == record.gaps_ms
        assert token_event_count(log) == token_event_count(records) == sum(1 for e in records if e.tokens)
        # without content: still a log, stored as its records would be
        stripped = strip_content(record).events
        assert type(stripped) is EventLog
        assert stripped == tuple(e._replace(raw=b"", data=None) for e in records)
        assert packs.pack("x", stripped) == packs.pack("x", tuple(stripped))


def test_padding_belongs_to_the_event_before() -> None:
    body = b'data: {"a": 1}\n\n: note\n\n\n\n\n'
    log = tap_record(body, seed=1).events
    assert [e.raw for e in log] == [b'data: {"a": 1}\n\n', b": note\n\n\n\n\n"]
    assert [row[5:] for row in log.rows] == [(0, 16), (16, len(body))]
    assert packs.pack("x", log) == packs.pack("x", tuple(log))


def test_event_names_with_nul_are_stored_as_the_records_would_be() -> None:
    body = b"event: a\x00b\ndata: 1\n\nevent: plain\ndata: 2\n\n"
    log = tap_record(body, seed=2).events
    row = packs.pack("x", log)
    assert row == packs.pack("x", tuple(log))
    assert row is not None and "a\ufffdb" in row[1] and "\x00" not in row[1]
    assert log[0].event == "a\x00b"  # the record itself keeps what arrived


class TestSequence:
    def log(self) -> EventLog:
        return EventLog(
            [(1.5, None, EventKind.DATA, None, True, 0, 3), (4.0, 2.5, EventKind.COMMENT, "e", False, 3, 5)],
            [b"abc", b"de"],
            ["abc", None],
        )

    def test_reads_as_records(self) -> None:
        log = self.log()
        first = EventRecord(0, 1.5, None, EventKind.DATA, "abc", b"abc", None, True)
        second = EventRecord(1, 4.0, 2.5, EventKind.COMMENT, None, b"de", "e", False)
        assert len(log) == 2 and list(log) == [first, second]
        assert log[0] == first and log[-1] == second and log[1:] == (second,)
        assert type(log[0].kind) is EventKind

    def test_equal_to_the_same_records_in_any_sequence(self) -> None:
        log = self.log()
        records = tuple(log)
        assert log == records and records == log and log == list(records) and log == self.log()
        assert log != records[:1] and log != () and log != ()
        assert log != "ab" and log != b"ab"

    def test_in_a_record_compares_with_tuples(self) -> None:
        body = b"data: 1\n\ndata: [DONE]\n\n"
        record = tap_record(body)
        import dataclasses

        assert record == dataclasses.replace(record, events=tuple(record.events))


def test_stored_and_read_back(tmp_path: Path) -> None:
    """A log goes into the database and comes back as the records it reads as."""
    engine = make_engine(f"sqlite:///{tmp_path}/log.db")
    upgrade(engine)
    body = (CORPUS / FILES[0].name).read_bytes()
    record = tap_record(body, path=_path(FILES[0].name), seed=5)
    recorder = Recorder(engine)
    recorder.start()
    recorder.submit(record)
    assert recorder.close()
    with sa.orm.Session(engine) as session:
        back = read.get_stream(session, record.id)
    assert [(e.seq, e.t_ms, e.gap_ms, e.kind, e.raw, e.event, e.tokens) for e in back.events] == [
        (e.seq, e.t_ms, e.gap_ms, e.kind, e.raw, e.event, e.tokens) for e in record.events
    ]
    engine.dispose()


def test_a_callers_bytearray_is_never_changed() -> None:
    """The padding after the last event joins it in the log, not in the buffer the caller handed over."""
    start = StreamStart(
        "b", datetime(2026, 11, 24, tzinfo=UTC), "POST", "https://h/v1", "h", "/v1", None, None, "t"
    )
    tap = StreamTap(start, 0.0)
    tap.response_headers(0.001, 200, "text/event-stream", None)
    tap.feed(b"data: {}\n\n", 0.002)
    chunk = bytearray(b'data: {"a": 1}\n\n')
    tap.feed(chunk, 0.003)
    tap.feed(b"\n", 0.004)
    record = tap.finish(0.005)
    assert chunk == bytearray(b'data: {"a": 1}\n\n')
    assert record.events[-1].raw == b'data: {"a": 1}\n\n\n'


def test_a_memoryview_read_is_recorded_like_bytes() -> None:
    start = StreamStart(
        "m", datetime(2026, 11, 24, tzinfo=UTC), "POST", "https://h/v1", "h", "/v1", None, None, "t"
    )
    records = []
    for wrap in (bytes, memoryview):
        tap = StreamTap(start, 0.0)
        tap.response_headers(0.001, 200, "text/event-stream", None)
        tap.feed(wrap(b'data: {"a": 1}\n\ndata: {"b"'), 0.002)
        tap.feed(wrap(b": 2}\n\n"), 0.003)
        records.append(tap.finish(0.004))
    assert records[0] == records[1]
    assert [e.raw for e in records[1].events] == [b'data: {"a": 1}\n\n', b'data: {"b": 2}\n\n']
