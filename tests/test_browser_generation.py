"""The Generation and Compare pages in headless Chromium: click ten tokens, scrub back, branch, compare three models."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from browser import error_boxes, screenshot, wait_for_app

from lmviz.models import checkpoints
from lmviz.analysis.generation import generate
from lmviz.analysis.strategies import Strategy

pytestmark = pytest.mark.browser
ROMEO = "ROMEO:\nBut soft, what light through yonder window breaks?"  # the page's default prompt


def written(page) -> str:
    """The page's "text so far" box: the prompt, then what the model wrote."""
    return page.locator("[data-testid='stCode'] code").first.inner_text()


def param(page, key: str) -> str | None:
    return parse_qs(urlparse(page.url).query).get(key, [None])[0]


def test_generate_ten_tokens_by_clicking_then_scrub_and_branch(app_server, browser_page):
    page, rec = browser_page
    page.goto(f"{app_server}/generation?model=gpt2&strategy=top_k&k=8&t=0.9&seed=4&n=0")
    wait_for_app(page)
    for i in range(10):
        page.get_by_role("button", name="Next token ▶").click()
        page.wait_for_function(f"() => new URLSearchParams(location.search).get('n') === '{i + 1}'", timeout=30_000)
        wait_for_app(page)
    assert param(page, "step") == "9"
    page.wait_for_selector(".js-plotly-plot")
    screenshot(page, "generation_ten_tokens")
    slider = page.get_by_role("slider")
    slider.focus()
    for _ in range(5):
        page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => new URLSearchParams(location.search).get('step') === '4'", timeout=30_000)
    wait_for_app(page)
    assert "Step 4" in page.locator("h3").first.inner_text()
    before = written(page)
    page.get_by_role("button", name="Branch at step 4").click()
    page.wait_for_function("() => (new URLSearchParams(location.search).get('branch') || '').startsWith('4:')", timeout=30_000)
    wait_for_app(page)
    assert page.get_by_text("You chose").count() >= 1
    after = written(page)
    run = generate(checkpoints.load(checkpoints.shipped("gpt2")), ROMEO, Strategy("top_k", top_k=8, temperature=0.9), 4, seed=4)
    kept = ROMEO + run.text  # the prompt and steps 0-3, which the branch at step 4 must leave as they were
    assert before.startswith(kept) and after.startswith(kept) and after != before
    screenshot(page, "generation_branch")
    assert not error_boxes(page) and not rec.dialogs
    assert rec.foreign_requests() == []


def test_t5_beam_tree_and_compare_three_models(app_server, browser_page):
    page, rec = browser_page
    page.goto(f"{app_server}/generation?model=t5&strategy=beam&beam=3&n=6")
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot")
    assert page.get_by_text("Beam search keeps the best few").count() == 1
    screenshot(page, "generation_t5_beam")
    page.goto(f"{app_server}/compare?text=To%20be%2C%20or%20not%20to%20be%2C%20that%20is%20the%20question.")
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot")
    assert len(page.query_selector_all(".js-plotly-plot")) == 6
    before = page.evaluate("() => JSON.stringify(document.querySelectorAll('.js-plotly-plot')[0].data[0].z)")
    page.get_by_role("combobox", name="Layer (shared by every model)").click()
    page.get_by_role("option", name="2", exact=True).click()
    wait_for_app(page)
    page.wait_for_function(f"() => JSON.stringify(document.querySelectorAll('.js-plotly-plot')[0].data[0].z) !== {before!r}")
    assert param(page, "layer") == "2"
    screenshot(page, "compare_three_models")
    assert not error_boxes(page) and not rec.dialogs
    assert rec.foreign_requests() == []
