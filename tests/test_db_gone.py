"""The recorder when its database goes away (issue 5): a SQLite file deleted, replaced or made read-only
under it, its write-ahead log deleted, a PostgreSQL server stopped. Real files, a real server of our own.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from db_faults import pg_cluster, read_only
from streamtap.db.engine import SqliteFileWatch, make_engine, upgrade
from streamtap.read import get_streams
from streamtap.recorder import Recorder
from streamtap.records import StreamRecord, StreamStart

MakeRecord = Callable[..., StreamRecord]


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def _stored(url: str) -> list[StreamRecord]:
    """What a new reader finds at the URL (a fresh engine: nothing shared with the recorder's pool)."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return get_streams(session, last=1000)
    finally:
        engine.dispose()


def _sqlite(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _start_of(rec: StreamRecord) -> StreamStart:
    return StreamStart(
        id=rec.id,
        started_at=rec.started_at,
        method=rec.method,
        url=rec.url,
        host=rec.host,
        path=rec.path,
        request_model=rec.request_model,
        api_key_fp=rec.api_key_fp,
        proxy_instance=rec.proxy_instance,
        request_body=rec.request_body,
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Path, str, sa.Engine]]:
    """A migrated SQLite file, its URL, and the engine the recorder writes through."""
    path = tmp_path / "gone" / "streamtap.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    yield path, url, engine
    engine.dispose()


@pytest.fixture
def recorder(db: tuple[Path, str, sa.Engine]) -> Iterator[Recorder]:
    rec = Recorder(db[2], flush_interval=0)
    rec.start()
    yield rec
    rec.close(timeout=5)


class TestFileDeleted:
    @pytest.mark.parametrize("files", [("",), ("", "-wal", "-shm")], ids=["db", "db-wal-shm"])
    def test_writing_goes_on_into_a_new_file(
        self,
        db: tuple[Path, str, sa.Engine],
        recorder: Recorder,
        make_record: MakeRecord,
        caplog: pytest.LogCaptureFixture,
        files: tuple[str, ...],
    ) -> None:
        path, url, _ = db
        before, after = make_record(), make_record()
        recorder.submit(before)
        _wait_for(lambda: recorder.written == 1)
        for suffix in files:
            os.unlink(f"{path}{suffix}")
        with caplog.at_level(logging.WARNING, logger="streamtap.recorder"):
            recorder.submit(after)
            _wait_for(lambda: recorder.written == 2)
        assert "is gone; creating a new one" in caplog.text
        # the new file is a migrated streamtap database holding what came after the deletion
        assert _sqlite(path, "SELECT count(*) FROM alembic_version") == [(1,)]
        assert _stored(url) == [after]
        assert recorder.dropped == 0

    def test_directory_deleted_too(
        self, db: tuple[Path, str, sa.Engine], recorder: Recorder, make_record: MakeRecord
    ) -> None:
        path, url, _ = db
        recorder.submit(make_record())
        _wait_for(lambda: recorder.written == 1)
        for f in path.parent.iterdir():
            f.unlink()
        path.parent.rmdir()
        after = make_record()
        recorder.submit(after)
        _wait_for(lambda: recorder.written == 2)
        assert _stored(url) == [after]

    def test_stream_started_in_the_old_file_finishes_whole_in_the_new_one(
        self, db: tuple[Path, str, sa.Engine], recorder: Recorder, make_record: MakeRecord
    ) -> None:
        path, url, _ = db
        rec = make_record(request_body='{"model": "gpt-test", "stream": true}')
        recorder.submit_start(_start_of(rec))
        _wait_for(lambda: _sqlite(path, "SELECT outcome FROM streams") == [("in_progress",)])
        path.unlink()
        recorder.submit(rec)
        _wait_for(lambda: recorder.written == 1)
        # the finished record's upsert inserts the whole row and its events: nothing of it is missing
        assert _stored(url) == [rec]
        assert _sqlite(path, "SELECT count(*) FROM stream_events") == [(len(rec.events),)]

    def test_a_commit_that_raced_the_deletion_is_written_again(
        self, db: tuple[Path, str, sa.Engine], make_record: MakeRecord
    ) -> None:
        path, url, engine = db
        rec = make_record()
        recorder = Recorder(engine, flush_interval=0)
        write = recorder._write
        calls: list[int] = []

        def write_then_delete(items: Any) -> int:
            n = write(items)
            calls.append(n)
            if len(calls) == 1:
                path.unlink()  # after the commit, before the recorder looks again
            return n

        recorder._write = write_then_delete  # type: ignore[method-assign]
        recorder.submit(rec)
        assert recorder.close() is True
        assert calls == [1, 1]
        assert (recorder.written, recorder.dropped) == (1, 0)
        assert _stored(url) == [rec]

    def test_replaced_file_is_written_to(
        self, db: tuple[Path, str, sa.Engine], recorder: Recorder, make_record: MakeRecord, tmp_path: Path
    ) -> None:
        path, url, _ = db
        recorder.submit(make_record())
        _wait_for(lambda: recorder.written == 1)
        # another streamtap database, say a backup, moved into place
        other, kept = tmp_path / "other.db", make_record()
        engine = make_engine(f"sqlite:///{other}")
        try:
            upgrade(engine)
            side = Recorder(engine)
            side.submit(kept)
            assert side.close() is True
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()
        os.replace(other, path)
        after = make_record()
        recorder.submit(after)
        _wait_for(lambda: recorder.written == 2)
        assert {r.id for r in _stored(url)} == {kept.id, after.id}


class TestWalDeleted:
    def test_what_the_log_held_is_saved(
        self,
        db: tuple[Path, str, sa.Engine],
        recorder: Recorder,
        make_record: MakeRecord,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        path, url, _ = db
        before, after = make_record(), make_record()
        recorder.submit(before)
        _wait_for(lambda: recorder.written == 1)
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 0  # `before` is in the log, not yet in the database file
        wal.unlink()
        with caplog.at_level(logging.WARNING, logger="streamtap.recorder"):
            recorder.submit(after)
            _wait_for(lambda: recorder.written == 2)
        assert "write-ahead log" in caplog.text
        # a new reader sees both (without the checkpoint: "disk I/O error", or an empty database)
        assert {r.id for r in _stored(url)} == {before.id, after.id}
        assert _sqlite(path, "PRAGMA integrity_check") == [("ok",)]


class TestReadOnly:
    def test_retries_drops_oldest_exactly_and_resumes(
        self,
        db: tuple[Path, str, sa.Engine],
        make_record: MakeRecord,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        path, url, engine = db
        warm = make_record()
        records = [make_record() for _ in range(21)]
        dropped: list[int] = []
        recorder = Recorder(engine, queue_size=5, flush_interval=0, on_dropped=dropped.append)
        recorder.start()
        try:
            recorder.submit(warm)
            _wait_for(lambda: recorder.written == 1)
            with caplog.at_level(logging.WARNING, logger="streamtap.recorder"), read_only(path):
                recorder.submit(records[0])
                _wait_for(lambda: sum("cannot write" in m for m in caplog.messages) >= 2)
                assert recorder.depth == 0  # the writer holds records[0] and retries it
                for rec in records[1:]:
                    recorder.submit(rec)
                assert (recorder.depth, recorder.dropped, sum(dropped), recorder.written) == (5, 15, 15, 1)
                assert {r.id for r in _stored(url)} == {warm.id}
            _wait_for(lambda: recorder.written == 7)
            assert "is read-only" in caplog.text
            assert "writable again" in caplog.text
            assert "attempt to write a readonly database" in caplog.text
            assert recorder.close() is True
            assert (recorder.written, recorder.dropped) == (7, 15)
            expected = [warm, records[0], *records[16:]]
            assert {r.id for r in _stored(url)} == {r.id for r in expected}
        finally:
            recorder.close(timeout=5)


class TestWatch:
    def test_only_for_sqlite_files(self, tmp_path: Path) -> None:
        engines = [make_engine(u) for u in ("sqlite://", "postgresql://u@127.0.0.1:1/db")]
        engines.append(make_engine(f"sqlite:///{tmp_path}/x.db"))
        try:
            watches = [SqliteFileWatch.of(e) for e in engines]
        finally:
            for e in engines:
                e.dispose()
        assert watches[0] is None and watches[1] is None
        assert watches[2] is not None and watches[2].path == tmp_path / "x.db"

    def test_relative_path_is_fixed_at_start(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        engine = make_engine("sqlite:///rel.db")
        try:
            watch = SqliteFileWatch.of(engine)
        finally:
            engine.dispose()
        assert watch is not None and watch.path == tmp_path / "rel.db"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with pg_cluster() as c:
        yield c


@pytest.mark.pg
class TestPostgresqlStopped:
    def test_retries_drops_oldest_exactly_and_resumes(
        self, cluster: Any, make_record: MakeRecord, caplog: pytest.LogCaptureFixture
    ) -> None:
        engine = make_engine(cluster.url)
        upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE streams CASCADE")
        warm = make_record()
        records = [make_record() for _ in range(21)]
        recorder = Recorder(engine, queue_size=5, flush_interval=0)
        recorder.start()
        try:
            recorder.submit(warm)
            _wait_for(lambda: recorder.written == 1)
            with caplog.at_level(logging.WARNING, logger="streamtap.recorder"):
                cluster.stop()
                try:
                    recorder.submit(records[0])
                    _wait_for(lambda: sum("cannot write" in m for m in caplog.messages) >= 2)
                    assert recorder.depth == 0
                    for rec in records[1:]:
                        recorder.submit(rec)
                    assert (recorder.depth, recorder.dropped, recorder.written) == (5, 15, 1)
                finally:
                    cluster.start()
                _wait_for(lambda: recorder.written == 7, timeout=60)
            assert "writable again" in caplog.text
            assert recorder.close() is True
            assert (recorder.written, recorder.dropped) == (7, 15)
            expected = [warm, records[0], *records[16:]]
            assert {r.id for r in _stored(cluster.url)} == {r.id for r in expected}
        finally:
            recorder.close(timeout=5)
            engine.dispose()
