"""The worker process and the proxy's channel to it: framing, a real worker, its death, and overload."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import random
import signal
import socket
import sqlite3
import time
import warnings
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from harness import free_port, metric_sum, port_open, wait_for
from streamtap import read
from streamtap.channel import WorkerChannel
from streamtap.db.engine import make_engine
from streamtap.errors import ConfigError
from streamtap.pipeline import CHUNK, END, HEADERS, START, TAP_ERROR
from streamtap.records import Outcome, StreamRecord
from streamtap.worker import can_leave_idle, frame, read_frame

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
INSTANCE = "test-worker:8080"
SSE_FILE = CORPUS / "openai_chat_parallel_tool_calls.sse"
REQUEST = b'{"model": "gpt-test", "stream": true}'


@pytest.fixture(autouse=True)
def _collect_pipes() -> Iterator[None]:
    """A pipe left to the garbage collector warns (an error here) in this test, not in a later one."""
    yield
    gc.collect()


# -- framing -------------------------------------------------------------------------------------------


class TestFrames:
    @pytest.mark.parametrize(
        "obj",
        [
            {"db": "sqlite:///x.db", "metrics_port": 0, "nice": 10, "retention": ""},
            [
                (START, "k", 1.5, 1.7e9, "POST", "https://h/v1", "h", "/v1", None, b"\x00\xff"),
                (CHUNK, "k", 2.0, b""),
            ],
            [],
            b"x" * 100_000,
        ],
        ids=["config", "batch", "empty", "big"],
    )
    def test_round_trip(self, obj: Any) -> None:
        stream = io.BytesIO(frame(obj) + frame("next"))
        assert read_frame(stream) == obj
        assert read_frame(stream) == "next"
        assert read_frame(stream) is None

    def test_what_marshal_cannot_write_is_pickled(self) -> None:
        # a str subclass (an enum member, say) where a plain str was meant: still delivered, as pickle does
        batch = [(END, "k", 1.0, Outcome.CLIENT_DISCONNECT, "gone")]
        data = frame(batch)
        assert data[4:5] == b"p"
        got = read_frame(io.BytesIO(data))
        assert got == batch and got[0][3] is Outcome.CLIENT_DISCONNECT
        assert frame([(CHUNK, "k", 1.0, b"x")])[4:5] == b"m"

    def test_eof(self) -> None:
        assert read_frame(io.BytesIO(b"")) is None

    @pytest.mark.parametrize("cut", [1, 3, 4, 5, -1])
    def test_truncated_frame_is_the_end(self, cut: int) -> None:
        data = frame([(CHUNK, "k", 1.0, b"abc" * 100)])
        assert read_frame(io.BytesIO(data[:cut])) is None
        stream = io.BytesIO(frame("whole") + data[:cut])
        assert read_frame(stream) == "whole"
        assert read_frame(stream) is None


# -- a real worker -------------------------------------------------------------------------------------


def config(db: str, **overrides: Any) -> dict[str, Any]:
    """What StreamtapAddon.worker_config() gives, with the metrics endpoint off and the worker's CPU
    priority left alone ("nice" and "priority": whichever the worker reads)."""
    cfg = {
        "db": db,
        "instance": INSTANCE,
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "max_models": 50,
        "queue_size": 10_000,
        "keep_events": True,
        "capture": "full",
        "retention": "",
        "nice": 0,
        "priority": 0,
    }
    cfg.update(overrides)
    return cfg


def exchange_start(key: str, t0: float) -> tuple[Any, ...]:
    url = "https://api.example.com/v1/chat/completions"
    return (
        START,
        key,
        t0,
        time.time(),
        "POST",
        url,
        "api.example.com",
        "/v1/chat/completions",
        None,
        REQUEST,
    )


def exchange_response(key: str, t0: float, body: bytes, seed: int = 0) -> list[tuple[Any, ...]]:
    """HEADERS, the body in arbitrary reads, its clean end, END: as the addon sends a streamed response."""
    rng = random.Random(seed)
    msgs: list[tuple[Any, ...]] = [(HEADERS, key, t0 + 0.05, 200, "text/event-stream", None)]
    t, i = t0 + 0.1, 0
    while i < len(body):
        n = rng.randint(1, 300)
        msgs.append((CHUNK, key, t, body[i : i + n]))
        t += 0.01
        i += n
    msgs.append((CHUNK, key, t, b""))
    msgs.append((END, key, t, None, None))
    return msgs


def exchange(key: str, body: bytes, seed: int = 0) -> list[tuple[Any, ...]]:
    t0 = time.monotonic()
    return [exchange_start(key, t0), *exchange_response(key, t0, body, seed)]


def stream(db_url: str, key: str) -> StreamRecord:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return read.get_stream(session, key)
    finally:
        engine.dispose()


def outcome_of(db_file: Path, key: str) -> str | None:
    """The stream's outcome column, or None while it has no row (read without the engine's side effects)."""
    if not db_file.exists():
        return None
    with sqlite3.connect(db_file, timeout=5) as conn:
        try:
            row = conn.execute("SELECT outcome FROM streams WHERE id = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # no schema yet
            return None
    return None if row is None else str(row[0])


def put_all(channel: WorkerChannel, messages: list[tuple[Any, ...]]) -> None:
    for msg in messages:
        assert channel.put(msg) is None


def put_at_once(channel: WorkerChannel, messages: list[tuple[Any, ...]]) -> None:
    """`put` each message with no Python code running in between, so the sender thread cannot switch in
    and take only some of them: `deque.append` called from C (map, deque) never releases the GIL."""
    deque(map(channel.put, messages), maxlen=0)


def children() -> set[int]:
    """The pids of this process's children (as in harness.process_tree_rss)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update(int(c) for c in (task / "children").read_text().split())
    return pids


def assert_recorded_whole(record: StreamRecord, body: bytes) -> None:
    assert record.outcome is Outcome.COMPLETED
    assert record.proxy_instance == INSTANCE
    assert record.request_model == "gpt-test"
    assert record.tap_errors == 0
    assert b"".join(e.raw for e in record.events) == body
    assert [e.seq for e in record.events] == list(range(len(record.events)))


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "streamtap.db"
    return f"sqlite:///{path}", path


@pytest.fixture
def channel(db: tuple[str, Path]) -> Iterator[WorkerChannel]:
    ch = WorkerChannel(config(db[0]), start_timeout=30)
    ch.start()
    try:
        yield ch
    finally:
        pid = ch.worker_pid
        if pid is not None:  # never leave a stopped worker behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        ch.close(timeout=10)


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat (R, S, T for stopped, Z...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


class TestWorker:
    def test_records_a_stream(self, db: tuple[str, Path], channel: WorkerChannel) -> None:
        body = SSE_FILE.read_bytes()
        put_all(channel, exchange("a1", body))
        channel.close(timeout=10)
        assert channel.worker_pid is None
        record = stream(db[0], "a1")
        assert_recorded_whole(record, body)
        assert record.choices[0].tool_calls  # interpreted, not just stored
        engine = make_engine(db[0])
        try:
            with Session(engine) as session:
                assert [r.id for r in read.get_streams(session)] == ["a1"]
                events = session.execute(sa.text("SELECT count(*) FROM stream_events")).scalar_one()
            assert events == len(record.events) > 5
        finally:
            engine.dispose()
        assert channel.dropped == 0 and channel.restarts == 0

    def test_close_interrupts_what_is_still_open(self, db: tuple[str, Path], channel: WorkerChannel) -> None:
        body = SSE_FILE.read_bytes()
        msgs = exchange("open", body)
        put_all(channel, msgs[: len(msgs) // 2])
        channel.close(timeout=10)
        record = stream(db[0], "open")
        assert record.outcome is Outcome.INTERRUPTED
        assert record.error == "the proxy exited mid-stream"

    def test_bad_sqlite_path(self) -> None:
        # /proc exists (so no directory needs creating) and no file can be created in it, even by root
        channel = WorkerChannel(config("sqlite:////proc/streamtap-test.db"), start_timeout=30)
        with pytest.raises(ConfigError) as info:
            channel.start()
        message = str(info.value)
        assert "\n" not in message
        assert "/proc/streamtap-test.db" in message
        assert channel.worker_pid is None

    def test_sqlite_directory_that_cannot_be_created(self, tmp_path: Path) -> None:
        (tmp_path / "a-file").write_text("")
        channel = WorkerChannel(config(f"sqlite:///{tmp_path}/a-file/x.db"), start_timeout=30)
        with pytest.raises(ConfigError) as info:
            channel.start()
        message = str(info.value)
        assert "\n" not in message
        assert "a-file" in message  # names the database, or the path it could not create

    def test_bad_worker_priority(self, tmp_path: Path) -> None:
        # STREAMTAP_WORKER_PRIORITY=low: refused at start, in one line, instead of a worker that dies after
        # saying it is ready and is started again and again
        channel = WorkerChannel(config(f"sqlite:///{tmp_path}/p.db", priority="low"), start_timeout=30)
        with pytest.raises(ConfigError) as info:
            channel.start()
        message = str(info.value)
        assert "\n" not in message
        assert "STREAMTAP_WORKER_PRIORITY" in message and "'low'" in message
        assert channel.worker_pid is None

    def test_unreachable_postgresql(self) -> None:
        port = free_port()
        channel = WorkerChannel(config(f"postgresql://streamtap:secret@127.0.0.1:{port}/x"), start_timeout=30)
        with pytest.raises(ConfigError) as info:
            channel.start()
        message = str(info.value)
        assert "\n" not in message
        assert f"127.0.0.1:{port}" in message
        assert "refused" in message.lower()
        assert "secret" not in message


class TestMetricsEndpoint:
    def test_worker_serves_its_metrics(self, db: tuple[str, Path]) -> None:
        port = free_port()
        channel = WorkerChannel(config(db[0], metrics_port=port), start_timeout=30)
        channel.start()
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            put_all(channel, [(TAP_ERROR, "while reading the request"), (TAP_ERROR, "while finishing")])
            put_all(channel, exchange("m1", SSE_FILE.read_bytes()))

            def scraped() -> str | None:
                text = httpx.get(url, timeout=2).text
                done = metric_sum(text, "streamtap_streams_total", outcome="completed") == 1
                return text if done and metric_sum(text, "streamtap_tap_errors_total") == 2 else None

            text = wait_for(scraped, 10, what="the worker's metrics")
            assert metric_sum(text, "streamtap_active_streams") == 0
            assert (
                metric_sum(text, "streamtap_streams_total", model="gpt-test", upstream="api.example.com") == 1
            )
        finally:
            channel.close(timeout=10)
        assert not port_open(port)  # the worker took its endpoint with it

    def test_metrics_port_in_use(self, db: tuple[str, Path]) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(ConfigError, match=f"^metrics port {port} is in use$"):
                WorkerChannel(config(db[0], metrics_port=port), start_timeout=30).start()


class TestPipes:
    def test_the_channel_closes_its_pipes(self, db: tuple[str, Path]) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            channel = WorkerChannel(config(db[0]), start_timeout=30)
            channel.start()
            old_pid = channel.worker_pid
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)
            wait_for(lambda: channel.restarts == 1, 15, what="the worker to be restarted")
            channel.close(timeout=10)
            with pytest.raises(ConfigError):
                WorkerChannel(config("sqlite:////proc/streamtap-test.db"), start_timeout=30).start()
            gc.collect()
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert leaks == []


class TestWorkerDeath:
    def test_a_killed_worker_is_restarted(self, db: tuple[str, Path], channel: WorkerChannel) -> None:
        url, path = db
        body = SSE_FILE.read_bytes()
        t0 = time.monotonic()
        before = exchange_response("before", t0, body)
        put_all(channel, [exchange_start("before", t0), *before[:3]])
        # its in_progress row is written: the worker had it when it died
        wait_for(lambda: outcome_of(path, "before") == "in_progress", 10, what="the in_progress row")

        old_pid = channel.worker_pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        # traffic goes on while the worker is gone and being restarted; put() never raises
        rest = iter(before[3:])

        def restarted() -> bool:
            msg = next(rest, None)
            if msg is not None:
                assert channel.put(msg) is None
            return channel.restarts == 1 and channel.worker_pid not in (None, old_pid)

        wait_for(restarted, 15, interval=0.01, what="the worker to be restarted")
        put_all(channel, list(rest))
        put_all(channel, exchange("after", body, seed=1))
        channel.close(timeout=10)

        assert channel.restarts == 1
        assert_recorded_whole(stream(url, "after"), body)
        # the new worker found the old one's open stream and marked it
        assert stream(url, "before").outcome is Outcome.INTERRUPTED


class TestOverflow:
    @pytest.mark.skipif(not can_leave_idle(), reason="this process may not leave SCHED_IDLE")
    def test_a_writer_behind_raises_the_priority(
        self, db: tuple[str, Path], capfd: pytest.CaptureFixture[str]
    ) -> None:
        """The writer thread stuck (the database locked) while the worker's main thread keeps up: the
        recorder's queue is what is behind, and the worker leaves idle priority for it too."""
        url, path = db
        channel = WorkerChannel(config(url, priority="idle"), start_timeout=30)
        channel.start()
        lock = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            body = SSE_FILE.read_bytes()
            put_all(channel, exchange("held", body))
            time.sleep(1.0)  # the record waits for the writer, stuck on the lock (RAISE_LAG is 0.5 s)
            put_all(channel, exchange("next", body))  # every frame the worker reads, it looks at its lag

            err: list[str] = []

            def raised() -> bool:
                err.append(capfd.readouterr().err)
                return "the worker runs at normal priority" in "".join(err)

            wait_for(raised, 10, what="the worker to raise its priority")
            lock.execute("COMMIT")
        finally:
            lock.close()
            channel.close(timeout=10)
        assert {outcome_of(path, "held"), outcome_of(path, "next")} == {"completed"}

    def test_queue_bounded_while_the_worker_is_down(self, db: tuple[str, Path]) -> None:
        max_pending = 5
        channel = WorkerChannel(config(db[0]), max_pending=max_pending, start_timeout=30)
        channel.start()
        # a PostgreSQL that never answers: the next worker hangs in its start-up
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        try:
            channel.config = config(f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/x")
            channel.start_timeout = 4.0
            old_pid = channel.worker_pid
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)
            # the new worker's process exists: the sender has emptied the queue and waits for it
            wait_for(lambda: children() - {old_pid}, 5, what="the restart to begin")
            assert channel.worker_pid is None
            n = 10 * max_pending
            put_all(channel, [(CHUNK, "nobody", 0.0, b"x")] * n)
            # the worker is down for seconds: the overflow should be dropped (and counted) meanwhile
            wait_for(lambda: channel.dropped >= n - max_pending, 2.0, what="the overflow to be dropped")
        finally:
            silent.close()
            channel.close(timeout=10)

    def test_dropped_messages_are_counted_and_reported(self, db: tuple[str, Path]) -> None:
        url, path = db
        max_pending = 5
        channel = WorkerChannel(config(url), max_pending=max_pending, start_timeout=30)
        channel.start()
        pid = channel.worker_pid
        assert pid is not None
        stopped = False
        try:
            body = SSE_FILE.read_bytes()
            t0 = time.monotonic()
            response = exchange_response("cut", t0, body)
            head, tail = response[:4], response[4:]
            put_all(channel, [exchange_start("cut", t0), *head])
            wait_for(lambda: outcome_of(path, "cut") == "in_progress", 10, what="the in_progress row")

            os.kill(pid, signal.SIGSTOP)
            stopped = True
            wait_for(lambda: process_state(pid) == "T", 5, what="the worker to stop")
            # More than the pipe holds (1 MiB): the sender is left stuck writing this batch. The chunks are
            # for an exchange the worker does not know, so they change no record. Distinct objects: pickle
            # would write one object repeated in a batch only once.
            filler = [(CHUNK, "filler", t0, bytes([i]) * (1 << 18)) for i in range(16)]
            put_at_once(channel, filler)
            wait_for(lambda: not channel._queue, 5, what="the sender to take the filler")
            assert channel.dropped == 0

            n = 3 * max_pending
            burst = [(CHUNK, "filler", t0, b"b")] * n
            put_at_once(channel, burst)  # the sender finds the whole burst queued and drops exactly that
            wait_for(lambda: channel.dropped > 0, 5, what="the overflow to be dropped")
            assert channel.dropped == n
            assert channel.restarts == 0 and channel.worker_pid == pid

            os.kill(pid, signal.SIGCONT)
            stopped = False
            # the LOST notice reaches the worker: it finishes the open exchange
            wait_for(lambda: outcome_of(path, "cut") == "interrupted", 10, what="the LOST notice")
            # the exchange cut by the loss goes on; the worker must ignore the rest of it
            put_all(channel, tail)
            put_all(channel, exchange("fresh", body, seed=2))
            channel.close(timeout=10)
        finally:
            if stopped:
                os.kill(pid, signal.SIGCONT)
            channel.close(timeout=10)

        assert channel.dropped == n
        assert channel.restarts == 0
        cut = stream(url, "cut")
        assert cut.outcome is Outcome.INTERRUPTED
        assert cut.tap_errors == 1
        assert cut.error == "recording incomplete: observations were dropped"
        received = b"".join(e.raw for e in cut.events)
        assert received == b"".join(m[3] for m in head[1:])  # the reads before the loss, nothing after
        assert len(received) < len(body)
        assert_recorded_whole(stream(url, "fresh"), body)
