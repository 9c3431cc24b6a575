"""The Layers page in headless Chromium: each view draws, hostile text stays text, the lens's hover names the top five,
the radio moves between views and the link follows, nothing leaves the machine."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from browser import SHOTS, error_boxes, wait_for_app

pytestmark = pytest.mark.browser
EVIL = "<img src=x onerror=alert(1)> <script>alert(2)</script> To be, or not to be"


def shot(element, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    element.scroll_into_view_if_needed()
    element.screenshot(path=str(SHOTS / f"{name}.png"))


@pytest.mark.parametrize("model", ["bert", "gpt2", "t5"])
def test_every_view_draws_and_hostile_text_stays_text(app_server, browser_page, model):
    page, rec = browser_page
    hide = "&hide=3" if model == "bert" else ""
    for view, figures in (("lens", 1), ("knockout", 2), ("attribution", 1)):
        page.goto(f"{app_server}/layers?model={model}&view={view}&text={quote(EVIL)}{hide}")
        wait_for_app(page)
        page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot').length >= {figures}", timeout=60_000)
        shot(page.locator(".js-plotly-plot").first, f"layers_{view}_{model}")
        assert page.query_selector("img[src='x']") is None
    assert not error_boxes(page) and not rec.dialogs and rec.foreign_requests() == []


def test_the_lens_hover_names_the_top_five(app_server, browser_page):
    page, rec = browser_page
    page.goto(f"{app_server}/layers?model=gpt2&view=lens")
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot")
    hover = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullData.at(-1).customdata[3][4]")
    assert "top five" in hover and hover.count("<br>") >= 6
    texts = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullData.at(-1).text[3]")
    assert len(texts) == 5 and all(texts)  # the top guess at every layer


def test_the_view_radio_moves_and_the_link_follows(app_server, browser_page):
    page, rec = browser_page
    page.goto(f"{app_server}/layers?model=gpt2")
    wait_for_app(page)
    page.get_by_text("Knock out a head", exact=True).click()
    wait_for_app(page)
    page.wait_for_function("() => location.search.includes('view=knockout')", timeout=30_000)
    page.get_by_text("Every head, knocked out alone").wait_for(timeout=60_000)
    assert not error_boxes(page) and not rec.dialogs
