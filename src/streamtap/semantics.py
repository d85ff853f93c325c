"""What the API interpreters (chat.py, responses_api.py, anthropic_api.py) share: what an event means, and
a tool call being assembled from its streamed fragments."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from .records import EventKind, ToolCall
from .sse import ItemKind, SSEItem

# Digits map to "0", every other byte to " ": a run of 19 digits is then a run of 19 "0"s.
_DIGIT_RUNS = bytes([0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256)])
_LONG_RUN = b"0" * 19


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`, in a third of the time for an event's data: orjson where it gives the same.

    orjson reads an integer beyond 64 bits (19 digits and up, signed) as a float, and rejects what `json`
    accepts beyond the standard (NaN, Infinity, lone surrogate escapes): text with a run of 19 digits, and
    anything orjson rejects, goes to `json`, so the result (or the exception: ValueError) is `json.loads`'s.
    One exception: nesting deeper than orjson's 1024 levels (as orjson finds it) is a RecursionError here,
    where `json` would read up to ~1,500 levels, fewer the deeper the caller's stack (compiled: 3 fewer).
    """
    data = text.encode() if isinstance(text, str) else text
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        if too_deep(e):
            raise RecursionError("JSON nested deeper than 1024 levels") from None
        return json.loads(text)
    if data.translate(_DIGIT_RUNS).find(_LONG_RUN) < 0:  # (`in` first tries the needle as an int: slower)
        return obj
    return json.loads(text)  # exact integers


def too_deep(error: orjson.JSONDecodeError) -> bool:
    """Whether orjson refused a text for its nesting (past 1024 levels)."""
    return str(error).startswith("depth limit exceeded")


@dataclass(frozen=True, slots=True)
class Interpretation:
    """What one SSE item means."""

    kind: EventKind
    tokens: bool = False  # carries generated text
    content: bool = False  # carries non-empty visible output text


COMMENT = Interpretation(EventKind.COMMENT)
DONE = Interpretation(EventKind.DONE)
ERROR = Interpretation(EventKind.ERROR)
MALFORMED = Interpretation(EventKind.MALFORMED)
DATA = Interpretation(EventKind.DATA)
TOKENS = Interpretation(EventKind.DATA, tokens=True)
CONTENT = Interpretation(EventKind.DATA, tokens=True, content=True)


class EventInterpreter:
    """What every API's interpreter does with an SSE item: a comment is a comment, anything not an event is
    malformed, and an event's data and `event:` field go to the API's own `feed_data`."""

    def feed_data(self, data: str, event: str | None = None) -> Interpretation:
        raise NotImplementedError

    def feed(self, item: SSEItem) -> Interpretation:
        if item.kind is ItemKind.COMMENT:
            return COMMENT
        if item.kind is not ItemKind.EVENT:
            return MALFORMED
        return self.feed_data(item.data, item.event)


@dataclass(slots=True)
class ToolCallBuilder:
    """A tool call whose id, name and argument fragments arrive over several events."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)

    def freeze(self) -> ToolCall:
        return ToolCall(self.index, self.id, self.name, "".join(self.arguments))
