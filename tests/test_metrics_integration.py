"""/metrics of a real proxy process after traffic of every outcome (issue: Prometheus exporter)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import ProxyProcess, wait_for
from streamtap.mock_upstream import MockUpstream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream(profile="fast", seed=3) as mock:
        yield mock


@pytest.fixture(scope="module")
def proxy(upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp("metrics")
    with ProxyProcess(
        f"sqlite:///{workdir / 'm.db'}", workdir, upstream=upstream.url, extra=["--max-models", "5"]
    ) as p:
        yield p


def samples(proxy: ProxyProcess) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(proxy.metrics_text())
        for s in family.samples
    ]


def post(
    proxy: ProxyProcess,
    model: str,
    *,
    stream: bool = True,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
    **body: object,
) -> None:
    payload = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "m"}], **body}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", proxy.url + "/v1/chat/completions", json=payload, headers=headers or {}) as resp,
    ):
        try:
            seen = 0
            for part in resp.iter_raw():
                seen += part.count(b"data:")
                if stop_after is not None and seen >= stop_after:
                    return  # the client hangs up
        except httpx.HTTPError:
            pass


def test_every_outcome_is_counted_and_ttft_lands_in_its_bucket(proxy: ProxyProcess) -> None:
    fixed = {"x-mock-ttft-ms": "300", "x-mock-chunks": "4", "x-mock-gap-ms": "5"}
    for _ in range(3):
        post(proxy, "m-a", headers=fixed)
    post(proxy, "m-a", max_tokens=2, headers={"x-mock-chunks": "10"})
    post(proxy, "m-a", headers={"x-mock-fault": "error-event"})
    post(proxy, "m-a", headers={"x-mock-fault": "disconnect"})
    post(proxy, "m-a", headers={"x-mock-fault": "http-429"})
    post(proxy, "m-a", headers={"x-mock-fault": "no-finish"})
    post(proxy, "m-a", headers={"x-mock-chunks": "300", "x-mock-gap-ms": "10"}, stop_after=4)
    expected = Counter(
        {
            ("completed", "stop"): 3,
            ("completed", "length"): 1,
            ("model_error", "none"): 1,
            ("upstream_disconnect", "none"): 1,
            ("http_error", "none"): 1,
            ("truncated", "none"): 1,
            ("client_disconnect", "none"): 1,
        }
    )

    def counted() -> Counter[tuple[str, str]] | None:
        got = Counter(
            {
                (labels["outcome"], labels["finish_reason"]): int(value)
                for name, labels, value in samples(proxy)
                if name == "streamtap_streams_total" and labels["model"] == "m-a" and value
            }
        )
        return got if got == expected else None

    wait_for(counted, 15, what=f"streams_total to reach {dict(expected)}")
    all_samples = samples(proxy)
    by = {(n, tuple(sorted(lbl.items()))): v for n, lbl, v in all_samples}

    def value(name: str, **labels: str) -> float:
        return by[(name, tuple(sorted({"model": "m-a", "upstream": "127.0.0.1", **labels}.items())))]

    # every series an alert needs exists from the first stream on, at 0
    assert value("streamtap_streams_total", outcome="completed", finish_reason="content_filter") == 0
    assert value("streamtap_streams_total", outcome="model_error", finish_reason="tool_calls") == 0
    # one duration sample per stream, whatever its outcome
    assert value("streamtap_stream_duration_seconds_count") == sum(expected.values())
    # TTFT: the three streams with a fixed 300 ms first token sit between the 0.25 s and 0.5 s bounds
    ttft_count = value("streamtap_time_to_first_token_seconds_count")
    slow_le_025 = value("streamtap_time_to_first_token_seconds_bucket", le="0.25")
    slow_le_05 = value("streamtap_time_to_first_token_seconds_bucket", le="0.5")
    assert slow_le_05 - slow_le_025 == 3
    assert ttft_count >= 3 + 1  # and the others that produced a token


def test_model_label_cardinality_is_capped(proxy: ProxyProcess) -> None:
    for i in range(12):
        post(proxy, f"random-model-{i}", stream=False)

    def models() -> set[str] | None:
        seen = {lbl["model"] for n, lbl, _ in samples(proxy) if n == "streamtap_streams_total"}
        return seen if "other" in seen else None

    seen = wait_for(models, 15, what="the model label to overflow into 'other'")
    assert len(seen - {"other"}) <= 5
    assert "random-model-11" not in seen


def test_recorder_health_metrics_exist(proxy: ProxyProcess) -> None:
    names = {n for n, _, _ in samples(proxy)}
    for name in (
        "streamtap_active_streams",
        "streamtap_recorder_queue_depth",
        "streamtap_recorder_written_total",
        "streamtap_recorder_dropped_total",
        "streamtap_tap_errors_total",
    ):
        assert name in names
    assert not any(n.endswith("_created") for n in names)
