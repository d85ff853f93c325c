"""`streamtap import`: an `.sse` body or a HAR file becomes recordings, interpreted exactly like live ones.

Each exchange goes through a `StreamTap` as the proxy would feed it (the headers at TTFB, each event's bytes
at its arrival time), so the interpretation (content, tool calls, usage, finish reason, outcome, TTFT) is the
live one; only the clock is the archive's, or a synthetic one `gap_ms` apart when the archive has none.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

from .errors import ConfigError, DatabaseError
from .har import SSE_MIME, Exchange, parse_har
from .pipeline import request_model
from .privacy import redact_url
from .recorder import Recorder
from .records import Outcome, StreamRecord, StreamStart
from .sse import ItemKind, decode_all
from .tap import MAX_STORED_BODY, StreamTap

INSTANCE = "import"
LLM_PATHS = ("/chat/completions", "/completions", "/responses", "/messages", "/complete")


@dataclass(frozen=True, slots=True)
class Loaded:
    records: tuple[StreamRecord, ...]
    skipped: int  # archive entries that are no LLM exchange, or hold no body


def split_events(body: bytes) -> list[bytes]:
    """The body cut into the events the tap records: one per SSE item, trailing blank lines with the last."""
    out: list[bytes] = []
    for item in decode_all(body):
        if item.kind is ItemKind.PADDING and out:
            out[-1] += item.raw
        else:
            out.append(item.raw)
    return out


def to_record(ex: Exchange, *, model: str | None = None, gap_ms: float = 20.0) -> StreamRecord:
    """Feed one exchange to a fresh tap on its own clock (t0 = 0) and return what the tap recorded."""
    parts = urlsplit(ex.url)
    start = StreamStart(
        id=uuid.uuid4().hex,
        started_at=ex.started_at,
        method=ex.method,
        url=redact_url(ex.url),
        host=parts.hostname or "",
        path=parts.path or "/",
        request_model=model or request_model(ex.request_body) or ex.request_model,
        api_key_fp=None,
        proxy_instance=INSTANCE,
        request_body=ex.request_body,
    )
    tap = StreamTap(start, 0.0)
    disconnect = (
        ex.outcome if ex.outcome in (Outcome.UPSTREAM_DISCONNECT, Outcome.CLIENT_DISCONNECT) else None
    )
    if ex.status is None:
        end = (ex.duration_ms or 0.0) / 1000.0
        return tap.finish(end, disconnect=disconnect or Outcome.UPSTREAM_DISCONNECT, reason=ex.error)
    ttfb = ex.ttfb_ms or 0.0
    tap.response_headers(ttfb / 1000.0, ex.status, ex.content_type, None)
    body = ex.body or b""
    end_ms = ex.duration_ms if ex.duration_ms is not None else ttfb
    if tap.is_sse:
        events = split_events(body)
        times = ex.event_times
        if times is None or len(times) != len(events):
            times = tuple(ttfb + (i + 1) * gap_ms for i in range(len(events)))
        for raw, t_ms in zip(events, times, strict=True):
            tap.feed(raw, t_ms / 1000.0)
        end_ms = times[-1] if times else end_ms
    else:
        tap.whole_body(body[:MAX_STORED_BODY], max(end_ms, ttfb) / 1000.0)
    return tap.finish(end_ms / 1000.0, disconnect=disconnect, reason=ex.error)


def _is_llm(ex: Exchange) -> bool:
    path = ex.url.split("?", 1)[0].rstrip("/")
    mime = ex.content_type.split(";", 1)[0].strip().lower()
    return mime == SSE_MIME or (ex.method.upper() == "POST" and path.endswith(LLM_PATHS))


def load_file(
    file: str | Path,
    *,
    model: str | None = None,
    api_path: str = "/v1/chat/completions",
    gap_ms: float = 20.0,
) -> Loaded:
    """Read an `.sse` body (one exchange on `api_path`) or a HAR file (its LLM exchanges) into records.

    Nothing is written. A file that cannot be read, or holds no SSE event or no HAR log, is a ConfigError.
    """
    path = Path(file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e.strerror or e}") from e
    if path.suffix.lower() == ".har" or (path.suffix.lower() != ".sse" and data.lstrip()[:1] == b"{"):
        exchanges = parse_har(data)
        keep = [ex for ex in exchanges if ex.body is not None and _is_llm(ex)]
        records = [_tagged(to_record(ex, model=model, gap_ms=gap_ms), path, ex.source_id) for ex in keep]
        return Loaded(tuple(records), len(exchanges) - len(keep))
    items = decode_all(data)
    if not any(item.kind in (ItemKind.EVENT, ItemKind.COMMENT) for item in items):
        raise ConfigError(f"{file} holds no server-sent event (expected an .sse body or a .har file)")
    if not api_path.startswith("/"):
        raise ConfigError(f"bad --path {api_path!r}: expected a request path such as /v1/chat/completions")
    exchange = Exchange(
        method="POST",
        url=f"http://{INSTANCE}{api_path}",
        request_body=None,
        status=200,
        content_type=SSE_MIME,
        body=data,
        started_at=datetime.now(UTC),
    )
    return Loaded((_tagged(to_record(exchange, model=model, gap_ms=gap_ms), path, None),), 0)


def _tagged(rec: StreamRecord, path: Path, source_id: str | None) -> StreamRecord:
    extra: dict[str, object] = {"imported_from": path.name}
    if source_id:
        extra["original_id"] = source_id
    return dataclasses.replace(rec, extra=extra)


def write_records(engine: sa.Engine, records: Sequence[StreamRecord]) -> None:
    """Write the records with the recorder (the proxy's own writer); a DatabaseError if any was lost."""
    recorder = Recorder(engine, queue_size=max(1, len(records)), flush_interval=0)
    for rec in records:
        recorder.submit(rec)
    if not recorder.close():
        raise DatabaseError(f"{recorder.dropped} of {len(records)} records could not be written")
