"""The Anthropic interpreter on every real Messages recording, against the anthropic SDK's own reading.

The reference is the real `anthropic` client streaming from an in-process mock transport that replays the
recording: `client.messages.stream(...)`, whose `MessageStream` builds the final message with
`anthropic.lib.streaming._messages.accumulate_event`. The SDK no longer has a Text Completions client, so the
legacy `/v1/complete` stream is checked against values read from the file.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtap.anthropic_api import AnthropicInterpreter, normalized_finish_reason
from streamtap.chat import Interpretation
from streamtap.records import Choice, EventKind, ToolCall, Usage
from streamtap.sse import ItemKind, SSEDecoder, SSEItem

try:  # recent anthropic releases ship their own fork of httpx, and refuse an httpx.Client
    import httpx2 as sdk_httpx
except ImportError:  # pragma: no cover - older anthropic releases
    import httpx as sdk_httpx  # type: ignore[no-redef]

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
MESSAGES_FILES = sorted(
    [*CORPUS.glob("anthropic_messages_*.sse"), CORPUS / "anthropic_vertex_claude37_padded_json.sse"]
)
LEGACY = CORPUS / "anthropic_legacy_complete_crlf_padded_json.sse"
FILES = [*MESSAGES_FILES, LEGACY]
EVERY_OFFSET_UP_TO = 10_000  # bytes; larger files are split at random offsets
RANDOM_OFFSETS = 300


def run(*reads: bytes) -> tuple[AnthropicInterpreter, list[Interpretation]]:
    decoder = SSEDecoder()
    interp = AnthropicInterpreter()
    meanings = [interp.feed(item) for read in reads for item in decoder.feed(read)]
    meanings += [interp.feed(item) for item in decoder.flush()]
    return interp, meanings


def outcome(interp: AnthropicInterpreter, meanings: list[Interpretation]) -> tuple[object, ...]:
    return (
        interp.model,
        interp.usage,
        interp.error,
        interp.saw_done,
        interp.saw_finish,
        interp.choices(),
        tuple(meanings),
    )


def event(data: object, name: str | None = None) -> SSEItem:
    text = data if isinstance(data, str) else json.dumps(data)
    return SSEItem(ItemKind.EVENT, b"", text, name)


def feed_all(interp: AnthropicInterpreter, *objs: dict[str, Any]) -> list[Interpretation]:
    return [interp.feed(event(obj, obj.get("type"))) for obj in objs]


def only_choice(interp: AnthropicInterpreter) -> Choice:
    (choice,) = interp.choices()
    return choice


# -- the SDK's reading ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SDKView:
    model: str
    stop_reason: str | None
    input_tokens: int
    output_tokens: int
    text: str
    thinking: str
    calls: tuple[tuple[str, str, object], ...]  # (id, name, parsed input)


def sdk_read(body: bytes) -> SDKView:
    def replay(request: Any) -> Any:
        return sdk_httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http = sdk_httpx.Client(transport=sdk_httpx.MockTransport(replay))
    client = anthropic.Anthropic(
        api_key="test", base_url="http://upstream.test", http_client=http, max_retries=0
    )
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    with client.messages.stream(model="any", max_tokens=1, messages=messages) as stream:
        message = stream.get_final_message()
    usage = message.usage
    blocks = message.content
    return SDKView(
        model=message.model,
        stop_reason=message.stop_reason,
        input_tokens=usage.input_tokens
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0),
        output_tokens=usage.output_tokens,
        text="".join(b.text for b in blocks if b.type == "text"),
        thinking="\n\n".join(b.thinking for b in blocks if b.type == "thinking" and b.thinking),
        calls=tuple((b.id, b.name, b.input) for b in blocks if b.type in ("tool_use", "server_tool_use")),
    )


@pytest.mark.parametrize("path", MESSAGES_FILES, ids=lambda p: p.name)
def test_against_the_sdk(path: Path) -> None:
    body = path.read_bytes()
    sdk = sdk_read(body)
    interp, meanings = run(body)
    choice = only_choice(interp)
    assert (choice.content or "") == sdk.text
    assert (choice.reasoning_content or "") == sdk.thinking
    assert choice.refusal is None
    assert tuple((t.id, t.name, json.loads(t.arguments or "{}")) for t in choice.tool_calls) == sdk.calls
    assert [t.index for t in choice.tool_calls] == list(range(len(sdk.calls)))
    assert choice.finish_reason == sdk.stop_reason
    assert interp.model == sdk.model
    assert interp.usage == Usage(sdk.input_tokens, sdk.output_tokens, sdk.input_tokens + sdk.output_tokens)
    assert interp.saw_done and interp.saw_finish
    assert interp.error is None
    assert meanings[-1].kind is EventKind.DONE  # message_stop


# -- values read from the files ---------------------------------------------------------------------------
def test_parallel_tool_use() -> None:
    interp, _ = run((CORPUS / "anthropic_messages_parallel_tool_use_input_json_delta.sse").read_bytes())
    assert interp.choices() == (
        Choice(
            0,
            "I'll add and multiply the numbers 2 and 3 for you.",
            None,
            None,
            (
                ToolCall(0, "toolu_01UYxUYC2zRPY8wiutnF48eP", "add", '{"a": 2, "b": 3}'),
                ToolCall(1, "toolu_01VaRx1jpWCvPhi7L4kywAcd", "multiply", '{"a": 2, "b": 3}'),
            ),
            "tool_use",
        ),
    )
    # input usage from message_start, output from message_delta
    assert interp.usage == Usage(502, 137, 639)
    assert normalized_finish_reason(only_choice(interp).finish_reason) == "tool_calls"


def test_vertex_padded_json() -> None:
    interp, _ = run((CORPUS / "anthropic_vertex_claude37_padded_json.sse").read_bytes())
    assert interp.model == "claude-3-7-sonnet-20250219"
    assert interp.usage == Usage(16, 16, 32)
    assert interp.choices() == (Choice(0, "Olá! Como posso ajudar você hoje?", None, None, (), "end_turn"),)


def test_redacted_thinking_is_tokens_without_text() -> None:
    interp, meanings = run((CORPUS / "anthropic_messages_redacted_thinking_multi_ping.sse").read_bytes())
    assert only_choice(interp).reasoning_content is None
    assert only_choice(interp).content is not None
    assert interp.usage == Usage(92, 189, 281)
    token_only = [m for m in meanings if m.tokens and not m.content]
    assert len(token_only) == 2  # the two redacted_thinking blocks


def test_thinking_signature() -> None:
    interp, _ = run((CORPUS / "anthropic_messages_thinking_signature.sse").read_bytes())
    choice = only_choice(interp)
    assert choice.reasoning_content is not None
    assert choice.reasoning_content == (
        "This is a straightforward question about pedestrian safety. I should provide clear, helpful advice"
        " about how to safely cross a street. This is basic safety information that could help prevent"
        " accidents."
    )
    assert choice.content is not None and choice.content.startswith("Here are the basic steps")
    assert choice.content.endswith("when crossing streets.")
    assert interp.usage == Usage(43, 282, 325)


def test_web_search_server_tools() -> None:
    interp, _ = run((CORPUS / "anthropic_messages_web_search_server_tool.sse").read_bytes())
    choice = only_choice(interp)
    assert [(t.id, t.name, t.arguments) for t in choice.tool_calls] == [
        ("srvtoolu_01FYcUbzEaqqQh1WBRj1QX3h", "web_search", '{"query": "San Francisco weather today"}'),
        (
            "srvtoolu_01FDqc7ruGpVRoNuD5G6jkUx",
            "web_search",
            '{"query": "San Francisco weather September 16 2025"}',
        ),
    ]
    assert choice.finish_reason == "end_turn"
    assert interp.usage == Usage(22397, 637, 23034)


def test_legacy_complete() -> None:
    body = LEGACY.read_bytes()
    assert b"\r\n" in body
    interp, meanings = run(body)
    assert interp.model == "claude-2.1"
    assert interp.usage is None
    assert interp.choices() == (Choice(0, " Light scatters blue.", None, None, (), "stop_sequence"),)
    assert interp.saw_done and interp.saw_finish
    assert [(m.kind, m.tokens, m.content) for m in meanings] == [
        *[(EventKind.DATA, True, True)] * 2,
        (EventKind.DATA, False, False),  # ping
        *[(EventKind.DATA, True, True)] * 4,
        (EventKind.DONE, False, False),  # completion "" with stop_reason
    ]


# -- tokens and content flags, per event, from the event's own type ---------------------------------------
def expected_flags(item: SSEItem) -> tuple[bool, bool]:
    if item.kind is not ItemKind.EVENT:
        return False, False
    obj = json.loads(item.data)
    kind = obj["type"]
    if kind == "completion":
        return (True, True) if obj["completion"] else (False, False)
    if kind == "content_block_start":
        return (True, False) if obj["content_block"]["type"] == "redacted_thinking" else (False, False)
    if kind != "content_block_delta":
        return False, False  # message_start, ping, content_block_stop, message_delta, message_stop
    delta = obj["delta"]
    # empty fragments carry nothing: this recording has an empty thinking_delta
    if delta["type"] == "text_delta":
        return bool(delta["text"]), bool(delta["text"])
    if delta["type"] == "thinking_delta":
        return bool(delta["thinking"]), False
    if delta["type"] == "input_json_delta":
        return bool(delta["partial_json"]), False
    assert delta["type"] in ("signature_delta", "citations_delta")
    return False, False


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_tokens_and_content_flags(path: Path) -> None:
    body = path.read_bytes()
    decoder = SSEDecoder()
    items = decoder.feed(body) + decoder.flush()
    interp = AnthropicInterpreter()
    for item in items:
        meaning = interp.feed(item)
        assert (meaning.tokens, meaning.content) == expected_flags(item), item.data[:200]


def test_ping_and_signature_are_not_tokens() -> None:
    interp = AnthropicInterpreter()
    meanings = feed_all(
        interp,
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hm."}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQ="},
        },
    )
    assert [(m.kind, m.tokens, m.content) for m in meanings] == [
        (EventKind.DATA, False, False),
        (EventKind.DATA, False, False),
        (EventKind.DATA, True, False),
        (EventKind.DATA, False, False),
    ]


# -- chunk boundaries -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_any_split_into_two_reads_gives_the_same_result(path: Path) -> None:
    body = path.read_bytes()
    whole = outcome(*run(body))
    if len(body) <= EVERY_OFFSET_UP_TO:
        offsets: list[int] = list(range(1, len(body)))
    else:
        offsets = random.Random(path.name).sample(range(1, len(body)), RANDOM_OFFSETS)
    for offset in offsets:
        assert outcome(*run(body[:offset], body[offset:])) == whole, offset


# -- synthetic streams: what the corpus does not show ------------------------------------------------------
class TestErrors:
    def test_error_event_midstream(self) -> None:
        interp = AnthropicInterpreter()
        meanings = feed_all(
            interp,
            {"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 5}}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
        assert meanings[-1].kind is EventKind.ERROR
        assert interp.error == "overloaded_error: Overloaded"
        assert not interp.saw_done and not interp.saw_finish
        assert only_choice(interp).content == "Hi"

    def test_error_named_only_by_the_event_field(self) -> None:
        interp = AnthropicInterpreter()
        assert interp.feed(event({"error": {"message": "boom"}}, "error")).kind is EventKind.ERROR
        assert interp.error == "boom"

    def test_error_event_that_is_not_json(self) -> None:
        interp = AnthropicInterpreter()
        assert interp.feed(event("Internal server error", "error")).kind is EventKind.ERROR
        assert interp.error == "Internal server error"

    def test_first_error_wins(self) -> None:
        interp = AnthropicInterpreter()
        interp.feed(event({"type": "error", "error": {"message": "first"}}))
        interp.feed(event({"type": "error", "error": {"message": "second"}}))
        assert interp.error == "first"

    @pytest.mark.parametrize("data", ["not json", "[1]", "7", "null", ""])
    def test_malformed(self, data: str) -> None:
        assert AnthropicInterpreter().feed(event(data)).kind is EventKind.MALFORMED

    def test_comment_and_incomplete_items(self) -> None:
        interp = AnthropicInterpreter()
        assert interp.feed(SSEItem(ItemKind.COMMENT, b": x\n", "x")).kind is EventKind.COMMENT
        assert interp.feed(SSEItem(ItemKind.INCOMPLETE, b"data: {", "data: {")).kind is EventKind.MALFORMED


class TestUsage:
    def test_message_delta_overwrites_and_keeps_what_it_omits(self) -> None:
        interp = AnthropicInterpreter()
        start_usage = {"input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 1}
        feed_all(
            interp,
            {"type": "message_start", "message": {"model": "c", "usage": start_usage}},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}},
        )
        # cached tokens are input tokens too (OpenAI's prompt_tokens counts them)
        assert interp.usage == Usage(110, 42, 152)

    def test_cache_creation_counts_as_input(self) -> None:
        interp = AnthropicInterpreter()
        usage = {"input_tokens": 3, "cache_creation_input_tokens": 7, "cache_read_input_tokens": None}
        feed_all(interp, {"type": "message_start", "message": {"usage": {**usage, "output_tokens": 2}}})
        assert interp.usage == Usage(10, 2, 12)

    def test_no_usage(self) -> None:
        interp = AnthropicInterpreter()
        feed_all(interp, {"type": "message_start", "message": {"model": "c"}})
        assert interp.usage is None


class TestBlocks:
    def test_tool_without_arguments(self) -> None:
        interp = AnthropicInterpreter()
        meanings = feed_all(
            interp,
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t", "name": "now", "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
            {"type": "message_stop"},
        )
        assert not any(m.tokens for m in meanings)
        assert interp.choices() == (Choice(0, None, None, None, (ToolCall(0, "t", "now", ""),), "tool_use"),)

    def test_deltas_without_a_block_start(self) -> None:
        interp = AnthropicInterpreter()
        feed_all(
            interp,
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Hm"},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{}"},
            },
            {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Ok"}},
        )
        assert interp.choices() == (Choice(0, "Ok", "Hm", None, (ToolCall(0, None, None, "{}"),), None),)

    def test_thinking_blocks_are_paragraphs_text_blocks_run_on(self) -> None:
        interp = AnthropicInterpreter()

        def block(i: int, kind: str, text: str) -> list[dict[str, Any]]:
            field = "thinking" if kind == "thinking" else "text"
            return [
                {"type": "content_block_start", "index": i, "content_block": {"type": kind, field: ""}},
                {"type": "content_block_delta", "index": i, "delta": {"type": f"{field}_delta", field: text}},
            ]

        feed_all(
            interp,
            *block(0, "thinking", "A"),
            *block(1, "text", "x"),
            *block(2, "thinking", "B"),
            *block(3, "text", "y"),
        )
        assert (only_choice(interp).reasoning_content, only_choice(interp).content) == ("A\n\nB", "xy")

    def test_data_only_lines_use_the_json_type(self) -> None:
        interp = AnthropicInterpreter()
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
        assert interp.feed(event(delta)).content
        assert interp.feed(event({"type": "message_stop"})).kind is EventKind.DONE


@pytest.mark.parametrize(
    ("reason", "normalized"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),
        (None, None),
    ],
)
def test_normalized_finish_reason(reason: str | None, normalized: str | None) -> None:
    assert normalized_finish_reason(reason) == normalized


class TestNonStreamed:
    def test_message(self) -> None:
        interp = AnthropicInterpreter()
        interp.feed_completion(
            {
                "type": "message",
                "model": "claude-sonnet-4",
                "content": [
                    {"type": "thinking", "thinking": "Let me see.", "signature": "Eq=="},
                    {"type": "text", "text": "Calling."},
                    {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 1}},
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 12, "output_tokens": 30},
            }
        )
        assert interp.model == "claude-sonnet-4"
        assert interp.usage == Usage(12, 30, 42)
        assert interp.saw_finish and not interp.saw_done
        assert interp.choices() == (
            Choice(
                0, "Calling.", "Let me see.", None, (ToolCall(0, "toolu_1", "add", '{"a": 1}'),), "tool_use"
            ),
        )

    def test_legacy_completion(self) -> None:
        interp = AnthropicInterpreter()
        interp.feed_completion(
            {"type": "completion", "completion": " Hi.", "stop_reason": "max_tokens", "model": "claude-2.1"}
        )
        assert interp.choices() == (Choice(0, " Hi.", None, None, (), "max_tokens"),)

    def test_error_body(self) -> None:
        interp = AnthropicInterpreter()
        interp.feed_completion(
            {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
        )
        assert interp.error == "invalid_request_error: bad"
        assert interp.choices() == ()


# -- random input never raises ----------------------------------------------------------------------------
TYPES = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
    "completion",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "type", "index", "delta", "content_block", "message", "usage", "model", "stop_reason", "text",
        "thinking", "partial_json", "input", "id", "name", "error", "completion", "content", "data",
        "input_tokens", "output_tokens", "cache_read_input_tokens",
    ]
)  # fmt: skip
objects = st.recursive(
    st.dictionaries(field_names, json_values, max_size=5),
    lambda inner: st.dictionaries(field_names, inner | json_values, max_size=5),
    max_leaves=6,
)
event_objects = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.sampled_from(TYPES) | st.text(max_size=12) | json_values,
    objects,
)


def _mutate(obj: Any, rnd: random.Random, value: Any) -> Any:
    """Replace one randomly chosen node of a decoded event with `value`."""
    if isinstance(obj, dict) and obj and rnd.random() < 0.7:
        key = rnd.choice(list(obj))
        return {**obj, key: _mutate(obj[key], rnd, value)}
    if isinstance(obj, list) and obj and rnd.random() < 0.7:
        i = rnd.randrange(len(obj))
        return [*obj[:i], _mutate(obj[i], rnd, value), *obj[i + 1 :]]
    return value


REAL_EVENTS = [
    json.loads(item.data)
    for path in FILES
    for item in SSEDecoder().feed(path.read_bytes())
    if item.kind is ItemKind.EVENT and item.data.startswith("{")
]


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    objs=st.lists(event_objects | json_values, max_size=12),
    names=st.lists(st.none() | st.sampled_from(TYPES), min_size=12, max_size=12),
)
def test_random_json_never_raises(objs: list[Any], names: list[str | None]) -> None:
    interp = AnthropicInterpreter()
    for obj, name in zip(objs, names, strict=False):
        interp.feed(event(obj, name))
        if isinstance(obj, dict):
            AnthropicInterpreter().feed_completion(obj)
    interp.choices()


@settings(max_examples=400, deadline=None, database=None)
@given(seed=st.integers(0, 2**32), value=json_values)
def test_mutated_real_events_never_raise(seed: int, value: Any) -> None:
    rnd = random.Random(seed)
    interp = AnthropicInterpreter()
    for obj in rnd.sample(REAL_EVENTS, 20):
        mutated = _mutate(obj, rnd, value)
        interp.feed(event(mutated))
        if isinstance(mutated, dict) and isinstance(mutated.get("message"), dict):
            AnthropicInterpreter().feed_completion(mutated["message"])
    interp.choices()
