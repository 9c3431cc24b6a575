"""Visitors of a fresh server who arrive at a page's own address get the app (sidebar, wide layout), not the page on
its own. The pages lived in a folder named ``pages/``, which Streamlit serves as its older multipage app until
st.navigation has run once in the process: a classroom opening the app at once on a new server got pages without the
sidebar (3 of 4 tabs, 2 December). They live in ``app_pages/`` now, which Streamlit leaves alone."""
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


def test_a_classroom_opening_a_fresh_server_at_once_gets_the_sidebar_in_every_tab(chromium):
    port = free_port()
    proc = start_app(port)
    try:
        context = chromium.new_context(viewport={"width": 1400, "height": 900})
        tabs = [context.new_page() for _ in range(4)]
        for tab, where in zip(tabs, ["attention", "masks", "generation", "layers"]):
            tab.goto(f"http://127.0.0.1:{port}/{where}", wait_until="commit")  # all four before any has loaded
        for tab in tabs:
            tab.wait_for_selector("[data-testid='stSidebar'] a", timeout=90_000)
            assert tab.locator("[data-testid='stSidebar'] a").count() >= 9
        context.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
