"""lmviz: look inside BERT, GPT-2 and T5. Run with ``streamlit run app.py``.

This script runs on every rerun of every page: the process setup below runs once per server process.
"""
import ctypes
import ctypes.util
import sys

import streamlit as st
import torch

from lmviz.app import ui


@st.cache_resource(show_spinner=False)
def setup_process():
    """Once per server process: one torch thread, two malloc arenas, plotly's lazy imports done. Returns glibc (None
    elsewhere), whose ``malloc_trim`` hands what a rerun freed back to the system."""
    # Each browser session runs in its own thread, so sessions already use the cores in parallel; a torch pool of one
    # thread keeps them from oversubscribing (at 2 threads on 2 cores a 60 ms decode took 3 s when another was busy).
    torch.set_num_threads(1)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if sys.platform.startswith("linux") else None
    except OSError:
        libc = None
    if libc is not None and hasattr(libc, "mallopt"):
        # Each rerun is a new thread, and glibc gives threads arenas of their own (up to 8 per core), whose freed
        # memory it keeps. Two arenas bound how much a classroom's reruns can leave behind.
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    # Each browser session runs the page in its own thread; two sessions drawing their first figure at once raced on
    # plotly's lazy ``import pandas`` ("partially initialized module 'pandas'"): import it all once, here.
    import pandas  # noqa: F401
    import plotly.graph_objects as go

    fig = go.Figure([go.Heatmap(z=[[0.0]], customdata=[[["a"]]]), go.Bar(x=[1], y=[1]), go.Scatter(x=[1], y=[1])])
    fig.update_layout(template="plotly_white").to_json()
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


libc = setup_process()
st.set_page_config(page_title="lmviz", page_icon="🔍", layout="wide", initial_sidebar_state="expanded")

PAGES = [
    st.Page("app_pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("app_pages/tokenization.py", title="Tokenization", icon="✂️"),
    st.Page("app_pages/masking.py", title="Masking", icon="🎭"),
    st.Page("app_pages/attention.py", title="Attention", icon="👀"),
    st.Page("app_pages/masks.py", title="Masks", icon="🔺"),
    st.Page("app_pages/generation.py", title="Generation", icon="✍️"),
    st.Page("app_pages/compare.py", title="Compare", icon="⚖️"),
    st.Page("app_pages/layers.py", title="Layers", icon="🧅"),
    st.Page("app_pages/finetune.py", title="Fine-tuning", icon="🎯"),
]

page = st.navigation(PAGES, position="hidden")
ui.sidebar(PAGES)
try:
    page.run()
finally:
    if libc is not None:
        libc.malloc_trim(0)  # hand what this rerun freed back to the system, so a classroom's server keeps its size
