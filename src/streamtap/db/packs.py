"""A stream's events as one row of `stream_event_packs`: the layout, both ways, and SQL over its arrays.

One row per stream instead of one per event: the worker stores a finished stream's events in a single
INSERT. `events` is a JSON array of `[t_ms, gap_ms, kind, event, tokens, start, end]`, one per event in
order, and `raw[start:end]` is that event's exact bytes; one small array per event keeps the
`stream_events` view linear in a stream's length. orjson writes the JSON: floats in their shortest
round-trip form, read back bit for bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..records import EventLog, EventRecord, token_gaps

# The pack's columns in `pack()`'s order, for an INSERT straight to the driver.
COLUMNS = ("stream_id", "events", "raw", "token_gaps_ms")

_dumps = orjson.dumps

Unpacked = tuple[int, float, float | None, str, bytes, str | None, bool]


def pack(stream_id: str, events: Sequence[EventRecord]) -> tuple[Any, ...] | None:
    """The pack row of a stream's events (JSON as text), in `COLUMNS` order; None without events."""
    if not events:
        return None
    if type(events) is EventLog:  # the tap's own rows are the layout already
        rows = events.rows
        if any(row[3] and "\x00" in row[3] for row in rows):
            rows = [(*row[:3], _name_text(row[3]), *row[4:]) for row in rows]
        return stream_id, _dumps(rows).decode(), b"".join(events.raws), _dumps(token_gaps(events)).decode()
    _, t_ms, gap_ms, kind, _, raws, names, tokens = zip(*events, strict=True)
    ends = list(itertools.accumulate(map(len, raws)))
    if any(names):
        names = tuple(map(_name_text, names))
    return (
        stream_id,
        _dumps(list(zip(t_ms, gap_ms, kind, names, tokens, [0, *ends[:-1]], ends, strict=True))).decode(),
        b"".join(raws),
        _dumps(token_gaps(events)).decode(),
    )


def _name_text(name: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL (and the view reads names as text): replaced on every backend
    return name.replace("\x00", "\ufffd") if name else name


def unpack(events: list[list[Any]], raw: bytes) -> list[Unpacked]:
    """The events of a pack as (seq, t_ms, gap_ms, kind, raw, event, tokens), in order."""
    raw = bytes(raw)
    return [
        (seq, t, gap, kind, raw[start:end], name, bool(tokens))
        for seq, (t, gap, kind, name, tokens, start, end) in enumerate(events)
    ]


def placeholder(dialect: sa.Dialect) -> str:
    """A positional parameter in the driver's own style, for SQL sent straight to it: `?` (sqlite3), `%s`
    (psycopg)."""
    return "?" if dialect.paramstyle in ("qmark", "numeric") else "%s"


def insert_sql(dialect: sa.Dialect) -> str:
    """INSERT of one pack row as positional parameters, in the driver's own placeholder style; a stream's
    earlier pack (a record submitted again) is replaced. The same ON CONFLICT clause on both databases."""
    mark = placeholder(dialect)
    return (
        f"INSERT INTO stream_event_packs ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))}) "
        "ON CONFLICT (stream_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
    )


def json_values(session: Session, array: Any, name: str) -> Any:
    """A table-valued unnesting of a JSON array column, one row per element, its column `value` a number.

    Join it after the table holding `array` (both databases let a function in FROM read earlier items).
    """
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.json_array_elements_text(array).table_valued("value", name=name)
    return sa.func.json_each(array).table_valued("value", name=name)


def number(column: Any) -> sa.ColumnElement[float]:
    """A `json_values` element as a float (PostgreSQL unnests text)."""
    return sa.cast(column, sa.Double())
