"""The Fine-tuning page in headless Chromium: start, stop mid-run, start again, download the model, and load the
downloaded folder into another server with --models."""
from __future__ import annotations

import zipfile
from urllib.parse import quote

import pytest
from browser import error_boxes, free_port, screenshot, start_app, wait_for_app

from lmviz.models import checkpoints

pytestmark = pytest.mark.browser


def step_shown(page) -> int:
    text = page.get_by_text("step ", exact=False).filter(has_text=" of ").first.inner_text()
    return int(text.split("step ")[-1].split(" of ")[0])


def test_start_stop_restart_download_and_load_the_folder_with_models(app_server, browser_page, tmp_path):
    page, rec = browser_page
    page.goto(f"{app_server}/finetune?model=bert&task=verse&n=2048&epochs=3")
    wait_for_app(page)
    page.get_by_role("button", name="Start fine-tuning").click()
    page.get_by_text(" of 384").first.wait_for(timeout=90_000)  # the progress bar's text: 2048 × 3 / 16 steps
    page.wait_for_function("() => /step ([3-9]|[1-9][0-9]+) of 384/.test(document.body.innerText)", timeout=90_000)
    page.get_by_role("button", name="Stop").click()
    page.get_by_text("Stopped at step").wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() >= 2  # the curves stay, and the results of what it learned so far
    screenshot(page, "finetune_stopped")

    box = page.get_by_label("Training speeches")
    box.fill("32")
    box.press("Enter")
    page.wait_for_function("() => new URLSearchParams(location.search).get('n') === '32'", timeout=30_000)
    wait_for_app(page)
    page.get_by_role("button", name="Start fine-tuning").click()
    page.get_by_text("Trained 6 steps").wait_for(timeout=120_000)
    page.get_by_text("Take it with you").wait_for(timeout=30_000)
    screenshot(page, "finetune_done")
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download the fine-tuned model").click()
    zipped = tmp_path / "model.zip"
    download.value.save_as(zipped)
    models = tmp_path / "models"
    with zipfile.ZipFile(zipped) as z:
        assert sorted(z.namelist()) == ["bert-verse-seed0/config.json", "bert-verse-seed0/model.safetensors",
                                        "bert-verse-seed0/tokenizer.json"]
        z.extractall(models)
    assert checkpoints.load(models / "bert-verse-seed0", "cpu").kind == "bert"
    assert not error_boxes(page) and not rec.dialogs and rec.foreign_requests() == []

    port = free_port()
    server = start_app(port, ["--models", str(models)])
    try:
        page.goto(f"http://127.0.0.1:{port}/attention?model={quote('bert-verse-seed0 (yours)')}")
        wait_for_app(page)
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        assert "bert-verse-seed0 (yours)" in page.get_by_role("combobox", name="Model").first.input_value() or \
            page.get_by_text("bert-verse-seed0 (yours)").count() >= 1
        assert page.get_by_text("unavailable").count() == 0
        screenshot(page, "finetune_loaded_with_models")
        assert not error_boxes(page)
    finally:
        server.terminate()
        server.wait(timeout=10)
