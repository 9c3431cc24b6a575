"""The first visitor of a fresh server who arrives at a page's own address gets the app (sidebar, wide layout),
not the page on its own: Streamlit would serve pages/ as its older multipage app until st.navigation has run once."""
from __future__ import annotations

import pytest

from browser import free_port, start_app, wait_for_app

pytestmark = pytest.mark.browser


def test_a_fresh_servers_first_visitor_at_compare_gets_the_sidebar_and_the_wide_layout(chromium):
    port = free_port()
    proc = start_app(port)  # a server no one has visited yet
    try:
        context = chromium.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/compare")
        wait_for_app(page)
        page.wait_for_selector("[data-testid='stSidebar'] a", timeout=60_000)
        assert page.locator("[data-testid='stSidebar'] a").count() >= 9, "every page is in the sidebar"
        width = page.evaluate("document.querySelector('[data-testid=\"stMainBlockContainer\"]').getBoundingClientRect().width")
        assert width > 900, f"the main column is {width:.0f} px wide: the page ran without app.py's wide layout"
        assert "Compare" in page.locator("h1").first.inner_text()
        context.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
