"""The Responses API interpreter on every real `/responses` recording, against the openai SDK's own reading.

The reference is the real `openai` client streaming from an in-process mock transport that replays the
recording: `client.responses.stream(...)`, whose `ResponseStreamState` accumulates the deltas (the `snapshot`
of each text and arguments delta event) and hands over the terminal event's `response`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtap.chat import Interpretation
from streamtap.records import Choice, EventKind, ToolCall, Usage
from streamtap.responses_api import ResponsesInterpreter
from streamtap.sse import ItemKind, SSEDecoder, SSEItem

try:  # recent openai releases run on their own fork of httpx
    import httpx2 as sdk_httpx
except ImportError:  # pragma: no cover - older openai releases
    import httpx as sdk_httpx  # type: ignore[no-redef]

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
FILES = sorted(
    [
        *CORPUS.glob("openai_responses_*.sse"),
        CORPUS / "azure_openai_responses_api_content_filters.sse",
        CORPUS / "deepseek_responses_api_reasoning_text.sse",
        CORPUS / "openrouter_responses_api_no_event_lines.sse",
    ]
)
EVERY_OFFSET_UP_TO = 10_000  # bytes; larger files are split at random offsets
RANDOM_OFFSETS = 300


def run(*reads: bytes) -> tuple[ResponsesInterpreter, list[Interpretation]]:
    decoder = SSEDecoder()
    interp = ResponsesInterpreter()
    meanings = [interp.feed(item) for read in reads for item in decoder.feed(read)]
    meanings += [interp.feed(item) for item in decoder.flush()]
    return interp, meanings


def outcome(interp: ResponsesInterpreter, meanings: list[Interpretation]) -> tuple[object, ...]:
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


def feed_all(interp: ResponsesInterpreter, *objs: dict[str, Any]) -> list[Interpretation]:
    return [interp.feed(event(obj, obj.get("type"))) for obj in objs]


def only_choice(interp: ResponsesInterpreter) -> Choice:
    (choice,) = interp.choices()
    return choice


# -- the SDK's reading ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SDKView:
    model: str | None
    status: str | None
    incomplete_reason: str | None
    usage: tuple[int | None, int | None, int | None, int | None]
    text: str  # from the terminal event's response
    refusal: str
    reasoning: str
    calls: tuple[tuple[str, str, str], ...]  # (call_id, name, arguments)
    streamed_text: str  # what the SDK accumulated from the deltas
    streamed_arguments: tuple[str, ...]


def sdk_read(body: bytes) -> SDKView:
    def replay(request: sdk_httpx.Request) -> sdk_httpx.Response:
        return sdk_httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http = sdk_httpx.Client(transport=sdk_httpx.MockTransport(replay))
    client = openai.OpenAI(
        api_key="test", base_url="http://upstream.test/v1", http_client=http, max_retries=0
    )
    with client.responses.stream(model="any", input="hi") as stream:
        events = list(stream)
    final = next(
        e.response for e in reversed(events) if e.type in ("response.completed", "response.incomplete")
    )
    text_snapshots: dict[tuple[int, int], str] = {}
    argument_snapshots: dict[int, str] = {}
    for e in events:
        if e.type == "response.output_text.delta":
            text_snapshots[(e.output_index, e.content_index)] = e.snapshot
        elif e.type == "response.function_call_arguments.delta":
            argument_snapshots[e.output_index] = e.snapshot
    refusal: list[str] = []
    reasoning: list[str] = []
    calls: list[tuple[str, str, str]] = []
    for item in final.output:
        if item.type == "message":
            refusal += [part.refusal for part in item.content if part.type == "refusal"]
        elif item.type == "reasoning":
            reasoning += [part.text for part in item.summary]
            reasoning += [part.text for part in item.content or ()]
        elif item.type == "function_call":
            calls.append((item.call_id, item.name, item.arguments))
    usage = final.usage
    details = final.incomplete_details
    return SDKView(
        model=final.model,
        status=final.status,
        incomplete_reason=details.reason if details else None,
        usage=(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.total_tokens,
                usage.output_tokens_details.reasoning_tokens,
            )
            if usage
            else (None, None, None, None)
        ),
        text=final.output_text,
        refusal="".join(refusal),
        reasoning="\n\n".join(reasoning),
        calls=tuple(calls),
        streamed_text="".join(text for _, text in sorted(text_snapshots.items())),
        streamed_arguments=tuple(args for _, args in sorted(argument_snapshots.items())),
    )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
class TestAgainstTheSDK:
    def test_choice(self, path: Path) -> None:
        body = path.read_bytes()
        sdk = sdk_read(body)
        interp, _ = run(body)
        choice = only_choice(interp)
        assert choice.index == 0
        assert (choice.content or "") == sdk.text == sdk.streamed_text
        assert (choice.refusal or "") == sdk.refusal
        assert (choice.reasoning_content or "") == sdk.reasoning
        assert tuple((t.id, t.name, t.arguments) for t in choice.tool_calls) == sdk.calls
        assert tuple(t.arguments for t in choice.tool_calls) == sdk.streamed_arguments
        assert [t.index for t in choice.tool_calls] == list(range(len(sdk.calls)))

    def test_finish_usage_model(self, path: Path) -> None:
        sdk = sdk_read(path.read_bytes())
        interp, meanings = run(path.read_bytes())
        if sdk.status == "incomplete":
            assert sdk.incomplete_reason == "max_output_tokens"
            expected = "length"
        else:
            assert sdk.status == "completed"
            expected = "tool_calls" if sdk.calls else "stop"
        assert only_choice(interp).finish_reason == expected
        assert interp.saw_finish and interp.saw_done
        assert interp.error is None
        assert interp.model == sdk.model
        assert interp.usage == Usage(*sdk.usage)
        assert EventKind.DONE in {m.kind for m in meanings}


# -- values read from the files ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "model", "usage"),
    [
        ("openai_responses_text.sse", "gpt-4o-2024-08-06", Usage(278, 9, 287, 0)),
        ("openai_responses_function_call.sse", "gpt-4o-2024-08-06", Usage(255, 16, 271, 0)),
        ("openai_responses_incomplete_max_output_tokens.sse", "gpt-4o-2024-08-06", Usage(0, 0, 0, 0)),
        ("openai_responses_reasoning_summary.sse", "o3-mini-2025-01-31", Usage(13, 1680, 1693, 1408)),
        ("openai_responses_refusal_delta.sse", "gpt-4o-2024-08-06", Usage(54, 11, 65, 0)),
        ("openai_responses_output_text_logprobs.sse", "gpt-4o-mini-2024-07-18", Usage(25, 10, 35, 0)),
        ("azure_openai_responses_api_content_filters.sse", "gpt-5-mini", Usage(19, 208, 227, 192)),
        ("deepseek_responses_api_reasoning_text.sse", "deepseek-v4-flash", Usage(90, 15, 105, 7)),
        ("openrouter_responses_api_no_event_lines.sse", "openai/gpt-oss-20b", Usage(78, 37, 115, 22)),
    ],
)
def test_usage_and_model_as_recorded(name: str, model: str, usage: Usage) -> None:
    interp, _ = run((CORPUS / name).read_bytes())
    assert interp.model == model
    assert interp.usage == usage


def test_openai_text() -> None:
    interp, _ = run((CORPUS / "openai_responses_text.sse").read_bytes())
    assert interp.choices() == (Choice(0, "The capital of France is Paris.", None, None, (), "stop"),)


def test_openai_function_call() -> None:
    interp, _ = run((CORPUS / "openai_responses_function_call.sse").read_bytes())
    call = ToolCall(0, "call_kL0PCQV7M2WMoVX8V8OtYSAL", "get_capital", '{"country":"France"}')
    assert interp.choices() == (Choice(0, None, None, None, (call,), "tool_calls"),)


def test_refusal_is_tokens_not_content() -> None:
    interp, meanings = run((CORPUS / "openai_responses_refusal_delta.sse").read_bytes())
    assert only_choice(interp).refusal == "I'm sorry, I can't assist with that."
    assert only_choice(interp).content is None
    assert sum(m.tokens for m in meanings) == 9
    assert not any(m.content for m in meanings)


def test_reasoning_summary_parts_are_paragraphs() -> None:
    interp, _ = run((CORPUS / "openai_responses_reasoning_summary.sse").read_bytes())
    reasoning = only_choice(interp).reasoning_content
    assert reasoning is not None
    titles = [p for p in reasoning.split("\n\n") if p.startswith("**")]
    assert titles == [
        "**Providing street crossing instructions**",
        "**Explaining street crossing safety**",
        "**Sharing street crossing safety tips**",
        "**Providing safe crossing advice**",
    ]


def test_openrouter_without_event_lines() -> None:
    body = (CORPUS / "openrouter_responses_api_no_event_lines.sse").read_bytes()
    assert b"\nevent:" not in body and not body.startswith(b"event:")
    interp, meanings = run(body)
    choice = only_choice(interp)
    assert choice.content == "4"
    assert (
        choice.reasoning_content
        == 'The user asks: "What is 2+2?" They expect a straightforward answer: 4. Just answer 4.'
    )
    kinds = [m.kind for m in meanings]
    assert kinds[0] is EventKind.COMMENT
    assert kinds[-2:] == [EventKind.DONE, EventKind.DONE]  # response.completed, then data: [DONE]


def test_incomplete_is_length() -> None:
    interp, meanings = run((CORPUS / "openai_responses_incomplete_max_output_tokens.sse").read_bytes())
    choice = only_choice(interp)
    assert choice.finish_reason == "length"
    assert choice.content == "In the bustling city of Detroit, a sleek, metallic blue sedan rolled off the"
    assert meanings[-1].kind is EventKind.DONE


# -- tokens and content flags, per event, from the event's own type ---------------------------------------
def expected_flags(item: SSEItem) -> tuple[bool, bool]:
    if item.kind is not ItemKind.EVENT or item.data.startswith("[DONE]"):
        return False, False
    obj = json.loads(item.data)
    kind = obj["type"]
    if kind == "response.output_text.delta":
        return True, True
    if kind in (
        "response.refusal.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.function_call_arguments.delta",
    ):
        return True, False
    return False, False


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_tokens_and_content_flags(path: Path) -> None:
    body = path.read_bytes()
    decoder = SSEDecoder()
    items = decoder.feed(body) + decoder.flush()
    interp = ResponsesInterpreter()
    for item in items:
        meaning = interp.feed(item)
        assert (meaning.tokens, meaning.content) == expected_flags(item), item.data[:200]


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
    def test_error_event(self) -> None:
        interp = ResponsesInterpreter()
        err = {
            "type": "error",
            "code": "server_error",
            "message": "boom",
            "param": None,
            "sequence_number": 3,
        }
        assert interp.feed(event(err, "error")).kind is EventKind.ERROR
        assert interp.error == "server_error: boom"

    def test_error_event_without_code(self) -> None:
        interp = ResponsesInterpreter()
        interp.feed(event({"type": "error", "code": None, "message": "boom"}))
        assert interp.error == "boom"

    def test_nested_error_object(self) -> None:
        interp = ResponsesInterpreter()
        interp.feed(event({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}))
        assert interp.error == "invalid_request_error: bad"

    def test_error_event_that_is_not_json(self) -> None:
        interp = ResponsesInterpreter()
        assert interp.feed(event("upstream went away", "error")).kind is EventKind.ERROR
        assert interp.error == "upstream went away"

    def test_first_error_wins(self) -> None:
        interp = ResponsesInterpreter()
        interp.feed(event({"type": "error", "message": "first"}))
        interp.feed(event({"type": "error", "message": "second"}))
        assert interp.error == "first"

    def test_response_failed(self) -> None:
        interp = ResponsesInterpreter()
        failed = {
            "type": "response.failed",
            "response": {
                "model": "gpt-4o",
                "status": "failed",
                "error": {"code": "server_error", "message": "The model failed."},
                "usage": None,
            },
        }
        meanings = feed_all(
            interp, {"type": "response.output_text.delta", "item_id": "m", "delta": "Hi"}, failed
        )
        assert meanings[-1].kind is EventKind.ERROR
        assert interp.error == "server_error: The model failed."
        assert interp.saw_done and not interp.saw_finish
        assert interp.model == "gpt-4o"
        assert only_choice(interp) == Choice(0, "Hi", None, None, (), None)


class TestTerminalEvents:
    @pytest.mark.parametrize(
        ("reason", "finish"),
        [
            ("max_output_tokens", "length"),
            ("content_filter", "content_filter"),
            ("something_new", "something_new"),
        ],
    )
    def test_incomplete_reasons(self, reason: str, finish: str) -> None:
        interp = ResponsesInterpreter()
        incomplete = {"status": "incomplete", "incomplete_details": {"reason": reason}}
        feed_all(interp, {"type": "response.incomplete", "response": incomplete})
        assert only_choice(interp).finish_reason == finish
        assert interp.saw_finish and interp.saw_done

    @pytest.mark.parametrize(("kind", "finish"), [("completed", "stop"), ("incomplete", "incomplete")])
    def test_terminal_event_without_status(self, kind: str, finish: str) -> None:
        interp = ResponsesInterpreter()
        feed_all(interp, {"type": f"response.{kind}", "response": {"model": "m"}})
        assert only_choice(interp).finish_reason == finish
        assert interp.saw_finish and interp.saw_done

    def test_done_marker(self) -> None:
        interp = ResponsesInterpreter()
        assert interp.feed(event("[DONE]")).kind is EventKind.DONE
        assert interp.saw_done and not interp.saw_finish
        assert interp.choices() == ()

    def test_no_terminal_event_means_no_finish(self) -> None:
        interp = ResponsesInterpreter()
        feed_all(interp, {"type": "response.output_text.delta", "item_id": "m", "delta": "Hi"})
        assert not interp.saw_done and not interp.saw_finish
        assert only_choice(interp).finish_reason is None


class TestEventType:
    def test_sse_event_field_stands_in_for_a_missing_type(self) -> None:
        interp = ResponsesInterpreter()
        meaning = interp.feed(event({"item_id": "m", "delta": "Hi"}, "response.output_text.delta"))
        assert meaning.content
        assert only_choice(interp).content == "Hi"

    def test_json_type_wins_over_the_event_field(self) -> None:
        interp = ResponsesInterpreter()
        meaning = interp.feed(
            event({"type": "response.refusal.delta", "delta": "No"}, "response.output_text.delta")
        )
        assert meaning.tokens and not meaning.content
        assert only_choice(interp).refusal == "No"

    @pytest.mark.parametrize("data", ["not json", "[1, 2]", "42", "null", ""])
    def test_malformed(self, data: str) -> None:
        assert ResponsesInterpreter().feed(event(data)).kind is EventKind.MALFORMED

    def test_comment_and_incomplete_items(self) -> None:
        interp = ResponsesInterpreter()
        assert interp.feed(SSEItem(ItemKind.COMMENT, b": hi\n", "hi")).kind is EventKind.COMMENT
        assert interp.feed(SSEItem(ItemKind.INCOMPLETE, b"data: {", "data: {")).kind is EventKind.MALFORMED

    def test_unknown_deltas_are_tokens(self) -> None:
        interp = ResponsesInterpreter()
        meaning = interp.feed(event({"type": "response.audio.transcript.delta", "delta": "hello"}))
        assert meaning.tokens and not meaning.content
        assert interp.feed(event({"type": "response.audio.transcript.delta", "delta": ""})).tokens is False


class TestDoneEvents:
    def test_done_fills_a_part_whose_deltas_never_came(self) -> None:
        interp = ResponsesInterpreter()
        (meaning,) = feed_all(
            interp, {"type": "response.output_text.done", "item_id": "m", "content_index": 0, "text": "Whole"}
        )
        assert meaning.content
        assert only_choice(interp).content == "Whole"

    def test_done_does_not_repeat_the_deltas(self) -> None:
        interp = ResponsesInterpreter()
        meanings = feed_all(
            interp,
            {"type": "response.output_text.delta", "item_id": "m", "content_index": 0, "delta": "Who"},
            {"type": "response.output_text.delta", "item_id": "m", "content_index": 0, "delta": "le"},
            {"type": "response.output_text.done", "item_id": "m", "content_index": 0, "text": "Whole"},
        )
        assert [m.tokens for m in meanings] == [True, True, False]
        assert only_choice(interp).content == "Whole"

    def test_completed_output_when_nothing_was_streamed(self) -> None:
        interp = ResponsesInterpreter()
        response = {
            "model": "m",
            "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "All at once"}]}],
        }
        (meaning,) = feed_all(interp, {"type": "response.completed", "response": response})
        assert meaning.kind is EventKind.DONE and meaning.content
        assert only_choice(interp).content == "All at once"

    def test_completed_output_is_not_added_to_streamed_text(self) -> None:
        interp = ResponsesInterpreter()
        response = {
            "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}],
        }
        meanings = feed_all(
            interp,
            {"type": "response.output_text.delta", "item_id": "m", "delta": "Hi"},
            {"type": "response.completed", "response": response},
        )
        assert not meanings[-1].tokens
        assert only_choice(interp).content == "Hi"


class TestFunctionCalls:
    def test_parallel_calls_interleaved_by_item_id(self) -> None:
        interp = ResponsesInterpreter()

        def added(i: int, item_id: str, name: str) -> dict[str, Any]:
            item = {
                "type": "function_call",
                "id": item_id,
                "call_id": f"call_{i}",
                "name": name,
                "arguments": "",
            }
            return {"type": "response.output_item.added", "output_index": i, "item": item}

        def delta(item_id: str, i: int, text: str) -> dict[str, Any]:
            return {
                "type": "response.function_call_arguments.delta",
                "item_id": item_id,
                "output_index": i,
                "delta": text,
            }

        meanings = feed_all(
            interp,
            added(0, "fc_a", "add"),
            added(1, "fc_b", "mul"),
            delta("fc_a", 0, '{"a":'),
            delta("fc_b", 1, '{"b":'),
            delta("fc_a", 0, "1}"),
            delta("fc_b", 1, "2}"),
            {"type": "response.completed", "response": {"status": "completed"}},
        )
        assert [m.tokens for m in meanings] == [False, False, True, True, True, True, False]
        assert only_choice(interp).tool_calls == (
            ToolCall(0, "call_0", "add", '{"a":1}'),
            ToolCall(1, "call_1", "mul", '{"b":2}'),
        )
        assert only_choice(interp).finish_reason == "tool_calls"

    def test_arguments_before_the_item_was_announced(self) -> None:
        interp = ResponsesInterpreter()
        feed_all(
            interp,
            {"type": "response.function_call_arguments.delta", "item_id": "fc_x", "delta": "{}"},
            {
                "type": "response.output_item.done",
                "item": {
                    "type": "function_call",
                    "id": "fc_x",
                    "call_id": "call_x",
                    "name": "f",
                    "arguments": "{}",
                },
            },
        )
        assert only_choice(interp).tool_calls == (ToolCall(0, "call_x", "f", "{}"),)

    def test_arguments_only_in_the_done_event(self) -> None:
        interp = ResponsesInterpreter()
        item = {"type": "function_call", "id": "fc_x", "call_id": "call_x", "name": "f", "arguments": ""}
        meanings = feed_all(
            interp,
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {
                "type": "response.function_call_arguments.done",
                "item_id": "fc_x",
                "output_index": 0,
                "arguments": "{}",
            },
        )
        assert meanings[-1].tokens
        assert only_choice(interp).tool_calls == (ToolCall(0, "call_x", "f", "{}"),)

    def test_custom_tool_call(self) -> None:
        interp = ResponsesInterpreter()
        item = {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_1", "name": "grep", "input": ""}
        feed_all(
            interp,
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {
                "type": "response.custom_tool_call_input.delta",
                "item_id": "ctc_1",
                "output_index": 0,
                "delta": "foo",
            },
            {
                "type": "response.custom_tool_call_input.done",
                "item_id": "ctc_1",
                "output_index": 0,
                "input": "foo",
            },
        )
        assert only_choice(interp).tool_calls == (ToolCall(0, "call_1", "grep", "foo"),)

    def test_server_side_tools_are_not_tool_calls(self) -> None:
        interp = ResponsesInterpreter()
        feed_all(
            interp,
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {"type": "web_search_call", "id": "ws"},
            },
            {"type": "response.output_text.delta", "item_id": "m", "output_index": 1, "delta": "Found"},
            {"type": "response.completed", "response": {"status": "completed"}},
        )
        assert only_choice(interp) == Choice(0, "Found", None, None, (), "stop")


class TestNonStreamed:
    def test_whole_response(self) -> None:
        interp = ResponsesInterpreter()
        interp.feed_completion(
            {
                "object": "response",
                "model": "o4-mini",
                "status": "completed",
                "output": [
                    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Think."}]},
                    {"type": "message", "content": [{"type": "output_text", "text": "Answer."}]},
                    {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"x":1}'},
                ],
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 20,
                    "total_tokens": 30,
                    "output_tokens_details": {"reasoning_tokens": 5},
                },
            }
        )
        assert interp.model == "o4-mini"
        assert interp.usage == Usage(10, 20, 30, 5)
        assert interp.saw_finish and not interp.saw_done
        assert interp.choices() == (
            Choice(0, "Answer.", "Think.", None, (ToolCall(0, "call_1", "f", '{"x":1}'),), "tool_calls"),
        )

    def test_refusal_and_incomplete(self) -> None:
        interp = ResponsesInterpreter()
        interp.feed_completion(
            {
                "status": "incomplete",
                "incomplete_details": {"reason": "content_filter"},
                "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "No."}]}],
            }
        )
        assert interp.choices() == (Choice(0, None, None, "No.", (), "content_filter"),)

    def test_error_body(self) -> None:
        interp = ResponsesInterpreter()
        interp.feed_completion({"error": {"code": "invalid_api_key", "message": "Incorrect API key"}})
        assert interp.error == "invalid_api_key: Incorrect API key"
        assert interp.choices() == ()


# -- random input never raises ----------------------------------------------------------------------------
TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.refusal.delta",
    "response.refusal.done",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.done",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.custom_tool_call_input.delta",
    "response.custom_tool_call_input.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "type", "delta", "text", "item", "item_id", "output_index", "content_index", "summary_index",
        "response", "status", "output", "usage", "error", "model", "incomplete_details", "arguments",
        "call_id", "name", "id", "input", "refusal", "message", "code", "content", "summary",
    ]
)  # fmt: skip
event_objects = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(TYPES) | st.text(max_size=12) | json_values,
    st.dictionaries(field_names, json_values, max_size=6),
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
    names=st.lists(st.none() | st.sampled_from([*TYPES, "message"]), min_size=12, max_size=12),
)
def test_random_json_never_raises(objs: list[Any], names: list[str | None]) -> None:
    interp = ResponsesInterpreter()
    for obj, name in zip(objs, names, strict=False):
        interp.feed(event(obj, name))
        if isinstance(obj, dict):
            ResponsesInterpreter().feed_completion(obj)
    interp.choices()


@settings(max_examples=400, deadline=None, database=None)
@given(seed=st.integers(0, 2**32), value=json_values)
def test_mutated_real_events_never_raise(seed: int, value: Any) -> None:
    rnd = random.Random(seed)
    interp = ResponsesInterpreter()
    for obj in rnd.sample(REAL_EVENTS, 20):
        mutated = _mutate(obj, rnd, value)
        interp.feed(event(mutated))
        if isinstance(mutated, dict) and isinstance(mutated.get("response"), dict):
            ResponsesInterpreter().feed_completion(mutated["response"])
    interp.choices()
