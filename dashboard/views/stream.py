"""One stream (`?id=...`): its metadata, the answer it reconstructed, the chunk timeline with stalls
highlighted, and the recording as SSE or JSON."""

from __future__ import annotations

import json
import math

import altair as alt
import common
import pandas as pd
import streamlit as st

from streamtap.export import record_to_json, record_to_sse
from streamtap.overview import Timeline, timeline
from streamtap.records import Choice, StreamRecord

COLORS = {"token": "#4C78A8", "other": "#BAB0AC", "stall": "#E45756"}


def _value(v: object) -> str:
    return "—" if v is None or v == "" else str(v)


OUTCOME_BADGES = {
    "completed": "green",
    "truncated": "gray",
    "client_disconnect": "orange",
    "upstream_disconnect": "orange",
    "model_error": "red",
    "http_error": "red",
    "in_progress": "blue",
    "interrupted": "violet",
}


def headline(rec: StreamRecord) -> None:
    # stored values go through st.text, which renders no Markdown or HTML
    model = _value(rec.request_model or rec.model)
    st.text(f"{rec.id}  ·  {model}  ·  started {rec.started_at:%Y-%m-%d %H:%M:%S} UTC")
    badges = st.container(horizontal=True)
    with badges:
        st.badge(rec.outcome.value, color=OUTCOME_BADGES.get(rec.outcome.value, "gray"))  # type: ignore[arg-type]
        if rec.status_code is not None:
            st.badge(f"HTTP {int(rec.status_code)}", color="red" if rec.status_code >= 400 else "gray")
    row = st.columns(5)
    row[0].metric("TTFT", common.ms(rec.ttft_ms), border=True)
    row[1].metric("Duration", common.ms(rec.duration_ms), border=True)
    usage = rec.usage
    row[2].metric("Prompt tokens", _value(usage and usage.prompt_tokens), border=True)
    row[3].metric("Completion tokens", _value(usage and usage.completion_tokens), border=True)
    row[4].metric("Events", f"{len(rec.events):,}", border=True)


def details(rec: StreamRecord) -> None:
    fields = {
        "id": rec.id,
        "started at": rec.started_at.isoformat(),
        "request model": rec.request_model,
        "model": rec.model,
        "finish reason": rec.finish_reason,
        "url": f"{rec.method} {rec.url}",
        "upstream host": rec.host,
        "api": rec.api,
        "api key": rec.api_key_fp,
        "proxy": rec.proxy_instance,
        "time to first byte": common.ms(rec.ttfb_ms),
        "time to first content": common.ms(rec.ttfc_ms),
        "reasoning tokens": rec.usage.reasoning_tokens if rec.usage else None,
        "content encoding": rec.content_encoding,
        "tap errors": rec.tap_errors,
        "error": rec.error,
    }
    df = pd.DataFrame([{"field": k, "value": _value(v)} for k, v in fields.items()])
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        height=35 * (len(df) + 1) + 3,
        column_config={
            "field": st.column_config.TextColumn(width="medium"),
            "value": st.column_config.TextColumn(width="large"),
        },
    )


def downloads(rec: StreamRecord) -> None:
    left, right, _ = st.columns([1, 1, 4])
    left.download_button(
        "Download SSE",
        data=record_to_sse(rec),
        file_name=f"{rec.id}.sse",
        mime="text/event-stream",
        icon=":material/download:",
        on_click="ignore",
        width="stretch",
    )
    right.download_button(
        "Download JSON",
        data=json.dumps(record_to_json(rec), indent=2, ensure_ascii=False),
        file_name=f"{rec.id}.json",
        mime="application/json",
        icon=":material/download:",
        on_click="ignore",
        width="stretch",
    )


def _pretty(arguments: str) -> tuple[str, str | None]:
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False), "json"
    except ValueError:
        return arguments, None  # partial or invalid JSON: shown exactly as received


def answer(choice: Choice) -> None:
    st.text(f"finish reason: {_value(choice.finish_reason)}")
    if choice.reasoning_content:
        with st.expander("Reasoning", icon=":material/psychology:"):
            st.code(choice.reasoning_content, language=None, wrap_lines=True)
    if choice.content:
        st.code(choice.content, language=None, wrap_lines=True)
    if choice.refusal:
        st.text("refusal:")
        st.code(choice.refusal, language=None, wrap_lines=True)
    for call in choice.tool_calls:
        st.text(f"tool call #{call.index}: {_value(call.name)}  (id {_value(call.id)})")
        body, language = _pretty(call.arguments)
        st.code(body, language=language, wrap_lines=True)
    if not (choice.content or choice.reasoning_content or choice.refusal or choice.tool_calls):
        st.text("(no text)")


def timeline_charts(t: Timeline) -> None:
    points = pd.DataFrame(
        [
            {
                "seq": p.seq,
                "t_ms": p.t_ms,
                "gap_ms": p.gap_ms,
                "kind": p.kind,
                "type": "stall" if p.stall else ("token" if p.tokens else "other"),
            }
            for p in t.points
        ],
        columns=["seq", "t_ms", "gap_ms", "kind", "type"],
    )
    color = alt.Color(
        "type:N",
        title=None,
        scale=alt.Scale(domain=list(COLORS), range=list(COLORS.values())),
        legend=alt.Legend(orient="top"),
    )
    tooltip = [
        "seq:Q",
        alt.Tooltip("t_ms:Q", title="arrival (ms)", format=",.1f"),
        alt.Tooltip("gap_ms:Q", title="gap (ms)", format=",.1f"),
        "kind:N",
    ]
    arrival = (
        alt.Chart(points)
        .mark_circle(size=36, opacity=0.9)
        .encode(
            x=alt.X("t_ms:Q", title="arrival time since the request (ms)"),
            y=alt.Y("seq:Q", title="event sequence"),
            color=color,
            tooltip=tooltip,
        )
        .properties(height=300)
    )
    line = alt.Chart(points).mark_line(color="#BAB0AC", strokeWidth=1).encode(x="t_ms:Q", y="seq:Q")
    left, right = st.columns(2)
    with left.container(border=True):
        st.markdown("**Arrival time of each event**")
        st.altair_chart(alt.layer(line, arrival), width="stretch")
    with right.container(border=True):
        st.markdown("**Gap before each token event**")
        gaps = points[points["gap_ms"] > 0]  # the log scale has no zero
        floor = 10.0 ** math.floor(math.log10(gaps["gap_ms"].min())) if len(gaps) else 1.0
        bars = (
            alt.Chart(gaps)
            .mark_bar()
            .encode(
                x=alt.X("seq:O", title="event sequence", axis=alt.Axis(labelOverlap=True)),
                y=alt.Y("gap_ms:Q", title="ms (log scale)", scale=alt.Scale(type="log", domainMin=floor)),
                # bars grow from the bottom of the axis: a log scale has no 0
                y2=alt.datum(floor),
                color=color,
                tooltip=tooltip,
            )
        )
        layers: list[alt.Chart] = [bars]
        if t.threshold_ms is not None:
            rule = pd.DataFrame([{"threshold": t.threshold_ms}])
            layers.append(
                alt.Chart(rule).mark_rule(strokeDash=[4, 3], color="#E45756").encode(y="threshold:Q")
            )
        st.altair_chart(alt.layer(*layers).properties(height=300), width="stretch")


def events_table(rec: StreamRecord) -> None:
    df = pd.DataFrame(
        [
            {
                "seq": e.seq,
                "t (ms)": e.t_ms,
                "gap (ms)": e.gap_ms,
                "kind": e.kind.value,
                "tokens": e.tokens,
                "event": e.event,
                "data": e.data,
            }
            for e in rec.events
        ]
    )
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        column_config={
            "t (ms)": st.column_config.NumberColumn(format="%.1f"),
            "gap (ms)": st.column_config.NumberColumn(format="%.1f"),
            "data": st.column_config.TextColumn(width="large"),
        },
    )


def render(stream_id: str) -> None:
    url = common.db_url()
    with common.database_errors():  # an unknown id is a one-line error too
        rec = common.load_stream(url, stream_id)
    headline(rec)
    downloads(rec)

    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Details")
        details(rec)
    with right:
        st.subheader("Answer")
        if not rec.choices:
            st.text(
                "No choices: "
                + ("the upstream answered with an error." if rec.error else "nothing was generated.")
            )
        elif len(rec.choices) == 1:
            answer(rec.choices[0])
        else:
            tabs = st.tabs([f"Choice {c.index}" for c in rec.choices])
            for tab, choice in zip(tabs, rec.choices, strict=True):
                with tab:
                    answer(choice)

    st.subheader("Chunk timeline")
    if not rec.events:
        st.text("No events were recorded for this exchange.")
        return
    t = timeline(rec)
    stalls = t.stalls
    if t.threshold_ms is not None:
        st.caption(
            f"Median gap between token events {common.ms(t.median_gap_ms)}; gaps above "
            f"{common.ms(t.threshold_ms)} are stalls: {len(stalls)} found."
        )
    timeline_charts(t)
    with st.expander(f"All {len(rec.events):,} events"):
        events_table(rec)


st.title("Stream")
stream_id = st.query_params.get("id", "").strip()
if not stream_id:
    typed = st.text_input("Stream id", placeholder="a full id, or a prefix of at least 6 characters")
    if typed.strip():
        st.query_params["id"] = typed.strip()
        st.rerun()
    st.info("Open a stream from the Streams page, or paste its id above.", icon=":material/info:")
else:
    render(stream_id)
