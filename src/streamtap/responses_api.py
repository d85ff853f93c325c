"""OpenAI Responses API semantics (`/v1/responses`): SSE events in, one choice, usage and errors out.

Same interface as `chat.ChatInterpreter`. Written against real recordings (tests/fixtures/corpus and
`../shared/sse-corpus/SOURCES.md`) as much as the API reference
(https://platform.openai.com/docs/api-reference/responses-streaming):

- the event type is the JSON `type`; the SSE `event:` field only stands in when `type` is missing, since
  OpenRouter sends no `event:` lines (and ends with `data: [DONE]`, which OpenAI does not send);
- text in `response.output_text.delta`, refusals in `response.refusal.delta`, reasoning in
  `response.reasoning_summary_text.delta` (OpenAI) or `response.reasoning_text.delta` (DeepSeek,
  OpenRouter); a `.done` event only fills a part whose deltas never came;
- function calls announced by `response.output_item.added` (call_id, name), arguments streamed by
  `response.function_call_arguments.delta` keyed by `item_id` (or `output_index`);
- usage only inside the terminal `response.completed` / `response.incomplete` (all zeros in a recorded
  `max_output_tokens` stream); errors in `response.failed` or an `error` event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .chat import error_text, parse_usage
from .records import Choice, EventKind, Usage
from .semantics import CONTENT as _CONTENT
from .semantics import DATA as _DATA
from .semantics import DONE as _DONE
from .semantics import ERROR as _ERROR
from .semantics import MALFORMED as _MALFORMED
from .semantics import TOKENS as _TOKENS
from .semantics import EventInterpreter, Interpretation, loads
from .semantics import ToolCallBuilder as _Tool

# `incomplete_details.reason` in chat-completion terms, so the metrics see one vocabulary.
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}

_TEXT = "text"
_REASONING = "reasoning"
_REFUSAL = "refusal"
# Output items whose arguments the client must act on; built-in tools (web search, ...) run server-side.
_CLIENT_TOOL_ITEMS = ("function_call", "custom_tool_call")
_LIFECYCLE = ("response.created", "response.in_progress", "response.queued")


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(slots=True)
class _Part:
    """One run of streamed text: a content part, a summary part or a reasoning-text part."""

    kind: str
    pieces: list[str] = field(default_factory=list)


def _finish_reason(response: dict[str, Any], made_tool_calls: bool, status: object = None) -> str | None:
    """From the response's `status`; `status` stands in when the response does not say."""
    status = response.get("status") or status
    if status == "completed":
        return "tool_calls" if made_tool_calls else "stop"
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = _str(details.get("reason")) if isinstance(details, dict) else None
        if reason is None:
            return "incomplete"
        return _INCOMPLETE_REASONS.get(reason, reason)
    return None


def _error_event_text(obj: dict[str, Any]) -> str:
    """An `error` event puts code and message at the top level; some servers nest them in `error`."""
    if obj.get("error"):
        return error_text(obj)
    message = _str(obj.get("message"))
    if message is None:
        return error_text(obj)
    code = obj.get("code")
    return f"{code}: {message}" if isinstance(code, (str, int)) and code != "" else message


class ResponsesInterpreter(EventInterpreter):
    """Feeds on the SSE items of one Responses API stream; results are readable at any time."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: Usage | None = None
        self.error: str | None = None
        self.saw_done = False
        self.saw_finish = False
        self._parts: dict[tuple[object, ...], _Part] = {}  # in order of first arrival
        self._tools: list[_Tool] = []
        self._tool_keys: dict[object, _Tool] = {}  # item_id (str) and output_index (int) -> call
        self._finish_reason: str | None = None

    # -- streaming -------------------------------------------------------------------------------------
    def feed_data(self, data: str, event: str | None = None) -> Interpretation:
        """An event: its data, and its `event:` field (None when it has none)."""
        if data.startswith("[DONE]"):  # OpenRouter's end marker, after `response.completed`
            self.saw_done = True
            return _DONE
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
        if kind == "error" or event == "error" or obj.get("error"):
            self._set_error(_error_event_text(obj))
            return _ERROR
        return self.feed_event(kind, obj)

    def feed_event(self, kind: str, obj: dict[str, Any]) -> Interpretation:
        """One decoded event object; `kind` is its type."""
        if kind.startswith("response.") and kind.endswith(".delta"):
            return self._delta(kind, obj)
        if kind.endswith(".done"):
            return self._done(kind, obj)
        if kind == "response.output_item.added":
            item = obj.get("item")
            if isinstance(item, dict) and item.get("type") in _CLIENT_TOOL_ITEMS:
                tool = self._tool(obj, item.get("id"))
                return _TOKENS if self._fill_tool(tool, item) else _DATA
            return _DATA
        response = obj.get("response")
        if not isinstance(response, dict):
            return _DATA
        self._take_model(response)
        if kind in _LIFECYCLE:
            return _DATA
        if kind in ("response.completed", "response.incomplete"):
            usage = parse_usage(response.get("usage"))
            if usage is not None:
                self.usage = usage
            filled = False
            if not self._parts and not self._tools:  # a server that streamed no deltas at all
                filled = self._take_output(response.get("output"))
            # the event type says how it ended, should the response object leave `status` out
            self._finish_reason = _finish_reason(response, bool(self._tools), kind.removeprefix("response."))
            self.saw_finish = self._finish_reason is not None
            self.saw_done = True
            return Interpretation(EventKind.DONE, tokens=filled, content=filled and self._has_text())
        if kind == "response.failed":
            usage = parse_usage(response.get("usage"))
            if usage is not None:
                self.usage = usage
            self.saw_done = True
            self._set_error(error_text(response) if response.get("error") else "response failed")
            return _ERROR
        return _DATA

    def _delta(self, kind: str, obj: dict[str, Any]) -> Interpretation:
        delta = obj.get("delta")
        if not isinstance(delta, str) or not delta:
            return _DATA
        if kind == "response.output_text.delta":
            self._part(_TEXT, obj, "content_index").pieces.append(delta)
            return _CONTENT
        if kind == "response.refusal.delta":
            self._part(_REFUSAL, obj, "content_index").pieces.append(delta)
        elif kind == "response.reasoning_summary_text.delta":
            self._part(_REASONING, obj, "summary_index").pieces.append(delta)
        elif kind == "response.reasoning_text.delta":
            self._part(_REASONING, obj, "content_index").pieces.append(delta)
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            self._tool(obj, obj.get("item_id")).arguments.append(delta)
        # any other delta (audio, transcripts, code interpreter code, MCP arguments) is generated output too
        return _TOKENS

    def _done(self, kind: str, obj: dict[str, Any]) -> Interpretation:
        """`.done` events repeat what the deltas said; they count only when no delta came."""
        if kind == "response.output_text.done":
            return _CONTENT if self._fill(_TEXT, obj, "content_index", obj.get("text")) else _DATA
        if kind == "response.refusal.done":
            return _TOKENS if self._fill(_REFUSAL, obj, "content_index", obj.get("refusal")) else _DATA
        if kind == "response.reasoning_summary_text.done":
            return _TOKENS if self._fill(_REASONING, obj, "summary_index", obj.get("text")) else _DATA
        if kind == "response.reasoning_text.done":
            return _TOKENS if self._fill(_REASONING, obj, "content_index", obj.get("text")) else _DATA
        if kind == "response.function_call_arguments.done":
            return _TOKENS if self._fill_tool(self._tool(obj, obj.get("item_id")), obj) else _DATA
        if kind == "response.custom_tool_call_input.done":
            tool = self._tool(obj, obj.get("item_id"))
            return _TOKENS if self._fill_tool(tool, {"arguments": obj.get("input")}) else _DATA
        if kind == "response.output_item.done":
            item = obj.get("item")
            if isinstance(item, dict) and item.get("type") in _CLIENT_TOOL_ITEMS:
                return _TOKENS if self._fill_tool(self._tool(obj, item.get("id")), item) else _DATA
        return _DATA

    def _part(self, kind: str, obj: dict[str, Any], sub: str) -> _Part:
        owner = obj.get("item_id")
        if not isinstance(owner, str):
            owner = obj.get("output_index")
        sub_index = obj.get(sub)
        key = (
            kind,
            owner if isinstance(owner, (str, int)) else None,
            sub,
            sub_index if isinstance(sub_index, int) else None,
        )
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = _Part(kind)
        return part

    def _fill(self, kind: str, obj: dict[str, Any], sub: str, text: object) -> bool:
        if not isinstance(text, str) or not text:
            return False
        part = self._part(kind, obj, sub)
        if part.pieces:
            return False
        part.pieces.append(text)
        return True

    def _tool(self, obj: dict[str, Any], item_id: object) -> _Tool:
        """The call an event belongs to, by item id, else by output index; a new one if unknown."""
        output_index = obj.get("output_index")
        keys: list[object] = []
        if isinstance(item_id, str) and item_id:
            keys.append(item_id)
        if isinstance(output_index, int) and not isinstance(output_index, bool):
            keys.append(output_index)
        tool = next((self._tool_keys[k] for k in keys if k in self._tool_keys), None)
        if tool is None:
            tool = _Tool(len(self._tools))
            self._tools.append(tool)
        for key in keys:
            self._tool_keys.setdefault(key, tool)
        return tool

    @staticmethod
    def _fill_tool(tool: _Tool, item: dict[str, Any]) -> bool:
        """Take id and name if still unknown, and arguments if none were streamed; True if arguments came."""
        call_id = _str(item.get("call_id")) or _str(item.get("id"))
        if tool.id is None and call_id is not None:
            tool.id = call_id
        name = _str(item.get("name"))
        if tool.name is None and name is not None:
            tool.name = name
        arguments = item.get("arguments")
        if arguments is None:
            arguments = item.get("input")  # custom tools
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if isinstance(arguments, str) and arguments and not tool.arguments:
            tool.arguments.append(arguments)
            return True
        return False

    def _take_model(self, response: dict[str, Any]) -> None:
        model = _str(response.get("model"))
        if self.model is None and model is not None:
            self.model = model

    def _has_text(self) -> bool:
        return any(p.kind == _TEXT and p.pieces for p in self._parts.values())

    def _set_error(self, text: str) -> None:
        if self.error is None:
            self.error = text

    def _take_output(self, output: object) -> bool:
        """The `output` array of a whole Response; True if it held any generated text or call."""
        if not isinstance(output, list):
            return False
        found = False
        for position, item in enumerate(output):
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            where = {"output_index": position, "item_id": _str(item.get("id"))}
            if kind in _CLIENT_TOOL_ITEMS:
                found |= self._fill_tool(self._tool(where, where["item_id"]), item)
                continue
            for field_name, sub in (("content", "content_index"), ("summary", "summary_index")):
                parts = item.get(field_name)
                if not isinstance(parts, list):
                    continue
                for i, part in enumerate(parts):
                    if not isinstance(part, dict):
                        continue
                    part_type = part.get("type")
                    if part_type == "output_text":
                        text, target = part.get("text"), _TEXT
                    elif part_type == "refusal":
                        text, target = part.get("refusal"), _REFUSAL
                    elif part_type in ("summary_text", "reasoning_text"):
                        text, target = part.get("text"), _REASONING
                    else:
                        continue
                    found |= self._fill(target, {**where, sub: i}, sub, text)
        return found

    # -- results ---------------------------------------------------------------------------------------
    def choices(self) -> tuple[Choice, ...]:
        if not (self._parts or self._tools or self._finish_reason):
            return ()
        texts: dict[str, list[str]] = {_TEXT: [], _REASONING: [], _REFUSAL: []}
        for part in self._parts.values():
            if part.pieces:
                texts[part.kind].append("".join(part.pieces))
        return (
            Choice(
                index=0,
                content="".join(texts[_TEXT]) or None,
                # summary parts are separate paragraphs, each opening with its own bold title
                reasoning_content="\n\n".join(texts[_REASONING]) or None,
                refusal="".join(texts[_REFUSAL]) or None,
                tool_calls=tuple(t.freeze() for t in self._tools),
                finish_reason=self._finish_reason,
            ),
        )

    # -- non-streamed responses -----------------------------------------------------------------------
    def feed_completion(self, obj: dict[str, Any]) -> None:
        """A whole `response` object (a non-streamed `POST /v1/responses`, or `GET /v1/responses/{id}`)."""
        if obj.get("error"):
            self._set_error(error_text(obj))
        self._take_model(obj)
        usage = parse_usage(obj.get("usage"))
        if usage is not None:
            self.usage = usage
        self._take_output(obj.get("output"))
        finish = _finish_reason(obj, bool(self._tools))
        if finish is not None:
            self._finish_reason = finish
            self.saw_finish = True
