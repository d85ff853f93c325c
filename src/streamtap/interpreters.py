"""Which provider semantics apply to an exchange: picked by request path, the first event as a tiebreak."""

from __future__ import annotations

from typing import Any, Protocol

from .anthropic_api import AnthropicInterpreter
from .chat import ChatInterpreter
from .records import Choice, Usage
from .responses_api import ResponsesInterpreter
from .semantics import Interpretation, loads
from .sse import ItemKind, SSEItem

OPENAI_CHAT = "openai.chat"
OPENAI_RESPONSES = "openai.responses"
ANTHROPIC_MESSAGES = "anthropic.messages"

# First-event types that only one API sends (the SSE `event:` field, or the JSON `type`).
_ANTHROPIC_FIRST = frozenset(("message_start", "completion"))


class Interpreter(Protocol):
    """What the tap needs from a provider's semantics; results are readable at any time."""

    model: str | None
    usage: Usage | None
    error: str | None  # the first error the stream reported
    saw_done: bool  # the stream's terminal event arrived
    saw_finish: bool  # a finish (stop) reason arrived

    def feed(self, item: SSEItem) -> Interpretation: ...

    def feed_data(self, data: str, event: str | None = None) -> Interpretation:
        """`feed` of an event item with this data and `event:` field."""
        ...

    def feed_completion(self, obj: dict[str, Any]) -> None: ...

    def choices(self) -> tuple[Choice, ...]: ...


def _api_by_path(path: str) -> str | None:
    """The API a path names, or None when it names none we know (the caller defaults to chat)."""
    path = path.split("?", 1)[0].rstrip("/")
    segments = path.split("/")
    last = segments[-1]
    if last == "completions" or "threads" in segments:  # chat, legacy completions, Assistants
        return OPENAI_CHAT
    if last in ("messages", "complete") or (len(segments) > 1 and segments[-2] == "messages"):
        return ANTHROPIC_MESSAGES
    if "responses" in segments[-3:]:  # also GET /v1/responses/{id}?stream=true, which resumes a stream
        return OPENAI_RESPONSES
    if "/publishers/anthropic/" in path:  # Vertex AI: .../models/claude-...:streamRawPredict
        return ANTHROPIC_MESSAGES
    return None


def _api_by_event(item: SSEItem) -> str | None:
    kind = item.event
    if kind is None and item.kind is ItemKind.EVENT and item.data.startswith("{"):
        try:
            obj = loads(item.data)
        except (ValueError, RecursionError):
            return None
        if isinstance(obj, dict) and isinstance(obj.get("type"), str):
            kind = obj["type"]
    if kind is None:
        return None
    if kind in _ANTHROPIC_FIRST:
        return ANTHROPIC_MESSAGES
    if kind.startswith("response."):
        return OPENAI_RESPONSES
    return None


def api_name(path: str, first_event: SSEItem | None = None) -> str:
    """ "openai.chat", "openai.responses" or "anthropic.messages" (which also covers `/v1/complete`)."""
    api = _api_by_path(path)
    if api is None and first_event is not None:
        api = _api_by_event(first_event)
    return api or OPENAI_CHAT


def interpreter_for(path: str, first_event: SSEItem | None = None) -> Interpreter:
    """A fresh interpreter for an exchange on `path` (query string allowed).

    The path decides. `first_event`, when the caller has it, only settles paths that name no known API
    (a gateway's own route, say).
    """
    api = api_name(path, first_event)
    if api == OPENAI_RESPONSES:
        return ResponsesInterpreter()
    if api == ANTHROPIC_MESSAGES:
        return AnthropicInterpreter()
    return ChatInterpreter()
