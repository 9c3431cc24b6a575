"""The Attention and Masks pages in headless Chromium: figures draw, bertviz draws offline, hostile tokens stay text."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from browser import error_boxes, screenshot, wait_for_app

pytestmark = pytest.mark.browser
EVIL = "<img src=x onerror=alert(1)> <script>alert(2)</script> to be"


def bertviz_frame(page):
    page.wait_for_selector("iframe", timeout=60_000)
    for frame in page.frames:
        if frame != page.main_frame and frame.query_selector("#vis") is not None:
            return frame
    raise AssertionError("no bertviz frame")


@pytest.mark.parametrize("model", ["bert", "gpt2", "t5"])
def test_attention_page_draws_and_bertviz_runs_offline(app_server, browser_page, model):
    page, rec = browser_page
    page.goto(f"{app_server}/attention?model={model}&text={quote(EVIL)}&layer=1&head=2")
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    screenshot(page, f"attention_one_head_{model}")
    page.get_by_role("tab", name="bertviz").click()
    wait_for_app(page)
    frame = bertviz_frame(page)
    frame.wait_for_selector("#vis svg text", state="attached", timeout=30_000)
    texts = [t.text_content() for t in frame.query_selector_all("#vis svg text")]
    assert any("<" in t for t in texts) or model == "bert"  # shown as text
    assert frame.query_selector("#vis img") is None and page.query_selector("img[src='x']") is None
    if model == "t5":
        assert [o.inner_text() for o in frame.query_selector_all("#filter option")] == ["Encoder", "Decoder", "Cross"]
    screenshot(page, f"attention_bertviz_{model}")
    assert not error_boxes(page) and not rec.dialogs
    assert rec.foreign_requests() == []
    assert not [e for e in rec.console_errors if "alert" in e or "onerror" in e]


def test_a_control_changes_the_head_and_masks_page_draws(app_server, browser_page):
    page, rec = browser_page
    page.goto(f"{app_server}/attention?model=gpt2")
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot")
    before = page.evaluate("() => JSON.stringify(document.querySelector('.js-plotly-plot')._fullData[0].z[5])")
    page.get_by_role("combobox", name="Head").click()  # open the head selectbox, pick head 3
    page.get_by_role("option", name="3", exact=True).click()
    wait_for_app(page)
    page.wait_for_function(f"() => JSON.stringify(document.querySelector('.js-plotly-plot')._fullData[0].z[5]) !== {before!r}")
    assert "head=3" in page.url
    page.goto(f"{app_server}/masks?model=gpt2&text={quote(EVIL)}")
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot")
    assert len(page.query_selector_all(".js-plotly-plot")) >= 4
    screenshot(page, "masks_gpt2")
    assert not error_boxes(page) and not rec.dialogs and rec.foreign_requests() == []
