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
    sa.column("count", sa.Integer()),
    sa.column("t_ms", sa.JSON()),
    sa.column("gap_ms", sa.JSON()),
    sa.column("kind", sa.JSON()),
    sa.column("event", sa.JSON(none_as_null=True)),
    sa.column("tokens", sa.JSON()),
    sa.column("raw_offsets", sa.JSON()),
    sa.column("raw", sa.LargeBinary()),
    sa.column("token_gaps_ms", sa.JSON()),
)

# One row per event, unpacked from the arrays (element i of each is event i). SQLite's substr of an
# empty blob is NULL: an event without bytes (one only, alone in its stream) reads as X''.
_VIEW_SQLITE = """
CREATE VIEW stream_events AS
SELECT p.stream_id AS stream_id,
       CAST(t.key AS INTEGER) AS seq,
       t.value AS t_ms,
       json_extract(p.gap_ms, '$[' || t.key || ']') AS gap_ms,
       json_extract(p.kind, '$[' || t.key || ']') AS kind,
       json_extract(p.event, '$[' || t.key || ']') AS event,
       json_extract(p.tokens, '$[' || t.key || ']') AS tokens,
       coalesce(substr(p.raw, json_extract(p.raw_offsets, '$[' || t.key || ']') + 1,
                       json_extract(p.raw_offsets, '$[' || (t.key + 1) || ']')
                       - json_extract(p.raw_offsets, '$[' || t.key || ']')),
                X'') AS raw
FROM stream_event_packs AS p, json_each(p.t_ms) AS t
"""
_VIEW_POSTGRESQL = """
CREATE VIEW stream_events AS
SELECT p.stream_id AS stream_id,
       (t.ord - 1)::integer AS seq,
       t.value::double precision AS t_ms,
       (p.gap_ms ->> (t.ord - 1)::integer)::double precision AS gap_ms,
       p.kind ->> (t.ord - 1)::integer AS kind,
       p.event ->> (t.ord - 1)::integer AS event,
       (p.tokens ->> (t.ord - 1)::integer)::boolean AS tokens,
       substring(p.raw FROM (p.raw_offsets ->> (t.ord - 1)::integer)::integer + 1
                 FOR (p.raw_offsets ->> t.ord::integer)::integer
                     - (p.raw_offsets ->> (t.ord - 1)::integer)::integer) AS raw
FROM stream_event_packs AS p
CROSS JOIN LATERAL json_array_elements_text(p.t_ms) WITH ORDINALITY AS t(value, ord)
"""


def upgrade() -> None:
    op.create_table(
        "stream_event_packs",
        sa.Column("stream_id", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("t_ms", sa.JSON(), nullable=False),
        sa.Column("gap_ms", sa.JSON(), nullable=False),
        sa.Column("kind", sa.JSON(), nullable=False),
        sa.Column("event", sa.JSON(), nullable=True),
        sa.Column("tokens", sa.JSON(), nullable=False),
        sa.Column("raw_offsets", sa.JSON(), nullable=False),
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
    offsets = [0, *itertools.accumulate(len(e.raw) for e in events)]
    token_times = [e.t_ms for e in events if e.tokens]
    names = [e.event for e in events]
    return {
        "stream_id": stream_id,
        "count": len(events),
        "t_ms": [e.t_ms for e in events],
        "gap_ms": [e.gap_ms for e in events],
        "kind": [e.kind for e in events],
        "event": names if any(n is not None for n in names) else None,
        "tokens": [bool(e.tokens) for e in events],
        "raw_offsets": offsets,
        "raw": b"".join(bytes(e.raw) for e in events),
        "token_gaps_ms": [b - a for a, b in itertools.pairwise(token_times)],
    }


def _unpack(pack: Any) -> list[dict[str, Any]]:
    def load(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    raw, offsets = bytes(pack.raw), load(pack.raw_offsets)
    names = load(pack.event) or [None] * pack.count
    return [
        {
            "stream_id": pack.stream_id,
            "seq": seq,
            "t_ms": t,
            "gap_ms": gap,
            "kind": kind,
            "event": name,
            "tokens": bool(tokens),
            "raw": raw[offsets[seq] : offsets[seq + 1]],
        }
        for seq, (t, gap, kind, name, tokens) in enumerate(
            zip(load(pack.t_ms), load(pack.gap_ms), load(pack.kind), names, load(pack.tokens), strict=True)
        )
    ]
