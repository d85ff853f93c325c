from __future__ import annotations

import random
import socket
import string
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streamtap.errors import ConfigError
from streamtap.metrics import (
    COMMON_FINISH_REASONS,
    TTFT_BUCKETS,
    Metrics,
    build_metrics,
    finish_reason_label,
    normalize_label,
    observe_all,
    serve,
)
from streamtap.records import FINAL_OUTCOMES, Choice, EventKind, EventRecord, Outcome, StreamRecord, Usage

HOST = "api.example.com"


def record(
    *,
    model: str | None = "gpt-4o",
    response_model: str | None = None,
    host: str = HOST,
    outcome: Outcome = Outcome.COMPLETED,
    finish_reason: str | None = "stop",
    ttfb_ms: float | None = 100.0,
    ttft_ms: float | None = 300.0,
    duration_ms: float | None = 1300.0,
    usage: Usage | None = None,
    token_times_ms: tuple[float, ...] = (),
) -> StreamRecord:
    events = tuple(
        EventRecord(
            seq=i, t_ms=t, gap_ms=None, kind=EventKind.DATA, data="{}", raw=b"data: {}\n\n", tokens=True
        )
        for i, t in enumerate(token_times_ms)
    )
    return StreamRecord(
        id="s1",
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        method="POST",
        url=f"https://{host}/v1/chat/completions",
        host=host,
        path="/v1/chat/completions",
        status_code=200,
        stream=True,
        request_model=model,
        model=response_model,
        outcome=outcome,
        error=None,
        ttfb_ms=ttfb_ms,
        ttft_ms=ttft_ms,
        ttfc_ms=ttft_ms,
        duration_ms=duration_ms,
        usage=usage,
        choices=(Choice(0, "hi", None, None, (), finish_reason),),
        events=events,
    )


def finish(metrics: Metrics, rec: StreamRecord) -> None:
    metrics.stream_started(rec.request_model, rec.host)
    metrics.stream_finished(rec)


def families(registry: CollectorRegistry) -> dict[str, list[Sample]]:
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def samples(registry: CollectorRegistry) -> list[Sample]:
    return [sample for family_samples in families(registry).values() for sample in family_samples]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return build_metrics(registry)


LABELS = {"model": "gpt-4o", "upstream": HOST}


class TestHistograms:
    def test_counts_equal_number_of_streams(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        for _ in range(3):
            finish(metrics, record())
        for name in (
            "streamtap_time_to_first_token_seconds",
            "streamtap_time_to_first_byte_seconds",
            "streamtap_stream_duration_seconds",
        ):
            assert registry.get_sample_value(f"{name}_count", LABELS) == 3
        parsed = families(registry)["streamtap_time_to_first_token_seconds"]
        inf = [s for s in parsed if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
        assert [s.value for s in inf] == [3.0]

    def test_ttft_lands_in_its_bucket(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        finish(metrics, record(ttft_ms=300.0))
        bucket = "streamtap_time_to_first_token_seconds_bucket"
        assert registry.get_sample_value(bucket, {**LABELS, "le": "0.25"}) == 0
        assert registry.get_sample_value(bucket, {**LABELS, "le": "0.5"}) == 1
        assert registry.get_sample_value("streamtap_time_to_first_token_seconds_sum", LABELS) == 0.3
        by_le = {
            s.labels["le"]: s.value
            for s in families(registry)["streamtap_time_to_first_token_seconds"]
            if s.name.endswith("_bucket")
        }
        assert by_le["0.25"] == 0 and by_le["0.5"] == 1 and by_le["120.0"] == 1

    def test_default_ttft_buckets_span_1ms_to_120s(self) -> None:
        assert TTFT_BUCKETS[0] == 0.001 and TTFT_BUCKETS[-1] == 120.0
        assert list(TTFT_BUCKETS) == sorted(TTFT_BUCKETS)

    def test_buckets_are_configurable(self, registry: CollectorRegistry) -> None:
        metrics = build_metrics(registry, ttft_buckets=[0.2, 0.4], gap_buckets=[0.05])
        finish(metrics, record(ttft_ms=300.0, token_times_ms=(300.0, 340.0)))
        bucket = "streamtap_time_to_first_token_seconds_bucket"
        assert registry.get_sample_value(bucket, {**LABELS, "le": "0.4"}) == 1
        assert registry.get_sample_value(bucket, {**LABELS, "le": "0.5"}) is None
        gap = "streamtap_inter_chunk_gap_seconds_bucket"
        assert registry.get_sample_value(gap, {**LABELS, "le": "0.05"}) == 1

    def test_one_gap_sample_per_gap_between_token_events(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        finish(metrics, record(token_times_ms=(300.0, 310.0, 330.0, 1330.0)))
        assert registry.get_sample_value("streamtap_inter_chunk_gap_seconds_count", LABELS) == 3
        assert registry.get_sample_value("streamtap_inter_chunk_gap_seconds_sum", LABELS) == pytest.approx(
            1.03
        )
        gap = "streamtap_inter_chunk_gap_seconds_bucket"
        assert registry.get_sample_value(gap, {**LABELS, "le": "0.01"}) == 1
        assert registry.get_sample_value(gap, {**LABELS, "le": "0.025"}) == 2
        assert registry.get_sample_value(gap, {**LABELS, "le": "1.0"}) == 3

    def test_missing_timings_are_not_observed(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        finish(metrics, record(outcome=Outcome.HTTP_ERROR, ttft_ms=None, ttfb_ms=None, finish_reason=None))
        assert registry.get_sample_value("streamtap_time_to_first_token_seconds_count", LABELS) == 0
        assert registry.get_sample_value("streamtap_time_to_first_byte_seconds_count", LABELS) == 0
        assert registry.get_sample_value("streamtap_stream_duration_seconds_count", LABELS) == 1


class TestTimePerOutputToken:
    def test_computed_from_duration_ttft_and_completion_tokens(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        usage = Usage(prompt_tokens=12, completion_tokens=11, total_tokens=23)
        finish(metrics, record(ttft_ms=300.0, duration_ms=1300.0, usage=usage))
        assert registry.get_sample_value("streamtap_time_per_output_token_seconds_count", LABELS) == 1
        # (1.3 s - 0.3 s) / (11 - 1)
        assert registry.get_sample_value(
            "streamtap_time_per_output_token_seconds_sum", LABELS
        ) == pytest.approx(0.1)

    @pytest.mark.parametrize(
        ("usage", "ttft_ms"),
        [
            (None, 300.0),
            (Usage(prompt_tokens=5, completion_tokens=1, total_tokens=6), 300.0),
            (Usage(prompt_tokens=5, completion_tokens=None, total_tokens=None), 300.0),
            (Usage(prompt_tokens=5, completion_tokens=9, total_tokens=14), None),
        ],
    )
    def test_skipped_without_enough_information(
        self, registry: CollectorRegistry, metrics: Metrics, usage: Usage | None, ttft_ms: float | None
    ) -> None:
        finish(metrics, record(usage=usage, ttft_ms=ttft_ms))
        assert registry.get_sample_value("streamtap_time_per_output_token_seconds_count", LABELS) == 0


class TestCounters:
    def test_zero_series_for_every_outcome_and_finish_reason(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        metrics.stream_started("gpt-4o", HOST)
        for outcome in FINAL_OUTCOMES:
            for reason in COMMON_FINISH_REASONS:
                labels = {**LABELS, "outcome": outcome.value, "finish_reason": reason}
                assert registry.get_sample_value("streamtap_streams_total", labels) == 0, labels
        for token_type in ("input", "output", "reasoning"):
            assert registry.get_sample_value("streamtap_tokens_total", {**LABELS, "type": token_type}) == 0
        streams = [s for s in families(registry)["streamtap_streams"] if s.name == "streamtap_streams_total"]
        assert len(streams) == len(FINAL_OUTCOMES) * len(COMMON_FINISH_REASONS)

    def test_streams_counted_by_outcome_and_finish_reason(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        finish(metrics, record(finish_reason="length"))
        finish(metrics, record(finish_reason="length"))
        finish(metrics, record(outcome=Outcome.UPSTREAM_DISCONNECT, finish_reason=None))
        finish(metrics, record(finish_reason="something_new"))

        def value(outcome: str, reason: str) -> float | None:
            labels = {**LABELS, "outcome": outcome, "finish_reason": reason}
            return registry.get_sample_value("streamtap_streams_total", labels)

        assert value("completed", "length") == 2
        assert value("upstream_disconnect", "none") == 1
        assert value("completed", "other") == 1
        assert value("completed", "stop") == 0

    def test_tokens_by_type(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        usage = Usage(prompt_tokens=100, completion_tokens=40, total_tokens=140, reasoning_tokens=25)
        finish(metrics, record(usage=usage))
        finish(metrics, record(usage=Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10)))
        tokens = "streamtap_tokens_total"
        assert registry.get_sample_value(tokens, {**LABELS, "type": "input"}) == 107
        assert registry.get_sample_value(tokens, {**LABELS, "type": "output"}) == 43
        assert registry.get_sample_value(tokens, {**LABELS, "type": "reasoning"}) == 25

    def test_active_streams(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        metrics.stream_started("gpt-4o", HOST)
        metrics.stream_started("gpt-4o", HOST)
        assert registry.get_sample_value("streamtap_active_streams") == 2
        metrics.stream_finished(record())
        assert registry.get_sample_value("streamtap_active_streams") == 1

    def test_recorder_and_tap_counters(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        metrics.recorder_written(5)
        metrics.recorder_written()
        metrics.recorder_dropped(2)
        metrics.tap_error()
        assert registry.get_sample_value("streamtap_recorder_written_total") == 6
        assert registry.get_sample_value("streamtap_recorder_dropped_total") == 2
        assert registry.get_sample_value("streamtap_tap_errors_total") == 1

    def test_queue_depth_is_read_at_scrape_time(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        assert registry.get_sample_value("streamtap_recorder_queue_depth") == 0
        queue = [1, 2, 3]
        metrics.bind_recorder(lambda: len(queue))
        assert registry.get_sample_value("streamtap_recorder_queue_depth") == 3
        queue.append(4)
        assert registry.get_sample_value("streamtap_recorder_queue_depth") == 4

    def test_failing_depth_function_does_not_break_the_scrape(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        def broken() -> int:
            raise RuntimeError("queue gone")

        metrics.bind_recorder(broken)
        assert "streamtap_recorder_queue_depth NaN" in generate_latest(registry).decode()


class TestLabels:
    def test_model_is_the_requested_one_then_the_response_one(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        metrics.stream_finished(record(model="gpt-4o", response_model="gpt-4o-2024-08-06"))
        metrics.stream_finished(record(model=None, response_model="llama-3"))
        metrics.stream_finished(record(model=None, response_model=None))
        count = "streamtap_stream_duration_seconds_count"
        assert registry.get_sample_value(count, LABELS) == 1
        assert registry.get_sample_value(count, {"model": "llama-3", "upstream": HOST}) == 1
        assert registry.get_sample_value(count, {"model": "unknown", "upstream": HOST}) == 1

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (None, "unknown"),
            ("", "unknown"),
            ("\n\t\x00", "unknown"),
            ("gpt-4o", "gpt-4o"),
            ("gpt\n-4o\x1b[31m", "gpt-4o[31m"),
            ("a\u200bb\u202ec", "abc"),
            ("bad\ud800surrogate", "badsurrogate"),
            ("x" * 100, "x" * 64),
            ("  padded  ", "padded"),
            ('q"uo{te}\\', 'q"uo{te}\\'),
        ],
    )
    def test_normalize(self, raw: str | None, expected: str) -> None:
        assert normalize_label(raw) == expected

    def test_finish_reason_label(self) -> None:
        assert finish_reason_label(None) == "none"
        assert finish_reason_label("tool_calls") == "tool_calls"
        assert finish_reason_label("x" * 1000) == "other"

    @pytest.mark.parametrize(
        "name",
        [
            'evil"} 1\nstreamtap_active_streams 999',
            'a"b',
            "brace}{",
            "back\\slash\\",
            "new\nline",
            "\\n literal",
            "ünïcødé-模型",
        ],
    )
    def test_hostile_model_names_round_trip(
        self, registry: CollectorRegistry, metrics: Metrics, name: str
    ) -> None:
        finish(metrics, record(model=name))
        expected = normalize_label(name)
        parsed = families(registry)
        counts = [s for s in parsed["streamtap_stream_duration_seconds"] if s.name.endswith("_count")]
        assert [s.labels["model"] for s in counts] == [expected]
        assert [s.value for s in parsed["streamtap_active_streams"]] == [0.0]

    def test_ten_thousand_random_models_stay_under_the_cap(self, registry: CollectorRegistry) -> None:
        metrics = build_metrics(registry, max_models=50)
        no_model = len(samples(registry))
        finish(metrics, record(model="first"))
        per_model = len(samples(registry)) - no_model
        rng = random.Random(3)
        alphabet = string.printable + "\u200b\u00e9\u6a21"
        for _ in range(10_000):
            name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
            finish(metrics, record(model=name, token_times_ms=(300.0, 320.0)))
        exposed = samples(registry)
        models = {sample.labels["model"] for sample in exposed if "model" in sample.labels}
        assert len(models) == 51 and "other" in models and "first" in models
        # 50 admitted models plus "other", each with the same series as the first one
        assert len(exposed) == no_model + 51 * per_model
        assert registry.get_sample_value("streamtap_active_streams") == 0

    def test_upstreams_are_capped(self, registry: CollectorRegistry) -> None:
        metrics = build_metrics(registry, max_upstreams=3)
        for i in range(20):
            finish(metrics, record(host=f"h{i}.example"))
        count = "streamtap_stream_duration_seconds_count"
        assert registry.get_sample_value(count, {"model": "gpt-4o", "upstream": "h2.example"}) == 1
        assert registry.get_sample_value(count, {"model": "gpt-4o", "upstream": "h3.example"}) is None
        assert registry.get_sample_value(count, {"model": "gpt-4o", "upstream": "other"}) == 17

    def test_model_upstream_pairs_are_capped(self, registry: CollectorRegistry) -> None:
        metrics = build_metrics(registry, max_models=10, max_upstreams=10, max_pairs=5)
        for i in range(10):
            for j in range(10):
                finish(metrics, record(model=f"m{i}", host=f"h{j}"))
        counts = [
            s for s in families(registry)["streamtap_stream_duration_seconds"] if s.name.endswith("_count")
        ]
        assert len(counts) == 6
        by_pair = {(s.labels["model"], s.labels["upstream"]): s.value for s in counts}
        assert by_pair[("other", "other")] == 95
        assert sum(by_pair.values()) == 100


class TestServe:
    def test_binds_loopback_and_serves_the_registry(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        finish(metrics, record())
        server = serve(registry, port=0)
        try:
            assert server.host == "127.0.0.1"
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
                body = response.read().decode()
            assert (
                'streamtap_stream_duration_seconds_count{model="gpt-4o",upstream="api.example.com"} 1.0'
                in body
            )
        finally:
            server.close()

    def test_port_in_use_is_a_config_error(self, registry: CollectorRegistry) -> None:
        server = serve(registry, port=0)
        try:
            with pytest.raises(ConfigError, match=f"^metrics port {server.port} is in use$"):
                serve(CollectorRegistry(), port=server.port)
        finally:
            server.close()

    def test_port_taken_by_another_program(self, registry: CollectorRegistry) -> None:
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            port = other.getsockname()[1]
            with pytest.raises(ConfigError, match="is in use"):
                serve(registry, port=port)

    def test_port_is_free_again_after_close(self, registry: CollectorRegistry) -> None:
        server = serve(registry, port=0)
        port = server.port
        server.close()
        again = serve(registry, port=port)
        again.close()


def _histogram_samples(values: list[float], batched: bool) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    child = Histogram("h", "h", ["model"], registry=registry, buckets=(0.001, 0.01, 0.1, 1.0)).labels("m")
    if batched:
        observe_all(child, values)
    else:
        for value in values:
            child.observe(value)
    return {(s.name, s.labels.get("le", "")): s.value for f in registry.collect() for s in f.samples}


def test_observe_all_counts_like_observe() -> None:
    """Bounds themselves, values between, past the last bound (+Inf), zero and none at all."""
    rng = random.Random(7)
    values = [0.0, 0.001, 0.01, 0.1, 1.0, 0.0010001, 5.0, 1e9, *(rng.uniform(0, 2) for _ in range(500))]
    for sample in (values, values[:1], []):
        one_by_one = _histogram_samples(sample, batched=False)
        batched = _histogram_samples(sample, batched=True)
        assert batched.keys() == one_by_one.keys()
        for key, value in one_by_one.items():
            assert batched[key] == pytest.approx(value, rel=1e-12), key
    batched = _histogram_samples(values, batched=True)
    assert batched[("h_bucket", "0.001")] == sum(v <= 0.001 for v in values) >= 2  # le: bounds included
    assert batched[("h_bucket", "+Inf")] == batched[("h_count", "")] == len(values)
