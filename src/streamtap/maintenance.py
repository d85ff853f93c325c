"""Retention: delete old streams and their events in small transactions, so writers are never blocked long."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from .db.models import Stream, StreamEventPack


def prune(engine: sa.Engine, *, before: datetime, batch: int = 1000, pause: float = 0.0) -> int:
    """Delete streams started before `before` (and their events), `batch` streams per transaction.

    Returns how many streams were deleted. Events go first, explicitly, so SQLite databases opened without
    foreign keys lose nothing half-way either.
    """
    deleted = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.scalars(
                    sa.select(Stream.id)
                    .where(Stream.started_at < before)
                    .order_by(Stream.started_at)
                    .limit(batch)
                )
            )
            if not ids:
                return deleted
            conn.execute(sa.delete(StreamEventPack).where(StreamEventPack.stream_id.in_(ids)))
            conn.execute(sa.delete(Stream).where(Stream.id.in_(ids)))
        deleted += len(ids)
        if pause:
            time.sleep(pause)  # let a busy writer in between batches


class RetentionThread:
    """`--retention`: prunes streams older than `keep` every `interval` seconds, off the event loop."""

    def __init__(self, engine: sa.Engine, keep: timedelta, *, interval: float = 300.0) -> None:
        self._engine = engine
        self._keep = keep
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamtap-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        log = logging.getLogger("streamtap")
        while True:
            try:
                n = prune(self._engine, before=datetime.now(UTC) - self._keep, pause=0.05)
                if n:
                    log.info("streamtap: retention deleted %d streams older than %s", n, self._keep)
            except Exception as e:  # the database may be away for a while: try again next round
                log.warning("streamtap: retention could not prune: %s", e)
            if self._stop.wait(self._interval):
                return
