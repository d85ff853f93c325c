"""HAR export and `.sse`/HAR import: what goes out comes back the same (bytes, interpretation, clock).

Records are built the way the proxy builds them: a `StreamTap` fed the body in irregular network reads at
irregular times, so several events can share an arrival time and an event can span reads.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from harness import run_cli
from streamtap import read
from streamtap.db.engine import make_engine, upgrade
from streamtap.errors import ConfigError
from streamtap.har import records_to_har
from streamtap.importer import load_file, split_events
from streamtap.privacy import strip_content
from streamtap.recorder import Recorder
from streamtap.records import EventKind, Outcome, StreamRecord, StreamStart
from streamtap.tap import StreamTap
from test_cli import one_line_error

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
T0 = 5000.0  # a monotonic clock reading, as the proxy's


def tapped(
    body: bytes,
    *,
    seed: int,
    path: str = "/v1/chat/completions",
    status: int = 200,
    content_type: str = "text/event-stream; charset=utf-8",
    request: dict[str, Any] | None = None,
    cut_after: int | None = None,
) -> StreamRecord:
    """What the proxy records for `body`, read in random pieces at random times (a seeded clock)."""
    rng = random.Random(seed)
    request = request if request is not None else {"model": f"model-{seed}", "stream": True}
    start = StreamStart(
        id=uuid.uuid4().hex,
        started_at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=seed, microseconds=123457),
        method="POST",
        url=f"https://api.example.com{path}?api-version=2",
        host="api.example.com",
        path=path,
        request_model=request.get("model"),
        api_key_fp="sha256:0123456789ab",
        proxy_instance="test:8080",
        request_body=json.dumps(request),
    )
    tap = StreamTap(start, T0)
    now = T0 + rng.uniform(0.01, 0.3)
    tap.response_headers(now, status, content_type, None)
    if not tap.is_sse:
        tap.whole_body(body, now + rng.uniform(0.001, 0.5))
        return tap.finish(now)
    end = len(body) if cut_after is None else cut_after
    offset = 0
    while offset < end:
        size = min(end - offset, rng.randint(1, 120))
        now += rng.expovariate(1 / 0.03)
        tap.feed(body[offset : offset + size], now)
        offset += size
    if cut_after is not None:
        return tap.finish(
            now + 0.01, disconnect=Outcome.UPSTREAM_DISCONNECT, reason="server closed the connection"
        )
    tap.end_of_body(now)
    return tap.finish(now)


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@pytest.fixture(scope="module")
def originals() -> list[StreamRecord]:
    chat = corpus("openai_chat_parallel_tool_calls.sse")
    return [
        tapped(chat, seed=1),
        tapped(corpus("openai_chat_n2_multiple_choices_interleaved.sse"), seed=2),
        tapped(corpus("anthropic_messages_thinking_signature.sse"), seed=3, path="/v1/messages"),
        tapped(corpus("openai_responses_reasoning_summary.sse"), seed=4, path="/v1/responses"),
        tapped(corpus("anthropic_legacy_complete_crlf_padded_json.sse"), seed=5, path="/v1/complete"),
        # not UTF-8: the HAR holds it in base64
        tapped(b'data: {"choices":[{"index":0,"delta":{"content":"caf\xe9"}}]}\n\ndata: [DONE]\n\n', seed=6),
        tapped(chat, seed=7, cut_after=len(chat) // 2),
        tapped(
            json.dumps(
                {"id": "c1", "choices": [{"index": 0, "message": {"content": "Hi"}, "finish_reason": "stop"}]}
            ).encode(),
            seed=8,
            content_type="application/json",
            request={"model": "whole", "stream": False},
        ),
        tapped(
            corpus("errors/openrouter_http429_upstream_rate_limited.json"),
            seed=9,
            status=429,
            content_type="application/json",
        ),
    ]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = make_engine(url)
    upgrade(engine)
    yield url, engine
    engine.dispose()


def store(engine: sa.Engine, records: list[StreamRecord]) -> None:
    recorder = Recorder(engine)
    for rec in records:
        recorder.submit(rec)
    assert recorder.close()


def stored(url: str) -> list[StreamRecord]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return read.get_streams(session)
    finally:
        engine.dispose()


def test_the_originals_exercise_what_the_round_trip_must_keep(originals: list[StreamRecord]) -> None:
    outcomes = {r.outcome for r in originals}
    assert outcomes == {Outcome.COMPLETED, Outcome.UPSTREAM_DISCONNECT, Outcome.HTTP_ERROR}
    assert {r.api for r in originals} == {"openai.chat", "openai.responses", "anthropic.messages"}
    # events that arrived in one read share a time; some events span reads
    assert any(len({e.t_ms for e in r.events}) < len(r.events) for r in originals)


def test_har_round_trip(db: tuple[str, sa.Engine], originals: list[StreamRecord], tmp_path: Path) -> None:
    url, engine = db
    store(engine, originals)
    exported = run_cli("export", "--db", url, "--format", "har", "--last", "100")
    assert exported.returncode == 0, exported.stderr
    har = json.loads(exported.stdout)
    check_har_shape(har, originals)

    path = tmp_path / "exchanges.har"
    path.write_text(exported.stdout)
    other = f"sqlite:///{tmp_path / 'b.db'}"
    imported = run_cli("import", str(path), "--db", other)
    assert imported.returncode == 0, imported.stderr
    assert f"imported {len(originals)} exchanges" in imported.stderr

    back = {r.extra["original_id"]: r for r in stored(other)}
    assert set(back) == {r.id for r in originals}
    for original in originals:
        same_record(back[str(original.id)], original)


def same_record(got: StreamRecord, want: StreamRecord) -> None:
    assert got.id != want.id and got.proxy_instance == "import"
    for field in ("started_at", "method", "status_code", "stream", "api", "outcome", "error", "request_body"):
        assert getattr(got, field) == getattr(want, field), field
    assert (got.request_model, got.model, got.usage) == (want.request_model, want.model, want.usage)
    assert got.choices == want.choices
    assert got.finish_reason == want.finish_reason
    assert got.response_body == want.response_body
    assert [(e.raw, e.kind, e.event, e.tokens) for e in got.events] == [
        (e.raw, e.kind, e.event, e.tokens) for e in want.events
    ]
    assert [e.t_ms for e in got.events] == pytest.approx([round(e.t_ms, 3) for e in want.events], abs=1e-6)
    for name in ("ttfb_ms", "ttft_ms", "ttfc_ms", "duration_ms"):
        value, expected = getattr(got, name), getattr(want, name)
        assert (value is None) == (expected is None), name
        if expected is not None:
            assert value == pytest.approx(expected, abs=2e-3), name


def check_har_shape(har: dict[str, Any], originals: list[StreamRecord]) -> None:
    """The fields HAR 1.2 requires, and what streamtap puts in them."""
    log = har["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "streamtap"
    entries = log["entries"]
    assert len(entries) == len(originals)
    assert [e["startedDateTime"] for e in entries] == sorted(e["startedDateTime"] for e in entries)
    by_id = {r.id: r for r in originals}
    for entry in entries:
        rec = by_id[entry["_streamtap"]["id"]]
        request, response, timings = entry["request"], entry["response"], entry["timings"]
        assert {
            "method",
            "url",
            "httpVersion",
            "cookies",
            "headers",
            "queryString",
            "headersSize",
            "bodySize",
        } <= set(request)
        assert request["headers"] == [] and request["queryString"] == [{"name": "api-version", "value": "2"}]
        assert json.loads(request["postData"]["text"]) == json.loads(rec.request_body or "")
        assert {"status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL"} <= set(
            response
        )
        assert response["status"] == rec.status_code
        content = response["content"]
        assert content["mimeType"] == ("text/event-stream" if rec.stream else "application/json")
        body = b"".join(e.raw for e in rec.events) if rec.stream else (rec.response_body or "").encode()
        assert content["size"] == len(body)
        if content.get("encoding") == "base64":
            assert body.startswith(b"data: ") and b"\xe9" in body
        else:
            assert content["text"].encode() == body
        assert timings["send"] == 0 and timings["wait"] == pytest.approx(rec.ttfb_ms, abs=1e-3)
        assert timings["wait"] + timings["receive"] == pytest.approx(rec.duration_ms, abs=2e-3)
        assert entry["time"] == pytest.approx(timings["wait"] + timings["receive"], abs=2e-3)
        ours = entry["_streamtap"]
        assert ours["outcome"] == rec.outcome.value and ours["ttft_ms"] == pytest.approx(
            rec.ttft_ms, abs=1e-3
        )
        assert [e["kind"] for e in ours["events"]] == [e.kind.value for e in rec.events]
        assert [e["seq"] for e in ours["events"]] == list(range(len(rec.events)))


def test_sse_round_trip(db: tuple[str, sa.Engine], originals: list[StreamRecord], tmp_path: Path) -> None:
    url, engine = db
    original = originals[2]  # Anthropic, with thinking
    store(engine, [original])
    exported = run_cli("export", "--db", url, "--id", original.id, "--format", "sse")
    assert exported.returncode == 0, exported.stderr
    path = tmp_path / "one.sse"
    path.write_text(exported.stdout)
    assert path.read_bytes() == corpus("anthropic_messages_thinking_signature.sse")

    other = f"sqlite:///{tmp_path / 'b.db'}"
    args = ("--db", other, "--path", "/v1/messages", "--model", "claude-x", "--gap-ms", "7")
    result = run_cli("import", str(path), *args)
    assert result.returncode == 0 and "imported 1 exchange from" in result.stderr
    [got] = stored(other)
    assert got.api == "anthropic.messages" and got.request_model == "claude-x" and got.model == original.model
    assert got.choices == original.choices and got.usage == original.usage and got.finish_reason == "end_turn"
    assert [e.raw for e in got.events] == [e.raw for e in original.events]
    assert [e.t_ms for e in got.events] == pytest.approx([7.0 * (i + 1) for i in range(len(got.events))])
    assert got.outcome is Outcome.COMPLETED and got.extra == {"imported_from": "one.sse"}


def test_har_from_elsewhere_gets_a_synthetic_clock_and_only_llm_entries(tmp_path: Path) -> None:
    body = corpus("openai_chat_text_include_usage.sse")
    entry = {
        "startedDateTime": "2026-05-01T10:00:00.000Z",
        "time": 900,
        "request": {"method": "POST", "url": "https://api.openai.com/v1/chat/completions", "headers": []},
        "response": {"status": 200, "content": {"mimeType": "text/event-stream", "text": body.decode()}},
        "timings": {"send": 1, "wait": 250, "receive": 640},
    }
    image = {
        "startedDateTime": "2026-05-01T10:00:01Z",
        "request": {"method": "GET", "url": "https://example.com/logo.png"},
        "response": {
            "status": 200,
            "content": {"mimeType": "image/png", "text": "iVBORw0K", "encoding": "base64"},
        },
    }
    path = tmp_path / "browser.har"
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": [image, entry]}}))
    loaded = load_file(path, gap_ms=10)
    assert loaded.skipped == 1
    [rec] = loaded.records
    assert rec.started_at == datetime(2026, 5, 1, 10, 0, tzinfo=UTC) and rec.host == "api.openai.com"
    assert rec.ttfb_ms == 250 and rec.outcome is Outcome.COMPLETED and rec.finish_reason == "stop"
    assert [e.t_ms for e in rec.events] == pytest.approx([250 + 10 * (i + 1) for i in range(len(rec.events))])
    assert b"".join(e.raw for e in rec.events) == body
    assert rec.events[-1].kind is EventKind.DONE


def test_metadata_only_recordings_export_without_a_body_and_are_not_imported(
    originals: list[StreamRecord], tmp_path: Path
) -> None:
    har = records_to_har([strip_content(originals[0])])
    [entry] = har["log"]["entries"]
    assert "text" not in entry["response"]["content"] and "postData" not in entry["request"]
    assert len(entry["_streamtap"]["events"]) == len(originals[0].events)
    path = tmp_path / "metadata.har"
    path.write_text(json.dumps(har))
    loaded = load_file(path)
    assert loaded.records == () and loaded.skipped == 1


def test_split_events_cuts_a_body_as_the_tap_does(originals: list[StreamRecord]) -> None:
    for rec in originals:
        if rec.stream:
            assert split_events(b"".join(e.raw for e in rec.events)) == [e.raw for e in rec.events]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.har", b"{not json", "not a HAR file: invalid JSON"),
        ("nolog.har", b'{"entries": []}', "not a HAR file: HAR.log is missing"),
        (
            "date.har",
            json.dumps(
                {"log": {"entries": [{"startedDateTime": "yesterday", "request": {}, "response": {}}]}}
            ).encode(),
            "log.entries[0].startedDateTime 'yesterday'",
        ),
        ("empty.sse", b"", "holds no server-sent event"),
        ("binary.sse", bytes(range(256)) * 4, "holds no server-sent event"),
    ],
)
def test_bad_files_are_one_config_error(name: str, content: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_file(path)


def test_import_cli_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never.db'}"
    one_line_error(
        run_cli("import", str(tmp_path / "missing.sse"), "--db", url), "cannot read", "missing.sse"
    )
    (tmp_path / "bad.har").write_text('{"log": {"entries": "none"}}')
    one_line_error(run_cli("import", str(tmp_path / "bad.har"), "--db", url), "not a HAR file", "log.entries")
    assert not (tmp_path / "never.db").exists()  # a bad file touches no database
