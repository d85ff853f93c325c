"""Upstream and client faults through the real proxy: the client sees what the upstream sent, the record
has the right outcome and what had arrived, and the proxy keeps serving others."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import ProxyProcess, carries, find_record, run_cli, wait_for
from streamtap.mock_upstream import MockUpstream
from streamtap.records import Outcome, StreamRecord

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream(profile="fast", seed=5) as mock:
        yield mock


@pytest.fixture(scope="module")
def proxy(upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp("faults")
    with ProxyProcess(f"sqlite:///{workdir / 'f.db'}", workdir, upstream=upstream.url) as p:
        yield p


def record_of(proxy: ProxyProcess, completion_id: str) -> StreamRecord:
    # the id is in the first events: no need to scan a 10 MiB one
    rec: StreamRecord = find_record(
        proxy.db_url, carries(completion_id, head=3), last=30, what=f"the record of {completion_id}"
    )
    return rec


def test_a_10_mib_event_passes_whole(proxy: ProxyProcess) -> None:
    body = {"model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": "big"}]}
    with (
        httpx.Client(timeout=60) as http,
        http.stream(
            "POST", proxy.url + "/v1/chat/completions", json=body, headers={"x-mock-fault": "huge-event"}
        ) as resp,
    ):
        received = b"".join(resp.iter_raw())
        completion_id = resp.headers["x-mock-completion-id"]
    assert len(received) > 10 * 1024 * 1024
    rec = record_of(proxy, completion_id)
    assert rec.outcome is Outcome.COMPLETED
    assert b"".join(e.raw for e in rec.events) == received
    assert rec.choices[0].content is not None and len(rec.choices[0].content) >= 10 * 1024 * 1024


def test_502_is_an_http_error_with_its_body(proxy: ProxyProcess) -> None:
    with (
        openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0) as c,
        pytest.raises(openai.APIStatusError) as err,
    ):
        c.chat.completions.create(
            model="mock-fast",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            extra_headers={"x-mock-fault": "http-502"},
        )
    assert err.value.status_code == 502
    rec = find_record(proxy.db_url, lambda r: r.status_code == 502, last=30, what="the 502 record")
    assert rec.outcome is Outcome.HTTP_ERROR and rec.status_code == 502
    assert rec.error is not None and rec.error.startswith("HTTP 502")


def test_no_first_token_client_times_out(proxy: ProxyProcess, upstream: MockUpstream) -> None:
    body = {"model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": "wait"}]}
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=1.0)) as http,
        http.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            json=body,
            headers={"x-mock-fault": "slow-first-token"},
        ) as resp,
    ):
        completion_id = resp.headers["x-mock-completion-id"]
        with pytest.raises(httpx.ReadTimeout):
            for _ in resp.iter_raw():
                pass
    rec = record_of(proxy, completion_id)
    assert rec.outcome is Outcome.CLIENT_DISCONNECT
    assert rec.ttft_ms is None
    # the proxy closed the upstream connection: the provider stops generating (and billing)
    wait_for(
        lambda: upstream.log[completion_id].finished_at is not None,
        10,
        what="the upstream to see the hang-up",
    )
    assert upstream.log[completion_id].first_token_at is None


def test_stored_values_are_never_interpreted(proxy: ProxyProcess) -> None:
    model = 'x\'); DROP TABLE streams; -- <script>alert(1)</script> {le="1"} \\ \u00e9\U0001f600'
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0) as c:
        stream = c.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "<b>hi</b>"}], stream=True
        )
        for _ in stream:
            pass
    rec = record_of(proxy, stream.response.headers["x-mock-completion-id"])
    assert rec.request_model == model and rec.model == model
    out = run_cli("export", "--db", proxy.db_url, "--id", rec.id)
    assert json.loads(out.stdout)[0]["request_model"] == model
    # the exposition stays parseable; the label holds the (normalized) name as a plain value
    labels = {
        s.labels["model"]
        for family in text_string_to_metric_families(proxy.metrics_text())
        for s in family.samples
        if s.name == "streamtap_streams_total"
    }
    assert any(label.startswith("x'); DROP TABLE streams;") for label in labels)


def test_many_concurrent_streams_no_drops_no_tap_errors(proxy: ProxyProcess, upstream: MockUpstream) -> None:
    """Three rounds of 200 streams at once (the 500 x 60 s soak is tests/test_soak.py)."""
    dropped_before = proxy.metric("streamtap_recorder_dropped_total")
    errors_before = proxy.metric("streamtap_tap_errors_total")
    written_before = proxy.metric("streamtap_recorder_written_total")

    async def one(client: httpx.AsyncClient, i: int) -> bool:
        body = {"model": "mock-load", "stream": True, "messages": [{"role": "user", "content": str(i)}]}
        async with client.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            json=body,
            headers={"x-mock-chunks": "40", "x-mock-gap-ms": "20"},
        ) as resp:
            data = b"".join([part async for part in resp.aiter_raw()])
        return data.endswith(b"data: [DONE]\n\n")

    async def main() -> list[bool]:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            results: list[bool] = []
            for _round in range(3):
                results += await asyncio.gather(*(one(client, i) for i in range(200)))
            return results

    results = asyncio.run(main())
    assert all(results) and len(results) == 600
    wait_for(
        lambda: proxy.metric("streamtap_recorder_written_total") >= written_before + 600,
        30,
        what="600 records written",
    )
    assert proxy.metric("streamtap_recorder_dropped_total") == dropped_before
    assert proxy.metric("streamtap_tap_errors_total") == errors_before


def test_client_disconnect_before_first_token(
    proxy: ProxyProcess, upstream: MockUpstream, tmp_path: Path
) -> None:
    body = {"model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": "early"}]}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", proxy.url + "/v1/chat/completions", json=body, headers={"x-mock-ttft-ms": "3000"}
        ) as resp,
    ):
        completion_id = resp.headers["x-mock-completion-id"]
        # headers and the role chunk arrived; hang up before the first token
    rec = record_of(proxy, completion_id)
    assert rec.outcome is Outcome.CLIENT_DISCONNECT
    assert rec.ttft_ms is None and rec.ttfb_ms is not None
    wait_for(
        lambda: upstream.log[completion_id].finished_at is not None,
        10,
        what="the upstream to see the hang-up",
    )
    assert upstream.log[completion_id].first_token_at is None
