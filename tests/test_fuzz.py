"""Property tests: whatever bytes or JSON arrive, the tap's stages never raise and never lose a byte."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtap.chat import ChatInterpreter, Interpretation
from streamtap.db import packs
from streamtap.records import Choice, EventKind, Outcome, StreamStart, Usage
from streamtap.sse import ItemKind, SSEDecoder, SSEItem
from streamtap.tap import StreamTap

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
SSE_FILES = sorted(CORPUS.glob("*.sse"))


def fuzz(max_examples: int) -> Any:
    return settings(
        max_examples=max_examples,
        derandomize=True,  # the same examples on every run, so CI is stable
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def decode(reads: list[bytes]) -> list[SSEItem]:
    decoder = SSEDecoder()
    items: list[SSEItem] = []
    for read in reads:
        items += decoder.feed(read)
    return items + decoder.flush()


def cut(body: bytes, points: list[int]) -> list[bytes]:
    points = sorted(p % (len(body) + 1) for p in points)
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


# -- SSE: random bytes --------

SSE_PIECES = st.sampled_from(
    [
        *(b"data:", b"data: ", b"event:", b"event: error", b"id:", b"id: 1", b"retry:", b"retry: 10"),
        *(b":", b": c", b"\r", b"\n", b"\r\n", b"\n\n", b"\r\r", b" ", b"x", b"[DONE]", b"{}", b"\x00"),
        *(b"\xef\xbb\xbf", b"\xef", b"\xbb", b"\xc3", b"\xa9", b"\xf0\x9f\x98", b"\x80", b"\xff"),
    ]
)
SSE_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(SSE_PIECES, st.binary(max_size=3)), max_size=60).map(b"".join),
)


@fuzz(1500)
@given(body=SSE_BYTES, points=st.lists(st.integers(min_value=0), max_size=8))
def test_sse_random_bytes(body: bytes, points: list[int]) -> None:
    whole = decode([body])
    assert b"".join(item.raw for item in whole) == body
    assert decode(cut(body, points)) == whole
    # only the end of the stream leaves something other than events and comments, and at most one item
    assert all(item.kind in (ItemKind.EVENT, ItemKind.COMMENT) for item in whole[:-1])
    for item in whole:
        if item.kind is ItemKind.EVENT:
            assert "\r" not in item.data  # CR always ends a line
            assert all("\r" not in s and "\n" not in s for s in (item.event or "", item.id or ""))
            assert item.event != ""


# -- SSE: the corpus, cut anywhere --------


@functools.cache
def corpus_items(name: str) -> tuple[bytes, list[SSEItem]]:
    body = (CORPUS / name).read_bytes()
    return body, decode([body])


@fuzz(300)
@given(
    name=st.sampled_from([p.name for p in SSE_FILES]),
    points=st.lists(st.integers(min_value=0), min_size=1, max_size=30),
)
def test_corpus_random_splits(name: str, points: list[int]) -> None:
    body, whole = corpus_items(name)
    assert decode(cut(body, points)) == whole


# -- chat: random JSON --------

VOCABULARY = [
    *("choices", "delta", "message", "content", "text", "index", "finish_reason", "role", "refusal"),
    *("reasoning", "reasoning_content", "tool_calls", "function", "name", "arguments", "id", "type"),
    *("thinking", "audio", "transcript", "data", "usage", "x_groq", "error", "model", "object"),
    *("prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens"),
    *("completion_tokens_details", "output_tokens_details", "reasoning_tokens", "code", "stop"),
]
WORDS = st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=6))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    WORDS,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(WORDS, children, max_size=5)),
    max_leaves=25,
)
# inside chunk-shaped objects: small values keep each example cheap, the shape does the work
ANY = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(WORDS, children, max_size=3)),
    max_leaves=6,
)


def check_interpreter(chat: ChatInterpreter) -> None:
    choices = chat.choices()
    assert all(isinstance(c, Choice) for c in choices)
    assert [c.index for c in choices] == sorted({c.index for c in choices})
    for c in choices:
        for text in (c.content, c.reasoning_content, c.refusal, c.finish_reason):
            assert text is None or (isinstance(text, str) and text)
        assert [t.index for t in c.tool_calls] == sorted({t.index for t in c.tool_calls})
        assert all(isinstance(t.arguments, str) for t in c.tool_calls)
    assert chat.usage is None or isinstance(chat.usage, Usage)
    assert chat.error is None or isinstance(chat.error, str)
    assert chat.model is None or isinstance(chat.model, str)


def check_meaning(meaning: Interpretation) -> None:
    assert meaning.kind in EventKind
    assert meaning.tokens or not meaning.content


def events_body(values: list[object], error_events: list[bool]) -> bytes:
    body = b""
    for value, is_error in zip(values, error_events + [False] * len(values), strict=False):
        body += b"event: error\n" if is_error else b""
        body += b"data: " + json.dumps(value).encode() + b"\n\n"
    return body


def tap_record(body: bytes, points: list[int]) -> None:
    tap = StreamTap(START, 0.0)
    tap.response_headers(0.01, 200, "text/event-stream", None)
    for i, read in enumerate(cut(body, points)):
        tap.feed(read, 0.02 + i / 1000)
    record = tap.finish(1.0)
    assert b"".join(e.raw for e in record.events) == body
    # what the recorder stores from the tap's rows is what it would store from the records they read as
    assert packs.pack("s", record.events) == packs.pack("s", tuple(record.events))
    assert record.outcome in Outcome
    assert (record.ttfc_ms is None) or (record.ttft_ms is not None and record.ttft_ms <= record.ttfc_ms)


START = StreamStart("s", datetime(2026, 1, 1, tzinfo=UTC), "POST", "https://h/", "h", "/", None, None, "t")


@fuzz(1000)
@given(
    values=st.lists(JSON, min_size=1, max_size=6),
    error_events=st.lists(st.booleans(), max_size=6),
    points=st.lists(st.integers(min_value=0), max_size=5),
)
def test_random_json_data_lines(values: list[object], error_events: list[bool], points: list[int]) -> None:
    body = events_body(values, error_events)
    chat = ChatInterpreter()
    for item in decode([body]):
        check_meaning(chat.feed(item))
    check_interpreter(chat)
    tap_record(body, points)


# -- chat: chunk-shaped JSON with random field types --------


@st.composite
def _mostly(draw: st.DrawFn, strategy: st.SearchStrategy[Any]) -> Any:
    return draw(ANY) if draw(st.integers(0, 9)) == 0 else draw(strategy)


def mostly(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The expected shape nine times out of ten, any JSON value otherwise: deep fields still get reached."""
    return _mostly(strategy)


TEXT = st.one_of(st.text(max_size=6), st.text(max_size=6), st.none(), ANY)
INDEX = st.one_of(
    st.integers(min_value=-2, max_value=4),
    st.integers(min_value=0, max_value=2),
    st.none(),
    st.booleans(),
    st.floats(),
    st.text(max_size=2),
    st.just(10**30),
    ANY,
)
FUNCTION = st.fixed_dictionaries(
    {},
    optional={
        "name": TEXT,
        "arguments": st.one_of(TEXT, st.dictionaries(st.text(max_size=3), ANY, max_size=3)),
    },
)
TOOL_CALL = st.fixed_dictionaries(
    {"function": mostly(FUNCTION)}, optional={"index": INDEX, "id": TEXT, "type": TEXT}
)
# only lists, strings, objects and null: a number here is the known crash (test_thinking_that_is_not_a_list)
THINKING = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.lists(mostly(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})), max_size=3),
    st.dictionaries(st.text(max_size=3), ANY, max_size=2),
)
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": THINKING}),
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries({}, optional={"type": ANY, "text": TEXT, "thinking": THINKING}),
)
DELTA = st.fixed_dictionaries(
    {},
    optional={
        "role": TEXT,
        "content": st.one_of(
            st.text(max_size=6), st.none(), st.lists(mostly(PART), min_size=1, max_size=3), ANY
        ),
        "reasoning_content": TEXT,
        "reasoning": TEXT,
        "refusal": TEXT,
        "tool_calls": mostly(st.lists(mostly(TOOL_CALL), max_size=4)),
        "audio": mostly(st.fixed_dictionaries({}, optional={"transcript": TEXT, "data": TEXT})),
    },
)
COUNT = st.one_of(st.integers(min_value=-1, max_value=10**6), st.integers(0, 100), ANY)
USAGE = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            **dict.fromkeys(["prompt_tokens", "completion_tokens", "total_tokens"], COUNT),
            **dict.fromkeys(["input_tokens", "output_tokens"], COUNT),
            "completion_tokens_details": mostly(st.fixed_dictionaries({"reasoning_tokens": COUNT})),
        },
    )
)
CHOICE = st.one_of(
    st.fixed_dictionaries(
        {"delta": mostly(DELTA)}, optional={"index": INDEX, "finish_reason": TEXT, "text": TEXT}
    ),
    st.fixed_dictionaries(
        {"index": INDEX, "delta": mostly(DELTA)}, optional={"finish_reason": TEXT, "logprobs": ANY}
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "index": INDEX,
            "delta": mostly(DELTA),
            "message": mostly(DELTA),
            "text": TEXT,
            "finish_reason": TEXT,
        },
    ),
)
CHUNK = st.fixed_dictionaries(
    {"choices": mostly(st.lists(mostly(CHOICE), max_size=3))},
    optional={
        "id": TEXT,
        "object": mostly(st.sampled_from(["chat.completion.chunk", "text_completion"])),
        "model": TEXT,
        "usage": USAGE,
        "x_groq": mostly(st.fixed_dictionaries({"usage": USAGE})),
        "error": st.one_of(st.none(), st.just(False), st.just({}), ANY),
    },
)


@fuzz(1000)
@given(
    chunks=st.lists(CHUNK, min_size=1, max_size=5),
    error_events=st.lists(st.booleans(), max_size=2),
    points=st.lists(st.integers(min_value=0), max_size=4),
)
def test_random_chunks(chunks: list[dict[str, Any]], error_events: list[bool], points: list[int]) -> None:
    body = events_body([*chunks, "[DONE]"], error_events)
    chat = ChatInterpreter()
    for item in decode([body]):
        check_meaning(chat.feed(item))
    check_interpreter(chat)
    tap_record(body, points)


@fuzz(500)
@given(obj=st.one_of(CHUNK, st.dictionaries(WORDS, JSON)), status=st.sampled_from([200, 201, 400, 500]))
def test_random_non_streamed_bodies(obj: dict[str, Any], status: int) -> None:
    chat = ChatInterpreter()
    chat.feed_completion(obj)
    check_interpreter(chat)
    tap = StreamTap(START, 0.0)
    tap.response_headers(0.01, status, "application/json", None)
    body = json.dumps(obj).encode()
    tap.whole_body(body, 0.5)
    record = tap.finish(0.6)
    assert record.response_body == body.decode()
    assert (record.outcome is Outcome.HTTP_ERROR) is (status >= 400)


# -- crashes these properties found (fixed) --------


@pytest.mark.parametrize("thinking", [1, 2.5, True])
def test_thinking_that_is_not_a_list(thinking: object) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": [{"type": "thinking", "thinking": thinking}]}}]}
    chat = ChatInterpreter()
    chat.feed_chunk(chunk)
    assert chat.choices()[0].reasoning_content is None


@pytest.mark.parametrize("data", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_deeply_nested_data_line(data: str) -> None:
    # valid ANY, but deeper than the interpreter's stack: an unreadable chunk, not a crash of the tap
    meaning = ChatInterpreter().feed(SSEItem(ItemKind.EVENT, b"data: ...\n\n", data))
    assert meaning.kind is EventKind.MALFORMED


def test_non_streamed_empty_text() -> None:
    # streamed, an empty text leaves content None; a whole completion must give the same
    chat = ChatInterpreter()
    chat.feed_completion({"object": "text_completion", "choices": [{"index": 0, "text": ""}]})
    assert chat.choices()[0].content is None
