"""The Attention and Masks pages in headless Chromium: figures draw, bertviz's head and model views draw offline
(T5's cross-attention too), hostile tokens stay text. Screenshots are of the elements themselves (Streamlit scrolls
inside its own container, so a page screenshot shows only the top)."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from browser import SHOTS, click_in_figure, error_boxes, wait_for_app

pytestmark = pytest.mark.browser
EVIL = "<img src=x onerror=alert(1)> <script>alert(2)</script> to be"


def shot(element, name: str) -> None:
    """A screenshot of one element (scrolled into view), for a person to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    element.scroll_into_view_if_needed()
    element.screenshot(path=str(SHOTS / f"{name}.png"))


def bertviz_frame(page):
    """The frame that holds bertviz's drawing, once its SVG has text in it."""
    page.wait_for_function("() => [...document.querySelectorAll('iframe')].some(f => f.contentDocument && "
                           "f.contentDocument.querySelector('#vis svg text'))", timeout=60_000)
    return next(f for f in page.frames if f != page.main_frame and f.query_selector("#vis svg text") is not None)


def texts(frame, where: str) -> list[str]:
    return [t.text_content() for t in frame.query_selector_all(f"#vis svg {where} text")]


@pytest.mark.parametrize("model", ["bert", "gpt2", "t5"])
def test_attention_page_draws_and_bertviz_runs_offline(app_server, browser_page, model):
    page, rec = browser_page
    page.goto(f"{app_server}/attention?model={model}&text={quote(EVIL)}&layer=1&head=2")
    wait_for_app(page)
    heatmap = page.locator(".js-plotly-plot").first
    heatmap.wait_for(timeout=30_000)
    shot(heatmap, f"attention_one_head_{model}")
    page.get_by_role("tab", name="bertviz").click()
    wait_for_app(page)
    frame = bertviz_frame(page)
    assert any("<" in t for t in texts(frame, "")) or model == "bert"  # the markup shows as text
    assert frame.query_selector("#vis img") is None and page.query_selector("img[src='x']") is None
    if model == "t5":  # each of T5's three attentions draws; Cross: decoder tokens on the left, encoder on the right
        assert [o.inner_text() for o in frame.query_selector_all("#filter option")] == ["Encoder", "Decoder", "Cross"]
        encoder = texts(frame, "#right")
        frame.select_option("#filter", label="Decoder")
        decoder = texts(frame, "#left")
        frame.select_option("#filter", label="Cross")
        assert texts(frame, "#left") == decoder and texts(frame, "#right") == encoder and decoder != encoder
        assert frame.query_selector_all("#vis svg line, #vis svg path, #vis svg rect")
    shot(frame.frame_element(), f"attention_bertviz_head_{model}")

    page.get_by_text("model view", exact=True).click()  # the model view: every layer and head as a thumbnail
    wait_for_app(page)
    page.wait_for_function("() => [...document.querySelectorAll('iframe')].some(f => f.contentDocument && "
                           "f.contentDocument.querySelector('#vis svg .attn_background'))", timeout=60_000)
    frame = next(f for f in page.frames if f.query_selector("#vis svg .attn_background") is not None)
    assert frame.query_selector("#vis svg #attn_background_1_2") is not None
    assert frame.query_selector("#vis svg .detail") is None
    frame.locator("#vis svg #attn_background_1_2").click(force=True)  # the invisible click region lies on top
    frame.wait_for_selector("#vis svg .detail", state="attached", timeout=10_000)
    assert "Layer 1, Head 2" in [t.text_content() for t in frame.query_selector_all("#vis svg text.detail")]
    assert frame.query_selector_all("#vis svg .detail text.token") and frame.query_selector("#vis img") is None
    shot(frame.frame_element(), f"attention_bertviz_model_{model}")
    assert not error_boxes(page) and not rec.dialogs
    assert rec.foreign_requests() == []
    assert not [e for e in rec.console_errors if "alert" in e or "onerror" in e]


def test_a_control_changes_the_head(app_server, browser_page):
    page, rec = browser_page
    page.goto(f"{app_server}/attention?model=gpt2")
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot")
    before = page.evaluate("() => JSON.stringify(document.querySelector('.js-plotly-plot')._fullData[0].z[5])")
    page.get_by_role("combobox", name="Head").click()  # open the head selectbox, pick head 3
    page.get_by_role("option", name="3", exact=True).click()
    wait_for_app(page)
    page.wait_for_function(f"() => JSON.stringify(document.querySelector('.js-plotly-plot')._fullData[0].z[5]) !== {before!r}")
    assert "head=3" in page.url and not error_boxes(page) and not rec.dialogs


def test_clicking_a_head_in_the_grid_opens_it_large(app_server, browser_page):
    page, rec = browser_page
    page.goto(f"{app_server}/attention?model=gpt2&layer=0&head=0")
    wait_for_app(page)
    page.get_by_role("tab", name="Every head").click()
    wait_for_app(page)
    click_in_figure(page, page.locator("[data-testid='stPlotlyChart'] .scatterlayer .trace .points path").nth(1 * 4 + 2))
    page.wait_for_function("() => location.search.includes('layer=1') && location.search.includes('head=2')", timeout=30_000)
    wait_for_app(page)
    assert page.get_by_role("tab", selected=True).inner_text() == "One head"
    assert page.get_by_text("Layer 1, head 2.").count() == 1 and not error_boxes(page) and not rec.dialogs


@pytest.mark.parametrize("model", ["bert", "gpt2", "t5"])
def test_masks_page_draws(app_server, browser_page, model):
    page, rec = browser_page
    page.goto(f"{app_server}/masks?model={model}&text={quote(EVIL)}&exp=1")
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot")
    figures = page.locator(".js-plotly-plot")
    assert figures.count() >= {"bert": 6, "gpt2": 5, "t5": 6}[model]
    shot(figures.first, f"masks_matrix_{model}")
    effect = page.locator(".js-plotly-plot", has_text="softmax: the weights").first  # the mask's effect on one row
    shot(effect, f"masks_softmax_{model}")
    if model == "gpt2":
        shot(page.locator(".js-plotly-plot", has_text="weight on key i + 1").first, "masks_answer_weight_gpt2")
    assert not error_boxes(page) and not rec.dialogs and rec.foreign_requests() == []
