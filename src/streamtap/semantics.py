"""What the API interpreters (chat.py, responses_api.py, anthropic_api.py) share: what an event means, and
a tool call being assembled from its streamed fragments."""

from __future__ import annotations

from dataclasses import dataclass, field

from .records import EventKind, ToolCall


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
