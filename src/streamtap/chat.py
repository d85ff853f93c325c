"""OpenAI chat-completion semantics: SSE events in, choices, usage, finish reasons and errors out.

Pure and incremental. It is written against what providers really send (see tests/fixtures/corpus and
`../shared/sse-corpus/SOURCES.md`), not against the schema alone:

- chunks with empty `choices` (Azure's prompt-filter chunk, the final usage chunk), choices with no `delta`
  key at all, `content: null`, role-only and empty deltas;
- reasoning in `reasoning_content` (DeepSeek, Z.ai, xAI, llama.cpp) or `reasoning` (Groq, OpenRouter,
  Cerebras), and Mistral's content arrays with `thinking` parts;
- `tool_calls` assembled by `index` (later fragments carry no id); no `index` at all (Mistral); the whole call
  in one chunk (xAI); explicit nulls (Writer); first index 1 (an Anthropic gateway);
- `n > 1` choices by `index`, `finish_reason` per choice;
- `usage` wherever it appears: the final `choices: []` chunk, the finish chunk (DeepSeek), every chunk
  cumulatively (Perplexity, vLLM on Azure), inside `x_groq`; the last one seen wins;
- errors: `event: error`, or a top-level `error` object in a data line (OpenRouter, Groq);
- legacy `/v1/completions` chunks (`choices[].text`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .records import Choice, Usage
from .semantics import CONTENT as _CONTENT
from .semantics import DATA as _DATA
from .semantics import DONE as _DONE
from .semantics import ERROR as _ERROR
from .semantics import MALFORMED as _MALFORMED
from .semantics import TOKENS as _TOKENS
from .semantics import EventInterpreter, Interpretation, loads
from .semantics import ToolCallBuilder as _ToolCallAcc


@dataclass(slots=True)
class _ChoiceAcc:
    index: int
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCallAcc] = field(default_factory=dict)
    last_tool_index: int | None = None
    finish_reason: str | None = None

    def freeze(self) -> Choice:
        return Choice(
            index=self.index,
            content="".join(self.content) if self.content else None,
            reasoning_content="".join(self.reasoning) if self.reasoning else None,
            refusal="".join(self.refusal) if self.refusal else None,
            tool_calls=tuple(t.freeze() for _, t in sorted(self.tool_calls.items())),
            finish_reason=self.finish_reason,
        )


# What a JSON string literal cannot hold unescaped: the quote, the backslash and the control characters;
# and what `semantics.loads` refuses to encode, a lone surrogate (only a direct caller can pass one: the SSE
# decoder replaces what is not UTF-8).
_NOT_LITERAL = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')
_OBFUSCATION_AT = ',"obfuscation":"'
# A delta's text fields, and the interpretation of a chunk adding to one of them alone
_TEXT_FIELDS = {"content": _CONTENT, "reasoning_content": _TOKENS, "reasoning": _TOKENS, "refusal": _TOKENS}
LEARN_BUDGET = 8  # chunk shapes learned per stream before the interpreter stops trying


def _literal(text: str) -> bool:
    """Whether `text` stands for itself between two quotes of JSON: the string it spells is `text`."""
    if text.isprintable():  # nearly always (ASCII text); rules out the control characters at once
        return '"' not in text and "\\" not in text
    return _NOT_LITERAL.search(text) is None


def _unescaped(chars: str) -> str | None:
    """The text that `chars`, a JSON string's characters between its quotes, spell; None unless they are
    exactly one string that parsing accepts as such (`semantics.loads` tries orjson first: where orjson
    refuses, as it does a lone surrogate's escape, the caller parses the whole chunk instead)."""
    try:
        return str(orjson.loads('"' + chars + '"'))
    except orjson.JSONDecodeError:
        return None


@dataclass(slots=True)
class _Shape:
    """The text of one choice's plain text chunk around its text, as this stream sends it.

    A chunk whose text is `prefix`, a JSON string's characters, then `suffix` parses to the same object as
    the chunk it was learned from, but for that string: JSON is read left to right, so the same text before
    the string leaves the parser in the same place, and the same text after it ends it the same way. Such a
    chunk means what that one meant (`meaning`, and its text added to `texts`: a choice's content, reasoning
    or refusal) without being parsed. `suffix` may leave out OpenAI's last field, `"obfuscation"`, a random
    string nothing here reads (`obfuscated`).
    """

    prefix: str
    suffix: str
    obfuscated: bool
    texts: list[str]
    meaning: Interpretation


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_usage(obj: object) -> Usage | None:
    """Normalize an OpenAI-style (or Anthropic-style) usage object; None when it carries no counts."""
    if not isinstance(obj, dict):
        return None
    prompt = _int(obj.get("prompt_tokens"))
    if prompt is None:
        prompt = _int(obj.get("input_tokens"))
    completion = _int(obj.get("completion_tokens"))
    if completion is None:
        completion = _int(obj.get("output_tokens"))
    total = _int(obj.get("total_tokens"))
    if total is None and prompt is not None and completion is not None:
        total = prompt + completion
    reasoning = None
    for key in ("completion_tokens_details", "output_tokens_details"):
        details = obj.get(key)
        if isinstance(details, dict):
            reasoning = _int(details.get("reasoning_tokens"))
            if reasoning is not None:
                break
    if prompt is None and completion is None and total is None:
        return None
    return Usage(prompt, completion, total, reasoning)


def _usage_of(chunk: dict[str, Any]) -> Usage | None:
    """The usage a chunk reports: its `usage`, else Groq's `x_groq.usage`."""
    usage = parse_usage(chunk.get("usage"))
    if usage is None:
        x_groq = chunk.get("x_groq")
        if isinstance(x_groq, dict):
            usage = parse_usage(x_groq.get("usage"))
    return usage


def error_text(obj: object) -> str:
    """A one-line description of an error object, as providers shape them."""
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            message = err.get("message")
            code = err.get("code") or err.get("type")
            if isinstance(message, str) and message:
                return f"{code}: {message}" if code else message
            return json.dumps(err, ensure_ascii=False)
        if isinstance(err, str):
            return err
    return str(obj)


class ChatInterpreter(EventInterpreter):
    """Feeds on the SSE items of one chat-completion stream; results are readable at any time."""

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceAcc] = {}
        self.model: str | None = None
        self.usage: Usage | None = None
        self.error: str | None = None
        self.saw_done = False
        self.saw_finish = False
        self._shape: _Shape | None = None
        self._learn_budget = LEARN_BUDGET

    # -- streaming -------------------------------------------------------------------------------------
    def feed_data(self, data: str, event: str | None = None) -> Interpretation:
        """An event: its data, and its `event:` field (None when it has none)."""
        shape = self._shape
        if shape is not None and event is None and data.startswith(shape.prefix):
            # A chunk shaped like one already parsed (see `_Shape`): its text is one JSON string's, up to the
            # first quote not escaped, if the rest is the same as that chunk's.
            start = len(shape.prefix)
            end = data.find('"', start)
            value: str | None = data[start:end] if end > start else None
            if value is not None and not _literal(value):
                if "\\" in value:
                    # escapes ("\n", "\""): the string ends where the suffix starts, if its characters up to
                    # there are one whole string, which only decoding them can tell
                    end = data.find(shape.suffix, start)
                    value = _unescaped(data[start:end]) if end > start else None
                else:
                    value = None
            if value and data.startswith(shape.suffix, end):  # (an empty text may mean something else)
                if shape.obfuscated:
                    tail = data[end + len(shape.suffix) :]
                    same = tail.endswith('"}') and _literal(tail[:-2])
                else:
                    same = len(data) == end + len(shape.suffix)
                if same:
                    shape.texts.append(value)
                    return shape.meaning
        if data.startswith("[DONE]"):  # what the openai SDK checks; some servers name the event (`done`)
            self.saw_done = True
            return _DONE
        try:
            obj = loads(data)
        except (ValueError, RecursionError):
            if event == "error":
                self._set_error(data or "error event")
                return _ERROR
            return _MALFORMED
        if event == "error" or (isinstance(obj, dict) and obj.get("error")):
            self._set_error(error_text(obj))
            # an error chunk may still carry usage (OpenRouter)
            if isinstance(obj, dict):
                self._take_usage(obj)
            return _ERROR
        if not isinstance(obj, dict):
            return _MALFORMED
        meaning = self.feed_chunk(obj)
        if (meaning is _CONTENT or meaning is _TOKENS) and self._learn_budget and event is None:
            self._learn(data, obj, meaning)
        return meaning

    def feed_chunk(self, obj: dict[str, Any]) -> Interpretation:
        if self.model is None:
            model = obj.get("model")
            if isinstance(model, str) and model:
                self.model = model
        if "usage" in obj or "x_groq" in obj:
            self._take_usage(obj)
        choices = obj.get("choices")
        if type(choices) is list and len(choices) == 1:
            # Nearly every chunk: one choice already seen, whose delta is `{"content": "..."}` alone and which
            # does not finish. Exactly what `_feed_choice` and `_feed_delta` below make of it.
            choice = choices[0]
            if type(choice) is dict:
                delta = choice.get("delta")
                index = choice.get("index")
                acc = self._choices.get(index) if type(index) is int else None  # as `_feed_choice` finds it
                if (
                    acc is not None
                    and type(delta) is dict
                    and len(delta) == 1
                    and not choice.get("finish_reason")
                ):
                    value = delta.get("content")
                    if type(value) is str:
                        if not value:
                            return _DATA
                        acc.content.append(value)
                        return _CONTENT
        tokens = content = False
        if isinstance(choices, list):
            for raw_choice in choices:
                if isinstance(raw_choice, dict):
                    t, c = self._feed_choice(raw_choice)
                    tokens |= t
                    content |= c
        if content:
            return _CONTENT
        return _TOKENS if tokens else _DATA

    def _learn(self, data: str, obj: dict[str, Any], meaning: Interpretation) -> None:
        """Keep the shape of `data` (see `_Shape`) if it is one choice's plain text chunk, just read.

        Only a chunk whose whole meaning is "this text, for that choice" qualifies: no finish, no usage, no
        tool call, one text field of the delta set and no other (a delta's other fields mean nothing here),
        the choice already seen. Its text must spell that field's string as is (no escapes), hold the
        field's key once, and no backslash elsewhere, so that the one key is the delta's and the texts
        around it cannot mean anything else in a later chunk.
        """
        choices = obj.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return
        choice = choices[0]
        if type(choice) is not dict or choice.get("finish_reason"):
            return
        index = choice.get("index")
        acc = self._choices.get(index) if type(index) is int else None
        delta = choice.get("delta")
        if acc is None or type(delta) is not dict or delta.get("tool_calls") or delta.get("audio"):
            return
        if _usage_of(obj) is not None or isinstance(delta.get("content"), list):
            return
        texts = [(k, v) for k in _TEXT_FIELDS if isinstance(v := delta.get(k), str) and v]
        if len(texts) != 1 or _TEXT_FIELDS[texts[0][0]] is not meaning:
            return
        field, value = texts[0]
        self._learn_budget -= 1  # counts the chunks that qualify (the text search costs as much as a parse)
        at = data.find(f'"{field}":"')
        if at < 0 or data.count(f'"{field}"') != 1:
            return
        start = at + len(field) + 4
        end = data.find('"', start)
        if end < 0 or data[start:end] != value:
            return
        prefix, suffix = data[:start], data[end:]
        if "\\" in prefix or "\\" in suffix:
            return
        obfuscated = False
        at = suffix.rfind(_OBFUSCATION_AT)
        if at >= 0 and suffix.endswith('"}') and '"' not in suffix[at + len(_OBFUSCATION_AT) : -2]:
            # the last field, top level (its closing brace ends the text): kept out of the shape
            suffix = suffix[: at + len(_OBFUSCATION_AT)]
            obfuscated = True
        if field == "content":
            target = acc.content
        elif field == "refusal":
            target = acc.refusal
        else:
            target = acc.reasoning
        self._shape = _Shape(prefix, suffix, obfuscated, target, _TEXT_FIELDS[field])

    def _take_usage(self, obj: dict[str, Any]) -> None:
        usage = _usage_of(obj)
        if usage is not None:
            self.usage = usage

    def _set_error(self, text: str) -> None:
        if self.error is None:
            self.error = text

    def _feed_choice(self, choice: dict[str, Any]) -> tuple[bool, bool]:
        index = choice.get("index")
        acc = self._choices.get(index) if type(index) is int else None
        if acc is None:
            index = _int(index)
            acc = self._choice(index if index is not None else 0)
        tokens = content = False
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = choice.get("message") if "delta" not in choice else None
            if not isinstance(delta, dict):
                delta = None
        if delta is None:
            text = choice.get("text")  # legacy /v1/completions
            if isinstance(text, str) and text:
                acc.content.append(text)
                tokens = content = True
        else:
            tokens, content = self._feed_delta(acc, delta)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            acc.finish_reason = finish
            self.saw_finish = True
        return tokens, content

    def _feed_delta(self, acc: _ChoiceAcc, delta: dict[str, Any]) -> tuple[bool, bool]:
        value = delta.get("content")
        if len(delta) == 1 and type(value) is str:  # nearly every chunk: `{"content": "..."}` alone
            if value:
                acc.content.append(value)
                return True, True
            return False, False
        tokens = content = False
        if isinstance(value, str):
            if value:
                acc.content.append(value)
                tokens = content = True
        elif isinstance(value, list):  # Mistral: [{type: text|thinking, ...}]
            for part in value:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "thinking":
                    thinking = part.get("thinking")
                    for piece in thinking if isinstance(thinking, list) else ():
                        text = piece.get("text") if isinstance(piece, dict) else None
                        if isinstance(text, str) and text:
                            acc.reasoning.append(text)
                            tokens = True
                else:
                    text = part.get("text")
                    if isinstance(text, str) and text:
                        acc.content.append(text)
                        tokens = content = True
        reasoning = delta.get("reasoning_content")
        if not (isinstance(reasoning, str) and reasoning):
            reasoning = delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            acc.reasoning.append(reasoning)
            tokens = True
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            acc.refusal.append(refusal)
            tokens = True
        audio = delta.get("audio")
        if isinstance(audio, dict) and (audio.get("transcript") or audio.get("data")):
            tokens = True
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for raw_call in tool_calls:
                if isinstance(raw_call, dict) and self._feed_tool_call(acc, raw_call):
                    tokens = True
        return tokens, content

    def _feed_tool_call(self, acc: _ChoiceAcc, call: dict[str, Any]) -> bool:
        index = _int(call.get("index"))
        call_id = call.get("id")
        if index is None:
            # No index (Mistral): a new id starts a new call, anything else continues the last one.
            if acc.last_tool_index is None or (
                isinstance(call_id, str) and call_id and acc.tool_calls[acc.last_tool_index].id != call_id
            ):
                index = len(acc.tool_calls)
            else:
                index = acc.last_tool_index
        tool = acc.tool_calls.get(index)
        if tool is None:
            tool = acc.tool_calls[index] = _ToolCallAcc(index)
        acc.last_tool_index = index
        if isinstance(call_id, str) and call_id and tool.id is None:
            tool.id = call_id
        function = call.get("function")
        if not isinstance(function, dict):
            return False
        name = function.get("name")
        if isinstance(name, str) and name:
            if tool.name is None:
                tool.name = name
            elif not tool.arguments and name != tool.name:
                tool.name += name  # a name streamed in fragments
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            tool.arguments.append(arguments)
            return True
        if isinstance(arguments, dict):  # a few servers send an object instead of a JSON string
            tool.arguments.append(json.dumps(arguments, ensure_ascii=False))
            return True
        return False

    def _choice(self, index: int) -> _ChoiceAcc:
        acc = self._choices.get(index)
        if acc is None:
            acc = self._choices[index] = _ChoiceAcc(index)
        return acc

    # -- results ---------------------------------------------------------------------------------------
    def choices(self) -> tuple[Choice, ...]:
        return tuple(acc.freeze() for _, acc in sorted(self._choices.items()))

    # -- non-streamed completions ---------------------------------------------------------------------
    def feed_completion(self, obj: dict[str, Any]) -> None:
        """A whole `chat.completion` (or legacy `text_completion`) response body."""
        if obj.get("error"):
            self._set_error(error_text(obj))
        model = obj.get("model")
        if isinstance(model, str) and model:
            self.model = model
        self._take_usage(obj)
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return
        for raw_choice in choices:
            if not isinstance(raw_choice, dict):
                continue
            index = _int(raw_choice.get("index"))
            acc = self._choice(index if index is not None else 0)
            message = raw_choice.get("message")
            if isinstance(message, dict):
                self._feed_delta(acc, message)
            elif isinstance(text := raw_choice.get("text"), str) and text:
                acc.content.append(text)
            finish = raw_choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                acc.finish_reason = finish
                self.saw_finish = True
