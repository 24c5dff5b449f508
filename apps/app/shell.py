"""The app's frame: sidebar (workspace folder, page, reload) and the page dispatch."""

from __future__ import annotations

import importlib

import streamlit as st

from apps.app.common import clear_caches, default_workspace, get_reader
from apps.app.data import EmptyWorkspace
from toolkit.errors import LoomError

PAGES = {
    "Runs": "apps.app.runs",
    "Labeling": "apps.app.labeling",
    "Extraction": "apps.app.extraction",
    "Linking": "apps.app.linking",
    "Embeddings": "apps.app.embeddings",
}


def main() -> None:
    """Draw the sidebar and the chosen page; problems become messages, never stack traces."""
    st.set_page_config(page_title="loom", layout="wide")
    if "page" not in st.session_state:
        wanted = st.query_params.get("page", "Runs")
        st.session_state["page"] = wanted if wanted in PAGES else "Runs"
    if "workspace" not in st.session_state:
        st.session_state["workspace"] = default_workspace()
    with st.sidebar:
        st.markdown("## loom")
        path = st.text_input("Workspace folder", key="workspace")
        page = st.radio("Page", list(PAGES), key="page")
        if st.button("Reload", help="re-read the workspace (after a job wrote new results)"):
            clear_caches()
        if st.session_state.get("selected_run"):
            st.caption(f"Selected run: {st.session_state['selected_run']}")
    if st.query_params.get("page") != page:
        st.query_params["page"] = page
    st.title(page)
    try:
        reader = get_reader(path)
    except EmptyWorkspace as e:
        st.info(f"Empty workspace: {e}")
        return
    except LoomError as e:
        st.error(str(e))
        return
    except Exception as e:  # a damaged catalog: a message, not a stack trace
        st.error(f"Cannot open the workspace {path}: {type(e).__name__}: {e}")
        return
    if reader.runs().empty:
        st.info(
            f"The workspace {reader.path} has no runs yet. Run `loom demo --out {reader.path}` "
            "to fill it."
        )
        return
    module = importlib.import_module(PAGES[page])
    try:
        module.render(reader)
    except LoomError as e:
        st.error(str(e))
    except Exception as e:
        st.error(
            f"The {page} page could not be shown ({type(e).__name__}: {e}). Press Reload; if it "
            "persists the workspace may come from another version of loom."
        )
