"""Home, Tokenization and Masking in a real browser: the page loads, figures render, a control changes them,
no error box, no dialog, nothing leaves localhost."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from browser import click_in_figure, error_boxes, screenshot, wait_for_app

pytestmark = pytest.mark.browser


def _open(page, url: str) -> None:
    page.goto(url)
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)


def _shot(page, name: str, nth: int = 0) -> None:
    """A screenshot with the ``nth`` figure scrolled into view (Streamlit scrolls inside its own container).

    A rerun may still replace the figure after the status widget went away (the element we found is then detached),
    so wait for the app again and find the figure afresh, a few times."""
    from playwright.sync_api import Error

    for attempt in range(3):
        try:
            page.locator(".js-plotly-plot").nth(nth).scroll_into_view_if_needed(timeout=10_000)
            break
        except Error:
            if attempt == 2:
                raise
            wait_for_app(page)
    screenshot(page, name)


def _changes(page, before: str) -> None:
    page.wait_for_function("b => document.querySelector('.js-plotly-plot').innerText !== b", arg=before, timeout=30_000)


def _clean(page, rec) -> None:
    assert not error_boxes(page)
    assert not rec.foreign_requests(), rec.foreign_requests()
    assert not rec.dialogs


def test_home_renders_the_diagrams_and_curves(app_server, browser_page):
    page, rec = browser_page
    _open(page, app_server)
    assert page.locator(".js-plotly-plot").count() >= 5
    assert page.get_by_text("encoder-decoder").count() >= 1
    _shot(page, "home")
    curves = "[role='tabpanel']:not([hidden]) .js-plotly-plot"
    page.wait_for_selector(curves, timeout=30_000)
    assert "NSP accuracy" in page.locator(curves).first.inner_text()  # BERT's tab first
    page.get_by_role("tab", name="GPT-2").click()  # a control: the GPT-2 tab draws GPT-2's curves
    page.wait_for_function("s => { const f = document.querySelector(s); return f && !f.innerText.includes('NSP accuracy') "
                           "&& f.innerText.includes('held-out loss'); }", arg=curves, timeout=30_000)
    _shot(page, "home_curves", 5)  # the GPT-2 tab's figure (BERT's, 4, is hidden now)
    _clean(page, rec)


def test_tokenization_changes_with_the_text_and_never_renders_markup(app_server, browser_page):
    page, rec = browser_page
    _open(page, f"{app_server}/tokenization?text={quote('<img src=x onerror=alert(1)> love 😍')}")
    before = page.locator(".js-plotly-plot").first.inner_text()
    screenshot(page, "tokenization_markup")
    box = page.locator("textarea").first
    box.fill("'Tis true, o'er the hills: honorificabilitudinitatibus")
    box.press("Control+Enter")
    wait_for_app(page)
    _changes(page, before)
    assert "honor" in page.locator(".js-plotly-plot").first.inner_text()
    assert page.locator("img[src='x']").count() == 0
    _shot(page, "tokenization")
    _clean(page, rec)


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"


def test_clicking_a_piece_lights_up_its_characters(app_server, browser_page):
    page, rec = browser_page
    _open(page, f"{app_server}/tokenization?text={quote('To be, or not to be')}")
    click_in_figure(page, page.locator(".js-plotly-plot .barlayer .trace").nth(1).locator(".point").nth(3))  # GPT-2's 4th
    page.wait_for_function("() => location.search.includes('lit=gpt2%3A3')", timeout=30_000)
    wait_for_app(page)
    assert page.get_by_text("Lit up: byte-level BPE (GPT-2)'s piece 3").count() == 1
    assert page.evaluate("() => document.querySelector('.js-plotly-plot').layout.shapes.length") == 2  # text and outline
    _shot(page, "tokenization_lit")
    _clean(page, rec)


def test_tokenization_takes_an_upload_and_refuses_what_is_not_text(app_server, browser_page):
    page, rec = browser_page
    _open(page, f"{app_server}/tokenization?text={quote('To be, or not to be')}")
    page.get_by_text("upload a text file").click()
    upload = page.locator("input[type='file']").first
    box = page.locator("textarea").first
    for name, data, why in (("picture.png", PNG, "binary"), ("empty.txt", b"", "empty"),
                            ("latin1.txt", "Café naïve".encode("latin-1"), "not UTF-8")):
        upload.set_input_files(files=[{"name": name, "mimeType": "application/octet-stream", "buffer": data}])
        page.wait_for_selector(f"[data-testid='stAlert']:has-text('{why}')", timeout=30_000)
        wait_for_app(page)
        assert box.input_value() == "To be, or not to be"  # nothing lost
    emoji = "Love 😍 and a family 👨‍👩‍👧, thumbs-up 👍🏽! 生存还是毁灭"
    before = page.locator(".js-plotly-plot").first.inner_text()
    upload.set_input_files(files=[{"name": "mine.txt", "mimeType": "text/plain", "buffer": emoji.encode()}])
    page.wait_for_function("t => document.querySelector('textarea').value === t", arg=emoji, timeout=30_000)
    wait_for_app(page)
    _changes(page, before)
    assert page.locator("[data-testid='stAlert']:has-text('binary')").count() == 0
    assert "F0" in page.locator(".js-plotly-plot").first.inner_text()  # byte pieces labelled in hex
    _shot(page, "tokenization_emoji")
    _clean(page, rec)


def test_masking_reroll_and_objectives(app_server, browser_page):
    page, rec = browser_page
    _open(page, f"{app_server}/masking")
    before = page.locator(".js-plotly-plot").first.inner_text()
    page.get_by_role("button", name="Re-roll").click()
    wait_for_app(page)
    assert "seed=1" in page.url
    _changes(page, before)  # seed 0 and seed 1 mask different positions of the preset
    _shot(page, "masking_mlm")
    for label, key in (("T5 · span corruption", "t5"), ("GPT-2 · next token", "gpt2"), ("BERT · next sentence (NSP)", "nsp")):
        page.get_by_text(label, exact=True).click()
        page.wait_for_url(f"**objective={key}**", timeout=30_000)
        wait_for_app(page)
        shot = f"masking_{key}"
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        _shot(page, shot)
    _clean(page, rec)
