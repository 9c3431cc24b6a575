"""lmviz: look inside BERT, GPT-2 and T5. Run with ``streamlit run app.py``."""
import streamlit as st

from lmviz.app import ui

st.set_page_config(page_title="lmviz", page_icon="🔍", layout="wide", initial_sidebar_state="expanded")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/tokenization.py", title="Tokenization", icon="✂️"),
    st.Page("pages/masking.py", title="Masking", icon="🎭"),
    st.Page("pages/attention.py", title="Attention", icon="👀"),
    st.Page("pages/masks.py", title="Masks", icon="🔺"),
    st.Page("pages/generation.py", title="Generation", icon="✍️"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
]

page = st.navigation(PAGES, position="hidden")
ui.sidebar(PAGES)
try:
    page.run()
finally:
    ui.release_memory()
