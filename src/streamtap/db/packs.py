"""A stream's events as one row of `stream_event_packs`: the layout, both ways, and SQL over its arrays.

One row per stream instead of one per event: the worker stores a finished stream's events in a single
INSERT, ~0.5 µs per event where a row per event cost ~4 (random stream ids spread those rows over the whole
primary-key index). The arrays are JSON, so both databases can unnest them (the `stream_events` view,
`json_values`), and orjson writes them: floats in their shortest round-trip form, read back bit for bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..records import EventRecord

# The pack's columns in `pack()`'s order, for an INSERT straight to the driver.
COLUMNS = (
    "stream_id",
    "count",
    "t_ms",
    "gap_ms",
    "kind",
    "event",
    "tokens",
    "raw_offsets",
    "raw",
    "token_gaps_ms",
)

_dumps = orjson.dumps


def pack(stream_id: str, events: Sequence[EventRecord]) -> tuple[Any, ...] | None:
    """The pack row of a stream's events (JSON arrays as text), in `COLUMNS` order; None without events."""
    if not events:
        return None
    _, t_ms, gap_ms, kind, _, raws, names, tokens = zip(*events, strict=True)
    offsets = [0, *itertools.accumulate(map(len, raws))]
    token_times = list(itertools.compress(t_ms, tokens))
    event: str | None = None
    if any(name is not None for name in names):
        # PostgreSQL text cannot hold NUL (and the view reads names as text): replaced on every backend
        event = _dumps([n.replace("\x00", "\ufffd") if n else n for n in names]).decode()
    return (
        stream_id,
        len(events),
        _dumps(t_ms).decode(),
        _dumps(gap_ms).decode(),
        _dumps(kind).decode(),
        event,
        _dumps(tokens).decode(),
        _dumps(offsets).decode(),
        b"".join(raws),
        _dumps([b - a for a, b in itertools.pairwise(token_times)]).decode(),
    )


def unpack(
    t_ms: list[float],
    gap_ms: list[float | None],
    kind: list[str],
    event: list[str | None] | None,
    tokens: list[bool],
    raw_offsets: list[int],
    raw: bytes,
) -> list[tuple[int, float, float | None, str, bytes, str | None, bool]]:
    """The events of a pack as (seq, t_ms, gap_ms, kind, raw, event, tokens), in order."""
    raw = bytes(raw)
    names = event if event is not None else [None] * len(t_ms)
    return [
        (seq, t, gap, k, raw[a:b], name, bool(tok))
        for seq, (t, gap, k, name, tok, a, b) in enumerate(
            zip(t_ms, gap_ms, kind, names, tokens, raw_offsets[:-1], raw_offsets[1:], strict=True)
        )
    ]


def insert_sql(dialect: sa.Dialect) -> str:
    """INSERT of one pack row as positional parameters, in the driver's own placeholder style."""
    mark = "?" if dialect.paramstyle in ("qmark", "numeric") else "%s"
    return (
        f"INSERT INTO stream_event_packs ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))})"
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
