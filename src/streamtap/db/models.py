"""The ORM models: one row per recorded exchange (`streams`), one holding all its SSE events
(`stream_event_packs`).

A stream's events are stored together: a JSON array with each event's time, gap, kind, name, token flag and
place in `raw`, their exact bytes concatenated (`db.packs`). For SQL by hand, the `stream_events` view unpacks
them into one row per event (stream_id, seq, t_ms, gap_ms, kind, event, tokens, raw).

The schema itself is created by the Alembic migrations in `migrations/`; a test compares these models with a
migrated database, so a model change without a migration fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Every constraint and index gets a predictable name, so migrations can refer to (and batch-alter) it.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored in UTC.

    SQLite has no timezone type and hands back naive values: they are UTC, because only UTC is written.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: streamtap stores timezone-aware timestamps only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """The one declarative base: its metadata is what Alembic's autogenerate compares against."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Stream(Base):
    """One recorded exchange. Written as `in_progress` when the request arrives, completed when it ends."""

    __tablename__ = "streams"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # uuid4 hex
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    method: Mapped[str] = mapped_column(sa.String(16))
    url: Mapped[str] = mapped_column(sa.Text())
    host: Mapped[str] = mapped_column(sa.String(255), index=True)
    path: Mapped[str] = mapped_column(sa.Text())
    status_code: Mapped[int | None] = mapped_column(sa.Integer())
    stream: Mapped[bool] = mapped_column(sa.Boolean())
    api: Mapped[str] = mapped_column(sa.String(64))
    request_model: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    model: Mapped[str | None] = mapped_column(sa.String(255))
    outcome: Mapped[str] = mapped_column(sa.String(32), index=True)  # a records.Outcome value
    finish_reason: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    error: Mapped[str | None] = mapped_column(sa.Text())
    ttfb_ms: Mapped[float | None] = mapped_column(sa.Double())
    ttft_ms: Mapped[float | None] = mapped_column(sa.Double())
    ttfc_ms: Mapped[float | None] = mapped_column(sa.Double())
    duration_ms: Mapped[float | None] = mapped_column(sa.Double())
    # All four are NULL when the upstream reported no usage: NULL is "unknown", never 0.
    prompt_tokens: Mapped[int | None] = mapped_column(sa.Integer())
    completion_tokens: Mapped[int | None] = mapped_column(sa.Integer())
    total_tokens: Mapped[int | None] = mapped_column(sa.Integer())
    reasoning_tokens: Mapped[int | None] = mapped_column(sa.Integer())
    # [{index, content, reasoning_content, refusal, tool_calls: [{index, id, name, arguments}],
    #   finish_reason}], as export.choice_to_dict shapes it
    choices: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON())
    event_count: Mapped[int] = mapped_column(sa.Integer())
    token_event_count: Mapped[int] = mapped_column(sa.Integer())
    api_key_fp: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    proxy_instance: Mapped[str] = mapped_column(sa.String(255))
    content_encoding: Mapped[str | None] = mapped_column(sa.String(64))
    request_body: Mapped[str | None] = mapped_column(sa.Text())
    response_body: Mapped[str | None] = mapped_column(sa.Text())
    tap_errors: Mapped[int] = mapped_column(sa.Integer())
    extra: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StreamEventPack(Base):
    """All the SSE events (and comments) of one stream, with their exact bytes, as `db.packs.pack` lays
    them out: `events` is a JSON array with one `[t_ms, gap_ms, kind, event, tokens, start, end]` per event,
    in order (its index is the event's `seq`), `raw[start:end]` its bytes. `token_gaps_ms` is derived (the
    gaps between consecutive token-carrying events, `StreamRecord.gaps_ms`) and kept for the aggregations."""

    __tablename__ = "stream_event_packs"

    stream_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("streams.id", ondelete="CASCADE"), primary_key=True
    )
    events: Mapped[list[list[Any]]] = mapped_column(sa.JSON())
    raw: Mapped[bytes] = mapped_column(sa.LargeBinary())
    token_gaps_ms: Mapped[list[float]] = mapped_column(sa.JSON())
