"""Anthropic Messages API semantics (`/v1/messages`): SSE events in, one choice, usage and errors out.

Same interface as `chat.ChatInterpreter`. Written against real recordings (tests/fixtures/corpus and
`../shared/sse-corpus/SOURCES.md`) and the streaming reference
(https://docs.anthropic.com/en/docs/build-with-claude/streaming):

- `message_start` (model, input usage), `content_block_start` / `_delta` / `_stop` by block `index`,
  `message_delta` (stop_reason, cumulative usage), `message_stop`, `ping`, `error`;
- text in `text_delta`, thinking in `thinking_delta`; `signature_delta` and `citations_delta` carry no
  generated text; a `redacted_thinking` block arrives whole and encrypted: generated, but not readable;
- `tool_use` (and the server-run `server_tool_use`, `mcp_tool_use`) blocks become tool calls whose
  arguments are the `input_json_delta` fragments as streamed;
- JSON padded with spaces before the closing brace (Vertex AI, the legacy API) is still JSON;
- the legacy Text Completions stream (`/v1/complete`): `completion` events with `completion` text and a
  `stop_reason` on the last one, and no `message_stop`.

`finish_reason` is Anthropic's own `stop_reason`; `normalized_finish_reason` maps it for the metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .chat import error_text, parse_usage
from .records import Choice, Usage
from .semantics import CONTENT as _CONTENT
from .semantics import DATA as _DATA
from .semantics import DONE as _DONE
from .semantics import ERROR as _ERROR
from .semantics import MALFORMED as _MALFORMED
from .semantics import TOKENS as _TOKENS
from .semantics import EventInterpreter, Interpretation, loads
from .semantics import ToolCallBuilder as _Tool

_TOOL_BLOCKS = ("tool_use", "server_tool_use", "mcp_tool_use")
_NORMALIZED = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_USAGE_COUNTS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
    "output_tokens_details",
)


def normalized_finish_reason(reason: str | None) -> str | None:
    """An Anthropic `stop_reason` in chat-completion terms; reasons with no equivalent stay as they are."""
    if reason is None:
        return None
    return _NORMALIZED.get(reason, reason)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(slots=True)
class _Block:
    kind: str
    pieces: list[str] = field(default_factory=list)  # text or thinking
    tool: _Tool | None = None


class AnthropicInterpreter(EventInterpreter):
    """Feeds on the SSE items of one Messages (or legacy Text Completions) stream."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: Usage | None = None
        self.error: str | None = None
        self.saw_done = False
        self.saw_finish = False
        self._blocks: dict[int, _Block] = {}
        self._order: list[_Block] = []  # blocks in order of arrival (indexes may repeat across messages)
        self._tools: list[_Tool] = []
        self._usage: dict[str, object] = {}
        self._stop_reason: str | None = None

    # -- streaming -------------------------------------------------------------------------------------
    def feed_data(self, data: str, event: str | None = None) -> Interpretation:
        """An event: its data, and its `event:` field (None when it has none)."""
        try:
            obj = loads(data)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            if event == "error":
                self._set_error(data or "error event")
                return _ERROR
            return _MALFORMED
        kind = obj.get("type")
        if not isinstance(kind, str):
            kind = event or ""
        if kind == "error" or event == "error":
            self._set_error(error_text(obj))
            return _ERROR
        return self.feed_event(kind, obj)

    def feed_event(self, kind: str, obj: dict[str, Any]) -> Interpretation:
        """One decoded event object; `kind` is its type."""
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "content_block_start":
            return self._block_start(obj)
        if kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self._take_model(message)
                self._take_usage(message.get("usage"))
            return _DATA
        if kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                self._take_stop_reason(delta.get("stop_reason"))
            self._take_usage(obj.get("usage"))
            return _DATA
        if kind == "message_stop":
            self.saw_done = True
            return _DONE
        if kind == "completion":
            return self._legacy_completion(obj)
        return _DATA  # ping, content_block_stop, and anything new

    def _block_start(self, obj: dict[str, Any]) -> Interpretation:
        raw = obj.get("content_block")
        if not isinstance(raw, dict):
            return _DATA
        kind = raw.get("type")
        block = _Block(kind if isinstance(kind, str) else "")
        index = obj.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            self._blocks[index] = block
        self._order.append(block)
        if block.kind in _TOOL_BLOCKS:
            tool = block.tool = self._new_tool()
            tool.id = _str(raw.get("id"))
            tool.name = _str(raw.get("name"))
            start_input = raw.get("input")
            if isinstance(start_input, dict) and start_input:  # a call sent whole, not as deltas
                tool.arguments.append(json.dumps(start_input, ensure_ascii=False))
                return _TOKENS
            return _DATA
        if block.kind == "text":
            text = _str(raw.get("text"))
            if text is not None:
                block.pieces.append(text)
                return _CONTENT
        elif block.kind == "thinking":
            text = _str(raw.get("thinking"))
            if text is not None:
                block.pieces.append(text)
                return _TOKENS
        elif block.kind == "redacted_thinking":
            # The model's reasoning, delivered whole and encrypted: it is output, though there is no text.
            return _TOKENS if raw.get("data") else _DATA
        return _DATA

    def _delta(self, obj: dict[str, Any]) -> Interpretation:
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return _DATA
        kind = delta.get("type")
        index = obj.get("index")
        block = self._blocks.get(index) if isinstance(index, int) and not isinstance(index, bool) else None
        if kind == "text_delta":
            text = _str(delta.get("text"))
            if text is None:
                return _DATA
            self._block(block, index, "text").pieces.append(text)
            return _CONTENT
        if kind == "thinking_delta":
            text = _str(delta.get("thinking"))
            if text is None:
                return _DATA
            self._block(block, index, "thinking").pieces.append(text)
            return _TOKENS
        if kind == "input_json_delta":
            fragment = _str(delta.get("partial_json"))
            if fragment is None:  # the first fragment is usually ""
                return _DATA
            block = self._block(block, index, "tool_use")
            if block.tool is None:
                block.tool = self._new_tool()
            block.tool.arguments.append(fragment)
            return _TOKENS
        return _DATA  # signature_delta, citations_delta

    def _block(self, block: _Block | None, index: object, kind: str) -> _Block:
        """The block a delta belongs to; one is made up if its start was never seen."""
        if block is not None:
            return block
        block = _Block(kind)
        if isinstance(index, int) and not isinstance(index, bool):
            self._blocks[index] = block
        self._order.append(block)
        return block

    def _legacy_completion(self, obj: dict[str, Any]) -> Interpretation:
        self._take_model(obj)
        text = _str(obj.get("completion"))
        if text is not None:
            self._block(self._blocks.get(0), 0, "text").pieces.append(text)
        if self._take_stop_reason(obj.get("stop_reason")):
            self.saw_done = True  # the last event of a /v1/complete stream: there is no message_stop
        if text is not None:
            return _CONTENT
        return _DONE if self.saw_done else _DATA

    def _new_tool(self) -> _Tool:
        tool = _Tool(len(self._tools))
        self._tools.append(tool)
        return tool

    def _take_model(self, obj: dict[str, Any]) -> None:
        model = _str(obj.get("model"))
        if self.model is None and model is not None:
            self.model = model

    def _take_stop_reason(self, reason: object) -> bool:
        if isinstance(reason, str) and reason:
            self._stop_reason = reason
            self.saw_finish = True
            return True
        return False

    def _take_usage(self, obj: object) -> None:
        """Merge: `message_delta` counts are cumulative and overwrite; absent ones keep `message_start`'s."""
        if not isinstance(obj, dict):
            return
        for key in _USAGE_COUNTS:
            value = obj.get(key)
            if value is not None:
                self._usage[key] = value
        merged = self._usage
        # Anthropic's input_tokens leaves out cached tokens; OpenAI's prompt_tokens counts them. Add them,
        # so that prompt_tokens means every token the model read, whichever API served it.
        prompt: object = merged.get("input_tokens")
        if isinstance(prompt, int) and not isinstance(prompt, bool):
            prompt += _count(merged.get("cache_creation_input_tokens"))
            prompt += _count(merged.get("cache_read_input_tokens"))
        usage = parse_usage(
            {
                "input_tokens": prompt,
                "output_tokens": merged.get("output_tokens"),
                "output_tokens_details": merged.get("output_tokens_details"),
            }
        )
        if usage is not None:
            self.usage = usage

    def _set_error(self, text: str) -> None:
        if self.error is None:
            self.error = text

    # -- results ---------------------------------------------------------------------------------------
    def choices(self) -> tuple[Choice, ...]:
        if not (self._order or self._stop_reason):
            return ()
        text = "".join(p for b in self._order if b.kind == "text" for p in b.pieces)
        thinking = ["".join(b.pieces) for b in self._order if b.kind == "thinking" and b.pieces]
        return (
            Choice(
                index=0,
                content=text or None,
                reasoning_content="\n\n".join(thinking) or None,
                refusal=None,
                tool_calls=tuple(t.freeze() for t in self._tools),
                finish_reason=self._stop_reason,
            ),
        )

    # -- non-streamed messages ------------------------------------------------------------------------
    def feed_completion(self, obj: dict[str, Any]) -> None:
        """A whole `message` (or legacy `completion`) response body."""
        if obj.get("type") == "error" or obj.get("error"):
            self._set_error(error_text(obj))
            return
        self._take_model(obj)
        self._take_usage(obj.get("usage"))
        self._take_stop_reason(obj.get("stop_reason"))
        completion = _str(obj.get("completion"))
        if completion is not None:
            self._block(None, None, "text").pieces.append(completion)
        content = obj.get("content")
        if not isinstance(content, list):
            return
        for position, raw in enumerate(content):
            if isinstance(raw, dict):
                self._block_start({"index": position, "content_block": raw})
