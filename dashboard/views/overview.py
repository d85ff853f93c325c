"""Overview: latency percentiles, their trend and distribution, outcomes and a per-model comparison, for the
window and filters of the sidebar."""

from __future__ import annotations

import altair as alt
import common
import pandas as pd
import streamlit as st

from streamtap.overview import Bin, Overview

PERCENTILE_COLORS = {"p50": "#4C78A8", "p95": "#F58518", "p99": "#E45756"}
OUTCOME_COLORS = {
    "completed": "#54A24B",
    "truncated": "#9D9D9D",
    "client_disconnect": "#F58518",
    "upstream_disconnect": "#EECA3B",
    "model_error": "#E45756",
    "http_error": "#B279A2",
    "in_progress": "#4C78A8",
    "interrupted": "#72B7B2",
}
HEIGHT = 260
# 1-2-5 ticks read better on a log axis than Vega's defaults
LOG_AXIS = alt.Axis(
    values=[m * 10**e for e in range(-2, 7) for m in (1, 2, 5)], format=",~g", labelOverlap=True
)


def _width_label(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def metrics(o: Overview) -> None:
    s = o.summary
    row = st.columns(5)
    row[0].metric("Streams", f"{s.streams:,}", border=True, help="Streams started in the window")
    row[1].metric(
        "Error rate",
        common.pct(s.error_rate),
        border=True,
        help="HTTP errors and in-band model errors, of the finished streams",
    )
    row[2].metric(
        "Disconnect rate",
        common.pct(s.disconnect_rate),
        border=True,
        help="Client and upstream disconnects, of the finished streams",
    )
    row[3].metric("Duration p50", common.ms(s.duration_p50), border=True, help="Request to last byte")
    row[4].metric(
        "Output tok/s",
        "—" if s.tokens_per_s is None else f"{s.tokens_per_s:,.1f}",
        border=True,
        help="Completion tokens / time from the first token to the end, over the streams that reported usage",
    )
    row = st.columns(5)
    ttft_help = "Time to first token: from the request to the first token-carrying event"
    row[0].metric("TTFT p50", common.ms(s.ttft_p50), border=True, help=ttft_help)
    row[1].metric("TTFT p95", common.ms(s.ttft_p95), border=True, help=ttft_help)
    row[2].metric("TTFT p99", common.ms(s.ttft_p99), border=True, help=ttft_help)
    gap_help = "Time between consecutive token-carrying events of a stream"
    row[3].metric("Inter-chunk gap p50", common.ms(s.gap_p50), border=True, help=gap_help)
    row[4].metric("Inter-chunk gap p99", common.ms(s.gap_p99), border=True, help=gap_help)


def series_chart(o: Overview, metric: str, percentiles: tuple[str, ...]) -> alt.Chart:
    rows = [
        {"time": p.start, "percentile": name, "ms": value}
        for p in o.series
        for name in percentiles
        if (value := getattr(p, f"{metric}_{name}")) is not None and value > 0
    ]
    df = pd.DataFrame(rows, columns=["time", "percentile", "ms"])
    return (
        alt.Chart(df)
        .mark_line(point=alt.OverlayMarkDef(size=14), interpolate="monotone")
        .encode(
            x=alt.X("time:T", title=None, scale=alt.Scale(domain=[o.start.isoformat(), o.end.isoformat()])),
            y=alt.Y("ms:Q", title="ms (log scale)", scale=alt.Scale(type="log"), axis=LOG_AXIS),
            color=alt.Color(
                "percentile:N",
                title=None,
                scale=alt.Scale(domain=list(percentiles), range=[PERCENTILE_COLORS[p] for p in percentiles]),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=[
                alt.Tooltip("time:T", title="bucket start", format="%Y-%m-%d %H:%M"),
                alt.Tooltip("percentile:N"),
                alt.Tooltip("ms:Q", format=",.1f"),
            ],
        )
        .properties(height=HEIGHT)
    )


def histogram_chart(bins: tuple[Bin, ...], marks: dict[str, float | None], color: str) -> alt.LayerChart:
    df = pd.DataFrame(
        [{"lo": b.lo, "hi": b.hi, "count": b.count, "range": f"{b.lo:g}–{b.hi:g} ms"} for b in bins],
        columns=["lo", "hi", "count", "range"],
    )
    bars = (
        alt.Chart(df)
        .mark_bar(color=color, opacity=0.85, stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("lo:Q", title="ms (log scale)", scale=alt.Scale(type="log"), axis=LOG_AXIS),
            x2="hi:Q",
            y=alt.Y("count:Q", title="count"),
            y2=alt.datum(0),
            tooltip=[alt.Tooltip("range:N"), alt.Tooltip("count:Q", format=",")],
        )
    )
    rules_df = pd.DataFrame(
        [{"name": k, "ms": v} for k, v in marks.items() if v is not None and v > 0], columns=["name", "ms"]
    )
    rules = (
        alt.Chart(rules_df)
        .mark_rule(strokeDash=[4, 3], strokeWidth=1.5)
        .encode(
            x="ms:Q",
            color=alt.Color(
                "name:N",
                title=None,
                scale=alt.Scale(domain=list(marks), range=[PERCENTILE_COLORS[k] for k in marks]),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=[alt.Tooltip("name:N", title="percentile"), alt.Tooltip("ms:Q", format=",.1f")],
        )
    )
    return alt.layer(bars, rules).properties(height=HEIGHT)


def breakdown_chart(pairs: tuple[tuple[str, int], ...], colors: dict[str, str] | None = None) -> alt.Chart:
    df = pd.DataFrame([{"name": k, "streams": n} for k, n in pairs], columns=["name", "streams"])
    color: alt.Color | alt.ColorValue = alt.ColorValue("#4C78A8")
    if colors is not None:
        names = [k for k, _ in pairs]
        color = alt.Color(
            "name:N",
            legend=None,
            scale=alt.Scale(domain=names, range=[colors.get(k, "#BAB0AC") for k in names]),
        )
    base = alt.Chart(df).encode(
        y=alt.Y("name:N", title=None, sort=[k for k, _ in pairs], axis=alt.Axis(labelLimit=180)),
        x=alt.X("streams:Q", title="streams", scale=alt.Scale(nice=True), axis=alt.Axis(tickCount=4)),
    )
    bars = base.mark_bar().encode(color=color, tooltip=["name:N", alt.Tooltip("streams:Q", format=",")])
    labels = base.mark_text(align="left", dx=4, color="gray").encode(text=alt.Text("streams:Q", format=","))
    return (bars + labels).properties(height=alt.Step(26))


def volume_chart(o: Overview) -> alt.Chart:
    df = pd.DataFrame(
        [{"time": p.start, "streams": p.streams} for p in o.series], columns=["time", "streams"]
    )
    return (
        alt.Chart(df)
        .mark_bar(color="#72B7B2")
        .encode(
            x=alt.X("time:T", title=None, scale=alt.Scale(domain=[o.start.isoformat(), o.end.isoformat()])),
            y=alt.Y("streams:Q", title="streams"),
            tooltip=[alt.Tooltip("time:T", title="bucket start", format="%Y-%m-%d %H:%M"), "streams:Q"],
        )
        .properties(height=HEIGHT)
    )


def models_table(o: Overview) -> None:
    df = pd.DataFrame(
        [
            {
                "Model": m.model,
                "Streams": m.streams,
                "TTFT p50": m.ttft_p50,
                "TTFT p95": m.ttft_p95,
                "Gap p50": m.gap_p50,
                "Gap p99": m.gap_p99,
                "Output tok/s": m.tokens_per_s,
                "Error rate": m.error_rate,
                "Finish reasons": m.finish_mix,
            }
            for m in o.models
        ]
    )
    ms = st.column_config.NumberColumn(format="%.1f ms")
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        column_config={
            "Model": st.column_config.TextColumn(pinned=True),
            "Streams": st.column_config.NumberColumn(format="localized"),
            "TTFT p50": ms,
            "TTFT p95": ms,
            "Gap p50": ms,
            "Gap p99": ms,
            "Output tok/s": st.column_config.NumberColumn(
                format="%.1f", help="Completion tokens / time from the first token to the end"
            ),
            "Error rate": st.column_config.NumberColumn(format="percent"),
            "Finish reasons": st.column_config.TextColumn(width="large"),
        },
    )


def render() -> None:
    url = common.db_url()
    with common.database_errors():
        o = common.load_overview(url, common.filters(), common.now())
    if o.summary.streams == 0:
        st.info("No streams match these filters in the selected window.", icon=":material/filter_alt_off:")
        return
    st.caption(
        f"{o.start:%Y-%m-%d %H:%M} → {o.end:%Y-%m-%d %H:%M} UTC · "
        f"time buckets of {_width_label(o.width)} · latencies in ms"
    )
    metrics(o)
    if o.gap_sample < 1:
        st.caption(
            f"Inter-chunk gaps are estimated from a uniform {100 * o.gap_sample:.0f}% sample of the window's "
            f"streams ({o.gap_samples:,} gaps)."
        )

    left, right = st.columns(2)
    with left.container(border=True):
        st.markdown("**Time to first token over time**")
        st.altair_chart(series_chart(o, "ttft", ("p50", "p95", "p99")), width="stretch")
    with right.container(border=True):
        st.markdown("**Inter-chunk gap over time**")
        st.altair_chart(series_chart(o, "gap", ("p50", "p95", "p99")), width="stretch")

    s = o.summary
    left, right = st.columns(2)
    with left.container(border=True):
        st.markdown("**TTFT distribution**")
        marks = {"p50": s.ttft_p50, "p99": s.ttft_p99}
        st.altair_chart(histogram_chart(o.ttft_bins, marks, "#4C78A8"), width="stretch")
    with right.container(border=True):
        st.markdown("**Inter-chunk gap distribution**")
        marks = {"p50": s.gap_p50, "p99": s.gap_p99}
        st.altair_chart(histogram_chart(o.gap_bins, marks, "#72B7B2"), width="stretch")

    left, right = st.columns(2)
    with left.container(border=True):
        st.markdown(f"**Streams per {_width_label(o.width)}**")
        st.altair_chart(volume_chart(o), width="stretch")
    with right.container(border=True):
        st.markdown("**Outcomes**")
        st.altair_chart(breakdown_chart(o.outcomes, OUTCOME_COLORS), width="stretch")
        st.markdown("**Finish reasons**")
        if o.finish_reasons:
            st.altair_chart(breakdown_chart(o.finish_reasons), width="stretch")
        else:
            st.text("No stream reported a finish reason.")

    st.subheader("Models")
    models_table(o)


st.title("Overview")
st.fragment(run_every=common.refresh_every())(render)()
