"""The real dashboard in a real browser: `streamlit run dashboard/app.py -- --db <seeded sqlite>`, opened with
Playwright and Debian's Chromium. Saves the screenshots in tests/artifacts/ (gitignored); with
STREAMTAP_UPDATE_SCREENSHOTS=1 in docs/screenshots/, where the README shows them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from streamtap.db.engine import make_engine, upgrade
from streamtap.seed import seed_database

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("STREAMTAP_UPDATE_SCREENSHOTS") == "1"
    else ROOT / "tests" / "artifacts"
)
STREAMS = 2000
WIDTH = 1400

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A seeded database, and the id of a stream with a stall to open."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser')}/demo.db"
    engine = make_engine(url)
    try:
        upgrade(engine)
        # 23 hours up to now: nothing near the edge of the page's 24-hour window
        seed_database(
            engine,
            streams=STREAMS,
            events_per_stream=24,
            seed=2026,
            now=datetime.now(UTC),
            span=timedelta(hours=23),
        )
        with engine.connect() as conn:
            # a reasoning stream that stalled: the stream page's timeline has something to show
            stream_id = conn.execute(
                sa.text(
                    "SELECT s.id FROM streams s JOIN stream_events e ON e.stream_id = s.id "
                    "WHERE s.request_model = 'deepseek-reasoner' AND s.outcome = 'completed' "
                    "AND e.tokens AND e.gap_ms > 1500 ORDER BY s.event_count DESC LIMIT 1"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return url, str(stream_id)


@pytest.fixture(scope="module")
def server(database: tuple[str, str]) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--", "--db", database[0],
    ]  # fmt: skip
    env = dict(os.environ)
    env.pop("STREAMTAP_DB", None)  # the --db argument is what must be used
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{out}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the dashboard did not start within 60 s")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def settle(page: Any, min_charts: int) -> None:
    """Wait until the script run is over and the charts are drawn."""
    page.wait_for_selector('[data-testid="stMetric"]', timeout=60_000)
    page.wait_for_function(
        'n => document.querySelectorAll(\'[data-testid="stVegaLiteChart"] canvas, '
        '[data-testid="stVegaLiteChart"] svg.marks\').length >= n',
        arg=min_charts,
        timeout=60_000,
    )
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=60_000)
    page.wait_for_timeout(1500)


def full_page_screenshot(page: Any, path: Path) -> None:
    # Streamlit scrolls inside its own container, so the window is grown to the content's height.
    height = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll('*')).map(e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": WIDTH, "height": int(height)})
    page.wait_for_timeout(1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def assert_no_errors(page: Any) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    assert "Traceback" not in page.inner_text("body")


def test_stream_page(server: str, browser: Any, database: tuple[str, str]) -> None:
    # The first request the server gets is a deep link to one stream.
    stream_id = database[1]
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    try:
        page.goto(f"{server}/stream?id={stream_id}")
        settle(page, min_charts=2)
        body = page.inner_text("body")
        assert stream_id in body and "deepseek-reasoner" in body
        assert "Chunk timeline" in body and "stalls: " in body and "stalls: 0 found" not in body
        assert page.get_by_text("Download SSE").count() == 1
        # the router ran (a deep link is not a legacy multipage run): the filters sidebar is there
        assert page.locator('[data-testid="stSidebar"]').get_by_text("Time window").count() == 1
        assert_no_errors(page)
        full_page_screenshot(page, SCREENSHOTS / "dashboard-stream.png")
    finally:
        page.close()
    assert (SCREENSHOTS / "dashboard-stream.png").stat().st_size > 30_000


def test_overview(server: str, browser: Any) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    try:
        page.goto(server + "/")
        settle(page, min_charts=6)
        metrics = page.locator('[data-testid="stMetric"]')
        streams = metrics.filter(has_text="Streams").first.inner_text()
        assert f"{STREAMS:,}" in streams
        body = page.inner_text("body")
        for text in (
            "TTFT p50",
            "Inter-chunk gap p99",
            "Time to first token over time",
            "Outcomes",
            "Models",
        ):
            assert text in body
        assert page.locator('[data-testid="stDataFrame"]').count() == 1  # the per-model table (a canvas)
        assert_no_errors(page)
        full_page_screenshot(page, SCREENSHOTS / "dashboard-overview.png")
    finally:
        page.close()
    assert (SCREENSHOTS / "dashboard-overview.png").stat().st_size > 50_000


def test_explorer(server: str, browser: Any) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    try:
        page.goto(server + "/streams")
        page.wait_for_selector('[data-testid="stDataFrame"]', timeout=60_000)
        assert "matching streams, newest first" in page.inner_text("body")
        assert_no_errors(page)
    finally:
        page.close()
