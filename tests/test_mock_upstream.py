"""The simulated provider, exercised by real clients (openai SDK, httpx, raw sockets) on 127.0.0.1.

Timing assertions are deliberately loose (the machine is shared): they check that delays are honoured,
not that they are precise to the millisecond.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import streamtap
from streamtap import mock_upstream
from streamtap.errors import ConfigError
from streamtap.mock_chat import Stream, plan_chat
from streamtap.mock_controls import profile_for
from streamtap.mock_text import text_pieces
from streamtap.mock_upstream import MockUpstream

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me about streaming."}]
CHUNKS_7 = {"x-mock-chunks": "7"}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
CLOCK: Any = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"properties": {"tz": {"type": "string"}}}},
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream(profile="fast", seed=1234) as server:
        yield server


@pytest.fixture
def client(upstream: MockUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=upstream.url + "/v1", api_key="sk-test", max_retries=0, timeout=20) as c:
        yield c


@pytest.fixture
def http(upstream: MockUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, timeout=20) as c:
        yield c


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-gpt", "messages": MESSAGES, "stream": True, **extra}


def request_bytes(body: dict[str, Any], headers: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    lines = ["POST /v1/chat/completions HTTP/1.1", "host: mock", "content-type: application/json"]
    lines += [f"content-length: {len(data)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def raw_exchange(upstream: MockUpstream, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    """Everything the server sends on one connection (asked to close after the response)."""
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=20) as sock:
        sock.sendall(request_bytes(body, {**headers, "connection": "close"}))
        received = b""
        while part := sock.recv(65536):
            received += part
    return received


def dechunk(raw: bytes) -> tuple[bytes, list[bytes], bool]:
    """(head, chunk payloads, whether the terminating zero-length chunk arrived)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    chunks = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head, chunks, True
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return head, chunks, False


def completion_id(stream: openai.Stream[Any]) -> str:
    return str(stream.response.headers["x-mock-completion-id"])


# -- content ----------------------------------------------------------------------------------------
def test_stream_content_equals_the_log(client: openai.OpenAI, upstream: MockUpstream) -> None:
    stream = client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, stream=True, extra_headers={"x-mock-chunks": "15"}
    )
    chunks = list(stream)
    cid = completion_id(stream)
    assert {c.id for c in chunks} == {cid}
    assert {c.model for c in chunks} == {"mock-gpt"}
    first = chunks[0].choices[0]
    assert (first.delta.role, first.delta.content, first.finish_reason) == ("assistant", "", None)
    deltas = [c.choices[0].delta.content or "" for c in chunks[1:-1]]
    assert len(deltas) == 15 and all(deltas)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None

    entry = upstream.wait_finished(cid)
    assert entry.content == {0: "".join(deltas)}
    assert entry.stream and entry.status == 200 and entry.fault is None and not entry.client_gone
    # role chunk, 15 deltas, finish chunk, [DONE]
    assert [(index, token) for _, index, token in entry.sends] == [
        (0, False),
        *((i, True) for i in range(1, 16)),
        (16, False),
        (17, False),
    ]
    assert entry.first_token_at == entry.sends[1][0]
    assert entry.finished_at is not None
    assert entry.request_received <= entry.sends[0][0] <= entry.first_token_at <= entry.finished_at


def test_wire_format_is_byte_exact_and_one_event_per_chunk(upstream: MockUpstream) -> None:
    raw = raw_exchange(upstream, chat_body(stream_options={"include_usage": True}), {"x-mock-chunks": "5"})
    head, chunks, complete = dechunk(raw)
    assert complete
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: text/event-stream; charset=utf-8" in head
    assert b"transfer-encoding: chunked" in head.lower()
    assert all(c.endswith(b"\n\n") and c.count(b"\n\n") == 1 for c in chunks)
    assert chunks[-1] == b"data: [DONE]\n\n"
    objects = []
    for c in chunks[:-1]:
        assert c.startswith(b"data: {")
        obj = json.loads(c[6:])
        assert c[6:-2] == json.dumps(obj, separators=(",", ":")).encode()  # compact, as OpenAI sends it
        assert list(obj)[:6] == ["id", "object", "created", "model", "system_fingerprint", "choices"]
        objects.append(obj)
    assert [o["choices"][0]["delta"] for o in objects[:1]] == [{"role": "assistant", "content": ""}]
    assert objects[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert all(o["usage"] is None for o in objects[:-1])
    usage = objects[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5


def test_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="mock-gpt",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-chunks": "9"},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == 9 == sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_max_tokens_stops_with_length(client: openai.OpenAI) -> None:
    for limit in ({"max_tokens": 4}, {"max_completion_tokens": 4}):
        stream = client.chat.completions.create(
            model="mock-gpt", messages=MESSAGES, stream=True, extra_headers={"x-mock-chunks": "30"}, **limit
        )
        chunks = list(stream)
        assert sum(1 for c in chunks if c.choices[0].delta.content) == 4
        assert chunks[-1].choices[0].finish_reason == "length"


def test_n2_interleaves_choices(client: openai.OpenAI, upstream: MockUpstream) -> None:
    stream = client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, stream=True, n=2, extra_headers={"x-mock-chunks": "6"}
    )
    chunks = list(stream)
    indexes = [c.choices[0].index for c in chunks]
    assert indexes[:6] == [0, 1, 0, 1, 0, 1]  # two role chunks, then deltas one choice after the other
    texts: dict[int, str] = {0: "", 1: ""}
    for c in chunks:
        texts[c.choices[0].index] += c.choices[0].delta.content or ""
    for i in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == i]
        assert [x.delta.role for x in mine].count("assistant") == 1
        assert [x.finish_reason for x in mine].count("stop") == 1 and mine[-1].finish_reason == "stop"
    assert upstream.wait_finished(completion_id(stream)).content == texts


def test_same_seed_same_text_and_request_seed_changes_it(client: openai.OpenAI) -> None:
    def text(seed: int) -> str:
        reply = client.chat.completions.create(
            model="mock-gpt", messages=MESSAGES, seed=seed, extra_headers=CHUNKS_7
        )
        return reply.choices[0].message.content or ""

    assert text(1) == text(1)
    assert text(1) != text(2)


def test_text_pieces_are_exact_in_number() -> None:
    import random

    rng = random.Random(0)
    for n in (1, 2, 3, 17, 100):
        pieces = text_pieces(rng, n)
        assert len(pieces) == n and all(pieces)
        assert pieces[-1].endswith(".") and not pieces[0].startswith(" ")


def test_plans_are_seeded_and_profiles_follow_the_model() -> None:
    body = json.dumps(chat_body(seed=3)).encode()

    def plan() -> list[tuple[float, str]]:
        stream = plan_chat(body, {}, "default", 5, "chatcmpl-x")
        assert isinstance(stream, Stream)
        return [(s.delay, s.text) for s in stream.steps]

    assert plan() == plan()
    assert profile_for("demo", "gpt-mock-mini").ttft < profile_for("demo", "mock-x").ttft
    assert profile_for("demo", "mock-reasoner").ttft > profile_for("demo", "mock-x").ttft
    assert profile_for("instant", "mock-reasoner").ttft == 0


def test_non_streaming_completion(client: openai.OpenAI, upstream: MockUpstream) -> None:
    reply = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, extra_headers=CHUNKS_7)
    assert reply.object == "chat.completion" and reply.model == "mock-gpt"
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    entry = upstream.wait_finished(reply.id)
    assert not entry.stream and entry.content == {0: reply.choices[0].message.content}


# -- tools and reasoning ----------------------------------------------------------------------------
def test_parallel_tool_calls_assemble_to_json(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="mock-gpt",
        stream=True,
        tools=[WEATHER, CLOCK],
        messages=[{"role": "user", "content": "Use get_weather for Paris and get_time."}],
    )
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for tc in choice.delta.tool_calls or []:
            if tc.id is not None:
                assert tc.index not in calls and tc.type == "function" and tc.function is not None
                assert tc.function.arguments == ""
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.function is not None and tc.function.name is None
                calls[tc.index]["arguments"] += tc.function.arguments or ""
        assert choice.delta.content in (None, "")
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    weather = json.loads(calls[0]["arguments"])
    assert isinstance(weather["city"], str) and weather["unit"] in ("c", "f")
    assert isinstance(json.loads(calls[1]["arguments"]), dict)
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_tool_calls_on_request_only(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, tools=[WEATHER])
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].finish_reason == "stop"
    forced = client.chat.completions.create(
        model="mock-gpt", messages=MESSAGES, tools=[WEATHER], extra_headers={"x-mock-tools": "1"}
    )
    calls = forced.choices[0].message.tool_calls or []
    assert forced.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    with client.chat.completions.stream(
        model="mock-gpt",
        messages=[{"role": "user", "content": "call the weather tool"}],
        tools=[WEATHER],
        parallel_tool_calls=False,
        extra_headers={"x-mock-tools": "3"},
    ) as helper:  # the SDK's own accumulator agrees
        final = helper.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)


def test_reasoner_streams_reasoning_content_first(client: openai.OpenAI, upstream: MockUpstream) -> None:
    stream = client.chat.completions.create(
        model="mock-reasoner",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-chunks": "5"},
    )
    kinds, reasoning, content, usage = [], "", "", None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            r = getattr(choice.delta, "reasoning_content", None)
            if r:
                kinds.append("r")
                reasoning += r
            if choice.delta.content:
                kinds.append("c")
                content += choice.delta.content
    assert kinds.count("c") == 5 and kinds.count("r") >= 1
    assert kinds == sorted(kinds, reverse=True)  # every reasoning delta before the first content delta
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == kinds.count("r")
    assert usage.completion_tokens == len(kinds)
    entry = upstream.wait_finished(completion_id(stream))
    assert (entry.reasoning, entry.content) == ({0: reasoning}, {0: content})


# -- timing -----------------------------------------------------------------------------------------
def test_exact_ttft_and_gap_headers_are_honoured(client: openai.OpenAI, upstream: MockUpstream) -> None:
    stream = client.chat.completions.create(
        model="mock-gpt",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-ttft-ms": "200", "x-mock-gap-ms": "50", "x-mock-chunks": "8"},
    )
    for _ in stream:
        pass
    entry = upstream.wait_finished(completion_id(stream))
    assert entry.sends[0][0] - entry.request_received < 0.1  # the role chunk goes out with the headers
    assert entry.ttft is not None and 0.195 <= entry.ttft < 0.6
    gaps = entry.token_gaps()
    assert len(gaps) == 7 and all(0.045 <= g <= 0.15 for g in gaps), gaps


def test_concurrent_async_streams_overlap(upstream: MockUpstream) -> None:
    async def one(c: openai.AsyncOpenAI) -> str:
        stream = await c.chat.completions.create(
            model="mock-gpt",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-mock-gap-ms": "40", **CHUNKS_7},
        )
        async for _ in stream:
            pass
        return str(stream.response.headers["x-mock-completion-id"])

    async def many() -> list[str]:
        async with openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="sk-test", max_retries=0) as c:
            return await asyncio.gather(*(one(c) for _ in range(6)))

    entries = [upstream.wait_finished(cid) for cid in asyncio.run(many())]
    # all streams were in flight at the same moment: no stream waits for another one
    assert max(e.first_token_at or 0 for e in entries) < min(e.finished_at or 0 for e in entries)


def test_a_client_that_stops_reading_blocks_nobody(upstream: MockUpstream, client: openai.OpenAI) -> None:
    with socket.create_connection(("127.0.0.1", upstream.port)) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(request_bytes(chat_body(), {"x-mock-fault": "huge-event", "x-mock-fault-after": "1"}))
        head = stuck.recv(4096).split(b"\r\n")
        cid = next(line.split(b": ")[1].decode() for line in head if line.startswith(b"x-mock-completion-id"))
        reply = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, extra_headers=CHUNKS_7)
        assert reply.choices[0].message.content
        assert upstream.log[cid].finished_at is None  # still stuck writing the 10 MiB event
    entry = upstream.wait_finished(cid)
    assert entry.client_gone


# -- faults -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["header", "model"])
def test_disconnect_reaches_the_sdk(client: openai.OpenAI, upstream: MockUpstream, how: str) -> None:
    by_header = how == "header"
    stream = client.chat.completions.create(
        model="mock-gpt" if by_header else "mock-fault-disconnect",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-fault": "disconnect"} if by_header else {},
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    entry = upstream.wait_finished(completion_id(stream))
    assert entry.fault == "disconnect" and not entry.client_gone
    assert len(entry.sends) == 3 == len(received)  # the role chunk and two deltas, then the cut


def test_disconnect_leaves_the_chunked_body_unterminated(upstream: MockUpstream, http: httpx.Client) -> None:
    fault = {"x-mock-fault": "disconnect"}
    _, chunks, complete = dechunk(raw_exchange(upstream, chat_body(), {**fault, "x-mock-fault-after": "5"}))
    assert not complete and len(chunks) == 5
    with (
        http.stream("POST", "/v1/chat/completions", json=chat_body(), headers=fault) as r,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        r.read()


def test_error_event(client: openai.OpenAI, upstream: MockUpstream) -> None:
    raw = raw_exchange(upstream, chat_body(), {"x-mock-fault": "error-event"})
    _, chunks, complete = dechunk(raw)
    assert complete and b"[DONE]" not in raw  # a clean end, without [DONE]
    assert chunks[-1].startswith(b'event: error\ndata: {"error":{"message":')
    assert len(chunks) == 4
    stream = client.chat.completions.create(model="mock-fault-error-event", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert type(caught.value) is openai.APIError and "server had an error" in caught.value.message


def test_error_data_chunk(client: openai.OpenAI, upstream: MockUpstream) -> None:
    _, chunks, complete = dechunk(raw_exchange(upstream, chat_body(), {"x-mock-fault": "error-data"}))
    assert complete and chunks[-1] == b"data: [DONE]\n\n"
    error = json.loads(chunks[-2][6:])
    assert error["error"]["code"] == 502 and error["choices"][0]["finish_reason"] == "error"
    with pytest.raises(openai.APIError) as caught:
        list(client.chat.completions.create(model="mock-fault-error-data", messages=MESSAGES, stream=True))
    assert type(caught.value) is openai.APIError


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("http-429", openai.RateLimitError, 429),
        ("http-500", openai.InternalServerError, 500),
        ("http-502", openai.APIStatusError, 502),
    ],
)
def test_http_faults(
    client: openai.OpenAI, upstream: MockUpstream, fault: str, error: type[openai.APIStatusError], status: int
) -> None:
    for model, headers in (("mock-gpt", {"x-mock-fault": fault}), (f"mock-fault-{fault}", {})):
        with pytest.raises(error) as caught:
            client.chat.completions.create(model=model, messages=MESSAGES, stream=True, extra_headers=headers)
        response = caught.value.response
        assert response.status_code == status and response.json()["error"]["message"]
        assert (response.headers.get("retry-after") == "2") is (status == 429)
        entry = upstream.wait_finished(response.headers["x-mock-completion-id"])
        assert (entry.status, entry.fault) == (status, fault)


def test_slow_first_token_times_the_client_out(upstream: MockUpstream) -> None:
    slow = {"x-mock-fault": "slow-first-token"}
    with openai.OpenAI(base_url=upstream.url + "/v1", api_key="sk", max_retries=0, timeout=0.5) as c:
        stream = c.chat.completions.create(
            model="mock-gpt", messages=MESSAGES, stream=True, extra_headers=slow
        )
        with pytest.raises(openai.APITimeoutError):
            list(stream)
    entry = upstream.wait_finished(completion_id(stream))
    assert entry.client_gone and entry.first_token_at is None
    assert entry.finished_at is not None and entry.finished_at - entry.request_received < 10


def test_no_finish(client: openai.OpenAI, upstream: MockUpstream) -> None:
    body = chat_body(stream_options={"include_usage": True})
    raw = raw_exchange(upstream, body, {"x-mock-fault": "no-finish"})
    complete = dechunk(raw)[2]
    assert complete and b"[DONE]" not in raw and b'"finish_reason":"' not in raw and b'"usage":{' not in raw
    stream = client.chat.completions.create(model="mock-fault-no-finish", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text and upstream.wait_finished(completion_id(stream)).content == {0: text}


def test_huge_event(client: openai.OpenAI, upstream: MockUpstream) -> None:
    stream = client.chat.completions.create(
        model="mock-gpt",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-fault": "huge-event", "x-mock-huge-bytes": "2000000", "x-mock-chunks": "4"},
    )
    deltas = [c.choices[0].delta.content or "" for c in stream]
    assert max(len(d) for d in deltas) == 2_000_000
    assert upstream.wait_finished(completion_id(stream)).content == {0: "".join(deltas)}


def test_broken_data_lines(upstream: MockUpstream) -> None:
    raw = raw_exchange(upstream, chat_body(), {"x-mock-fault": "invalid-utf8"})
    assert b'"content":"caf\xc3(\xff"' in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode()
    _, chunks, complete = dechunk(raw_exchange(upstream, chat_body(), {"x-mock-fault": "non-json"}))
    assert complete and chunks[3] == b"data: not json\n\n" and chunks[-1] == b"data: [DONE]\n\n"


def test_keepalive_comments(client: openai.OpenAI, upstream: MockUpstream) -> None:
    chunks = dechunk(
        raw_exchange(upstream, chat_body(), {"x-mock-fault": "keepalive", "x-mock-chunks": "4"})
    )[1]
    assert chunks.count(b": keep-alive\n\n") == 5  # before each delta and before the finish chunk
    stream = client.chat.completions.create(model="mock-fault-keepalive", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert upstream.wait_finished(completion_id(stream)).content == {0: text}


def test_gzip_still_streams(client: openai.OpenAI, upstream: MockUpstream, http: httpx.Client) -> None:
    headers = {"x-mock-fault": "gzip", "x-mock-gap-ms": "100", "x-mock-chunks": "5", "x-mock-ttft-ms": "0"}
    with http.stream("POST", "/v1/chat/completions", json=chat_body(), headers=headers) as resp:
        assert resp.headers["content-encoding"] == "gzip"
        decoded, first_at = b"", None
        for part in resp.iter_bytes():
            first_at = first_at or time.monotonic()
            decoded += part
        cid = resp.headers["x-mock-completion-id"]
    entry = upstream.wait_finished(cid)
    assert first_at is not None and entry.finished_at is not None
    assert entry.finished_at - first_at > 0.3  # the first event was readable long before the end
    assert decoded.startswith(b'data: {"id":"' + cid.encode()) and decoded.endswith(b"data: [DONE]\n\n")
    wire = raw_exchange(upstream, chat_body(), {"x-mock-fault": "gzip"})
    assert gzip.decompress(b"".join(dechunk(wire)[1])).endswith(b"data: [DONE]\n\n")
    stream = client.chat.completions.create(model="mock-fault-gzip", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text and upstream.wait_finished(completion_id(stream)).content == {0: text}


def test_client_disconnect_is_logged(upstream: MockUpstream, http: httpx.Client) -> None:
    headers = {"x-mock-chunks": "200", "x-mock-gap-ms": "10"}
    with http.stream("POST", "/v1/chat/completions", json=chat_body(), headers=headers) as resp:
        cid = resp.headers["x-mock-completion-id"]
        got = b""
        for part in resp.iter_raw():
            got += part
            if got.count(b"data:") >= 3:
                break
    entry = upstream.wait_finished(cid)
    assert entry.client_gone and len(entry.sends) < 100
    assert http.get("/health").json() == {"status": "ok"}  # and the server carries on


# -- other endpoints and bad requests ---------------------------------------------------------------
def test_models_health_and_404(http: httpx.Client) -> None:
    models = http.get("/v1/models").json()
    ids = {m["id"] for m in models["data"]}
    assert models["object"] == "list" and {"mock-gpt", "mock-reasoner", "mock-fault-disconnect"} <= ids
    assert http.get("/health").json() == {"status": "ok"}
    missing = http.post("/v1/embeddings", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert http.post("/chat/completions", json=chat_body(stream=False)).json()["object"] == "chat.completion"


def test_bad_requests_get_openai_errors(client: openai.OpenAI, http: httpx.Client) -> None:
    for headers, message in (({"x-mock-fault": "nope"}, "unknown fault"), ({"x-mock-gap-ms": "-1"}, "gap")):
        with pytest.raises(openai.BadRequestError, match=message):
            client.chat.completions.create(model="mock-gpt", messages=MESSAGES, extra_headers=headers)
    odd = http.post("/v1/chat/completions", json=chat_body(stream_options="yes"))
    assert odd.status_code == 400 and odd.json()["error"]["type"] == "invalid_request_error"
    bad = http.post("/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["message"]


# -- lifecycle --------------------------------------------------------------------------------------
def test_log_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mock_upstream, "LOG_LIMIT", 3)
    with MockUpstream(profile="instant") as server, httpx.Client(base_url=server.url) as http:
        ids = [
            http.post("/v1/chat/completions", json=chat_body(stream=False)).headers["x-mock-completion-id"]
            for _ in range(5)
        ]
        assert list(server.log) == ids[2:]


def test_bad_profile_and_busy_port(upstream: MockUpstream) -> None:
    with pytest.raises(ConfigError, match="profile"):
        MockUpstream(profile="warp")
    with pytest.raises(ConfigError, match="cannot listen"):
        MockUpstream(port=upstream.port).start()


def test_run_stops_cleanly_on_sigterm() -> None:
    src = Path(streamtap.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = "from streamtap.mock_upstream import run; run('127.0.0.1', 0, 'instant')"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split()[4]
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/health").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_stop_is_prompt_with_idle_and_busy_connections() -> None:
    server = MockUpstream(profile="instant").start()
    with (
        httpx.Client(base_url=server.url) as idle,
        socket.create_connection(("127.0.0.1", server.port)) as busy,
    ):
        assert idle.get("/health").status_code == 200  # stays open, kept alive
        busy.sendall(request_bytes(chat_body(), {"x-mock-ttft-ms": "20000"}))
        cid = next(
            line for line in busy.recv(4096).split(b"\r\n") if line.startswith(b"x-mock-completion-id")
        )
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
        assert server.log[cid.split(b": ")[1].decode()].finished_at is not None
