"""HTTP Archive 1.2 (HAR): recorded exchanges out (`streamtap export --format har`), exchanges back in.

The format is the W3C Web Performance group's draft "HTTP Archive (HAR) format", version 1.2. streamtap
stores no headers, so `headers` are empty lists; the response body is the body as received (after content
decoding), base64-encoded with `"encoding": "base64"` when it is not UTF-8. Each entry also carries a custom
field `_streamtap` (the spec allows custom fields whose names start with an underscore) with what HAR has no
place for: the outcome, TTFT, TTFC and every event's arrival time, so an import replays the same clock.
"""

from __future__ import annotations

import base64
import binascii
import http
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import ConfigError
from .export import record_to_sse
from .records import Outcome, StreamRecord

HAR_VERSION = "1.2"
SSE_MIME = "text/event-stream"
JSON_MIME = "application/json"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _version() -> str:
    try:
        return metadata.version("streamtap")
    except metadata.PackageNotFoundError:
        return "0"


def _has_bytes(rec: StreamRecord) -> bool:
    """False for recordings stored without their bytes (`--capture metadata`, `--no-keep-events`)."""
    if rec.stream:
        return any(e.raw for e in rec.events) or not rec.events
    return rec.response_body is not None or rec.status_code is None or rec.request_body is not None


def record_to_entry(rec: StreamRecord) -> dict[str, Any]:
    """One HAR entry. Times are milliseconds: `wait` is t0 to the response headers (TTFB), `receive` the
    headers to the last byte; `send` is 0 because t0 is when the whole request had arrived."""
    started = rec.started_at if rec.started_at.tzinfo else rec.started_at.replace(tzinfo=UTC)
    ttfb, duration = rec.ttfb_ms, rec.duration_ms
    wait = ttfb if ttfb is not None else (duration or 0.0)
    receive = max(0.0, duration - ttfb) if duration is not None and ttfb is not None else 0.0
    timings = {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": 0, "wait": _ms(wait)}
    timings["receive"] = _ms(receive)

    body = record_to_sse(rec)
    content: dict[str, Any] = {"size": len(body), "mimeType": SSE_MIME if rec.stream else JSON_MIME}
    if _has_bytes(rec):
        try:
            content["text"] = body.decode("utf-8")
        except UnicodeDecodeError:
            content["text"] = base64.b64encode(body).decode("ascii")
            content["encoding"] = "base64"
    status = rec.status_code
    request: dict[str, Any] = {
        "method": rec.method,
        "url": rec.url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": [],
        "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(rec.url).query)],
        "headersSize": -1,
        "bodySize": len(rec.request_body.encode("utf-8")) if rec.request_body is not None else 0,
    }
    if rec.request_body is not None:
        request["postData"] = {"mimeType": JSON_MIME, "text": rec.request_body}
    return {
        "startedDateTime": started.isoformat(),
        "time": _ms(wait + receive),
        "request": request,
        "response": {
            "status": status or 0,  # 0: no response (the connection broke first), as browsers write it
            "statusText": _reason(status),
            "httpVersion": "HTTP/1.1" if status else "",
            "cookies": [],
            "headers": [],
            "content": content,
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": len(body) if status and not rec.content_encoding else -1,
        },
        "cache": {},
        "timings": timings,
        "_streamtap": {
            "id": rec.id,
            "outcome": rec.outcome.value,
            "ttft_ms": _ms(rec.ttft_ms),
            "ttfc_ms": _ms(rec.ttfc_ms),
            "events": [
                {"seq": e.seq, "t_ms": _ms(e.t_ms), "gap_ms": _ms(e.gap_ms), "kind": e.kind.value}
                for e in rec.events
            ],
            "api": rec.api,
            "request_model": rec.request_model,
            "error": rec.error,
        },
    }


def _reason(status: int | None) -> str:
    try:
        return http.HTTPStatus(status).phrase if status else ""
    except ValueError:
        return ""


def records_to_har(records: Iterable[StreamRecord]) -> dict[str, Any]:
    """A HAR log of the records, oldest first (the order browsers write)."""
    entries = sorted((record_to_entry(r) for r in records), key=lambda e: str(e["startedDateTime"]))
    creator = {"name": "streamtap", "version": _version()}
    return {"log": {"version": HAR_VERSION, "creator": creator, "entries": entries}}


def records_to_har_json(records: Iterable[StreamRecord]) -> str:
    return json.dumps(records_to_har(records), indent=2, ensure_ascii=False)


# -- reading ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Exchange:
    """An exchange as an archive holds it: what an import feeds to the tap.

    Times are milliseconds from t0; `event_times` are the arrival times of the body's events in order
    (None: the archive has none). `outcome` is kept only where the bytes cannot tell (a disconnect).
    """

    method: str
    url: str
    request_body: str | None
    status: int | None
    content_type: str
    body: bytes | None  # None: the archive holds no body
    started_at: datetime
    ttfb_ms: float | None = None
    duration_ms: float | None = None
    event_times: tuple[float, ...] | None = None
    outcome: Outcome | None = None
    error: str | None = None
    source_id: str | None = None
    request_model: str | None = None  # when the request body does not say (an imported .sse)


class _Bad(ValueError):
    pass


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _Bad(f"{where}.{key} is missing or not a {getattr(kind, '__name__', 'value')}")
    return value


def _number(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def parse_har(data: bytes) -> list[Exchange]:
    """Every entry of a HAR file, in file order; a file that is not HAR is a ConfigError naming why."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"not a HAR file: invalid JSON ({e})") from e
    try:
        entries = _get(_get(obj, "log", dict, "HAR"), "entries", list, "log")
        return [_entry(entry, f"log.entries[{i}]") for i, entry in enumerate(entries)]
    except _Bad as e:
        raise ConfigError(f"not a HAR file: {e}") from e


def _entry(entry: Any, where: str) -> Exchange:
    request = _get(entry, "request", dict, where)
    response = _get(entry, "response", dict, where)
    content = response.get("content") if isinstance(response.get("content"), dict) else {}
    started_text = _get(entry, "startedDateTime", str, where)
    try:
        started = datetime.fromisoformat(started_text)
    except ValueError as e:
        raise _Bad(f"{where}.startedDateTime {started_text!r} is not an ISO 8601 date") from e
    started = started if started.tzinfo else started.replace(tzinfo=UTC)

    body: bytes | None = None
    text = content.get("text")
    if isinstance(text, str):
        if content.get("encoding") == "base64":
            try:
                body = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as e:
                raise _Bad(f"{where}.response.content.text is not valid base64") from e
        else:
            body = text.encode("utf-8", "surrogatepass")
    post = request.get("postData")
    request_body = post.get("text") if isinstance(post, dict) and isinstance(post.get("text"), str) else None
    status = _get(response, "status", int, f"{where}.response")

    timings = entry.get("timings") if isinstance(entry.get("timings"), dict) else {}
    wait, receive = _number(timings, "wait"), _number(timings, "receive")
    ttfb = wait if status else None
    duration = (wait or 0.0) + receive if receive is not None else wait

    ours = entry.get("_streamtap") if isinstance(entry.get("_streamtap"), dict) else {}
    times: tuple[float, ...] | None = None
    events = ours.get("events")
    if isinstance(events, list) and events:
        try:
            times = tuple(float(e["t_ms"]) for e in sorted(events, key=lambda e: int(e["seq"])))
        except (TypeError, KeyError, ValueError) as e:
            raise _Bad(f"{where}._streamtap.events has an event without seq or t_ms") from e
    outcome = None
    if ours.get("outcome") in (Outcome.UPSTREAM_DISCONNECT.value, Outcome.CLIENT_DISCONNECT.value):
        outcome = Outcome(ours["outcome"])
    error = ours.get("error") if isinstance(ours.get("error"), str) else None
    source_id = ours.get("id") if isinstance(ours.get("id"), str) else None
    request_model = ours.get("request_model") if isinstance(ours.get("request_model"), str) else None
    return Exchange(
        method=_get(request, "method", str, f"{where}.request"),
        url=_get(request, "url", str, f"{where}.request"),
        request_body=request_body,
        status=status or None,
        content_type=str(content.get("mimeType") or ""),
        body=body,
        started_at=started,
        ttfb_ms=ttfb,
        duration_ms=duration,
        event_times=times,
        outcome=outcome,
        error=error,
        source_id=source_id,
        request_model=request_model,
    )
