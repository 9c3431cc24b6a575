"""Every page through app.py's ``st.navigation``, from a fresh server's first request on."""
import streamlit as st


def every_page_through_app_py() -> None:
    """Streamlit serves a folder named ``pages/`` as its older multipage app until ``st.navigation`` has run once in
    the process, so the first visitor arriving at ``/attention`` gets ``pages/attention.py`` run on its own, without
    app.py (no sidebar, narrow layout). There is no public switch (Streamlit's own code calls this flag a relic of v1):
    turn it off and rerun, which goes through app.py. app.py calls this first (at its top level: a rerun raised inside
    an import of app.py's broke the import), and ``ui`` on its import, which every page makes, for a page run on its
    own. If an upgrade renames the flag, tests/test_app_setup.py fails; tests/test_browser_first_visit.py opens a fresh
    server at /compare, tests/test_browser_downloads.py at /."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
