"""What every dashboard page shares: the database URL, the cached engine and read functions, the filters
sidebar, number formatting and the one-line error display. No SQL here: it calls `streamtap.overview` and
`streamtap.read`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import NoReturn

import sqlalchemy as sa
import streamlit as st
from sqlalchemy.orm import Session

from streamtap import overview as ov
from streamtap.db.engine import DEFAULT_DB_URL, check_schema, make_engine
from streamtap.errors import StreamtapError
from streamtap.read import get_stream
from streamtap.records import StreamRecord

REFRESH_S = 10  # auto-refresh period, and how long query results are reused
WINDOW_LABELS = {
    "15m": "Last 15 minutes",
    "1h": "Last hour",
    "6h": "Last 6 hours",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "all": "All time",
}
EMPTY_MESSAGE = "No streams recorded yet — start the proxy (streamtap proxy ...) or run `make demo`."


def db_url() -> str:
    """`-- --db URL` after `streamlit run dashboard/app.py`, else $STREAMTAP_DB, else the default."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return str(args.db or os.environ.get("STREAMTAP_DB") or DEFAULT_DB_URL)


def shown_url(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


@st.cache_resource(show_spinner=False, on_release=lambda engine: engine.dispose())
def engine(url: str) -> sa.Engine:
    return make_engine(url)


# -- errors ---------------------------------------------------------------------------------------


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def fail(message: str) -> NoReturn:
    st.error(message, icon=":material/error:")
    st.stop()


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn the database failing mid-page into a one-line error instead of a stack trace."""
    try:
        yield
    except StreamtapError as e:
        fail(str(e))
    except sa.exc.SQLAlchemyError as e:
        fail(f"database error: {_reason(e)}")


# -- cached reads ---------------------------------------------------------------------------------


@st.cache_data(ttl=30, show_spinner=False)
def _check(url: str) -> None:
    check_schema(engine(url))


@st.cache_data(ttl=5, show_spinner=False)
def has_streams(url: str) -> bool:
    with Session(engine(url)) as session:
        return ov.has_streams(session)


@st.cache_data(ttl=REFRESH_S, show_spinner=False)  # the window slides: a minute-old answer can miss a stream
def default_window(url: str) -> str:
    with Session(engine(url)) as session:
        return ov.default_window(session)


@st.cache_data(ttl=60, show_spinner=False)
def filter_options(url: str) -> ov.FilterOptions:
    with Session(engine(url)) as session:
        return ov.filter_options(session)


@st.cache_data(ttl=REFRESH_S, show_spinner="Aggregating…", max_entries=64)
def load_overview(url: str, filters: ov.Filters, now: datetime) -> ov.Overview:
    with Session(engine(url)) as session:
        return ov.overview(session, filters, now=now)


@st.cache_data(ttl=REFRESH_S, show_spinner=False, max_entries=64)
def load_streams(url: str, filters: ov.Filters, query: str, limit: int) -> list[ov.StreamRow]:
    with Session(engine(url)) as session:
        return ov.search_streams(session, filters, query=query, limit=limit)


@st.cache_data(ttl=60, show_spinner=False, max_entries=32)
def load_stream(url: str, stream_id: str) -> StreamRecord:
    with Session(engine(url)) as session:
        return get_stream(session, stream_id)


def require_data(url: str, *, heading: str | None = None) -> None:
    """Stop the page with a one-line error when the database is unreachable, not ours or not migrated, and
    with a friendly message while nothing is recorded (the page then appears by itself once something is).
    """
    with database_errors():
        _check(url)
        ready = has_streams(url)
    if ready:
        return
    if heading:
        st.title(heading)
    st.info(EMPTY_MESSAGE, icon=":material/hourglass_empty:")

    @st.fragment(run_every=5)
    def wait_for_data() -> None:
        has_streams.clear()
        with database_errors():
            if has_streams(url):
                st.rerun(scope="app")

    wait_for_data()
    st.stop()


# -- the sidebar ----------------------------------------------------------------------------------


def now() -> datetime:
    """The current time, floored to the refresh period so reruns within it share cached results."""
    t = datetime.now(UTC).timestamp()
    return datetime.fromtimestamp(t - t % REFRESH_S, UTC)


def sidebar(url: str) -> None:
    """The filters every view applies; their values live in st.session_state (see `filters()`)."""
    state = st.session_state
    with database_errors():
        options = filter_options(url)
        if "window_default" not in state:  # chosen once per visit, from what is recorded
            state["window_default"] = default_window(url)
    bar = st.sidebar
    windows = list(ov.WINDOWS)
    bar.selectbox(
        "Time window",
        windows,
        index=windows.index(state["window_default"]),
        format_func=WINDOW_LABELS.get,
        key="window",
    )
    bar.multiselect("Model", options.models, key="models", placeholder="All models")
    bar.multiselect("Upstream host", options.hosts, key="hosts", placeholder="All hosts")
    bar.multiselect("Outcome", options.outcomes, key="outcomes", placeholder="All outcomes")
    bar.multiselect("API key", options.api_keys, key="api_keys", placeholder="All keys")
    bar.toggle(f"Auto-refresh every {REFRESH_S} s", key="auto_refresh")
    bar.divider()
    bar.text(f"database: {shown_url(url)}")


def filters() -> ov.Filters:
    state = st.session_state
    return ov.Filters.for_window(
        state.get("window") or state.get("window_default") or "24h",
        now=now(),
        models=tuple(state.get("models") or ()),
        hosts=tuple(state.get("hosts") or ()),
        outcomes=tuple(state.get("outcomes") or ()),
        api_keys=tuple(state.get("api_keys") or ()),
    )


def refresh_every() -> int | None:
    return REFRESH_S if st.session_state.get("auto_refresh") else None


# -- formatting -----------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.2f} ms"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def pct(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.2f}%" if value < 0.1 else f"{100 * value:.1f}%"
