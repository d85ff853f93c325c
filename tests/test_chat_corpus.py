"""The chat interpreter on every real chat-completion recording, against what the openai SDK reconstructs.

The reference is the SDK itself: `openai._streaming.SSEDecoder` for framing, the loop of
`Stream.__stream__` (stop at `[DONE]`, raise on an `error` object), and
`openai.lib.streaming._deltas.accumulate_delta` per choice, the function `ChatCompletionStreamState` uses.
Where the SDK is known to reconstruct a stream differently, `fixtures/corpus_expected.json` (`sdk_differs`)
holds the values read from the recording, with the reason.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openai._streaming import SSEDecoder as SDKDecoder
from openai.lib.streaming._deltas import accumulate_delta

from streamtap.chat import ChatInterpreter
from streamtap.records import Choice, Usage
from streamtap.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "corpus"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "corpus_expected.json").read_text())
SMALL = 1_500  # every offset up to this size; random offsets above


def _is_chat(path: Path) -> bool:
    body = path.read_bytes()
    return b"chat.completion.chunk" in body or b"text_completion" in body


SSE_FILES = [p for p in sorted(CORPUS.glob("*.sse")) if _is_chat(p)]
PAYLOAD_FILES = sorted(CORPUS.glob("payload_only/*.jsonl"))
# two responses (different chatcmpl ids) in one capture: nothing to compare with, see test_cerebras_...
CEREBRAS = "payload_only/cerebras_glm47_reasoning_tools_time_info.chunks.jsonl"


def name_of(path: Path) -> str:
    return str(path.relative_to(CORPUS))


def body_of(path: Path) -> bytes:
    if path.suffix == ".jsonl":
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        return b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"
    return path.read_bytes()


FILES = [*SSE_FILES, *(p for p in PAYLOAD_FILES if name_of(p) != CEREBRAS)]


@dataclass(frozen=True)
class View:
    """What both sides are compared on, per choice."""

    index: int
    content: str | None
    reasoning: str | None
    refusal: str | None
    tool_calls: tuple[tuple[str | None, str | None, str | None], ...]
    finish_reason: str | None


@dataclass(frozen=True)
class Result:
    choices: tuple[View, ...]
    error: str | None
    saw_done: bool
    model: str | None


def view(choice: Choice) -> View:
    return View(
        choice.index,
        choice.content,
        choice.reasoning_content,
        choice.refusal,
        tuple((t.id, t.name, t.arguments) for t in choice.tool_calls),
        choice.finish_reason,
    )


# -- the reference: the openai SDK --------


def sdk_result(body: bytes, *, accumulate: bool = True) -> Result:
    messages: dict[int, dict[object, object]] = {}
    finish: dict[int, str | None] = {}
    error = None
    saw_done = False
    model = None
    for sse in SDKDecoder().iter_bytes(iter([body])):
        if sse.data.startswith("[DONE]"):
            saw_done = True
            break
        chunk = sse.json()
        if isinstance(chunk, dict) and chunk.get("error"):
            # Stream.__stream__ raises APIError(message=error["message"]) here
            error = chunk["error"]["message"]
            break
        if model is None and chunk.get("model"):
            model = chunk["model"]
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            message = messages.setdefault(index, {})
            finish.setdefault(index, None)
            if accumulate and isinstance(choice.get("delta"), dict):
                messages[index] = accumulate_delta(message, choice["delta"])
            if choice.get("finish_reason"):
                finish[index] = choice["finish_reason"]
    views = []
    for index, m in sorted(messages.items()):
        calls = m.get("tool_calls") or []
        assert isinstance(calls, list)
        views.append(
            View(
                index,
                _text(m.get("content")),
                _text(m.get("reasoning_content")) or _text(m.get("reasoning")),
                _text(m.get("refusal")),
                tuple(
                    (c.get("id"), c["function"].get("name"), c["function"].get("arguments")) for c in calls
                ),
                finish[index],
            )
        )
    return Result(tuple(views), error, saw_done, model)


def _text(value: object) -> str | None:
    assert value is None or isinstance(value, str), value
    return value or None


def expected_result(path: Path) -> Result:
    override = EXPECTED["sdk_differs"].get(name_of(path))
    if override is None:
        return sdk_result(body_of(path))
    sdk = sdk_result(body_of(path), accumulate=False)  # framing, errors and model still come from the SDK
    views = tuple(
        View(
            c["index"],
            c["content"],
            c["reasoning"],
            c["refusal"],
            tuple(tuple(t) for t in c["tool_calls"]),
            c["finish_reason"],
        )
        for c in override["choices"]
    )
    return Result(views, sdk.error, sdk.saw_done, sdk.model)


# -- streamtap --------


def interpret(*reads: bytes) -> ChatInterpreter:
    decoder = SSEDecoder()
    chat = ChatInterpreter()
    for read in reads:
        for item in decoder.feed(read):
            chat.feed(item)
    for item in decoder.flush():
        chat.feed(item)
    return chat


def result_of(chat: ChatInterpreter) -> Result:
    return Result(tuple(view(c) for c in chat.choices()), chat.error, chat.saw_done, chat.model)


def full_state(chat: ChatInterpreter) -> tuple[object, ...]:
    return (chat.choices(), chat.usage, chat.error, chat.model, chat.saw_done, chat.saw_finish)


# -- tests --------


def test_file_lists() -> None:
    assert len(SSE_FILES) == 46 and len(PAYLOAD_FILES) == 4
    assert set(EXPECTED["usage"]) == {name_of(p) for p in [*SSE_FILES, *PAYLOAD_FILES]}


@pytest.mark.parametrize("path", FILES, ids=name_of)
def test_same_as_openai_sdk(path: Path) -> None:
    expected = expected_result(path)
    got = result_of(interpret(body_of(path)))
    assert got.choices == expected.choices
    assert got.model == expected.model
    if expected.error is None:
        assert got.error is None
        assert got.saw_done == expected.saw_done
    else:  # the SDK raises there and reads no further
        assert got.error is not None and expected.error in got.error


@pytest.mark.parametrize("name", sorted(EXPECTED["sdk_differs"]))
def test_sdk_still_differs(name: str) -> None:
    """If the SDK starts agreeing with the recording, the explicit expectation can go."""
    path = CORPUS / name
    try:
        sdk = sdk_result(body_of(path))
    except (RuntimeError, TypeError):  # accumulate_delta gives up on this stream
        return
    assert sdk.choices != expected_result(path).choices


@pytest.mark.parametrize("path", [*SSE_FILES, *PAYLOAD_FILES], ids=name_of)
def test_usage(path: Path) -> None:
    usage = interpret(body_of(path)).usage
    expected = EXPECTED["usage"][name_of(path)]
    if expected is None:
        assert usage is None
    else:
        assert usage is not None
        assert [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens] == expected


@pytest.mark.parametrize("path", FILES, ids=name_of)
def test_splitting_does_not_change_the_result(path: Path) -> None:
    body = body_of(path)
    whole = full_state(interpret(body))
    if len(body) <= SMALL:
        cuts = range(len(body) + 1)
    else:
        # test_sse cuts every offset of every recording and finds the same SSE items; the interpreter sees
        # nothing else. Here the whole pipeline is re-checked on samples.
        cuts = random.Random(path.name).sample(range(len(body) + 1), 25)
    for cut in cuts:
        assert full_state(interpret(body[:cut], body[cut:])) == whole, cut
    rng = random.Random(f"multi-{path.name}")
    for _ in range(3):
        points = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(2, 40))))
        reads = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
        assert full_state(interpret(*reads)) == whole, points


class TestParticularStreams:
    def run(self, name: str) -> ChatInterpreter:
        return interpret(body_of(CORPUS / name))

    def test_groq_event_error_midstream(self) -> None:
        chat = self.run("groq_event_error_midstream_tool_use_failed.sse")
        assert chat.error is not None
        assert chat.error.startswith("tool_use_failed: Tool call validation failed")
        assert chat.choices()[0].reasoning_content  # the ~90 reasoning chunks before it are kept
        assert not chat.saw_done and not chat.saw_finish

    def test_openrouter_error_in_data_midstream(self) -> None:
        chat = self.run("openrouter_error_in_data_midstream.sse")
        assert chat.error == "400: Token limit reached"
        assert chat.usage == Usage(43, 10, 53, 11)  # carried by the error chunk itself
        assert chat.choices()[0].finish_reason == "length"  # seen before the error
        assert chat.saw_done

    def test_cerebras_two_responses_in_one_capture(self) -> None:
        chat = interpret(body_of(CORPUS / CEREBRAS))
        (choice,) = chat.choices()
        assert choice.reasoning_content and choice.finish_reason == "tool_calls"
        (call,) = choice.tool_calls  # both responses call index 0; the first id and name are kept
        assert (call.id, call.name) == ("bbd2b9d98", "nonUsefulTool")
        assert chat.usage == Usage(433, 122, 555, 108)  # the last response's
        assert chat.error is None and chat.saw_done

    def test_n2_choices_finish_separately(self) -> None:
        choices = self.run("openai_chat_n2_multiple_choices_interleaved.sse").choices()
        assert [c.index for c in choices] == [0, 1]
        assert all(c.content and c.finish_reason == "stop" for c in choices)
        assert choices[0].content != choices[1].content

    def test_litellm_choice_1_never_finishes(self) -> None:
        choices = self.run("litellm_proxy_n2_stream_options_echo.sse").choices()
        assert [c.finish_reason for c in choices] == ["stop", None]

    def test_writer_seven_calls_with_null_fields(self) -> None:
        (choice,) = self.run("writer_palmyra_7_parallel_tool_calls_null_fields.sse").choices()
        assert [t.index for t in choice.tool_calls] == list(range(7))
        for call in choice.tool_calls:
            assert call.id and call.name
            json.loads(call.arguments)

    def test_mistral_call_without_index(self) -> None:
        (choice,) = self.run("mistral_tool_call_no_index_single_chunk.sse").choices()
        (call,) = choice.tool_calls
        assert call.index == 0 and call.id and call.name and json.loads(call.arguments) is not None

    def test_xai_total_tokens_kept_as_sent(self) -> None:
        # total > prompt + completion because reasoning is counted apart: never recomputed
        usage = self.run("xai_grok4_parallel_tool_calls_single_chunk.sse").usage
        assert usage == Usage(432, 68, 636, 136)

    def test_legacy_completion_model_after_choices(self) -> None:
        assert self.run("openai_legacy_completions_text_completion.sse").model == "davinci-002"


@pytest.mark.parametrize("path", FILES, ids=name_of)
def test_common_chunk_shortcut_agrees_with_the_general_path(path: Path) -> None:
    """`feed_chunk` takes a shortcut for a delta that is `{"content": ...}` alone; a key no provider sends
    beside it (which means nothing) sends every chunk down the general path: both must read each alike."""
    chunks = []
    for item in SSEDecoder().feed(body_of(path)):
        try:
            obj = json.loads(item.data)
        except ValueError:
            continue
        if isinstance(obj, dict) and not obj.get("error"):
            chunks.append(obj)
    short, general = ChatInterpreter(), ChatInterpreter()
    took = 0
    for obj in chunks:
        padded = json.loads(json.dumps(obj))
        for choice in padded.get("choices") or ():
            if isinstance(choice, dict) and isinstance(choice.get("delta"), dict):
                choice["delta"]["x_padding"] = None
        took += padded != obj
        assert short.feed_chunk(obj) == general.feed_chunk(padded)
    assert full_state(short) == full_state(general)
    with_delta = any(isinstance(c, dict) and "delta" in c for obj in chunks for c in obj.get("choices") or ())
    assert took or not with_delta  # the padding did send something down the other path


def test_common_chunk_shortcut_leaves_odd_values_to_the_general_path() -> None:
    chat = ChatInterpreter()
    first = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}]}
    chat.feed_chunk(first)
    # a bool index is no index (choice 0), a truthy non-string finish_reason is no finish reason
    assert chat.feed_chunk({"choices": [{"index": True, "delta": {"content": "b"}}]}).content
    assert chat.feed_chunk({"choices": [{"index": 0, "delta": {"content": "c"}, "finish_reason": 1}]})
    assert not chat.saw_finish
    assert not chat.feed_chunk({"choices": [{"index": 0, "delta": {"content": ""}}]}).tokens
    assert chat.feed_chunk({"choices": [{"index": 7, "delta": {"content": "d"}}]}).content  # a new choice
    chat.feed_chunk({"choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}]})
    choices = chat.choices()
    assert [(c.index, c.content, c.finish_reason) for c in choices] == [(0, "abc!", "stop"), (7, "d", None)]
    assert chat.saw_finish
