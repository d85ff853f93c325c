"""The streamtap dashboard: `streamlit run dashboard/app.py -- --db URL` (what `streamtap dashboard` runs).

This file is the router: page config, the database check, the filters sidebar, then the selected page.
The pages live in views/, not pages/: Streamlit treats a pages/ directory next to the main script as a
legacy multipage app until st.navigation first runs, so a server's first request (a deep link to
/stream?id=...) would run the page without this router.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the views import `common` from here
    sys.path.insert(0, str(HERE))

import common  # noqa: E402

st.set_page_config(page_title="streamtap", page_icon=":material/stream:", layout="wide")
st.set_option("client.toolbarMode", "minimal")  # no "Deploy" button on a local tool

pages = st.navigation(
    [
        st.Page(HERE / "views" / "overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page(HERE / "views" / "streams.py", title="Streams", icon=":material/list:", url_path="streams"),
        st.Page(HERE / "views" / "stream.py", title="Stream", icon=":material/timeline:", url_path="stream"),
    ],
    position="top",
)
st.sidebar.title("streamtap")

url = common.db_url()
common.require_data(url, heading="streamtap")
common.sidebar(url)
pages.run()
