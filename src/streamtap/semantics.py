"""What the API interpreters (chat.py, responses_api.py, anthropic_api.py) share: what an event means, and
a tool call being assembled from its streamed fragments."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from .records import EventKind, ToolCall

# Digits map to "0", every other byte to " ": a run of 19 digits is then a run of 19 "0"s.
_DIGIT_RUNS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def loads(text: str) -> Any:
    """`json.loads(text)`, in a third of the time for an event's data: orjson where it gives the same.

    orjson reads an integer beyond 64 bits (19 digits and up, signed) as a float, and rejects what `json`
    accepts beyond the standard (NaN, Infinity, lone surrogate escapes) or nests deeper than 1024: text
    with a run of 19 digits, and anything orjson rejects, goes to `json`, so the result (or the exception:
    ValueError, RecursionError) is always `json.loads`'s.
    """
    data = text.encode()
    if data.translate(_DIGIT_RUNS).find(_LONG_RUN) < 0:  # (`in` first tries the needle as an int: slower)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


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


@dataclass(slots=True)
class ToolCallBuilder:
    """A tool call whose id, name and argument fragments arrive over several events."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)

    def freeze(self) -> ToolCall:
        return ToolCall(self.index, self.id, self.name, "".join(self.arguments))
