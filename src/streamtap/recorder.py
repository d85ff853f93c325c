"""The recorder: a bounded queue filled on mitmproxy's event loop, drained in batches by a writer thread."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa

from .db import packs
from .db.engine import SqliteFileWatch, describe_error, json_text
from .db.models import Stream, StreamEventPack, UTCDateTime
from .errors import DatabaseError
from .export import choice_to_dict
from .records import Outcome, StreamRecord, StreamStart, Usage, token_event_count

log = logging.getLogger("streamtap.recorder")

BACKOFF_START = 0.05
BACKOFF_MAX = 5.0

_streams = cast(sa.Table, Stream.__table__)
_packs = cast(sa.Table, StreamEventPack.__table__)

Item = tuple[StreamStart | StreamRecord, datetime]


class _Poisoned(Exception):
    """The database refused the data itself: retrying the same rows would fail forever."""


class _Abandoned(Exception):
    """close() ran out of time while the database was unavailable."""


class Recorder:
    """Writes stream starts and finished stream records to the database, off the caller's thread.

    `submit_start()` and `submit()` never block on the database: they append to a bounded queue, and when the
    queue is full the oldest item is dropped and counted. One writer thread takes up to `batch_max` items per
    transaction (waiting up to `flush_interval` seconds for a batch to fill: 0.25 by default, where 0.05 cost
    the worker 2.7 µs per event more at 50 streams, in commits and in pages written again each time). When
    the database is locked, gone or read-only, the writer keeps its batch and retries with exponential
    backoff (0.05 s doubling to 5 s) until it is back; rows the database rejects outright (bad data) are
    logged and dropped one by one.

    A SQLite file deleted or replaced under the recorder is noticed before the next transaction (see
    `SqliteFileWatch`): writing goes on into a new database at the same path, migrated like at start-up.
    Records committed to the old file are gone with it; a transaction that committed while the file was
    being deleted is written again into the new one. A stream whose `in_progress` row was in the old file
    has none in the new one until it finishes: its finished record inserts the whole row.

    `on_written(n)` is called on the writer thread after `n` stream records were committed; `on_dropped(n)`
    when `n` items (starts or records) are lost for good: queue overflow, rejected by the database, submitted
    after close(), or still unwritten when close() times out. The recorder does not dispose of the engine.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        queue_size: int = 10_000,
        batch_max: int = 500,
        flush_interval: float = 0.25,
        keep_events: bool = True,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        if queue_size < 1 or batch_max < 1:
            raise ValueError("queue_size and batch_max must be at least 1")
        self._engine = engine
        self._queue_size = queue_size
        self._batch_max = batch_max
        self._flush_interval = flush_interval
        self._keep_events = keep_events
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._queue: deque[Item] = deque()
        self._holding: datetime | None = None  # when the oldest item of the writer's batch was submitted
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._written = 0
        self._dropped = 0
        self._rows = _StreamRows(engine.dialect)
        self._watch = SqliteFileWatch.of(engine)
        self._packs_sql = packs.insert_sql(engine.dialect)

    @property
    def depth(self) -> int:
        """Items waiting in the queue (not counting the batch the writer holds)."""
        return len(self._queue)

    def lag(self) -> float:
        """Seconds the oldest item not yet written has waited: in the batch the writer holds, or else in the
        queue (0 when nothing waits)."""
        oldest = self._holding
        if oldest is None:
            try:
                oldest = self._queue[0][1]
            except IndexError:  # empty, or emptied by the writer meanwhile
                return 0.0
        return (datetime.now(UTC) - oldest).total_seconds()

    @property
    def written(self) -> int:
        """Stream records committed to the database."""
        return self._written

    @property
    def dropped(self) -> int:
        """Items (starts and records) lost for good; see the class docstring for when."""
        return self._dropped

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="streamtap-recorder", daemon=True)
        self._thread.start()

    def submit_start(self, start: StreamStart) -> None:
        """Queue the `in_progress` row written when a request arrives, so a crash leaves a trace."""
        self._put((start, datetime.now(UTC)))

    def submit(self, record: StreamRecord) -> None:
        """Queue a finished record: it inserts the stream's row, or completes the one `submit_start` wrote."""
        self._put((record, datetime.now(UTC)))

    def close(self, timeout: float = 30.0) -> bool:
        """Write everything queued, then stop the writer. True when nothing was lost while closing.

        If the database stays unavailable for `timeout` seconds, what is left is dropped (and counted).
        """
        dropped_before = self._dropped
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            pending = bool(self._queue)
        if self._thread is None and pending:
            self.start()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("recorder: the database is still unavailable after %.0fs; giving up", timeout)
                self._abandon.set()
                # The writer may be inside a database call (SQLite's busy timeout is 5 s).
                thread.join(10.0)
        return not (thread is not None and thread.is_alive()) and self._dropped == dropped_before

    # -- the caller's side --

    def _put(self, item: Item) -> None:
        with self._cond:
            if self._closing:
                lost = 1
            else:
                lost = 0
                if len(self._queue) >= self._queue_size:
                    self._queue.popleft()
                    lost = 1
                self._queue.append(item)
                n = len(self._queue)
                # Wake the writer when there is something to do, or a full batch to stop waiting for.
                if n == 1 or n == self._batch_max:
                    self._cond.notify()
            if lost:
                self._dropped += lost
                total = self._dropped
        if lost:
            if total == 1 or total % 1000 == 0:
                reason = "the recorder is closed" if self._closing else "the queue is full"
                log.warning("recorder: dropped a record because %s (%d dropped so far)", reason, total)
            self._lost(lost)

    def _lost(self, n: int) -> None:
        if self._on_dropped is not None and n:
            try:
                self._on_dropped(n)
            except Exception:
                log.exception("recorder: on_dropped callback failed")

    # -- the writer thread --

    def _take(self) -> list[Item] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            if self._flush_interval > 0:
                deadline = time.monotonic() + self._flush_interval
                while len(self._queue) < self._batch_max and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            n = min(len(self._queue), self._batch_max)
            batch = [self._queue.popleft() for _ in range(n)]
            self._holding = batch[0][1]
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._flush(batch)
            except _Abandoned:
                with self._cond:
                    lost = len(batch) + len(self._queue)
                    self._queue.clear()
                    self._dropped += lost
                self._lost(lost)
                return
            except Exception:  # a bug here must not stop recording
                log.exception("recorder: unexpected error; %d items lost", len(batch))
                with self._cond:
                    self._dropped += len(batch)
                self._lost(len(batch))
            finally:
                self._holding = None

    def _flush(self, batch: list[Item]) -> None:
        try:
            self._commit(batch)
            return
        except _Poisoned:
            if len(batch) == 1:
                lost = 1
            else:
                # Find the rows the database refuses; write the others.
                lost = 0
                for item in batch:
                    try:
                        self._commit([item])
                    except _Poisoned:
                        lost += 1
        with self._cond:
            self._dropped += lost
        self._lost(lost)

    def _commit(self, items: Sequence[Item]) -> None:
        """Write `items` in one transaction, retrying while the database is unavailable."""
        delay = BACKOFF_START
        failing = False
        while True:
            try:
                if self._watch is not None:
                    self._watch.before_write()
                records = self._write(items)
                if self._watch is not None and not self._watch.after_write():
                    raise DatabaseError("the database file was deleted or replaced during the transaction")
            except Exception as e:
                if not _transient(e):
                    log.error("recorder: the database refused %d items: %s", len(items), describe_error(e))
                    raise _Poisoned from e
                if self._abandon.is_set():
                    raise _Abandoned from e
                log.warning(
                    "recorder: cannot write %d items to the database (%s); retrying in %.2fs, %d queued",
                    len(items),
                    describe_error(e),
                    delay,
                    len(self._queue),
                )
                failing = True
                if self._abandon.wait(delay):
                    raise _Abandoned from e
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if failing:
                log.warning("recorder: the database is writable again")
            if records:
                self._written += records
                if self._on_written is not None:
                    try:
                        self._on_written(records)
                    except Exception:
                        log.exception("recorder: on_written callback failed")
            return

    def _write(self, items: Sequence[Item]) -> int:
        rows = self._rows
        starts: list[tuple[Any, ...]] = []
        finished: dict[str, tuple[Any, ...]] = {}  # by id: a record submitted twice is written once, the last
        events: dict[str, tuple[Any, ...] | None] = {}
        for obj, submitted_at in items:
            if isinstance(obj, StreamStart):
                starts.append(rows.start(obj))
            else:
                finished[obj.id] = rows.record(obj, submitted_at)
                if self._keep_events:
                    events[obj.id] = packs.pack(obj.id, obj.events)
        pack_rows = [row for row in events.values() if row is not None]
        with self._engine.begin() as conn:
            # Straight to the driver, as every statement here: the rows are the driver's values already.
            if starts:
                conn.exec_driver_sql(rows.start_sql, starts)
            if finished:
                conn.exec_driver_sql(rows.record_sql, list(finished.values()))
                bare = [key for key, row in events.items() if row is None]
                if bare:  # a repeated record without events: the earlier one's go (the others replace them)
                    conn.execute(sa.delete(_packs).where(_packs.c.stream_id.in_(bare)))
            if pack_rows:
                conn.exec_driver_sql(self._packs_sql, pack_rows)
        return len(finished)


def mark_interrupted(engine: sa.Engine, proxy_instance: str) -> int:
    """At proxy start: rows this instance left `in_progress` (it died mid-stream) become `interrupted`."""
    stmt = (
        sa.update(_streams)
        .where(_streams.c.proxy_instance == proxy_instance, _streams.c.outcome == Outcome.IN_PROGRESS.value)
        .values(outcome=Outcome.INTERRUPTED.value)
    )
    try:
        with engine.begin() as conn:
            return conn.execute(stmt).rowcount
    except sa.exc.DBAPIError as e:
        raise DatabaseError(f"cannot mark interrupted streams: {describe_error(e)}") from e


class _StreamRows:
    """The `streams` table's two statements as the driver's own SQL, and their rows as the driver takes them.

    INSERT ... ON CONFLICT for starts (never overwrite a finished row) and records (complete the row), with
    positional parameters in the driver's placeholder style: each row a tuple, its values already what the
    driver binds (the timestamps in UTC, in SQLite as SQLAlchemy's own text layout; the JSON columns as
    text), where SQLAlchemy's statements spent ~45 µs per stream on the writer thread building, processing
    and binding dicts. The values are stored exactly as SQLAlchemy's would be (a test compares them).
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        if dialect.name not in ("sqlite", "postgresql"):
            raise DatabaseError(
                f"unsupported database {dialect.name!r}: streamtap supports sqlite and postgresql"
            )
        self._sqlite = dialect.name == "sqlite"
        self._dialect = dialect
        self._to_utc = UTCDateTime().process_bind_param  # the column type's own rule: aware only, in UTC
        mark = packs.placeholder(dialect)
        quote = dialect.identifier_preparer.quote

        def insert(columns: Sequence[str]) -> str:
            names = ", ".join(quote(c) for c in columns)
            return f"INSERT INTO streams ({names}) VALUES ({', '.join([mark] * len(columns))})"

        self.start_sql = insert(START_COLUMNS) + " ON CONFLICT (id) DO NOTHING"
        self.record_sql = (
            insert(RECORD_COLUMNS)
            + " ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in RECORD_COLUMNS if c != "id")
        )

    def when(self, value: datetime) -> datetime | str:
        """A timestamp as `UTCDateTime` binds it: timezone-aware only, in UTC; in SQLite, as text."""
        utc = self._to_utc(value, self._dialect)
        assert utc is not None
        if self._sqlite:  # SQLAlchemy's SQLite DATETIME storage format
            return utc.replace(tzinfo=None).isoformat(" ", "microseconds")
        return utc

    def start(self, start: StreamStart) -> tuple[Any, ...]:
        # The columns left out are NULL (none has a default): unknown until the response arrives.
        return _without_nul(
            (
                start.id,
                self.when(start.started_at),
                start.method,
                start.url,
                start.host,
                start.path,
                start.request_model,
                start.api_key_fp,
                start.proxy_instance,
                start.request_body,
                Outcome.IN_PROGRESS.value,
                # NOT NULL columns the finished record overwrites
                False,
                "",
                "[]",
                0,
                0,
                0,
                "{}",
            )
        )

    def record(self, rec: StreamRecord, submitted_at: datetime) -> tuple[Any, ...]:
        usage = rec.usage or Usage(None, None, None, None)
        if rec.duration_ms is not None:
            finished_at = rec.started_at + timedelta(milliseconds=rec.duration_ms)
        else:
            finished_at = submitted_at
        return _without_nul(
            (
                rec.id,
                self.when(rec.started_at),
                rec.method,
                rec.url,
                rec.host,
                rec.path,
                rec.status_code,
                rec.stream,
                rec.api,
                rec.request_model,
                rec.model,
                rec.outcome.value,
                rec.finish_reason,
                rec.error,
                rec.ttfb_ms,
                rec.ttft_ms,
                rec.ttfc_ms,
                rec.duration_ms,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens,
                usage.reasoning_tokens,
                json_text([choice_to_dict(c) for c in rec.choices]),
                len(rec.events),
                token_event_count(rec.events),
                rec.api_key_fp,
                rec.proxy_instance,
                rec.content_encoding,
                rec.request_body,
                rec.response_body,
                rec.tap_errors,
                json_text(rec.extra),
                self.when(finished_at),
            )
        )


# The columns `_StreamRows.start` and `.record` fill, in their order.
START_COLUMNS = (
    "id",
    "started_at",
    "method",
    "url",
    "host",
    "path",
    "request_model",
    "api_key_fp",
    "proxy_instance",
    "request_body",
    "outcome",
    "stream",
    "api",
    "choices",
    "event_count",
    "token_event_count",
    "tap_errors",
    "extra",
)
RECORD_COLUMNS = (
    "id",
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
    "outcome",
    "finish_reason",
    "error",
    "ttfb_ms",
    "ttft_ms",
    "ttfc_ms",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "choices",
    "event_count",
    "token_event_count",
    "api_key_fp",
    "proxy_instance",
    "content_encoding",
    "request_body",
    "response_body",
    "tap_errors",
    "extra",
    "finished_at",
)


def _transient(e: Exception) -> bool:
    """A database that is locked, gone or read-only: worth retrying. Data it refuses is not."""
    if isinstance(e, DatabaseError):  # raised by the file watch: it could not reach the database either
        return True
    if isinstance(e, sa.exc.IntegrityError | sa.exc.DataError):
        return False
    return isinstance(e, sa.exc.DBAPIError) or (
        isinstance(e, sa.exc.SQLAlchemyError) and not isinstance(e, sa.exc.StatementError)
    )


def _without_nul(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # PostgreSQL text cannot hold NUL; replace it on every backend so both store the same thing.
    if any(type(value) is str and "\x00" in value for value in row):
        return tuple(value.replace("\x00", "\ufffd") if type(value) is str else value for value in row)
    return row
