"""`streamtap replay` with real processes: record through a proxy, replay, record the replay through a second
proxy, and compare the two recordings (content, bytes, timing). Also the other wire formats: corpus recordings
of the Responses and Anthropic APIs, imported and replayed to the real `openai` and `anthropic` SDKs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sqlalchemy.orm import Session

from harness import ProxyProcess, free_port, run_cli, wait_for
from streamtap import read
from streamtap.db.engine import make_engine
from streamtap.mock_upstream import MockUpstream
from streamtap.privacy import strip_content
from streamtap.recorder import Recorder
from streamtap.records import EventKind, Outcome, StreamRecord
from streamtap.replay import plan_replay
from streamtap.replay_select import Chooser, parse_selection
from test_cli import one_line_error

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
API_KEY = "sk-test-replay"
GAP_TOLERANCE_MS = 15.0
TTFT_TOLERANCE_MS = 30.0

# What proxy A records from the simulated provider: name -> (model, request body extras, x-mock headers).
SCENARIOS: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "slow": (
        "mock-fast",
        {"stream": True, "stream_options": {"include_usage": True}},
        {"x-mock-ttft-ms": "220", "x-mock-gap-ms": "45", "x-mock-chunks": "8"},
    ),
    "steady": (
        "mock-reasoner",
        {"stream": True},
        {"x-mock-ttft-ms": "60", "x-mock-gap-ms": "25", "x-mock-chunks": "6"},
    ),
    "disconnect": ("mock-fast", {"stream": True}, {"x-mock-fault": "disconnect", "x-mock-gap-ms": "30"}),
    "rate_limited": ("mock-fault-http-429", {"stream": True}, {}),
    "whole": ("mock-fast", {"stream": False}, {"x-mock-ttft-ms": "50"}),
}
# Corpus recordings imported into the same database: name -> (file, path, model to record).
IMPORTS = {
    "thinking": ("anthropic_messages_thinking_signature.sse", "/v1/messages", "claude-thinking"),
    "tools": ("anthropic_messages_parallel_tool_use_input_json_delta.sse", "/v1/messages", "claude-tools"),
    "resp_text": ("openai_responses_text.sse", "/v1/responses", "gpt-resp-text"),
    "resp_tool": ("openai_responses_function_call.sse", "/v1/responses", "gpt-resp-tool"),
}


def messages(name: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"scenario {name}"}]


class ReplayProcess:
    """`streamtap replay` in its own process on a free 127.0.0.1 port."""

    def __init__(self, db_url: str, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "streamtap",
            "replay",
            "--db",
            db_url,
            "--port",
            str(self.port),
            *args,
        ]
        self.log_path = workdir / f"replay-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ReplayProcess:
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"replay exited: {self.log_path.read_text()}")
            return httpx.get(self.url + "/health", timeout=1).status_code == 200

        try:
            wait_for(up, 20, what="the replay server")
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- the recordings -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay")


@pytest.fixture(scope="module")
def recorded_url(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'recorded.db'}"


def record_scenario(client: openai.OpenAI, name: str) -> None:
    model, extra, headers = SCENARIOS[name]
    kwargs: dict[str, Any] = {"model": model, "messages": messages(name), "extra_headers": headers, **extra}
    try:
        result = client.chat.completions.create(**kwargs)
        if extra["stream"]:
            for _ in result:
                pass
    except (openai.APIConnectionError, openai.RateLimitError):
        assert name in ("disconnect", "rate_limited")


@pytest.fixture(scope="module")
def originals(workdir: Path, recorded_url: str) -> dict[str, StreamRecord]:
    """The simulated provider's answers recorded by proxy A, plus the imported corpus recordings and one
    recording stored without bytes (as --capture metadata stores it), by scenario name."""
    with (
        MockUpstream(profile="fast", seed=11) as upstream,
        ProxyProcess(recorded_url, workdir, upstream=upstream.url, metrics=False) as proxy_a,
        openai.OpenAI(base_url=proxy_a.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30) as client,
    ):
        for name in SCENARIOS:
            record_scenario(client, name)
        proxy_a.stop()  # SIGTERM: everything queued is written
    for file, path, model in IMPORTS.values():
        args = ["--path", path, "--model", model, "--gap-ms", "5"]
        result = run_cli("import", str(CORPUS / file), "--db", recorded_url, *args)
        assert result.returncode == 0, result.stderr
        assert "imported 1 exchange" in result.stderr
    engine = make_engine(recorded_url)
    try:
        with Session(engine) as session:
            recs = read.get_streams(session)
        by_name: dict[str, StreamRecord] = {}
        for rec in recs:
            body = json.loads(rec.request_body or "{}")
            text = body.get("messages", [{}])[0].get("content", "")
            if rec.proxy_instance == "import":
                by_name[next(n for n, (_, _, model) in IMPORTS.items() if model == rec.request_model)] = rec
            elif text.startswith("scenario "):
                by_name[text.removeprefix("scenario ")] = rec
        assert set(by_name) == set(SCENARIOS) | set(IMPORTS)
        copy = dataclasses.replace(
            by_name["steady"], id=uuid.uuid4().hex, request_model="mock-metadata", model="mock-metadata"
        )
        by_name["metadata_only"] = strip_content(copy)
        # the client went away after five events: the replay leaves the connection open after them
        by_name["client_left"] = dataclasses.replace(
            copy,
            id=uuid.uuid4().hex,
            outcome=Outcome.CLIENT_DISCONNECT,
            events=copy.events[:5],
            request_body=None,
        )
        recorder = Recorder(engine)
        recorder.submit(by_name["metadata_only"])
        recorder.submit(by_name["client_left"])
        assert recorder.close()
    finally:
        engine.dispose()
    return by_name


@pytest.fixture(scope="module")
def replay(originals: dict[str, StreamRecord], recorded_url: str, workdir: Path) -> Iterator[ReplayProcess]:
    """Replays the recording with the request's messages, else the latest of the requested model."""
    with ReplayProcess(recorded_url, workdir, "--select", "match") as r:
        yield r


@pytest.fixture(scope="module")
def replayed_url(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'replayed.db'}"


@pytest.fixture(scope="module")
def proxy_b(replay: ReplayProcess, replayed_url: str, workdir: Path) -> Iterator[ProxyProcess]:
    """The second proxy, in front of the replay server."""
    with ProxyProcess(replayed_url, workdir, upstream=replay.url, metrics=False) as p:
        yield p


@pytest.fixture
def client(proxy_b: ProxyProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy_b.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30) as c:
        yield c


def replayed(
    db_url: str, original: StreamRecord, seen: set[str] | None = None, timeout: float = 15
) -> StreamRecord:
    """The second proxy's newest record of a replay of `original` (its body is the original's), leaving out
    the records in `seen` and adding the one found."""
    engine = make_engine(db_url)
    body = b"".join(e.raw for e in original.events) + (original.response_body or "").encode()
    seen = set() if seen is None else seen

    def find() -> StreamRecord | None:
        with Session(engine) as session:
            for rec in read.get_streams(session, last=50):
                if rec.outcome in (Outcome.IN_PROGRESS, Outcome.INTERRUPTED) or rec.id in seen:
                    continue
                if b"".join(e.raw for e in rec.events) + (rec.response_body or "").encode() == body:
                    return rec
        return None

    try:
        found = wait_for(find, timeout, what=f"the replay of {original.id}")
    finally:
        engine.dispose()
    seen.add(found.id)
    return found


def same_interpretation(got: StreamRecord, want: StreamRecord) -> None:
    assert got.api == want.api
    assert got.status_code == want.status_code
    assert got.outcome is want.outcome
    assert got.choices == want.choices
    assert got.finish_reason == want.finish_reason
    assert got.usage == want.usage
    assert [e.raw for e in got.events] == [e.raw for e in want.events]
    assert [e.kind for e in got.events] == [e.kind for e in want.events]


def timing_errors(got: StreamRecord, want: StreamRecord) -> list[str]:
    """How the replay's clock differs from the recording's, beyond the tolerances (empty: the same)."""
    assert got.ttft_ms is not None and want.ttft_ms is not None
    assert len(got.gaps_ms) == len(want.gaps_ms) > 0
    errors = []
    if abs(got.ttft_ms - want.ttft_ms) >= TTFT_TOLERANCE_MS:
        errors.append(f"TTFT {got.ttft_ms:.1f} ms, recorded {want.ttft_ms:.1f} ms")
    for i, (a, b) in enumerate(zip(got.gaps_ms, want.gaps_ms, strict=True)):
        if abs(a - b) >= GAP_TOLERANCE_MS:
            errors.append(f"gap {i}: {a:.1f} ms, recorded {b:.1f} ms")
    return errors


# -- chat completions from the simulated provider -------------------------------------------------------
@pytest.mark.parametrize("name", ["slow", "steady"])
def test_replay_through_a_second_proxy_records_the_same_stream(
    name: str, client: openai.OpenAI, originals: dict[str, StreamRecord], replayed_url: str
) -> None:
    original = originals[name]
    model, extra, _ = SCENARIOS[name]
    seen: set[str] = set()
    errors: list[str] = []
    # On a busy machine another process can delay one event: a few tries, and one must match.
    for _attempt in range(3):
        stream = client.chat.completions.create(model=model, messages=messages(name), **extra)  # type: ignore[call-overload]
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert stream.response.headers["x-streamtap-replay-of"] == original.id

        second = replayed(replayed_url, original, seen)
        assert text == original.choices[0].content == second.choices[0].content
        assert text  # the recording had content to replay
        same_interpretation(second, original)
        assert second.request_model == original.request_model
        errors = timing_errors(second, original)
        if not errors:
            break
    assert not errors, errors


def test_non_streamed_recording_answers_its_json_body(
    client: openai.OpenAI, originals: dict[str, StreamRecord], replayed_url: str
) -> None:
    original = originals["whole"]
    completion = client.chat.completions.create(model="mock-fast", messages=messages("whole"), stream=False)
    assert completion.choices[0].message.content == original.choices[0].content
    second = replayed(replayed_url, original)
    assert second.stream is False and second.response_body == original.response_body
    same_interpretation(second, original)


def test_upstream_disconnect_cuts_the_client(
    client: openai.OpenAI, originals: dict[str, StreamRecord], replayed_url: str
) -> None:
    original = originals["disconnect"]
    assert original.outcome is Outcome.UPSTREAM_DISCONNECT
    received = []
    with pytest.raises(openai.APIConnectionError):
        stream = client.chat.completions.create(
            model="any-model",
            messages=messages("disconnect"),
            stream=True,
            extra_headers={"x-streamtap-replay-id": original.id},
        )
        for chunk in stream:
            received.append(chunk)
    assert len(received) == sum(1 for e in original.events if e.kind is EventKind.DATA) > 0
    second = replayed(replayed_url, original)
    assert second.outcome is Outcome.UPSTREAM_DISCONNECT
    same_interpretation(second, original)


def test_http_error_replays_its_status(
    client: openai.OpenAI, originals: dict[str, StreamRecord], replayed_url: str
) -> None:
    original = originals["rate_limited"]
    assert original.outcome is Outcome.HTTP_ERROR and original.status_code == 429
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="mock-fault-http-429", messages=messages("x"), stream=True)
    assert raised.value.response.headers["x-streamtap-replay-of"] == original.id
    assert raised.value.response.headers["content-type"] == "application/json"
    second = replayed(replayed_url, original)
    assert second.status_code == 429 and second.error == original.error
    assert second.response_body == original.response_body


def test_speed_zero_is_as_fast_as_possible(
    originals: dict[str, StreamRecord], recorded_url: str, workdir: Path, replay: ReplayProcess
) -> None:
    original = originals["slow"]
    assert original.duration_ms is not None and original.duration_ms > 400
    headers = {"x-streamtap-replay-id": original.id}

    def fetch(url: str) -> tuple[bytes, float]:
        started = time.monotonic()
        with httpx.Client() as http:
            response = http.post(url + "/v1/chat/completions", json={}, headers=headers, timeout=10)
        return response.content, (time.monotonic() - started) * 1000

    body = b"".join(e.raw for e in original.events)
    with ReplayProcess(recorded_url, workdir, "--speed", "0") as fast:
        fast_body, fast_ms = fetch(fast.url)
    real_body, real_ms = fetch(replay.url)
    assert fast_body == real_body == body
    assert real_ms >= original.duration_ms * 0.95  # the recorded clock, never faster
    assert fast_ms < original.duration_ms / 2


# -- other wire formats: corpus recordings to the real SDKs ----------------------------------------------
@pytest.fixture
def claude(proxy_b: ProxyProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=proxy_b.url, api_key="sk-ant-test", max_retries=0, timeout=30) as c:
        yield c


def corpus_replay(name: str, originals: dict[str, StreamRecord], replayed_url: str, api: str) -> StreamRecord:
    original = originals[name]
    second = replayed(replayed_url, original)
    assert second.api == original.api == api
    assert second.outcome is Outcome.COMPLETED
    same_interpretation(second, original)
    assert b"".join(e.raw for e in second.events) == (CORPUS / IMPORTS[name][0]).read_bytes()
    return second


def test_anthropic_thinking_stream(
    claude: anthropic.Anthropic, originals: dict[str, StreamRecord], replayed_url: str
) -> None:
    with claude.messages.stream(
        model="claude-thinking", max_tokens=2048, messages=[{"role": "user", "content": "How do I cross?"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 282
    assert [b.type for b in final.content] == ["thinking", "text"]
    second = corpus_replay("thinking", originals, replayed_url, "anthropic.messages")
    assert "cross" in text and "Always prioritize safety over speed when crossing streets." in text
    assert second.choices[0].content == text
    assert second.choices[0].reasoning_content == final.content[0].thinking  # type: ignore[union-attr]
    assert second.finish_reason == "end_turn"
    assert second.usage is not None and second.usage.completion_tokens == 282


def test_anthropic_parallel_tool_use(
    claude: anthropic.Anthropic, originals: dict[str, StreamRecord], replayed_url: str
) -> None:
    events = claude.messages.create(
        model="claude-tools", max_tokens=1024, messages=[{"role": "user", "content": "2+3, 2*3"}], stream=True
    )
    partial: dict[int, str] = {}
    names: dict[int, str] = {}
    stop_reason = None
    for event in events:
        if event.type == "content_block_start" and event.content_block.type == "tool_use":
            names[event.index] = event.content_block.name
        elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            partial[event.index] = partial.get(event.index, "") + event.delta.partial_json
        elif event.type == "message_delta":
            stop_reason = event.delta.stop_reason
    assert stop_reason == "tool_use"
    inputs = {names[i]: json.loads(partial[i]) for i in names}
    assert inputs == {"add": {"a": 2, "b": 3}, "multiply": {"a": 2, "b": 3}}
    second = corpus_replay("tools", originals, replayed_url, "anthropic.messages")
    calls = {tc.name: json.loads(tc.arguments) for tc in second.choices[0].tool_calls}
    assert calls == inputs
    assert second.finish_reason == "tool_use"


def test_responses_text_stream(
    client: openai.OpenAI, originals: dict[str, StreamRecord], replayed_url: str
) -> None:
    stream = client.responses.create(model="gpt-resp-text", input="Capital of France?", stream=True)
    deltas, usage = [], None
    for event in stream:
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            usage = event.response.usage
    assert "".join(deltas) == "The capital of France is Paris."
    second = corpus_replay("resp_text", originals, replayed_url, "openai.responses")
    assert second.choices[0].content == "".join(deltas)
    assert second.finish_reason == "stop"
    assert usage is not None and second.usage is not None
    assert (second.usage.prompt_tokens, second.usage.completion_tokens) == (
        usage.input_tokens,
        usage.output_tokens,
    )


def test_responses_function_call(
    client: openai.OpenAI, originals: dict[str, StreamRecord], replayed_url: str
) -> None:
    with client.responses.stream(model="gpt-resp-tool", input="Capital of France?") as stream:
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_capital"
    assert json.loads(call.arguments) == {"country": "France"}
    second = corpus_replay("resp_tool", originals, replayed_url, "openai.responses")
    assert second.finish_reason == "tool_calls"
    assert [(tc.name, tc.arguments) for tc in second.choices[0].tool_calls] == [
        ("get_capital", call.arguments)
    ]
    assert final.usage is not None and second.usage is not None
    assert second.usage.total_tokens == final.usage.total_tokens == 271


# -- selection ------------------------------------------------------------------------------------------
def test_selected_ids_take_turns_and_the_header_picks_one(
    originals: dict[str, StreamRecord], recorded_url: str, workdir: Path
) -> None:
    slow, steady, whole = originals["slow"].id, originals["steady"].id, originals["whole"].id
    with (
        ReplayProcess(
            recorded_url, workdir, "--speed", "0", "--select", f"id:{slow}", "--select", f"id:{steady[:8]}"
        ) as r,
        httpx.Client(base_url=r.url, timeout=10) as http,
    ):

        def answered(headers: dict[str, str] | None = None) -> str:
            response = http.post("/v1/chat/completions", json={"model": "whatever"}, headers=headers)
            assert response.status_code == 200
            return response.headers["x-streamtap-replay-of"]

        assert [answered() for _ in range(4)] == [slow, steady, slow, steady]
        assert answered({"x-streamtap-replay-id": whole}) == whole

        missing = http.post("/v1/chat/completions", json={}, headers={"x-streamtap-replay-id": "0" * 32})
        assert missing.status_code == 404 and "no stream with id" in missing.json()["error"]["message"]

        metadata_id = originals["metadata_only"].id
        no_bytes = http.post("/v1/chat/completions", json={}, headers={"x-streamtap-replay-id": metadata_id})
        assert no_bytes.status_code == 404 and no_bytes.headers["x-streamtap-replay-of"] == metadata_id
        assert "--capture metadata" in no_bytes.json()["error"]["message"]

        left = originals["client_left"]
        received = b""
        with (
            pytest.raises(httpx.ReadTimeout),
            http.stream(
                "POST", "/v1/chat/completions", headers={"x-streamtap-replay-id": left.id}, timeout=0.5
            ) as held,
        ):
            for chunk in held.iter_raw():
                received += chunk
        assert received == b"".join(e.raw for e in left.events)

        # the selected ids are chat recordings: nothing to answer the Responses API with
        other_api = http.post("/v1/responses", json={"model": "gpt-resp-text"})
        assert other_api.status_code == 404
        assert other_api.json()["error"]["message"] == (
            f"no openai.responses recording selected by id:{slow} id:{steady} to replay"
        )


@pytest.fixture
def chooser(originals: dict[str, StreamRecord], recorded_url: str) -> Iterator[Callable[..., Chooser]]:
    """`chooser(*specs)`: what a replay server with these --select specs uses to pick recordings."""
    engine = make_engine(recorded_url)
    yield lambda *specs: Chooser(engine, parse_selection(specs))
    engine.dispose()


CHAT = "/v1/chat/completions"


def test_default_is_the_latest_recording_of_the_requested_model(
    chooser: Callable[..., Chooser], originals: dict[str, StreamRecord]
) -> None:
    default = chooser()
    assert default.choose(CHAT, {"model": "mock-reasoner"}, None).id == originals["steady"].id
    # three mock-fast recordings: the latest answers, every time
    picked = {default.choose(CHAT, {"model": "mock-fast"}, None).id for _ in range(3)}
    assert picked == {originals["whole"].id}
    # the requested model was recorded for neither: the model the upstream reported
    assert (
        default.choose("/v1/messages", {"model": "claude-sonnet-4-20250514"}, None).id
        == originals["tools"].id
    )
    assert default.choose("/v1/responses", {"model": "gpt-resp-tool"}, None).id == originals["resp_tool"].id


def test_match_outcome_and_model_selection(
    chooser: Callable[..., Chooser], originals: dict[str, StreamRecord]
) -> None:
    match = chooser("match")
    # the recording with the request's messages, whatever model is asked
    assert match.choose(CHAT, {"model": "mock-fast", "messages": messages("steady")}, None).id == (
        originals["steady"].id
    )
    # no recording has these messages: the model rule
    assert (
        match.choose(CHAT, {"model": "mock-fast", "messages": messages("new")}, None).id
        == originals["whole"].id
    )

    cut = chooser("outcome:upstream_disconnect", "model:*")
    assert cut.choose(CHAT, {"model": "x"}, None).id == originals["disconnect"].id
    # an explicit selection takes turns, oldest first
    completed = chooser("model:mock-fast", "outcome:completed")
    picks = [completed.choose(CHAT, {"model": "ignored"}, None).id for _ in range(3)]
    assert picks == [originals["slow"].id, originals["whole"].id, originals["slow"].id]


# -- the command line -----------------------------------------------------------------------------------
def test_replay_cli_errors(originals: dict[str, StreamRecord], recorded_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        one_line_error(run_cli("replay", "--db", recorded_url, "--port", port), "port", "in use")
    one_line_error(run_cli("replay", "--db", recorded_url, "--select", "id:" + "f" * 32), "no stream with id")
    one_line_error(run_cli("replay", "--db", recorded_url, "--select", "colour:red"), "bad --select")
    one_line_error(
        run_cli("replay", "--db", recorded_url, "--select", "outcome:fine"), "the outcome is one of"
    )


# -- the plan, unit-level --------------------------------------------------------------------------------
def test_plan_scales_the_recorded_clock(originals: dict[str, StreamRecord]) -> None:
    rec = originals["slow"]
    real, double, instant = plan_replay(rec, 1.0), plan_replay(rec, 2.0), plan_replay(rec, 0)
    assert real.head_at == pytest.approx(rec.ttfb_ms / 1000)  # type: ignore[operator]
    assert [t for t, _ in double.writes] == pytest.approx([t / 2 for t, _ in real.writes])
    assert {t for t, _ in instant.writes} == {0.0} and instant.head_at == 0.0
    assert b"".join(data for _, data in real.writes) == b"".join(e.raw for e in rec.events)
    assert real.end == "clean" and plan_replay(originals["disconnect"], 1.0).end == "abort"
    cut_early = dataclasses.replace(originals["disconnect"], status_code=None, events=())
    assert plan_replay(cut_early, 1.0).status is None and plan_replay(cut_early, 1.0).end == "abort"
    assert plan_replay(originals["client_left"], 1.0).end == "hold"
    whole = originals["whole"]
    assert whole.response_body and plan_replay(whole, 1.0).length == len(whole.response_body.encode())
