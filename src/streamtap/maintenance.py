"""Retention: delete old streams and their events in small transactions, so writers are never blocked long."""

from __future__ import annotations

import time
from datetime import datetime

import sqlalchemy as sa

from .db.models import Stream, StreamEvent


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
            conn.execute(sa.delete(StreamEvent).where(StreamEvent.stream_id.in_(ids)))
            conn.execute(sa.delete(Stream).where(Stream.id.in_(ids)))
        deleted += len(ids)
        if pause:
            time.sleep(pause)  # let a busy writer in between batches
