"""StreamTap, the whole pipeline, with synthetic times: timings, outcomes, error texts, bodies."""

from __future__ import annotations

import gzip
import json
import random
import re
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import brotli
import pytest

from harness import patches_compiled
from streamtap.chat import ChatInterpreter
from streamtap.decoding import ContentDecodingError
from streamtap.records import EventKind, Outcome, StreamRecord, StreamStart, Usage
from streamtap.sse import SSEDecoder, decode_all
from streamtap.tap import MAX_STORED_BODY, StreamTap, decide_outcome

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
T0 = 5000.0
START = StreamStart(
    id="s1",
    started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    method="POST",
    url="https://api.example.com/v1/chat/completions",
    host="api.example.com",
    path="/v1/chat/completions",
    request_model="gpt-test",
    api_key_fp=None,
    proxy_instance="test:8080",
)
SSE = "text/event-stream"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    """One chat.completion.chunk event."""
    obj: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-test-2026",
        "choices": [{"index": 0, "delta": {} if delta is None else delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


ROLE = chunk({"role": "assistant", "content": ""})
DONE = b"data: [DONE]\n\n"


def ms(seconds: float) -> Any:
    return pytest.approx(seconds * 1000.0)


def run(
    reads: list[tuple[float, bytes]],
    *,
    status: int = 200,
    content_type: str = SSE,
    encoding: str | None = None,
    headers_at: float = 0.05,
    clean_end: bool = True,
    finish_at: float | None = None,
    disconnect: Outcome | None = None,
    reason: str | None = None,
) -> StreamRecord:
    """Feed a response as the addon does: headers, reads (seconds after t0), end of body, finish."""
    tap = StreamTap(START, T0)
    tap.response_headers(T0 + headers_at, status, content_type, encoding)
    for t, data in reads:
        tap.feed(data, T0 + t)
    last = max([headers_at, *(t for t, _ in reads)])
    if clean_end:
        tap.end_of_body(T0 + last + 0.001)
    end = finish_at if finish_at is not None else last + 0.002
    return tap.finish(T0 + end, disconnect=disconnect, reason=reason)


def timed(*events: bytes, step: float = 0.1) -> list[tuple[float, bytes]]:
    """One read per event, `step` seconds apart, the first at `step`."""
    return [(step * (i + 1), e) for i, e in enumerate(events)]


def raw_of(record: StreamRecord) -> bytes:
    return b"".join(e.raw for e in record.events)


# -- timings --------


class TestTimings:
    def test_ttfb_is_the_response_headers(self) -> None:
        record = run(timed(ROLE, chunk({"content": "Hi"})), headers_at=0.042)
        assert record.ttfb_ms == ms(0.042)

    def test_role_only_and_empty_deltas_do_not_count(self) -> None:
        record = run(
            timed(ROLE, chunk({"content": ""}), chunk({}), chunk({"content": None}), chunk({"content": "Hi"}))
        )
        assert record.ttft_ms == ms(0.5) and record.ttfc_ms == ms(0.5)
        assert [e.tokens for e in record.events] == [False, False, False, False, True]

    @pytest.mark.parametrize("field", ["reasoning_content", "reasoning", "refusal"])
    def test_reasoning_and_refusal_count_for_ttft_not_ttfc(self, field: str) -> None:
        record = run(timed(ROLE, chunk({field: "hmm"}), chunk({field: "..."}), chunk({"content": "Hi"})))
        assert record.ttft_ms == ms(0.2)
        assert record.ttfc_ms == ms(0.4)

    def test_tool_call_arguments_count_for_ttft(self) -> None:
        first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
        record = run(
            timed(
                ROLE,
                chunk({"tool_calls": [first]}),  # id and name only: no generated text yet
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
                chunk({}, "tool_calls"),
            )
        )
        assert record.ttft_ms == ms(0.3)
        assert record.ttfc_ms is None
        assert record.choices[0].tool_calls[0].arguments == '{"a": 1}'

    def test_whitespace_is_content(self) -> None:
        record = run(timed(ROLE, chunk({"content": "\n"}), chunk({"content": "Hi"})))
        assert record.ttfc_ms == ms(0.2)

    def test_comments_usage_and_done_carry_no_tokens(self) -> None:
        usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0}}\n\n'
        record = run(timed(b": keep-alive\n\n", ROLE, usage, DONE))
        assert record.ttft_ms is None and record.ttfc_ms is None
        assert not any(e.tokens for e in record.events)
        assert record.usage == Usage(3, 0, 3)

    def test_legacy_completion_text_counts(self) -> None:
        text = b'data: {"object": "text_completion", "choices": [{"index": 0, "text": " the"}]}\n\n'
        record = run(timed(text))
        assert record.ttft_ms == ms(0.1) and record.ttfc_ms == ms(0.1)

    def test_event_time_is_the_read_that_completes_it(self) -> None:
        event = chunk({"content": "Hi"})
        record = run([(0.1, event[:20]), (0.3, event[20:-1]), (0.45, event[-1:])])
        (only,) = record.events
        assert only.t_ms == ms(0.45) and only.gap_ms is None
        assert record.ttft_ms == ms(0.45)

    def test_t_ms_and_gap_ms(self) -> None:
        a, b, c = (chunk({"content": x}) for x in "abc")
        record = run([(0.1, a), (0.25, b + c), (0.7, DONE)])
        assert [e.t_ms for e in record.events] == [ms(0.1), ms(0.25), ms(0.25), ms(0.7)]
        assert [e.gap_ms for e in record.events] == [None, ms(0.15), ms(0.0), ms(0.45)]
        assert [e.seq for e in record.events] == [0, 1, 2, 3]
        assert record.gaps_ms == [ms(0.15), ms(0.0)]  # between token-carrying events only

    def test_duration_is_the_last_byte(self) -> None:
        record = run(timed(ROLE, chunk({"content": "Hi"}), DONE), finish_at=9.0)
        assert record.duration_ms == ms(0.3)

    def test_items_flushed_at_end_get_the_last_byte_time(self) -> None:
        record = run([(0.1, chunk({"content": "Hi"})), (0.2, b"data: [DONE]")], finish_at=3.0)
        assert record.events[-1].t_ms == ms(0.2)
        assert record.events[-1].kind is EventKind.MALFORMED  # never dispatched: no blank line after it

    def test_no_body_duration(self) -> None:
        assert run([], finish_at=2.0).duration_ms == ms(2.0)
        record = run([], clean_end=False, finish_at=2.0, disconnect=Outcome.UPSTREAM_DISCONNECT, reason="x")
        assert record.duration_ms is None

    def test_empty_reads_are_ignored(self) -> None:
        record = run([(0.1, chunk({"content": "Hi"})), (0.9, b"")])
        assert record.duration_ms == ms(0.1)


# -- outcomes --------


@pytest.mark.parametrize(
    ("status", "model_error", "finished", "disconnect", "outcome"),
    [
        (200, False, True, None, Outcome.COMPLETED),
        (200, False, False, None, Outcome.TRUNCATED),
        (None, False, False, None, Outcome.TRUNCATED),
        (200, False, False, Outcome.CLIENT_DISCONNECT, Outcome.CLIENT_DISCONNECT),
        (200, False, False, Outcome.UPSTREAM_DISCONNECT, Outcome.UPSTREAM_DISCONNECT),
        (200, False, True, Outcome.CLIENT_DISCONNECT, Outcome.COMPLETED),
        (200, False, True, Outcome.UPSTREAM_DISCONNECT, Outcome.COMPLETED),
        (200, True, True, None, Outcome.MODEL_ERROR),
        (200, True, False, Outcome.UPSTREAM_DISCONNECT, Outcome.MODEL_ERROR),
        (400, True, True, Outcome.CLIENT_DISCONNECT, Outcome.HTTP_ERROR),
        (500, False, True, None, Outcome.HTTP_ERROR),
        (399, False, False, None, Outcome.TRUNCATED),
        (400, False, False, None, Outcome.HTTP_ERROR),
    ],
)
def test_decide_outcome(
    status: int | None, model_error: bool, finished: bool, disconnect: Outcome | None, outcome: Outcome
) -> None:
    got = decide_outcome(
        status_code=status, model_error=model_error, finished=finished, disconnect=disconnect
    )
    assert got is outcome


class TestOutcomeFromBodies:
    def test_done_without_finish_reason_is_completed(self) -> None:
        record = run(timed(ROLE, chunk({"content": "Hi"}), DONE))
        assert record.outcome is Outcome.COMPLETED and record.finish_reason is None
        assert record.error is None

    def test_finish_reason_without_done_is_completed(self) -> None:
        record = run(timed(ROLE, chunk({"content": "Hi"}), chunk({}, "length")))
        assert record.outcome is Outcome.COMPLETED and record.finish_reason == "length"

    def test_clean_end_without_either_is_truncated(self) -> None:
        record = run(timed(ROLE, chunk({"content": "Hi"})))
        assert record.outcome is Outcome.TRUNCATED
        assert record.choices[0].content == "Hi" and record.error is None

    def test_empty_body_is_truncated(self) -> None:
        record = run([])
        assert record.outcome is Outcome.TRUNCATED and record.events == () and record.choices == ()

    def test_client_disconnect_after_done_is_completed(self) -> None:
        record = run(
            timed(ROLE, chunk({"content": "Hi"}), DONE),
            clean_end=False,
            disconnect=Outcome.CLIENT_DISCONNECT,
            reason="client disconnected",
        )
        assert record.outcome is Outcome.COMPLETED
        assert record.choices[0].content == "Hi"

    def test_client_disconnect_mid_stream(self) -> None:
        record = run(
            timed(ROLE, chunk({"content": "Hi"})),
            clean_end=False,
            disconnect=Outcome.CLIENT_DISCONNECT,
            reason="client disconnected",
        )
        assert record.outcome is Outcome.CLIENT_DISCONNECT and record.error == "client disconnected"

    def test_upstream_disconnect_mid_stream_keeps_partial_content(self) -> None:
        third = chunk({"content": " world"})
        reads = timed(ROLE, chunk({"content": "Hello"}), chunk({"content": ","}), third[:30])
        record = run(
            reads, clean_end=False, disconnect=Outcome.UPSTREAM_DISCONNECT, reason="peer closed connection"
        )
        assert record.outcome is Outcome.UPSTREAM_DISCONNECT
        assert record.error == "peer closed connection"
        assert record.choices[0].content == "Hello,"
        assert record.events[-1].kind is EventKind.MALFORMED and record.events[-1].raw == third[:30]
        assert raw_of(record) == b"".join(r for _, r in reads)
        assert record.duration_ms == ms(0.4)

    def test_model_error_from_event_error(self) -> None:
        body = (CORPUS / "groq_event_error_midstream_tool_use_failed.sse").read_bytes()
        record = run([(0.1, body)])
        assert record.outcome is Outcome.MODEL_ERROR
        assert record.error is not None and record.error.startswith("tool_use_failed: Tool call validation")
        assert [e.kind for e in record.events].count(EventKind.ERROR) == 1
        assert record.events[-1].event == "error"

    def test_model_error_from_error_object_outranks_finish_and_done(self) -> None:
        body = (CORPUS / "openrouter_error_in_data_midstream.sse").read_bytes()
        record = run([(0.1, body)])
        assert record.outcome is Outcome.MODEL_ERROR
        assert record.error == "400: Token limit reached"
        assert record.finish_reason == "length"
        assert record.usage == Usage(43, 10, 53, 11)

    def test_event_error_with_text_data(self) -> None:
        record = run(timed(ROLE, b"event: error\ndata: overloaded\n\n"))
        assert record.outcome is Outcome.MODEL_ERROR and record.error == "overloaded"

    def test_model_error_outranks_a_disconnect(self) -> None:
        error = b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'
        record = run(timed(ROLE, error), clean_end=False, disconnect=Outcome.UPSTREAM_DISCONNECT, reason="x")
        assert record.outcome is Outcome.MODEL_ERROR and record.error == "server_error: boom"

    def test_http_error_outranks_a_finished_stream(self) -> None:
        record = run(timed(ROLE, chunk({"content": "Hi"}, "stop"), DONE), status=500)
        assert record.outcome is Outcome.HTTP_ERROR
        assert record.error is not None and record.error.startswith("HTTP 500: ")


ERROR_FILES = sorted(CORPUS.glob("errors/*.json"))


def _status(path: Path) -> int:
    match = re.search(r"_http(\d{3})_", path.name)
    assert match
    return int(match.group(1))


class TestHttpErrors:
    @pytest.mark.parametrize("path", ERROR_FILES, ids=lambda p: p.name)
    def test_error_body_as_the_addon_hands_it_over(self, path: Path) -> None:
        body = path.read_bytes()
        status = _status(path)
        message = json.loads(body)["error"]["message"]
        tap = StreamTap(START, T0)
        content_type = {
            "gemini_http400_api_key_invalid_on_stream_request.json": SSE,
            "deepseek_http400_octet_stream_content_type.json": "application/octet-stream",
        }.get(path.name, "application/json")
        tap.response_headers(T0 + 0.05, status, content_type, None)
        if content_type == SSE:  # the addon streams anything announced as an event stream
            for i in range(0, len(body), 100):
                tap.feed(body[i : i + 100], T0 + 0.1)
            tap.end_of_body(T0 + 0.2)
        else:  # and hands over the whole (decoded) body otherwise
            tap.whole_body(body, T0 + 0.1)
        record = tap.finish(T0 + 0.3)
        assert record.outcome is Outcome.HTTP_ERROR and record.status_code == status
        assert record.error is not None
        assert record.error.startswith(f"HTTP {status}: ") and message in record.error
        assert record.choices == () and record.usage is None
        if content_type == SSE:
            assert record.stream and raw_of(record) == body
        else:
            assert not record.stream and record.response_body == body.decode()

    def test_gemini_json_error_served_as_event_stream(self) -> None:
        body = (CORPUS / "errors/gemini_http400_api_key_invalid_on_stream_request.json").read_bytes()
        record = run([(0.1, body)], status=400)
        assert record.events and all(e.kind is EventKind.MALFORMED for e in record.events)
        assert record.ttft_ms is None
        # the body is JSON, not SSE: its message is parsed out like any JSON error body's
        assert record.error is not None and record.error.startswith("HTTP 400: ")
        assert "API key not valid" in record.error

    def test_openai_error_text(self) -> None:
        tap = StreamTap(START, T0)
        tap.response_headers(T0, 401, "application/json", None)
        tap.whole_body((CORPUS / "errors/openai_http401_invalid_api_key.json").read_bytes(), T0 + 0.1)
        error = tap.finish(T0 + 0.1).error
        assert error is not None and error.startswith("HTTP 401: invalid_api_key: Incorrect API key provided")

    def test_a_bytearray_body(self) -> None:
        body = (CORPUS / "errors/openai_http401_invalid_api_key.json").read_bytes()
        records = []
        for given in (body, bytearray(body)):
            tap = StreamTap(START, T0)
            tap.response_headers(T0, 401, "application/json", None)
            tap.whole_body(given, T0 + 0.1)
            records.append(tap.finish(T0 + 0.1))
        assert records[0] == records[1]
        assert records[1].response_body == body.decode()

    def test_empty_error_body(self) -> None:
        tap = StreamTap(START, T0)
        tap.response_headers(T0, 503, "text/html", None)
        tap.whole_body(b"", T0 + 0.1)
        assert tap.finish(T0 + 0.1).error == "HTTP 503"

    def test_text_error_body(self) -> None:
        tap = StreamTap(START, T0)
        tap.response_headers(T0, 502, "text/plain", None)
        tap.whole_body(b"Bad gateway\n", T0 + 0.1)
        record = tap.finish(T0 + 0.1)
        assert record.error == "HTTP 502: Bad gateway" and record.response_body == "Bad gateway\n"

    def test_json_error_body_is_not_read_as_a_completion(self) -> None:
        body = json.dumps({"error": {"message": "nope"}, "choices": [{"message": {"content": "x"}}]}).encode()
        tap = StreamTap(START, T0)
        tap.response_headers(T0, 400, "application/json", None)
        tap.whole_body(body, T0 + 0.1)
        record = tap.finish(T0 + 0.1)
        assert record.choices == () and record.error == "HTTP 400: nope"


# -- bodies --------


def _gzip_stream(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    pieces = [data[i : i + 200] for i in range(0, len(data), 200)]
    return b"".join(c.compress(p) + c.flush(zlib.Z_SYNC_FLUSH) for p in pieces) + c.flush()


class TestBodies:
    @pytest.mark.parametrize(
        ("encoding", "encode"),
        [("gzip", _gzip_stream), ("gzip", gzip.compress), ("br", brotli.compress), ("gzip, br", None)],
    )
    def test_compressed_event_stream_in_small_pieces(self, encoding: str, encode: Any) -> None:
        body = (CORPUS / "openai_chat_parallel_tool_calls.sse").read_bytes()
        data = encode(body) if encode else brotli.compress(_gzip_stream(body))
        reads = [(0.1 + i / 1e5, data[i : i + 5]) for i in range(0, len(data), 5)]
        record = run(reads, encoding=encoding)
        plain = run([(0.1, body)])
        assert record.choices == plain.choices and len(record.choices[0].tool_calls) == 2
        assert record.usage == plain.usage and record.outcome is Outcome.COMPLETED
        assert raw_of(record) == body
        assert record.content_encoding == encoding

    def test_sync_flushed_gzip_events_arrive_before_the_end(self) -> None:
        body = (CORPUS / "openai_chat_text_include_usage.sse").read_bytes()
        data = _gzip_stream(body)
        tap = StreamTap(START, T0)
        tap.response_headers(T0, 200, SSE, "gzip")
        tap.feed(data[: len(data) // 2], T0 + 0.1)
        assert tap.ttft is not None  # decoded and interpreted as it arrived
        tap.feed(data[len(data) // 2 :], T0 + 0.2)
        assert tap.finish(T0 + 0.3).choices[0].content

    def test_corrupt_compressed_stream_still_gives_a_record(self) -> None:
        body = chunk({"content": "Hello"}) + chunk({"content": " world"})
        c = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
        good = c.compress(body) + c.flush(zlib.Z_SYNC_FLUSH)  # no end of stream yet, then garbage
        tap = StreamTap(START, T0)
        tap.response_headers(T0, 200, SSE, "gzip")
        tap.feed(good, T0 + 0.1)
        with pytest.raises(ContentDecodingError):  # the addon's tee catches this and stops feeding
            tap.feed(b"\xff" * 16, T0 + 0.2)
        record = tap.finish(T0 + 0.3, disconnect=Outcome.UPSTREAM_DISCONNECT, reason="x")
        assert record.choices[0].content == "Hello world"
        assert record.outcome is Outcome.UPSTREAM_DISCONNECT

    def test_non_streamed_completion(self) -> None:
        completion = {
            "id": "chatcmpl-2",
            "object": "chat.completion",
            "model": "gpt-test-2026",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"},
                {
                    "index": 1,
                    "message": {"role": "assistant", "content": None, "refusal": "No."},
                    "finish_reason": "stop",
                },
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        }
        body = json.dumps(completion).encode()
        tap = StreamTap(START, T0)
        tap.response_headers(T0 + 0.05, 200, "application/json", None)
        tap.whole_body(body, T0 + 0.4)
        record = tap.finish(T0 + 0.5)
        assert not record.stream and record.outcome is Outcome.COMPLETED
        assert [(c.content, c.refusal, c.finish_reason) for c in record.choices] == [
            ("Hello!", None, "stop"),
            (None, "No.", "stop"),
        ]
        assert record.usage == Usage(9, 3, 12) and record.model == "gpt-test-2026"
        assert record.response_body == body.decode() and record.events == ()
        assert record.duration_ms == ms(0.4) and record.ttfb_ms == ms(0.05) and record.ttft_ms is None

    def test_non_streamed_legacy_completion(self) -> None:
        choice = {"index": 0, "text": "Hi", "finish_reason": "length"}
        body = json.dumps({"object": "text_completion", "choices": [choice]}).encode()
        tap = StreamTap(START, T0)
        tap.response_headers(T0, 200, "application/json", None)
        tap.whole_body(body, T0 + 0.1)
        record = tap.finish(T0 + 0.1)
        assert record.choices[0].content == "Hi" and record.outcome is Outcome.COMPLETED

    def test_non_streamed_body_is_capped(self) -> None:
        tap = StreamTap(START, T0)
        tap.response_headers(T0, 200, "application/octet-stream", None)
        tap.whole_body(b"x" * (MAX_STORED_BODY + 10), T0 + 0.1)
        body = tap.finish(T0 + 0.1).response_body
        assert body is not None and len(body) == MAX_STORED_BODY

    def test_streamed_non_sse_body_is_kept_and_capped(self) -> None:
        reads = [(0.1, b"y" * (MAX_STORED_BODY // 2 + 1)), (0.2, b"z" * (MAX_STORED_BODY // 2 + 1))]
        record = run(reads, content_type="application/json")
        assert record.response_body is not None and len(record.response_body) == MAX_STORED_BODY
        assert not record.stream and record.events == ()

    @pytest.mark.parametrize(
        ("content_type", "stream"),
        [
            ("text/event-stream", True),
            ("text/event-stream; charset=utf-8", True),
            (" Text/Event-Stream ;charset=UTF-8", True),
            ("application/json", False),
            ("text/plain", False),
            ("", False),
        ],
    )
    def test_content_type(self, content_type: str, stream: bool) -> None:
        record = run(timed(chunk({"content": "Hi"}, "stop")), content_type=content_type)
        assert record.stream is stream
        assert (record.response_body is None) is stream

    def test_trailing_blank_lines_belong_to_the_last_event(self) -> None:
        record = run(timed(chunk({"content": "Hi"}), DONE + b"\n\n"))
        assert [e.kind for e in record.events] == [EventKind.DATA, EventKind.DONE]
        assert record.events[-1].raw == DONE + b"\n\n"

    def test_event_kinds(self) -> None:
        record = run(timed(b": hi\n\n", ROLE, b"data: not json\n\n", b"event: error\ndata: {}\n\n", DONE))
        assert [e.kind for e in record.events] == [
            EventKind.COMMENT,
            EventKind.DATA,
            EventKind.MALFORMED,
            EventKind.ERROR,
            EventKind.DONE,
        ]
        assert [e.data for e in record.events][1:3] == [ROLE[6:-2].decode(), "not json"]

    def test_start_fields_are_copied(self) -> None:
        record = run(timed(chunk({"content": "Hi"}, "stop")))
        assert (record.id, record.started_at, record.url, record.request_model, record.proxy_instance) == (
            START.id,
            START.started_at,
            START.url,
            START.request_model,
            START.proxy_instance,
        )
        assert record.model == "gpt-test-2026" and record.status_code == 200 and record.tap_errors == 0


SSE_FILES = sorted(CORPUS.glob("*.sse"))


@pytest.mark.parametrize("path", SSE_FILES, ids=lambda p: p.name)
def test_corpus_raw_equals_decoded_body(path: Path) -> None:
    body = path.read_bytes()
    rng = random.Random(path.name)
    reads, i, t = [], 0, 0.1
    while i < len(body):
        n = rng.choice([1, 17, 300, 4096, 65536])
        reads.append((t, body[i : i + n]))
        i, t = i + n, t + 0.001
    record = run(reads)
    assert raw_of(record) == body
    chat = ChatInterpreter()
    for item in decode_all(body):
        chat.feed(item)
    assert record.choices == chat.choices() and record.usage == chat.usage and record.error == chat.error
    assert [e.seq for e in record.events] == list(range(len(record.events)))
    assert all(e.t_ms >= 100.0 for e in record.events)


DEEP = b"[" * 100_000 + b"]" * 100_000  # valid JSON, deeper than the json module's recursion limit


@pytest.mark.parametrize("status", [200, 400])
def test_deeply_nested_whole_body(status: int) -> None:
    tap = StreamTap(START, T0)
    tap.response_headers(T0, status, "application/json", None)
    tap.whole_body(DEEP, T0 + 0.1)
    record = tap.finish(T0 + 0.2)
    assert record.choices == () and record.response_body == DEEP.decode()


def test_deeply_nested_data_line_in_a_stream() -> None:
    record = run(timed(chunk({"content": "Hi"}), b"data: " + DEEP + b"\n\n", DONE))
    assert [e.kind for e in record.events] == [EventKind.DATA, EventKind.MALFORMED, EventKind.DONE]
    assert record.choices[0].content == "Hi"


# -- the lone-event lane --------


def event_reads(body: bytes) -> list[tuple[float, bytes]]:
    """A body as one read per SSE item (each event whole, as most streams arrive), 10 ms apart."""
    return [(0.1 + 0.01 * i, item.raw) for i, item in enumerate(decode_all(body)) if item.raw]


@patches_compiled
@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.sse")), ids=lambda p: p.name)
def test_a_lone_event_read_is_recorded_as_the_sse_items_would_be(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = event_reads(path.read_bytes())
    fed: list[bytes] = []  # the reads that went through SSE items
    real = SSEDecoder.feed

    def feed(self: SSEDecoder, chunk: bytes) -> list[Any]:
        fed.append(chunk)
        return real(self, chunk)

    monkeypatch.setattr(SSEDecoder, "feed", feed)
    laned = run(reads)
    lane = [r for _, r in reads if r not in fed]
    monkeypatch.setattr(SSEDecoder, "lone_data", lambda self, chunk: None)
    itemized = run(reads)
    assert laned == itemized
    # the lane takes only reads that are one unnamed `data:` event (and only with nothing pending)
    lone = [r for _, r in reads[1:] if r.startswith(b"data:") and r.count(b"\n") == 2 and b"\r" not in r]
    assert set(lane) <= set(lone)
    if path.name in ("openai_chat_text_include_usage.sse", "deepseek_reasoner_reasoning_content.sse"):
        assert len(lane) == len(lone) >= 10
