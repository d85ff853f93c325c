"""Records as JSON (`streamtap export --format json`) and as the SSE body they were recorded from."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from .records import Choice, EventRecord, StreamRecord


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def choice_to_dict(choice: Choice) -> dict[str, Any]:
    """A choice in the export's shape (also how the database's `choices` column holds it)."""
    return {
        "index": choice.index,
        "content": choice.content,
        "reasoning_content": choice.reasoning_content,
        "refusal": choice.refusal,
        "tool_calls": [
            {"index": tc.index, "id": tc.id, "name": tc.name, "arguments": tc.arguments}
            for tc in choice.tool_calls
        ],
        "finish_reason": choice.finish_reason,
    }


def _event_to_dict(event: EventRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": event.seq,
        "t_ms": _ms(event.t_ms),
        "gap_ms": _ms(event.gap_ms),
        "kind": event.kind.value,
        "data": event.data,
    }
    if event.event is not None:
        out["event"] = event.event
    return out


def record_to_json(rec: StreamRecord) -> dict[str, Any]:
    """One record as a JSON-ready dict. This shape is a public contract: keys are only ever added.

    The contract's keys, in order: id, started_at (ISO 8601 with offset; naive values are taken as UTC),
    method, url, status_code, stream, request_model, model, outcome, error, ttfb_ms, ttft_ms, ttfc_ms,
    duration_ms (milliseconds rounded to 3 decimals, null when not applicable), usage ({prompt_tokens,
    completion_tokens, total_tokens} or null when the upstream reported none), choices, events
    ([{seq, t_ms, gap_ms, kind, data}]).

    Added after them: finish_reason, api, host, api_key_fp, proxy_instance; and in an event, `event` (the SSE
    event field) only when the event had one.
    """
    started_at = rec.started_at if rec.started_at.tzinfo else rec.started_at.replace(tzinfo=UTC)
    usage = rec.usage
    return {
        "id": rec.id,
        "started_at": started_at.isoformat(),
        "method": rec.method,
        "url": rec.url,
        "status_code": rec.status_code,
        "stream": rec.stream,
        "request_model": rec.request_model,
        "model": rec.model,
        "outcome": rec.outcome.value,
        "error": rec.error,
        "ttfb_ms": _ms(rec.ttfb_ms),
        "ttft_ms": _ms(rec.ttft_ms),
        "ttfc_ms": _ms(rec.ttfc_ms),
        "duration_ms": _ms(rec.duration_ms),
        "usage": None
        if usage is None
        else {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "choices": [choice_to_dict(c) for c in rec.choices],
        "events": [_event_to_dict(e) for e in rec.events],
        "finish_reason": rec.finish_reason,
        "api": rec.api,
        "host": rec.host,
        "api_key_fp": rec.api_key_fp,
        "proxy_instance": rec.proxy_instance,
    }


def records_to_json(recs: Iterable[StreamRecord]) -> str:
    """A JSON array of records, indented, non-ASCII kept as is."""
    return json.dumps([record_to_json(r) for r in recs], indent=2, ensure_ascii=False)


def record_to_sse(rec: StreamRecord) -> bytes:
    """The response body as received (after content decoding): the events' exact bytes, in order.

    A non-streamed exchange gives its response body; a streamed one recorded without events gives b"".
    """
    if not rec.stream:
        return rec.response_body.encode("utf-8") if rec.response_body is not None else b""
    return b"".join(e.raw for e in rec.events)
