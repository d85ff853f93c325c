"""Immutable records the tap produces and the recorder stores.

These are the contract between the pure parsing stages, the storage layer, the exporter and the read side.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, overload


class Outcome(enum.StrEnum):
    """How a recorded exchange ended. Exactly one per stream; see `decide_outcome` for precedence."""

    COMPLETED = "completed"  # the model finished: a finish_reason or [DONE] was seen
    TRUNCATED = "truncated"  # clean end of the body, but no finish_reason and no [DONE]
    CLIENT_DISCONNECT = "client_disconnect"
    UPSTREAM_DISCONNECT = "upstream_disconnect"
    MODEL_ERROR = "model_error"  # an error object in a data line, or `event: error`
    HTTP_ERROR = "http_error"  # status >= 400
    IN_PROGRESS = "in_progress"  # row written at request time, stream not finished yet
    INTERRUPTED = "interrupted"  # the proxy died while the stream was in progress


FINAL_OUTCOMES: tuple[Outcome, ...] = (
    Outcome.COMPLETED,
    Outcome.TRUNCATED,
    Outcome.CLIENT_DISCONNECT,
    Outcome.UPSTREAM_DISCONNECT,
    Outcome.MODEL_ERROR,
    Outcome.HTTP_ERROR,
)


class EventKind(enum.StrEnum):
    DATA = "data"
    COMMENT = "comment"
    DONE = "done"
    ERROR = "error"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class ToolCall:
    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    content: str | None
    reasoning_content: str | None
    refusal: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    reasoning_tokens: int | None = None


class EventRecord(NamedTuple):
    """One SSE event (or comment) as it arrived. A named tuple: the tap makes one per event, and a tuple is
    the cheapest immutable object to make (`tuple.__new__(EventRecord, fields)` in the tap's loop).

    `t_ms` is the arrival time of the network read that completed the event, relative to t0 (the proxy had
    the whole client request); `gap_ms` is the time since the previous event (None for the first).
    `raw` holds the exact bytes of the event as decoded from the wire: the concatenation of every event's
    `raw` is the (content-decoded) response body.
    """

    seq: int
    t_ms: float
    gap_ms: float | None
    kind: EventKind
    data: str | None
    raw: bytes
    event: str | None = None  # the SSE `event:` field, when present
    tokens: bool = False  # carries generated text (content, reasoning, refusal, tool arguments)


@dataclass(frozen=True, slots=True)
class StreamStart:
    """What is known when the client's request has arrived: written first so a crash leaves a trace."""

    id: str
    started_at: datetime
    method: str
    url: str
    host: str
    path: str
    request_model: str | None
    api_key_fp: str | None
    proxy_instance: str
    request_body: str | None = None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """A finished exchange: everything `streamtap export` prints."""

    id: str
    started_at: datetime
    method: str
    url: str
    host: str
    path: str
    status_code: int | None
    stream: bool
    request_model: str | None
    model: str | None
    outcome: Outcome
    error: str | None
    ttfb_ms: float | None
    ttft_ms: float | None
    ttfc_ms: float | None
    duration_ms: float | None
    usage: Usage | None
    choices: tuple[Choice, ...]
    events: Sequence[EventRecord] = ()  # a tuple, or the tap's `EventLog`
    api_key_fp: str | None = None
    proxy_instance: str = ""
    api: str = "openai.chat"
    content_encoding: str | None = None
    request_body: str | None = None
    response_body: str | None = None  # non-streamed bodies (JSON completion or error)
    tap_errors: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def finish_reason(self) -> str | None:
        """The stream's finish reason: the first choice's, or the first one any choice reported."""
        for choice in self.choices:
            if choice.finish_reason:
                return choice.finish_reason
        return None

    @property
    def gaps_ms(self) -> list[float]:
        """Gaps between consecutive token-carrying events (what the gap histogram samples)."""
        return token_gaps(self.events)


def token_gaps(events: Sequence[EventRecord]) -> list[float]:
    """The gaps between consecutive token-carrying events: what `stats`, the dashboard's gap histogram and
    the Prometheus histogram sample (the event pack keeps them as `token_gaps_ms`)."""
    times = _token_times(events)
    return list(map(operator.sub, times[1:], times[:-1]))


def token_event_count(events: Sequence[EventRecord]) -> int:
    """How many of the events carried tokens."""
    return len(_token_times(events))


def _token_times(events: Sequence[EventRecord]) -> list[float]:
    """t_ms of the events that carried tokens, read by index (a third faster than by name)."""
    if type(events) is EventLog:  # its rows: no EventRecords made
        return [row[0] for row in events.rows if row[4]]
    return [e[1] for e in events if e[7]]


_new = tuple.__new__
_KINDS = {kind.value: kind for kind in EventKind}


class EventLog(Sequence[EventRecord]):
    """A stream's events as the tap collects them, in the layout the event pack stores (`db.packs`).

    `rows` holds one `(t_ms, gap_ms, kind, event, tokens, start, end)` per event, `kind` its `EventKind`
    (orjson writes its value) and `raw[start:end]` the event's bytes in the body; `raws` and `datas` each
    event's bytes and data. Read as a sequence it gives `EventRecord`s, made when first asked for; the
    recorder stores the rows as they are, so a stream's events cost the tap one small tuple each and the
    pack no transposing. It compares equal to any sequence of the same `EventRecord`s.
    """

    __slots__ = ("_records", "datas", "raws", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], raws: list[bytes], datas: list[str | None]) -> None:
        self.rows = rows
        self.raws = raws
        self.datas = datas
        self._records: tuple[EventRecord, ...] | None = None

    def records(self) -> tuple[EventRecord, ...]:
        if self._records is None:
            self._records = tuple(
                _new(EventRecord, (seq, t_ms, gap_ms, _KINDS[kind], data, raw, event, tokens))
                for seq, ((t_ms, gap_ms, kind, event, tokens, _, _), raw, data) in enumerate(
                    zip(self.rows, self.raws, self.datas, strict=True)
                )
            )
        return self._records

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> EventRecord: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[EventRecord, ...]: ...
    def __getitem__(self, index: int | slice) -> EventRecord | tuple[EventRecord, ...]:
        return self.records()[index]

    def __iter__(self) -> Iterator[EventRecord]:
        return iter(self.records())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return self.records() == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # equal to tuples, whose hashes it cannot share

    def __repr__(self) -> str:
        return f"EventLog({self.records()!r})"
