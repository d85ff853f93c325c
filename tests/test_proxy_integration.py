"""The real thing: the openai SDK -> `streamtap proxy` (a real mitmproxy process) -> the mock upstream.

Asserts what was recorded against what the upstream says it sent (content, usage, finish reasons, send
times) and what the client received (bytes).
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy.orm import Session

from harness import ProxyProcess, carries, find_record, run_cli, wait_for
from streamtap import read
from streamtap.db.engine import make_engine
from streamtap.mock_upstream import MockUpstream
from streamtap.records import EventKind, Outcome, StreamRecord
from test_read_export import TOP_KEYS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    mock = MockUpstream(profile="fast", seed=7)
    mock.start()
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def db_url(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'tap.db'}"


@pytest.fixture(scope="module")
def proxy(upstream: MockUpstream, workdir: Path, db_url: str) -> Iterator[ProxyProcess]:
    with ProxyProcess(db_url, workdir, upstream=upstream.url) as p:
        yield p


@pytest.fixture
def client(proxy: ProxyProcess) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test-integration", max_retries=0, timeout=30)
    yield c
    c.close()


def recorded(db_url: str, completion_id: str, timeout: float = 15) -> StreamRecord:
    """The finished record of the exchange whose body carries this completion id."""
    rec: StreamRecord = find_record(
        db_url, carries(completion_id), timeout=timeout, what=f"the record of {completion_id}"
    )
    return rec


def sent_gaps_ms(upstream: MockUpstream, completion_id: str) -> list[float]:
    sends = [t for t, _index, tokens in upstream.log[completion_id].sends if tokens]
    return [(b - a) * 1000 for a, b in itertools.pairwise(sends)]


def test_sync_stream_is_recorded_exactly(client: openai.OpenAI, upstream: MockUpstream, db_url: str) -> None:
    stream = client.chat.completions.create(
        model="mock-fast",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-gap-ms": "30", "x-mock-chunks": "12"},
    )
    text = []
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    completion_id = stream.response.headers["x-mock-completion-id"]
    rec = recorded(db_url, completion_id)

    assert rec.outcome is Outcome.COMPLETED
    assert rec.stream is True
    assert rec.request_model == "mock-fast"
    assert rec.model == "mock-fast"
    assert rec.choices[0].content == "".join(text)
    assert rec.choices[0].finish_reason == "stop"
    assert usage is not None and rec.usage is not None
    assert (rec.usage.prompt_tokens, rec.usage.completion_tokens, rec.usage.total_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    )
    assert rec.api_key_fp is not None and rec.api_key_fp.startswith("sha256:")
    kinds = [e.kind for e in rec.events]
    assert kinds[-1] is EventKind.DONE
    assert kinds.count(EventKind.DATA) == len(kinds) - 1
    assert rec.ttfb_ms is not None and rec.ttft_ms is not None and rec.duration_ms is not None
    assert 0 < rec.ttfb_ms <= rec.ttft_ms <= rec.duration_ms
    assert rec.ttfc_ms == rec.ttft_ms  # no reasoning: the first token is content

    # recorded gaps follow the upstream's real send gaps within a few milliseconds
    sent = sent_gaps_ms(upstream, completion_id)
    got = rec.gaps_ms
    assert len(got) == len(sent) == 11
    diffs = sorted(abs(a - b) for a, b in zip(got, sent, strict=True))
    # "within a few milliseconds": typically well under 1 ms; the bounds leave room for a shared, noisy
    # machine (one late wake-up of the proxy's loop) while still catching buffering or a wrong clock,
    # which would put whole gaps (30 ms here) off
    assert diffs[len(diffs) // 2] < 3.0
    assert diffs[-1] < 25.0
    assert abs(sum(got) - sum(sent)) < 10.0


def test_ttft_follows_the_upstream_first_token_delay(
    client: openai.OpenAI, upstream: MockUpstream, db_url: str
) -> None:
    stream = client.chat.completions.create(
        model="mock-fast",
        messages=[{"role": "user", "content": "slow start"}],
        stream=True,
        extra_headers={"x-mock-ttft-ms": "250", "x-mock-chunks": "3"},
    )
    for _ in stream:
        pass
    completion_id = stream.response.headers["x-mock-completion-id"]
    rec = recorded(db_url, completion_id)
    log = upstream.log[completion_id]
    true_ttft_ms = (log.first_token_at - log.request_received) * 1000
    assert rec.ttft_ms is not None
    assert true_ttft_ms >= 240
    # The proxy saw the request before the upstream did, and the token after it was sent. The mock
    # stamps `first_token_at` only once its write() has returned, and the proxy may read the token
    # before that: a millisecond of slack for that race, far below the 250 ms being measured.
    assert rec.ttft_ms >= true_ttft_ms - 1.0
    assert rec.ttft_ms - true_ttft_ms < 100  # generous: no timing claims in the test suite, only sanity


def test_model_of_a_request_body_over_one_mib(client: openai.OpenAI, db_url: str) -> None:
    """The stored request body stops at 1 MiB; the model is still read from the whole body."""
    prompt = "long context " * 160_000  # ~2 MiB, the model field after it in the JSON
    stream = client.chat.completions.create(
        model="mock-fast",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        extra_headers={"x-mock-chunks": "2"},
    )
    for _ in stream:
        pass
    rec = recorded(db_url, stream.response.headers["x-mock-completion-id"])
    assert rec.request_model == "mock-fast"
    assert rec.request_body is not None and len(rec.request_body) == 1 << 20


def test_async_stream_and_reasoning(proxy: ProxyProcess, db_url: str) -> None:
    async def go() -> tuple[str, str, str]:
        async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="sk-async", max_retries=0) as c:
            stream = await c.chat.completions.create(
                model="mock-reasoner",
                messages=[{"role": "user", "content": "think"}],
                stream=True,
                extra_headers={"x-mock-chunks": "6", "x-mock-gap-ms": "5"},
            )
            content, reasoning = [], []
            async for chunk in stream:
                for choice in chunk.choices:
                    delta = choice.delta
                    content.append(delta.content or "")
                    reasoning.append(getattr(delta, "reasoning_content", None) or "")
            return "".join(content), "".join(reasoning), stream.response.headers["x-mock-completion-id"]

    content, reasoning, completion_id = asyncio.run(go())
    rec = recorded(db_url, completion_id)
    assert reasoning and rec.choices[0].reasoning_content == reasoning
    assert rec.choices[0].content == content
    assert rec.ttft_ms is not None and rec.ttfc_ms is not None
    assert rec.ttft_ms < rec.ttfc_ms  # reasoning comes first and counts for TTFT, not for TTFC


@pytest.mark.parametrize("use_async", [False, True])
def test_non_streamed_completion_is_recorded(proxy: ProxyProcess, db_url: str, use_async: bool) -> None:
    if use_async:

        async def go() -> openai.types.chat.ChatCompletion:
            async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="sk-x", max_retries=0) as c:
                return await c.chat.completions.create(
                    model="mock-fast", messages=[{"role": "user", "content": "hi"}]
                )

        completion = asyncio.run(go())
    else:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-x", max_retries=0) as c:
            completion = c.chat.completions.create(
                model="mock-fast", messages=[{"role": "user", "content": "hi"}]
            )
    rec = recorded(db_url, completion.id)
    assert rec.stream is False
    assert rec.outcome is Outcome.COMPLETED
    assert rec.choices[0].content == completion.choices[0].message.content
    assert rec.choices[0].finish_reason == completion.choices[0].finish_reason
    assert completion.usage is not None and rec.usage is not None
    assert rec.usage.completion_tokens == completion.usage.completion_tokens
    assert rec.ttft_ms is None and rec.duration_ms is not None and rec.ttfb_ms is not None


def test_parallel_tool_calls_assemble_like_the_sdk(client: openai.OpenAI, db_url: str) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
            },
        },
    ]
    with client.chat.completions.stream(
        model="mock-fast",
        messages=[{"role": "user", "content": "use the tools"}],
        tools=tools,  # type: ignore[arg-type]
        extra_headers={"x-mock-tools": "2"},
    ) as helper:
        final = helper.get_final_completion()
    rec = recorded(db_url, final.id)
    sdk_calls = final.choices[0].message.tool_calls or []
    assert len(sdk_calls) == 2
    assert [(t.id, t.name, t.arguments) for t in rec.choices[0].tool_calls] == [
        (t.id, t.function.name, t.function.arguments)
        for t in sdk_calls  # type: ignore[union-attr]
    ]
    assert all(isinstance(json.loads(t.arguments), dict) for t in rec.choices[0].tool_calls)
    assert rec.choices[0].finish_reason == "tool_calls"
    assert rec.outcome is Outcome.COMPLETED
    assert rec.ttft_ms is not None  # tool-call arguments are generated tokens


def test_n2_choices_by_index(client: openai.OpenAI, db_url: str) -> None:
    stream = client.chat.completions.create(
        model="mock-fast",
        messages=[{"role": "user", "content": "two answers"}],
        stream=True,
        n=2,
        extra_headers={"x-mock-chunks": "5"},
    )
    texts: dict[int, str] = {0: "", 1: ""}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    rec = recorded(db_url, stream.response.headers["x-mock-completion-id"])
    assert [c.index for c in rec.choices] == [0, 1]
    assert [c.content for c in rec.choices] == [texts[0], texts[1]]
    assert all(c.finish_reason == "stop" for c in rec.choices)


def test_client_bytes_equal_recorded_bytes(proxy: ProxyProcess, db_url: str) -> None:
    body = {
        "model": "mock-fast",
        "stream": True,
        "messages": [{"role": "user", "content": "bytes"}],
        "stream_options": {"include_usage": True},
    }
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", proxy.url + "/v1/chat/completions", json=body, headers={"x-mock-fault": "keepalive"}
        ) as resp,
    ):
        received = b"".join(resp.iter_raw())
        completion_id = resp.headers["x-mock-completion-id"]
    rec = recorded(db_url, completion_id)
    assert b"".join(e.raw for e in rec.events) == received
    assert any(e.kind is EventKind.COMMENT for e in rec.events)
    assert all(not e.tokens for e in rec.events if e.kind is EventKind.COMMENT)


def test_gzip_stream_passes_through_compressed_and_is_recorded_decoded(
    proxy: ProxyProcess, db_url: str
) -> None:
    body = {"model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": "zip"}]}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            json=body,
            headers={"x-mock-fault": "gzip", "accept-encoding": "gzip"},
        ) as resp,
    ):
        assert resp.headers.get("content-encoding") == "gzip"
        wire = b"".join(resp.iter_raw())
        completion_id = resp.headers["x-mock-completion-id"]
    rec = recorded(db_url, completion_id)
    assert rec.content_encoding == "gzip"
    decoded = b"".join(e.raw for e in rec.events)
    assert gzip.decompress(wire) == decoded
    assert rec.outcome is Outcome.COMPLETED and rec.choices[0].content


@pytest.mark.parametrize(
    ("fault", "outcome", "partial"),
    [
        ("error-event", Outcome.MODEL_ERROR, True),
        ("error-data", Outcome.MODEL_ERROR, True),
        ("disconnect", Outcome.UPSTREAM_DISCONNECT, True),
        ("no-finish", Outcome.TRUNCATED, True),
        ("http-429", Outcome.HTTP_ERROR, False),
        ("http-500", Outcome.HTTP_ERROR, False),
        ("non-json", Outcome.COMPLETED, True),
        ("invalid-utf8", Outcome.COMPLETED, True),
    ],
)
def test_faults_are_recorded_with_their_outcome(
    proxy: ProxyProcess, db_url: str, fault: str, outcome: Outcome, partial: bool
) -> None:
    body = {"model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": fault}]}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", proxy.url + "/v1/chat/completions", json=body, headers={"x-mock-fault": fault}
        ) as resp,
    ):
        completion_id = resp.headers.get("x-mock-completion-id")
        try:
            received = b"".join(resp.iter_raw())
        except httpx.HTTPError:
            received = None  # the cut reached the client too
        status = resp.status_code
    assert completion_id, "the mock names every completion"
    if outcome is Outcome.HTTP_ERROR:
        rec = recorded_by_status(db_url, status)
        assert rec.status_code == status
        assert rec.error and str(status) in rec.error
        return
    rec = recorded(db_url, completion_id)
    assert rec.outcome is outcome, (rec.outcome, rec.error)
    if partial:
        assert rec.choices and rec.choices[0].content
    if received is not None:
        assert b"".join(e.raw for e in rec.events) == received
    if outcome is Outcome.MODEL_ERROR:
        assert rec.error
    if fault in ("non-json", "invalid-utf8"):
        assert any(e.kind is EventKind.MALFORMED for e in rec.events) or fault == "invalid-utf8"


def recorded_by_status(db_url: str, status: int) -> StreamRecord:
    rec: StreamRecord = find_record(
        db_url,
        lambda r: r.status_code == status and r.outcome is Outcome.HTTP_ERROR,
        last=20,
        timeout=15,
        what=f"an http_error record with status {status}",
    )
    return rec


def test_client_disconnect_mid_stream(proxy: ProxyProcess, upstream: MockUpstream, db_url: str) -> None:
    body = {"model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": "bye"}]}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            json=body,
            headers={"x-mock-chunks": "200", "x-mock-gap-ms": "20"},
        ) as resp,
    ):
        completion_id = resp.headers["x-mock-completion-id"]
        got = b""
        for part in resp.iter_raw():
            got += part
            if got.count(b"data:") >= 4:
                break
    rec = recorded(db_url, completion_id)
    assert rec.outcome is Outcome.CLIENT_DISCONNECT
    assert rec.choices and rec.choices[0].content  # what had arrived is kept
    assert rec.choices[0].finish_reason is None
    # the proxy hung up on the upstream too, so it stopped generating
    wait_for(lambda: upstream.log[completion_id].finished_at is not None, 10, what="the upstream to stop")
    assert len(upstream.log[completion_id].sends) < 200


def test_credentials_are_never_stored(proxy: ProxyProcess, db_url: str, workdir: Path) -> None:
    secret = "sk-SECRET-do-not-store-4242"
    body = {"model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": "creds"}]}
    with httpx.Client(timeout=30) as http:
        r = http.post(
            proxy.url + f"/v1/chat/completions?api_key={secret}&key={secret}",
            json=body,
            headers={
                "authorization": f"Bearer {secret}",
                "api-key": secret,
                "x-api-key": secret,
                "cookie": f"session={secret}",
            },
        )
        completion_id = r.headers["x-mock-completion-id"]
    rec = recorded(db_url, completion_id)
    assert secret not in rec.url
    exported = run_cli("export", "--db", db_url, "--last", "50")
    assert exported.returncode == 0, exported.stderr
    assert secret not in exported.stdout
    db_file = Path(db_url.removeprefix("sqlite:///"))
    conn = sqlite3.connect(db_file)
    try:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    blob = value if isinstance(value, bytes) else str(value).encode()
                    assert secret.encode() not in blob, table
    finally:
        conn.close()
    for path in workdir.glob("tap.db*"):
        assert secret.encode() not in path.read_bytes(), path


def test_export_and_stats_cli(proxy: ProxyProcess, client: openai.OpenAI, db_url: str) -> None:
    stream = client.chat.completions.create(
        model="mock-fast", messages=[{"role": "user", "content": "x"}], stream=True
    )
    for _ in stream:
        pass
    completion_id = stream.response.headers["x-mock-completion-id"]
    rec = recorded(db_url, completion_id)

    out = run_cli("export", "--db", db_url, "--id", rec.id)
    assert out.returncode == 0, out.stderr
    [obj] = json.loads(out.stdout)
    assert list(obj) == TOP_KEYS  # the public export shape, in order
    assert obj["id"] == rec.id and obj["outcome"] == "completed" and obj["stream"] is True
    assert obj["events"][-1]["kind"] == "done"

    sse = run_cli("export", "--db", db_url, "--id", rec.id, "--format", "sse")
    assert sse.returncode == 0
    assert sse.stdout.encode() == b"".join(e.raw for e in rec.events)

    last = run_cli("export", "--db", db_url, "--last", "2")
    assert len(json.loads(last.stdout)) == 2

    stats = run_cli("stats", "--db", db_url, "--json")
    assert stats.returncode == 0, stats.stderr
    s = json.loads(stats.stdout)
    assert s["count"] >= 1 and s["outcomes"]["completed"] >= 1
    assert s["ttft_ms"]["p50"] is not None and "mock-fast" in s["by_model"]

    human = run_cli("stats", "--db", db_url)
    assert human.returncode == 0 and "mock-fast" in human.stdout


def test_metrics_endpoint_counts_streams(proxy: ProxyProcess, client: openai.OpenAI) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def total() -> float:
        families = {f.name: f for f in text_string_to_metric_families(proxy.metrics_text())}
        fam = families.get("streamtap_streams")
        return sum(s.value for s in fam.samples if s.name == "streamtap_streams_total") if fam else 0.0

    before = total()
    for _ in range(3):
        for _chunk in client.chat.completions.create(
            model="mock-fast", stream=True, messages=[{"role": "user", "content": "m"}]
        ):
            pass
    wait_for(lambda: total() >= before + 3, 10, what="streams_total to grow by 3")


@pytest.mark.parametrize(("setting", "loop"), [(None, "asyncio"), ("uvloop", "uvloop")])
def test_event_loop(
    upstream: MockUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, loop: str
) -> None:
    """asyncio's loop runs mitmproxy by default; STREAMTAP_EVENT_LOOP=uvloop asks for uvloop. Either way a
    stream goes through and is recorded."""
    monkeypatch.delenv("STREAMTAP_EVENT_LOOP", raising=False)
    db = f"sqlite:///{tmp_path / 'loop.db'}"
    env = {"STREAMTAP_EVENT_LOOP": setting} if setting else {}
    with ProxyProcess(db, tmp_path, upstream=upstream.url, env=env) as proxy:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0) as c:
            text = "".join(
                chunk.choices[0].delta.content or ""
                for chunk in c.chat.completions.create(
                    model="mock-fast",
                    stream=True,
                    messages=[{"role": "user", "content": "loop"}],
                    extra_headers={"x-mock-chunks": "5", "x-mock-gap-ms": "0"},
                )
                if chunk.choices
            )
        wait_for(lambda: proxy.metric("streamtap_recorder_written_total") >= 1, 10, what="the record")
        assert f"streamtap: event loop {loop}" in proxy.output()
    assert text


@pytest.mark.parametrize(("setting", "stamped"), [(None, True), ("uvloop", False)])
def test_chunks_are_timed_when_they_arrive(
    upstream: MockUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str | None,
    stamped: bool,
) -> None:
    """The proxy is frozen (SIGSTOP) for 600 ms right after the first token; the upstream sends the second
    400 ms after the first, meanwhile. With the kernel's receive timestamps (asyncio's loop, the default)
    the recorded gap is the upstream's 400 ms; timed when the loop reads it (uvloop), it is the ~600 ms
    the proxy was frozen."""
    monkeypatch.delenv("STREAMTAP_EVENT_LOOP", raising=False)
    db = f"sqlite:///{tmp_path / 'stamps.db'}"
    env = {"STREAMTAP_EVENT_LOOP": setting} if setting else {}
    with ProxyProcess(db, tmp_path, upstream=upstream.url, env=env) as proxy:
        assert proxy.proc is not None
        pid = proxy.proc.pid
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0) as c:
            tokens = 0
            for chunk in c.chat.completions.create(
                model="mock-fast",
                stream=True,
                messages=[{"role": "user", "content": "stamps"}],
                extra_headers={"x-mock-chunks": "3", "x-mock-gap-ms": "400", "x-mock-ttft-ms": "50"},
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    tokens += 1
                    if tokens == 1:
                        os.kill(pid, signal.SIGSTOP)
                        try:
                            time.sleep(0.6)
                        finally:
                            os.kill(pid, signal.SIGCONT)
        rec = find_record(db, lambda r: r.request_body is not None and "stamps" in r.request_body)
    token_events = [e for e in rec.events if e.tokens]
    assert len(token_events) == tokens == 3
    gap = token_events[1].t_ms - token_events[0].t_ms
    if stamped:
        assert 350 < gap < 480, gap
    else:
        assert gap > 550, gap


def test_sigterm_drains_the_queue(upstream: MockUpstream, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'drain.db'}"
    proxy = ProxyProcess(db, tmp_path, upstream=upstream.url, metrics=False).start()
    try:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0) as c:
            for i in range(20):
                for _ in c.chat.completions.create(
                    model="mock-fast",
                    stream=True,
                    messages=[{"role": "user", "content": str(i)}],
                    extra_headers={"x-mock-chunks": "5", "x-mock-gap-ms": "0"},
                ):
                    pass
    finally:
        code = proxy.stop(signal.SIGTERM)
    assert code == 0, proxy.output()
    engine = make_engine(db)
    try:
        with Session(engine) as session:
            recs = read.get_streams(session, last=100)
    finally:
        engine.dispose()
    assert len(recs) == 20
    assert all(r.outcome is Outcome.COMPLETED for r in recs)


def test_mitmdump_script_entry(upstream: MockUpstream, tmp_path: Path) -> None:
    """The plain mitmproxy way: mitmdump -s addons/streamtap.py --set streamtap_db=..."""
    import shutil
    import subprocess
    import sys

    from harness import REPO, free_port, port_open

    mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent))
    assert mitmdump, "mitmdump is installed with mitmproxy"
    port = free_port()
    db = f"sqlite:///{tmp_path / 'plain.db'}"
    proc = subprocess.Popen(
        [
            mitmdump,
            "-q",
            "--mode",
            f"reverse:{upstream.url}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "-s",
            str(REPO / "addons" / "streamtap.py"),
            "--set",
            f"streamtap_db={db}",
            "--set",
            "streamtap_metrics_port=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open(port), 30, what="mitmdump to listen")
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0) as c:
            stream = c.chat.completions.create(
                model="mock-fast", stream=True, messages=[{"role": "user", "content": "plain"}]
            )
            for _ in stream:
                pass
        rec = recorded(db, stream.response.headers["x-mock-completion-id"])
        assert rec.outcome is Outcome.COMPLETED
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_regular_mode_as_explicit_proxy(upstream: MockUpstream, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'regular.db'}"
    with (
        ProxyProcess(db, tmp_path, mode="regular", metrics=False) as proxy,
        httpx.Client(proxy=proxy.url, timeout=30) as http,
    ):
        c = openai.OpenAI(base_url=upstream.url + "/v1", api_key="k", max_retries=0, http_client=http)
        stream = c.chat.completions.create(
            model="mock-fast", stream=True, messages=[{"role": "user", "content": "via HTTP_PROXY"}]
        )
        for _ in stream:
            pass
        rec = recorded(db, stream.response.headers["x-mock-completion-id"])
        assert rec.outcome is Outcome.COMPLETED
        assert rec.host == "127.0.0.1"
