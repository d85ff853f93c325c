"""event packs: a stream's events in one row of stream_event_packs; stream_events becomes a view

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 16:20:00 UTC

Existing event rows are moved into packs (and back on downgrade), 500 streams per statement. The layout is
`streamtap.db.packs`'; this file keeps its own copy of it, as it was when the migration was written.
"""

import itertools
import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500

_events = sa.table(
    "stream_events",
    sa.column("stream_id", sa.String()),
    sa.column("seq", sa.Integer()),
    sa.column("t_ms", sa.Double()),
    sa.column("gap_ms", sa.Double()),
    sa.column("kind", sa.String()),
    sa.column("event", sa.Text()),
    sa.column("tokens", sa.Boolean()),
    sa.column("raw", sa.LargeBinary()),
)
_packs = sa.table(
    "stream_event_packs",
    sa.column("stream_id", sa.String()),
    sa.column("events", sa.JSON()),
    sa.column("raw", sa.LargeBinary()),
    sa.column("token_gaps_ms", sa.JSON()),
)

# One row per event, unpacked from `events` (element i is event i: [t_ms, gap_ms, kind, event, tokens, start,
# end], its bytes raw[start:end]). SQLite's substr of an empty blob is NULL: an event without bytes reads X''.
_VIEW_SQLITE = """
CREATE VIEW stream_events AS
SELECT p.stream_id AS stream_id,
       CAST(e.key AS INTEGER) AS seq,
       json_extract(e.value, '$[0]') AS t_ms,
       json_extract(e.value, '$[1]') AS gap_ms,
       json_extract(e.value, '$[2]') AS kind,
       json_extract(e.value, '$[3]') AS event,
       json_extract(e.value, '$[4]') AS tokens,
       coalesce(substr(p.raw, json_extract(e.value, '$[5]') + 1,
                       json_extract(e.value, '$[6]') - json_extract(e.value, '$[5]')),
                X'') AS raw
FROM stream_event_packs AS p, json_each(p.events) AS e
"""
_VIEW_POSTGRESQL = """
CREATE VIEW stream_events AS
SELECT p.stream_id AS stream_id,
       (e.ord - 1)::integer AS seq,
       (e.value ->> 0)::double precision AS t_ms,
       (e.value ->> 1)::double precision AS gap_ms,
       e.value ->> 2 AS kind,
       e.value ->> 3 AS event,
       (e.value ->> 4)::boolean AS tokens,
       substring(p.raw FROM (e.value ->> 5)::integer + 1
                 FOR (e.value ->> 6)::integer - (e.value ->> 5)::integer) AS raw
FROM stream_event_packs AS p
CROSS JOIN LATERAL json_array_elements(p.events) WITH ORDINALITY AS e(value, ord)
"""


def upgrade() -> None:
    op.create_table(
        "stream_event_packs",
        sa.Column("stream_id", sa.String(length=32), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("token_gaps_ms", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["stream_id"],
            ["streams.id"],
            name=op.f("fk_stream_event_packs_stream_id_streams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("stream_id", name=op.f("pk_stream_event_packs")),
    )
    if not context.is_offline_mode():
        conn = op.get_bind()
        for ids in _id_batches(conn, _events.c.stream_id):
            rows = conn.execute(
                sa.select(_events)
                .where(_events.c.stream_id.in_(ids))
                .order_by(_events.c.stream_id, _events.c.seq)
            )
            packs = [_pack(sid, list(evs)) for sid, evs in itertools.groupby(rows, key=lambda r: r.stream_id)]
            conn.execute(sa.insert(_packs), packs)
    op.drop_table("stream_events")
    op.execute(_VIEW_POSTGRESQL if op.get_context().dialect.name == "postgresql" else _VIEW_SQLITE)


def downgrade() -> None:
    op.execute("DROP VIEW stream_events")
    op.create_table(
        "stream_events",
        sa.Column("stream_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("t_ms", sa.Double(), nullable=False),
        sa.Column("gap_ms", sa.Double(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("event", sa.Text(), nullable=True),
        sa.Column("tokens", sa.Boolean(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["stream_id"],
            ["streams.id"],
            name=op.f("fk_stream_events_stream_id_streams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("stream_id", "seq", name=op.f("pk_stream_events")),
    )
    if not context.is_offline_mode():
        conn = op.get_bind()
        for ids in _id_batches(conn, _packs.c.stream_id):
            rows: list[dict[str, Any]] = []
            for pack in conn.execute(sa.select(_packs).where(_packs.c.stream_id.in_(ids))):
                rows += _unpack(pack)
            if rows:
                conn.execute(sa.insert(_events), rows)
    op.drop_table("stream_event_packs")


def _id_batches(conn: sa.Connection, column: sa.ColumnClause[Any]) -> Iterator[list[str]]:
    last = ""
    while True:
        ids = list(
            conn.scalars(
                sa.select(column).where(column > last).group_by(column).order_by(column).limit(BATCH)
            )
        )
        if not ids:
            return
        yield ids
        last = ids[-1]


def _pack(stream_id: str, events: list[Any]) -> dict[str, Any]:
    ends = list(itertools.accumulate(len(e.raw) for e in events))
    token_times = [e.t_ms for e in events if e.tokens]
    return {
        "stream_id": stream_id,
        "events": [
            [e.t_ms, e.gap_ms, e.kind, e.event, bool(e.tokens), start, end]
            for e, start, end in zip(events, [0, *ends[:-1]], ends, strict=True)
        ],
        "raw": b"".join(bytes(e.raw) for e in events),
        "token_gaps_ms": [b - a for a, b in itertools.pairwise(token_times)],
    }


def _unpack(pack: Any) -> list[dict[str, Any]]:
    raw = bytes(pack.raw)
    events = json.loads(pack.events) if isinstance(pack.events, str) else pack.events
    return [
        {
            "stream_id": pack.stream_id,
            "seq": seq,
            "t_ms": t,
            "gap_ms": gap,
            "kind": kind,
            "event": name,
            "tokens": bool(tokens),
            "raw": raw[start:end],
        }
        for seq, (t, gap, kind, name, tokens, start, end) in enumerate(events)
    ]
