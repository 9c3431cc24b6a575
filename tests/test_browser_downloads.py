"""Figures and numbers leave the app, in headless Chromium: on every page the toolbar's 📷 saves an SVG that parses, and
the JSON download holds the view's settings and numbers (the Attention page's equal its heatmap's); bertviz's download
draws in a browser with no network."""
from __future__ import annotations

import json
import xml.dom.minidom

import pytest
from browser import wait_for_app

pytestmark = pytest.mark.browser
PAGES = {"": "Download the sizes and training curves (JSON)", "tokenization": "Download this view (JSON)",
         "masking": "Download this view (JSON)", "attention": "Download this view (JSON)",
         "masks": "Download these masks (JSON)", "compare": "Download this view (JSON)",
         "generation": "Download this view (JSON)"}


@pytest.fixture
def downloading(chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 1200}, accept_downloads=True)
    yield context.new_page()
    context.close()


def _download(page, click, tmp_path, name: str):
    """The file a click downloads. A click that lands while a rerun replaces the button downloads nothing (seen on a
    loaded machine): the student clicks again once the page has settled, and so does this."""
    from playwright.sync_api import TimeoutError

    for attempt in range(2):
        try:
            with page.expect_download(timeout=45_000) as d:
                click()
            break
        except TimeoutError:
            if attempt:
                raise
            wait_for_app(page)
    path = tmp_path / name
    d.value.save_as(path)
    return path, d.value.suggested_filename


@pytest.mark.parametrize("where", PAGES)
def test_every_page_downloads_an_svg_figure_and_its_numbers(app_server, downloading, where, tmp_path):
    page = downloading
    page.goto(app_server)  # a fresh server's first visit straight to a page comes without the sidebar (seen 2 Dec)
    wait_for_app(page)
    page.goto(f"{app_server}/{where}")
    wait_for_app(page)
    page.locator("[data-testid=stSidebar]").get_by_text("SVG", exact=True).click()
    wait_for_app(page)
    page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].every(d => d._context && "
                           "d._context.toImageButtonOptions.format === 'svg')", timeout=30_000)
    figure = page.locator(".js-plotly-plot:visible").first
    figure.scroll_into_view_if_needed()
    figure.hover()
    svg, name = _download(page, lambda: figure.locator(".modebar-btn[data-title^='Download']").first.click(), tmp_path, "f.svg")
    assert name.endswith(".svg") and xml.dom.minidom.parse(str(svg)).documentElement.tagName == "svg"
    wait_for_app(page)  # the figure's download can start a rerun; click the page's button once it has settled
    button = page.get_by_role("button", name=PAGES[where])
    button.scroll_into_view_if_needed()
    path, name = _download(page, button.click, tmp_path, "v.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert name.endswith(".json") and data["page"] in (where or "home") and data["numbers"]
    if where in ("compare", "generation"):  # the link's settings and the text, as every other page's download
        assert data["settings"]["text"] and "layer" in data["settings"], data["settings"]
    if where == "attention":
        assert data["settings"]["model"] == "bert" and data["settings"]["text"]
        wait_for_app(page)  # the download's rerun may be redrawing the heatmap
        page.wait_for_function("() => document.querySelector('.js-plotly-plot')?._fullData")
        z = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullData.find(t => t.type === 'heatmap').z")
        weights = data["numbers"]["weights"]
        assert len(weights) == len(z)
        assert max(abs(a - b) for wa, zb in zip(weights, z) for a, b in zip(wa, zb)) < 1e-5


def test_bertviz_downloads_as_one_file_that_draws_with_no_network(app_server, chromium, downloading, tmp_path):
    page = downloading
    page.goto(f"{app_server}/attention?model=gpt2&tab=bertviz")
    wait_for_app(page)
    page.get_by_role("tab", name="bertviz").click()
    wait_for_app(page)
    path, _ = _download(page, lambda: page.get_by_role("button", name="Download the head view (one HTML file, works offline)")
                        .click(), tmp_path, "bertviz_head_view.html")
    offline = chromium.new_context(offline=True)
    tab, asked = offline.new_page(), []
    tab.on("request", lambda r: asked.append(r.url))
    tab.goto(path.as_uri())
    tab.wait_for_selector("#vis svg text", timeout=30_000)
    assert tab.locator("#vis svg text").count() > 4 and all(u.startswith("file:") for u in asked)
    offline.close()
