"""The read side, shared by the CLI, the exporter and the dashboard: functions that take a Session.

Aggregations run in SQL that SQLite and PostgreSQL both accept (window functions, no percentile_cont).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from .db.models import Stream, StreamEventPack
from .db.packs import json_values, number, unpack
from .errors import NotFoundError
from .records import Choice, EventKind, EventRecord, Outcome, StreamRecord, ToolCall, Usage
from .sse import ItemKind, decode_all

PERCENTILES = (50, 90, 99)
MIN_PREFIX = 6
_CHUNK = 500  # ids per IN (...) when loading events


def get_streams(
    session: Session,
    *,
    last: int | None = None,
    ids: Sequence[str] | None = None,
    since: datetime | None = None,
    with_events: bool = True,
) -> list[StreamRecord]:
    """Recorded streams, newest first: the `last` N, those in `ids`, those started at or after `since`.

    Filters combine; unknown ids are left out. A naive `since` is taken as UTC.
    """
    stmt = sa.select(Stream).order_by(Stream.started_at.desc(), Stream.id.desc())
    if ids is not None:
        stmt = stmt.where(Stream.id.in_(list(ids)))
    if since is not None:
        stmt = stmt.where(Stream.started_at >= _aware(since))
    if last is not None:
        stmt = stmt.limit(last)
    rows = session.scalars(stmt).all()
    events = _load_events(session, [r.id for r in rows]) if with_events else {}
    return [_to_record(row, events.get(row.id, ())) for row in rows]


def get_stream(session: Session, id: str, *, with_events: bool = True) -> StreamRecord:
    """One stream by id, or by a prefix of at least 6 characters that matches only it."""
    wanted = id.strip().lower()
    recs = get_streams(session, ids=[wanted], with_events=with_events)
    if recs:
        return recs[0]
    if len(wanted) >= MIN_PREFIX and all(c in string.hexdigits for c in wanted):
        matches = session.scalars(sa.select(Stream.id).where(Stream.id.like(wanted + "%")).limit(3)).all()
        if len(matches) == 1:
            return get_streams(session, ids=matches, with_events=with_events)[0]
        if matches:
            raise NotFoundError(f"no single stream with id {id}: the prefix matches {', '.join(matches)}...")
    raise NotFoundError(f"no stream with id {id}")


def event_data(raw: bytes) -> str | None:
    """An event's text, derived from its exact bytes as the tap derived it when the event arrived.

    An event gives its data, a comment its text, what is left at the end of a stream (an incomplete event)
    the bytes decoded as UTF-8 with replacement; blank padding and empty bytes give None.
    """
    if not raw:
        return None
    items = decode_all(raw)
    if len(items) == 1:
        item = items[0]
        if item.kind is ItemKind.PADDING:
            return None
        if item.kind is not ItemKind.INCOMPLETE:
            return item.data
    return raw.decode("utf-8", "replace")


def stats(session: Session, *, since: datetime | None = None) -> dict[str, Any]:
    """Counts and latency percentiles, overall and per model, for streams started at or after `since`.

    Percentiles use the nearest-rank method: p50/p90/p99 is the sample at rank ceil(p/100 * n) of the n
    sorted samples (so always a value that was observed); None when there are no samples. `gap_ms` samples
    are the times between consecutive token-carrying events of a stream (`StreamRecord.gaps_ms`). The model
    is the requested one, else the one the upstream reported, else "unknown".
    """
    where = [Stream.started_at >= _aware(since)] if since is not None else []
    model = sa.func.coalesce(Stream.request_model, Stream.model, "unknown")

    def samples(value: sa.ColumnElement[Any] | InstrumentedAttribute[Any]) -> sa.Select[Any]:
        return sa.select(model.label("model"), value.label("v")).where(*where)

    gaps = json_values(session, StreamEventPack.token_gaps_ms, "gap")
    sources = {
        "ttft_ms": samples(Stream.ttft_ms).subquery(),
        "gap_ms": samples(number(gaps.c.value))
        .select_from(Stream)
        .join(StreamEventPack, StreamEventPack.stream_id == Stream.id)
        .join(gaps, sa.true())
        .subquery(),
        "duration_ms": samples(Stream.duration_ms).subquery(),
    }

    by_model: dict[str, dict[str, Any]] = {
        name: {"count": n}
        for name, n in session.execute(sa.select(model, sa.func.count()).where(*where).group_by(model))
    }
    out: dict[str, Any] = {"count": sum(m["count"] for m in by_model.values())}
    for metric, source in sources.items():
        overall, per_model = _percentiles(session, source)
        out[metric] = overall
        for name, entry in by_model.items():
            entry[metric] = per_model.get(name, _empty())
    out["by_model"] = by_model
    reason_rows = session.execute(
        sa.select(Stream.finish_reason, sa.func.count()).where(*where).group_by(Stream.finish_reason)
    )
    out["finish_reasons"] = {reason if reason is not None else "none": n for reason, n in reason_rows}
    outcome_rows = session.execute(
        sa.select(Stream.outcome, sa.func.count()).where(*where).group_by(Stream.outcome)
    )
    out["outcomes"] = {outcome: n for outcome, n in outcome_rows}
    return out


def _empty() -> dict[str, float | None]:
    return {f"p{p}": None for p in PERCENTILES}


def _percentiles(
    session: Session, source: sa.Subquery
) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
    """Nearest-rank percentiles of `source.v`, overall and per `source.model`, from one pass over `source`
    (for the gaps, reading every pack's JSON is most of the work): each sample is ranked twice."""
    v, model = source.c.v, source.c.model
    ranked = (
        sa.select(
            model,
            v,
            sa.func.row_number().over(order_by=v).label("rn"),
            sa.func.count().over().label("n"),
            sa.func.row_number().over(partition_by=model, order_by=v).label("mrn"),
            sa.func.count().over(partition_by=model).label("mn"),
        )
        .where(v.is_not(None))
        .subquery()
    )
    r = ranked.c
    # ceil(p * n / 100) in integer arithmetic, which both databases do exactly.
    rows = session.execute(
        sa.select(r.model, r.rn, r.n, r.mrn, r.mn, r.v).where(
            sa.or_(
                r.rn.in_([(p * r.n + 99) // 100 for p in PERCENTILES]),
                r.mrn.in_([(p * r.mn + 99) // 100 for p in PERCENTILES]),
            )
        )
    )
    overall = _empty()
    per_model: dict[str, dict[str, float | None]] = {}
    for name, rn, n, mrn, mn, value in rows:
        for p in PERCENTILES:
            if rn == (p * n + 99) // 100:
                overall[f"p{p}"] = float(value)
            if mrn == (p * mn + 99) // 100:
                per_model.setdefault(name, _empty())[f"p{p}"] = float(value)
    return overall, per_model


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _load_events(session: Session, ids: list[str]) -> dict[str, tuple[EventRecord, ...]]:
    p = StreamEventPack
    out: dict[str, tuple[EventRecord, ...]] = {}
    for start in range(0, len(ids), _CHUNK):
        stmt = sa.select(p.stream_id, p.events, p.raw).where(p.stream_id.in_(ids[start : start + _CHUNK]))
        for stream_id, events, blob in session.execute(stmt):
            out[stream_id] = tuple(
                EventRecord(
                    seq=seq,
                    t_ms=t_ms,
                    gap_ms=gap_ms,
                    kind=EventKind(kind),
                    data=event_data(raw),
                    raw=raw,
                    event=event,
                    tokens=tokens,
                )
                for seq, t_ms, gap_ms, kind, raw, event, tokens in unpack(events, blob)
            )
    return out


def choice_from_dict(d: dict[str, Any]) -> Choice:
    """The inverse of `export.choice_to_dict`: a choice as the `choices` column holds it."""
    return Choice(
        index=d["index"],
        content=d.get("content"),
        reasoning_content=d.get("reasoning_content"),
        refusal=d.get("refusal"),
        tool_calls=tuple(
            ToolCall(
                index=tc["index"], id=tc.get("id"), name=tc.get("name"), arguments=tc.get("arguments", "")
            )
            for tc in d.get("tool_calls", ())
        ),
        finish_reason=d.get("finish_reason"),
    )


def _to_record(row: Stream, events: tuple[EventRecord, ...]) -> StreamRecord:
    tokens = (row.prompt_tokens, row.completion_tokens, row.total_tokens, row.reasoning_tokens)
    usage = None if all(t is None for t in tokens) else Usage(*tokens)
    return StreamRecord(
        id=row.id,
        started_at=row.started_at,
        method=row.method,
        url=row.url,
        host=row.host,
        path=row.path,
        status_code=row.status_code,
        stream=row.stream,
        request_model=row.request_model,
        model=row.model,
        outcome=Outcome(row.outcome),
        error=row.error,
        ttfb_ms=row.ttfb_ms,
        ttft_ms=row.ttft_ms,
        ttfc_ms=row.ttfc_ms,
        duration_ms=row.duration_ms,
        usage=usage,
        choices=tuple(choice_from_dict(c) for c in row.choices),
        events=events,
        api_key_fp=row.api_key_fp,
        proxy_instance=row.proxy_instance,
        api=row.api,
        content_encoding=row.content_encoding,
        request_body=row.request_body,
        response_body=row.response_body,
        tap_errors=row.tap_errors,
        extra=dict(row.extra),
    )
