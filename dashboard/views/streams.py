"""Stream explorer: the newest streams the sidebar's filters select, searchable; selecting one opens it."""

from __future__ import annotations

from pathlib import Path

import common
import pandas as pd
import streamlit as st

LIMIT = 500
STREAM_PAGE = Path(__file__).resolve().parent / "stream.py"


def render() -> None:
    url = common.db_url()
    query = st.text_input(
        "Search",
        key="search",
        placeholder="id prefix, model, or text of the answer",
        help="Matches a prefix of the stream id, part of the model name, or text in the answer (any case)",
    )
    with common.database_errors():
        rows = common.load_streams(url, common.filters(), query, LIMIT)
    if not rows:
        st.info("No streams match the search and filters.", icon=":material/search_off:")
        return
    shown = f"the newest {len(rows):,}" if len(rows) == LIMIT else f"{len(rows):,}"
    st.caption(f"Showing {shown} matching streams, newest first. Select a row to open the stream.")
    df = pd.DataFrame(
        [
            {
                "Started (UTC)": r.started_at.replace(tzinfo=None),
                "Model": r.model,
                "Outcome": r.outcome,
                "Finish": r.finish_reason,
                "TTFT": r.ttft_ms,
                "Duration": r.duration_ms,
                "Tokens": r.completion_tokens,
                "Events": r.events,
                "Answer": r.preview,
                "Host": r.host,
                "Status": r.status_code,
                "API key": r.api_key_fp,
                "Id": r.id,
            }
            for r in rows
        ]
    )
    ms = st.column_config.NumberColumn(format="%.0f ms")
    event = st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        height=620,
        on_select="rerun",
        selection_mode="single-row",
        key="streams_table",
        column_config={
            "Started (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss", pinned=True),
            "TTFT": ms,
            "Duration": ms,
            "Answer": st.column_config.TextColumn(width="large"),
            "Status": st.column_config.NumberColumn(format="plain"),
        },
    )
    selected = event.selection.rows if event is not None else []
    if selected:
        st.switch_page(STREAM_PAGE, query_params={"id": rows[selected[0]].id})


st.title("Streams")
render()
