"""Pipeline: the proxy's messages replayed into records, the way the worker process does it."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from harness import patches_compiled
from streamtap.metrics import build_metrics
from streamtap.pipeline import BODY, CHUNK, END, HEADERS, LOST, START, TAP_ERROR, Pipeline, request_model
from streamtap.privacy import strip_content, strip_start
from streamtap.records import Outcome, StreamRecord, StreamStart
from streamtap.tap import StreamTap

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
INSTANCE = "test:8080"
EPOCH = 1_780_000_000.25
T0 = 1000.0
SSE = "text/event-stream"
CHAT = "/v1/chat/completions"
REQUEST = json.dumps({"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]})

# (file, path the request went to: it picks the interpreter)
CORPUS_CASES = [
    ("openai_chat_parallel_tool_calls.sse", CHAT),
    ("deepseek_reasoner_reasoning_content.sse", CHAT),
    ("gemini_thinking_crlf.sse", CHAT),
    ("anthropic_messages_thinking_signature.sse", "/v1/messages"),
    ("openai_responses_reasoning_summary.sse", "/v1/responses"),
    ("groq_event_error_midstream_tool_use_failed.sse", CHAT),
]


class Collector:
    """A pipeline with fresh metrics, keeping what it hands on."""

    def __init__(self, *, metadata_only: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.starts: list[StreamStart] = []
        self.records: dict[str, StreamRecord] = {}
        self.finished: list[str] = []
        self.pipeline = Pipeline(
            instance=INSTANCE,
            metadata_only=metadata_only,
            metrics=build_metrics(self.registry),
            on_start=self.starts.append,
            on_record=self._record,
        )

    def _record(self, record: StreamRecord) -> None:
        self.finished.append(record.id)
        self.records[record.id] = record

    def handle(self, *messages: tuple[Any, ...]) -> None:
        self.pipeline.handle(messages)

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    @property
    def tap_errors(self) -> float:
        return self.sample("streamtap_tap_errors_total")

    @property
    def active(self) -> float:
        return self.sample("streamtap_active_streams")


def start_msg(key: str, *, path: str = CHAT, t0: float = T0, body: bytes | None = None) -> tuple[Any, ...]:
    request = REQUEST.encode() if body is None else body
    url = f"https://api.example.com{path}"
    return (START, key, t0, EPOCH, "POST", url, "api.example.com", path, "sha256:0123456789ab", request)


def stream_start(key: str, *, path: str = CHAT, body: bytes | None = None) -> StreamStart:
    """The StreamStart the pipeline should build from `start_msg(key, path=path, body=body)`."""
    request = REQUEST.encode() if body is None else body
    return StreamStart(
        id=key,
        started_at=datetime.fromtimestamp(EPOCH, UTC),
        method="POST",
        url=f"https://api.example.com{path}",
        host="api.example.com",
        path=path,
        request_model=json.loads(request).get("model"),
        api_key_fp="sha256:0123456789ab",
        proxy_instance=INSTANCE,
        request_body=request.decode(),
    )


def split(data: bytes, rng: random.Random, max_size: int = 200) -> list[bytes]:
    """`data` cut at arbitrary offsets (some reads a single byte)."""
    parts, i = [], 0
    while i < len(data):
        n = rng.randint(1, max_size)
        parts.append(data[i : i + n])
        i += n
    return parts


def timed_reads(parts: list[bytes], rng: random.Random, first: float = 0.2) -> list[tuple[float, bytes]]:
    t, reads = T0 + first, []
    for part in parts:
        t += rng.choice((0.0, 0.0005, 0.013, 0.25))
        reads.append((t, part))
    return reads


def sse_messages(
    key: str,
    reads: list[tuple[float, bytes]],
    *,
    status: int = 200,
    encoding: str | None = None,
    headers_at: float = T0 + 0.1,
    clean_end: bool = True,
    end: tuple[float, str | None, str | None] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The HEADERS / CHUNK... / END messages the addon sends for a streamed response."""
    yield (HEADERS, key, headers_at, status, f"{SSE}; charset=utf-8", encoding)
    for now, data in reads:
        yield (CHUNK, key, now, data)
    last = reads[-1][0] if reads else headers_at
    if clean_end:
        yield (CHUNK, key, last + 0.001, b"")
    t_end, disconnect, reason = end if end is not None else (last + 0.002, None, None)
    yield (END, key, t_end, disconnect, reason)


def direct(
    start: StreamStart,
    reads: list[tuple[float, bytes]],
    *,
    status: int = 200,
    encoding: str | None = None,
    headers_at: float = T0 + 0.1,
    clean_end: bool = True,
    end: tuple[float, Outcome | None, str | None] | None = None,
) -> StreamRecord:
    """The record a StreamTap driven by hand gives for the same inputs as `sse_messages`."""
    tap = StreamTap(start, T0)
    tap.response_headers(headers_at, status, f"{SSE}; charset=utf-8", encoding)
    for now, data in reads:
        tap.feed(data, now)
    last = reads[-1][0] if reads else headers_at
    if clean_end:
        tap.end_of_body(last + 0.001)
    t_end, disconnect, reason = end if end is not None else (last + 0.002, None, None)
    return tap.finish(t_end, disconnect=disconnect, reason=reason)


def partial_reads() -> list[tuple[float, bytes]]:
    """The first half of a chat stream (no finish_reason, no [DONE]), in a few reads."""
    body = (CORPUS / "openai_chat_text_include_usage.sse").read_bytes()
    half = body[: len(body) // 2]
    return timed_reads(split(half, random.Random(7), 60), random.Random(8))


# -- the same record as the tap ----------------------------------------------------------------------


class TestSameAsTheTap:
    @pytest.mark.parametrize(("name", "path"), CORPUS_CASES, ids=[c[0] for c in CORPUS_CASES])
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_corpus_stream(self, name: str, path: str, seed: int) -> None:
        rng = random.Random(seed)
        reads = timed_reads(split((CORPUS / name).read_bytes(), rng), rng)
        c = Collector()
        c.handle(start_msg("k1", path=path), *sse_messages("k1", reads))
        want = direct(stream_start("k1", path=path), reads)
        assert c.records["k1"] == want
        assert c.starts == [stream_start("k1", path=path)]
        assert want.events and want.tap_errors == 0  # the comparison covered a real stream

    def test_gzip_encoded_stream(self) -> None:
        rng = random.Random(4)
        body = gzip.compress((CORPUS / "openai_chat_parallel_tool_calls.sse").read_bytes())
        reads = timed_reads(split(body, rng, 50), rng)
        c = Collector()
        c.handle(start_msg("gz"), *sse_messages("gz", reads, encoding="gzip"))
        want = direct(stream_start("gz"), reads, encoding="gzip")
        assert c.records["gz"] == want
        assert want.content_encoding == "gzip" and want.outcome is Outcome.COMPLETED

    def test_batches_split_anywhere(self) -> None:
        """The sender cuts batches wherever its timer falls: the record cannot depend on it."""
        rng = random.Random(5)
        reads = timed_reads(
            split((CORPUS / "openai_chat_n2_multiple_choices_interleaved.sse").read_bytes(), rng), rng
        )
        messages = [start_msg("b"), *sse_messages("b", reads)]
        c = Collector()
        i = 0
        while i < len(messages):
            n = rng.randint(1, 4)
            c.pipeline.handle(messages[i : i + n])
            i += n
        assert c.records["b"] == direct(stream_start("b"), reads)

    def test_interleaved_exchanges(self) -> None:
        rng = random.Random(6)
        names = [n for n, p in CORPUS_CASES if p == CHAT][:3]
        per_key = {}
        for i, name in enumerate(names):
            reads = timed_reads(split((CORPUS / name).read_bytes(), rng), rng)
            per_key[f"x{i}"] = (reads, [start_msg(f"x{i}"), *sse_messages(f"x{i}", reads)])
        queues = [list(msgs) for _, msgs in per_key.values()]
        merged = []
        while any(queues):
            q = rng.choice([q for q in queues if q])
            merged.append(q.pop(0))
        c = Collector()
        c.pipeline.handle(merged)
        for key, (reads, _) in per_key.items():
            assert c.records[key] == direct(stream_start(key), reads)
        assert c.pipeline.open_streams == 0

    def test_disconnect_outcome_and_reason(self) -> None:
        reads = partial_reads()
        end = (reads[-1][0] + 0.5, Outcome.CLIENT_DISCONNECT.value, "client disconnected")
        c = Collector()
        c.handle(start_msg("d"), *sse_messages("d", reads, clean_end=False, end=end))
        want = direct(
            stream_start("d"),
            reads,
            clean_end=False,
            end=(end[0], Outcome.CLIENT_DISCONNECT, "client disconnected"),
        )
        record = c.records["d"]
        assert record == want
        assert record.outcome is Outcome.CLIENT_DISCONNECT
        assert record.error == "client disconnected"

    @pytest.mark.parametrize("outcome", [Outcome.UPSTREAM_DISCONNECT, Outcome.CLIENT_DISCONNECT])
    def test_disconnect_values(self, outcome: Outcome) -> None:
        reads = partial_reads()
        c = Collector()
        c.handle(
            start_msg("d"),
            *sse_messages("d", reads, clean_end=False, end=(reads[-1][0] + 1, outcome.value, "gone")),
        )
        assert c.records["d"].outcome is outcome
        assert c.records["d"].error == "gone"


class TestBody:
    def test_non_sse_json_completion(self) -> None:
        completion = {
            "id": "chatcmpl-9",
            "object": "chat.completion",
            "model": "gpt-test-2026",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
        }
        body = json.dumps(completion).encode()
        c = Collector()
        c.handle(
            start_msg("j"),
            (HEADERS, "j", T0 + 0.3, 200, "application/json", None),
            (BODY, "j", T0 + 0.4, body),
            (END, "j", T0 + 0.4, None, None),
        )
        tap = StreamTap(stream_start("j"), T0)
        tap.response_headers(T0 + 0.3, 200, "application/json", None)
        tap.whole_body(body, T0 + 0.4)
        want = tap.finish(T0 + 0.4)
        record = c.records["j"]
        assert record == want
        assert record.stream is False
        assert record.response_body == body.decode()
        assert record.model == "gpt-test-2026" and record.choices[0].content == "Hello"
        assert record.outcome is Outcome.COMPLETED
        assert record.duration_ms == pytest.approx(400.0)

    def test_http_error_body(self) -> None:
        body = (CORPUS / "errors" / "openai_http401_invalid_api_key.json").read_bytes()
        c = Collector()
        c.handle(
            start_msg("e"),
            (HEADERS, "e", T0 + 0.1, 401, "application/json", None),
            (BODY, "e", T0 + 0.1, body),
            (END, "e", T0 + 0.1, None, None),
        )
        record = c.records["e"]
        assert record.outcome is Outcome.HTTP_ERROR and record.status_code == 401
        assert record.error is not None and record.error.startswith("HTTP 401: ")


class TestMetadataOnly:
    def test_strips_content(self) -> None:
        rng = random.Random(9)
        reads = timed_reads(split((CORPUS / "openai_chat_parallel_tool_calls.sse").read_bytes(), rng), rng)
        full, meta = Collector(), Collector(metadata_only=True)
        for c in (full, meta):
            c.handle(start_msg("m"), *sse_messages("m", reads))
        assert meta.starts == [strip_start(full.starts[0])]
        assert meta.starts[0].request_body is None and full.starts[0].request_body == REQUEST
        assert meta.records["m"] == strip_content(full.records["m"])
        assert meta.records["m"] != full.records["m"]
        assert all(e.raw == b"" and e.data is None for e in meta.records["m"].events)
        # what is not content stays
        assert meta.records["m"].usage == full.records["m"].usage
        assert [e.t_ms for e in meta.records["m"].events] == [e.t_ms for e in full.records["m"].events]


class TestUnknownKeys:
    def test_messages_for_an_unknown_exchange_are_ignored(self) -> None:
        reads = partial_reads()
        c = Collector()
        c.handle(
            (HEADERS, "ghost", T0, 200, SSE, None),
            (CHUNK, "ghost", T0 + 0.1, b'data: {"x": 1}\n\n'),
            (CHUNK, "ghost", T0 + 0.2, b""),
            (BODY, "ghost", T0 + 0.2, b"{}"),
            (END, "ghost", T0 + 0.3, None, None),
            (END, "ghost", T0 + 0.3, Outcome.CLIENT_DISCONNECT.value, "x"),
        )
        c.handle(start_msg("real"), *sse_messages("real", reads))
        assert list(c.records) == ["real"]
        assert c.records["real"] == direct(stream_start("real"), reads)
        assert c.tap_errors == 0
        assert c.active == 0

    def test_messages_after_the_end_are_ignored(self) -> None:
        reads = partial_reads()
        c = Collector()
        c.handle(start_msg("a"), *sse_messages("a", reads))
        c.handle(
            (CHUNK, "a", T0 + 9, b'data: {"late": true}\n\n'),
            (END, "a", T0 + 9, Outcome.CLIENT_DISCONNECT.value, "late"),
        )
        assert c.finished == ["a"]
        assert c.records["a"] == direct(stream_start("a"), reads)


# -- failures ------------------------------------------------------------------------------------------


class TestTapFailure:
    @patches_compiled
    def test_a_failing_feed_breaks_only_its_exchange(self, monkeypatch: pytest.MonkeyPatch) -> None:
        rng = random.Random(10)
        body = (CORPUS / "openai_chat_parallel_tool_calls.sse").read_bytes()
        reads = timed_reads(split(body, rng, 80), rng)
        assert len(reads) > 4
        original = StreamTap.feed
        calls = {"bad": 0}

        def feed(self: StreamTap, chunk: bytes, now: float) -> None:
            if self.start.id == "bad":
                calls["bad"] += 1
                if calls["bad"] == 2:
                    raise RuntimeError("boom")
            original(self, chunk, now)

        monkeypatch.setattr(StreamTap, "feed", feed)
        c = Collector()
        bad = [start_msg("bad"), *sse_messages("bad", reads)]
        good = [start_msg("good"), *sse_messages("good", reads)]
        interleaved = [m for pair in zip(bad, good, strict=True) for m in pair]
        c.pipeline.handle(interleaved)  # must not raise

        assert calls["bad"] == 2  # the chunks after the failure never reached the tap
        record = c.records["bad"]
        assert record.tap_errors == 1
        # what the first read held, and nothing after: the tap as if the stream had stopped there
        monkeypatch.setattr(StreamTap, "feed", original)
        t_end = reads[-1][0] + 0.002
        want = direct(stream_start("bad"), reads[:1], clean_end=False, end=(t_end, None, None))
        assert record.events == want.events
        assert record.outcome is Outcome.TRUNCATED
        assert c.records["good"] == direct(stream_start("good"), reads)
        assert c.records["good"].outcome is Outcome.COMPLETED
        assert c.tap_errors == 1
        assert c.active == 0

    def test_unknown_content_encoding_is_a_tap_error(self) -> None:
        reads = partial_reads()
        c = Collector()
        c.handle(start_msg("enc"), *sse_messages("enc", reads, encoding="bogus"))
        assert c.records["enc"].tap_errors == 1
        assert c.records["enc"].events == ()
        assert c.tap_errors == 1

    def test_a_failing_recorder_callback_does_not_escape(self) -> None:
        reads = partial_reads()
        c = Collector()

        def on_record(record: StreamRecord) -> None:
            raise RuntimeError("recorder down")

        c.pipeline.on_record = on_record
        c.handle(start_msg("r"), *sse_messages("r", reads))
        c.handle(start_msg("r2"), *sse_messages("r2", reads))
        assert c.tap_errors == 2
        assert c.active == 0
        assert c.pipeline.open_streams == 0

    @patches_compiled
    def test_a_failing_finish_loses_only_that_record(self, monkeypatch: pytest.MonkeyPatch) -> None:
        reads = partial_reads()
        original = StreamTap.finish

        def finish(self: StreamTap, now: float, **kwargs: Any) -> StreamRecord:
            if self.start.id == "bad":
                raise RuntimeError("boom")
            return original(self, now, **kwargs)

        monkeypatch.setattr(StreamTap, "finish", finish)
        c = Collector()
        c.handle(start_msg("bad"), start_msg("good"), *sse_messages("bad", reads))
        assert c.active == 1
        c.handle(*sse_messages("good", reads))
        assert list(c.records) == ["good"]
        assert c.tap_errors == 1
        assert c.active == 0
        assert c.pipeline.open_streams == 0

    def test_tap_error_message_is_counted(self) -> None:
        c = Collector()
        c.handle((TAP_ERROR, "while reading the request"))
        assert c.tap_errors == 1
        c.handle((TAP_ERROR, "while reading the response headers"), (TAP_ERROR, "while finishing"))
        assert c.tap_errors == 3
        assert c.records == {}

    def test_unknown_message_is_counted_not_raised(self) -> None:
        c = Collector()
        c.handle((99, "what"))
        assert c.tap_errors == 1


class TestLost:
    def test_lost_finishes_every_open_exchange_as_interrupted(self) -> None:
        reads = partial_reads()
        c = Collector()
        msgs = {k: list(sse_messages(k, reads, clean_end=False, end=(T0 + 50, None, None))) for k in "ab"}
        # both open: headers and every read, no end
        c.handle(start_msg("a"), start_msg("b"), *msgs["a"][:-1], *msgs["b"][:-1])
        c.handle(start_msg("done"), *sse_messages("done", reads))
        assert c.active == 2
        c.handle((LOST, 17))
        for key in "ab":
            record = c.records[key]
            assert record.outcome is Outcome.INTERRUPTED
            assert record.tap_errors == 1
            assert record.error == "recording incomplete: observations were dropped"
            assert record.duration_ms == pytest.approx((reads[-1][0] - T0) * 1000)
            assert record.events == direct(stream_start(key), reads, clean_end=False).events
        assert c.records["done"].tap_errors == 0
        assert c.tap_errors == 2
        assert c.active == 0
        assert c.pipeline.open_streams == 0

        # their later messages are ignored; a new exchange is recorded as usual
        c.handle(
            (CHUNK, "a", T0 + 60, b'data: {"late": 1}\n\n'),
            (CHUNK, "a", T0 + 60, b""),
            (END, "a", T0 + 60, None, None),
            (END, "b", T0 + 60, Outcome.CLIENT_DISCONNECT.value, "bye"),
        )
        assert sorted(c.finished) == ["a", "b", "done"]
        assert c.records["a"].outcome is Outcome.INTERRUPTED
        c.handle(start_msg("c"), *sse_messages("c", reads))
        assert c.records["c"] == direct(stream_start("c"), reads)
        assert c.tap_errors == 2
        assert c.active == 0

    def test_lost_counts_a_broken_exchange_once(self) -> None:
        reads = partial_reads()
        c = Collector()
        c.handle(start_msg("x"), *list(sse_messages("x", reads, encoding="bogus"))[:-2])
        c.handle((LOST, 1))
        assert c.records["x"].tap_errors == 1
        assert c.records["x"].outcome is Outcome.INTERRUPTED
        assert c.tap_errors == 1

    def test_lost_with_nothing_open(self) -> None:
        c = Collector()
        c.handle((LOST, 3))
        assert c.records == {} and c.tap_errors == 0


class TestClose:
    def test_close_finishes_open_exchanges(self) -> None:
        reads = partial_reads()
        c = Collector()
        c.handle(start_msg("a"), *list(sse_messages("a", reads, clean_end=False))[:-1])
        c.handle(start_msg("b"))  # not even headers
        c.handle(start_msg("done"), *sse_messages("done", reads))
        c.pipeline.close(Outcome.INTERRUPTED, "the proxy exited mid-stream")
        a, b = c.records["a"], c.records["b"]
        assert a.outcome is Outcome.INTERRUPTED and b.outcome is Outcome.INTERRUPTED
        assert a.error == b.error == "the proxy exited mid-stream"
        assert a.tap_errors == b.tap_errors == 0
        assert a.events == direct(stream_start("a"), reads, clean_end=False).events
        assert a.duration_ms == pytest.approx((reads[-1][0] - T0) * 1000)
        assert b.status_code is None and b.events == ()
        assert c.finished.count("done") == 1
        assert c.pipeline.open_streams == 0
        assert c.active == 0
        c.pipeline.close(Outcome.INTERRUPTED, "again")  # nothing left: no second record
        assert len(c.finished) == 3


class TestMetrics:
    def test_active_gauge_and_outcome_counts(self) -> None:
        rng = random.Random(11)
        c = Collector()
        keys = [f"s{i}" for i in range(5)]
        c.handle(*(start_msg(k) for k in keys))
        assert c.active == 5
        body = (CORPUS / "openai_chat_text_include_usage.sse").read_bytes()
        for i, key in enumerate(keys):
            reads = timed_reads(split(body, rng), rng)
            if i % 2:
                end = (reads[-1][0] + 1, Outcome.UPSTREAM_DISCONNECT.value, "reset")
                c.handle(*sse_messages(key, reads[:2], clean_end=False, end=end))
            else:
                c.handle(*sse_messages(key, reads))
            assert c.active == 5 - i - 1
        assert c.active == 0
        labels = {"model": "gpt-test", "upstream": "api.example.com"}
        completed = c.sample("streamtap_streams_total", **labels, outcome="completed", finish_reason="stop")
        cut = c.sample(
            "streamtap_streams_total", **labels, outcome="upstream_disconnect", finish_reason="none"
        )
        assert (completed, cut) == (3, 2)


def _model_by_json(body: bytes | str) -> str | None:
    """What `request_model` answered when `json` alone read the body."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    model = obj.get("model") if isinstance(obj, dict) else None
    return model if isinstance(model, str) else None


PROMPT = {"role": "user", "content": "Summarize: " + "lorem ipsum dolor sit amet, " * 40_000}


@pytest.mark.parametrize(
    ("body", "model"),
    [
        (b'{"model": "gpt-4o", "stream": true}', "gpt-4o"),
        (json.dumps({"messages": [PROMPT], "model": "long-prompt"}).encode(), "long-prompt"),
        ('{"model": "as text"}', "as text"),
        (b'{"model": "nan", "temperature": NaN}', "nan"),  # orjson refuses NaN; json reads it
        (b'{"model": "big", "seed": 123456789012345678901234567890}', "big"),
        (b'{"model": "deep", "x": ' + b"[" * 500 + b"]" * 500 + b"}", "deep"),
        (b'{"model": "too deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),  # json's too
        (b'{"model": "\\ud800x"}', "\ud800x"),  # a lone surrogate's escape: orjson refuses
        (b'{"model": "a", "model": "b"}', "b"),
        (b'{"model": "\xff"}', None),  # not UTF-8
        (b'{"model": 5}', None),
        (b"[1, 2]", None),
        (b"not json", None),
        (b"", None),
    ],
    ids=lambda v: v if isinstance(v, str | type(None)) else None,
)
def test_request_model_is_what_json_reads(body: bytes | str, model: str | None) -> None:
    assert request_model(body) == model == _model_by_json(body)


@pytest.mark.parametrize("depth", [1025, 1100, 1300])
def test_a_body_nested_past_1024_levels_has_no_model(depth: int) -> None:
    """json alone reads these (its limit depends on its caller's stack): one limit, orjson's, everywhere."""
    body = b'{"model": "deeper", "x": ' + b"[" * depth + b"]" * depth + b"}"
    assert _model_by_json(body) == "deeper"
    assert request_model(body) is None
