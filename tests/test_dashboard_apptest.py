"""Every dashboard page through Streamlit's AppTest: seeded data, an empty database, and the databases it
refuses (not ours, unreachable, missing), which must give a one-line error and never a stack trace."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from streamtap import overview as ov
from streamtap.db.engine import make_engine, upgrade
from streamtap.recorder import Recorder
from streamtap.records import Choice, EventKind, EventRecord, Outcome, StreamRecord, ToolCall, Usage
from streamtap.seed import seed_database

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
HOSTILE_MODEL = "<script>alert(1)</script>"
HOSTILE_TEXT = "**bold** <b>tag</b> [link](http://x)"
EMPTY = "No streams recorded yet"


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    yield
    st.cache_data.clear()
    st.cache_resource.clear()  # disposes the cached engines


def hostile_record() -> StreamRecord:
    """A stream whose stored values look like markup: the dashboard must show them as literal text."""
    return StreamRecord(
        id="feedfacefeedfacefeedfacefeedface",
        started_at=datetime.now(UTC) - timedelta(minutes=10),
        method="POST",
        url="https://api.example.com/v1/chat/completions",
        host="api.example.com",
        path="/v1/chat/completions",
        status_code=200,
        stream=True,
        request_model=HOSTILE_MODEL,
        model=HOSTILE_MODEL,
        outcome=Outcome.COMPLETED,
        error=None,
        ttfb_ms=10.0,
        ttft_ms=20.0,
        ttfc_ms=None,
        duration_ms=30.0,
        usage=Usage(5, 2, 7),
        choices=(
            Choice(
                0,
                HOSTILE_TEXT,
                "thinking it over",
                None,
                (ToolCall(0, "call_1", "get_weather", '{"city":"Lisbon","days":[1,2]}'),),
                "tool_calls",
            ),
        ),
        events=(
            EventRecord(0, 10.0, None, EventKind.DATA, "{}", b'data: {"role":"assistant"}\n\n'),
            EventRecord(1, 20.0, 10.0, EventKind.DATA, "{}", b'data: {"content":"x"}\n\n', tokens=True),
        ),
        proxy_instance="test:8080",
    )


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """300 synthetic streams 20 minutes to 2 hours old, plus one with hostile values, 10 minutes old."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dash')}/seeded.db"
    engine = make_engine(url)
    try:
        upgrade(engine)
        # 20 minutes to 2 hours old: no stream sits near the edge of the 15-minute or 24-hour windows
        now = datetime.now(UTC) - timedelta(minutes=20)
        seed_database(engine, streams=300, events_per_stream=12, seed=5, now=now, span=timedelta(minutes=100))
        recorder = Recorder(engine)
        recorder.start()
        recorder.submit(hostile_record())
        assert recorder.close(timeout=30)
    finally:
        engine.dispose()
    return url


def app(url: str, monkeypatch: pytest.MonkeyPatch, page: str | None = None, **query: str) -> AppTest:
    monkeypatch.setenv("STREAMTAP_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    if page is not None:
        at.switch_page(page)
        for k, v in query.items():
            at.query_params[k] = v
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(str(m.value) for m in at.metric if m.label == label)


def texts(at: AppTest) -> list[str]:
    return [str(e.value) for e in [*at.text, *at.code]]


def markdown(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in [*at.markdown, *at.caption, *at.title, *at.subheader])


def expected_count(url: str, window: str = "24h", **filters: tuple[str, ...]) -> int:
    """The stream count the read functions give, to compare with what the page shows."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return ov.overview(session, ov.Filters.for_window(window, **filters)).summary.streams
    finally:
        engine.dispose()


class TestOverview:
    def test_numbers(self, seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app(seeded, monkeypatch)
        assert not at.error
        # the oldest stream of the last day is 2 hours old: the page opens on the last 6 hours
        assert at.selectbox(key="window").value == "6h"
        assert metric(at, "Streams") == "301"
        for label in ("TTFT p50", "TTFT p95", "TTFT p99", "Inter-chunk gap p50", "Inter-chunk gap p99"):
            assert metric(at, label).endswith(" ms")
        assert metric(at, "Error rate").endswith("%") and metric(at, "Disconnect rate").endswith("%")
        assert [t.value for t in at.main.title] == ["Overview"]
        assert at.sidebar.title[0].value == "streamtap"
        models = at.dataframe[0].value
        assert set(models["Model"]) >= {"gpt-4o", HOSTILE_MODEL}
        assert models["Streams"].sum() == 301
        assert HOSTILE_MODEL not in markdown(at)

    def test_filters_apply(self, seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app(seeded, monkeypatch)
        at.multiselect(key="models").set_value(["gpt-4o", "o3-mini"]).run()
        assert not at.exception
        expected = expected_count(seeded, models=("gpt-4o", "o3-mini"))
        assert 0 < expected < 301
        assert metric(at, "Streams") == f"{expected:,}"
        assert set(at.dataframe[0].value["Model"]) == {"gpt-4o", "o3-mini"}
        at.multiselect(key="models").set_value([])
        at.multiselect(key="outcomes").set_value(["http_error"]).run()
        assert metric(at, "Error rate") == "100.0%"
        at.multiselect(key="outcomes").set_value([])
        at.selectbox(key="window").set_value("15m").run()
        assert metric(at, "Streams") == "1"  # the hostile stream alone is that recent
        at.toggle(key="auto_refresh").set_value(True).run()
        assert not at.exception and metric(at, "Streams") == "1"

    def test_no_match(self, seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app(seeded, monkeypatch)
        at.multiselect(key="models").set_value([HOSTILE_MODEL])
        at.multiselect(key="outcomes").set_value(["http_error"]).run()
        assert not at.exception
        assert [i.value for i in at.info] == ["No streams match these filters in the selected window."]


class TestStreams:
    def test_table_and_search(self, seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app(seeded, monkeypatch, "views/streams.py")
        table = at.dataframe[0].value
        assert len(table) == 301
        assert table["Id"].iloc[0] != "" and list(table["Started (UTC)"]) == sorted(
            table["Started (UTC)"], reverse=True
        )
        at.text_input(key="search").input("feedface").run()
        table = at.dataframe[0].value
        assert list(table["Id"]) == ["feedfacefeedfacefeedfacefeedface"]
        assert list(table["Model"]) == [HOSTILE_MODEL]
        at.text_input(key="search").input("no such thing anywhere").run()
        assert not at.exception and not at.dataframe
        assert [i.value for i in at.info] == ["No streams match the search and filters."]

    def test_selecting_a_row_opens_the_stream(self, seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app(seeded, monkeypatch, "views/streams.py")
        at.text_input(key="search").input("feedface").run()
        at.session_state["streams_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
        at.run()
        assert not at.exception
        assert at.query_params.get("id") == "feedfacefeedfacefeedfacefeedface"
        assert [t.value for t in at.main.title] == ["Stream"]


class TestStream:
    def test_hostile_stream(self, seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app(seeded, monkeypatch, "views/stream.py", id="feedfacefeedface")
        assert not at.error
        assert metric(at, "TTFT") == "20.0 ms" and metric(at, "Events") == "2"
        shown = texts(at)
        assert any(HOSTILE_MODEL in t for t in shown)  # as literal text
        assert HOSTILE_TEXT in shown
        assert "thinking it over" in shown
        assert (
            '{\n  "city": "Lisbon",\n  "days": [\n    1,\n    2\n  ]\n}' in shown
        )  # pretty-printed arguments
        assert HOSTILE_MODEL not in markdown(at) and "**bold**" not in markdown(at)
        labels = [b.label for b in at.get("download_button")]
        assert labels == ["Download SSE", "Download JSON"]

    def test_seeded_stream_with_timeline(self, seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
        engine = make_engine(seeded)
        try:
            with engine.connect() as conn:
                longest = (
                    "SELECT id FROM streams WHERE finish_reason = 'stop' ORDER BY event_count DESC LIMIT 1"
                )
                sid = conn.execute(sa.text(longest)).scalar_one()
        finally:
            engine.dispose()
        at = app(seeded, monkeypatch, "views/stream.py", id=sid)
        assert not at.error
        assert any("gaps above" in c.value for c in at.caption)
        assert [s.value for s in at.subheader] == ["Details", "Answer", "Chunk timeline"]
        events = next(d.value for d in at.dataframe if "seq" in d.value.columns)
        assert list(events["seq"]) == list(range(len(events))) and len(events) > 5

    def test_unknown_id(self, seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app(seeded, monkeypatch, "views/stream.py", id="0123456789abcdef")
        assert [e.value for e in at.error] == ["no stream with id 0123456789abcdef"]

    def test_no_id(self, seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app(seeded, monkeypatch, "views/stream.py")
        assert not at.error and at.text_input[0].label == "Stream id"
        at.text_input[0].input("feedfacefeedface").run()
        assert not at.exception and at.query_params.get("id") == "feedfacefeedface"
        assert metric(at, "Events") == "2"


class TestDatabases:
    @pytest.mark.parametrize("page", [None, "views/streams.py", "views/stream.py"])
    def test_empty(self, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, page: str | None) -> None:
        engine = make_engine(sqlite_url)
        upgrade(engine)
        engine.dispose()
        at = app(sqlite_url, monkeypatch, page, id="feedface") if page else app(sqlite_url, monkeypatch)
        assert not at.error
        assert [i.value for i in at.info] == [
            "No streams recorded yet — start the proxy (streamtap proxy ...) or run `make demo`."
        ]
        assert not at.metric

    def test_not_ours(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp_path / "other.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        conn.close()
        at = app(f"sqlite:///{path}", monkeypatch)
        assert [e.value for e in at.error] == [
            f"{path} is not a streamtap database (it has tables: invoices)"
        ]
        assert not at.metric

    def test_unreachable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app("postgresql://postgres@127.0.0.1:1/nowhere", monkeypatch)
        (error,) = at.error
        assert error.value.startswith(
            "cannot open database postgresql+psycopg://postgres@127.0.0.1:1/nowhere:"
        )
        assert "\n" not in error.value

    def test_missing_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        at = app(f"sqlite:///{tmp_path}/absent.db", monkeypatch, "views/streams.py")
        assert [e.value for e in at.error] == [f"no database at {tmp_path}/absent.db"]
        assert not (tmp_path / "absent.db").exists()
