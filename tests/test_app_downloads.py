"""Figures and numbers leave the app: the toolbar's 📷 saves PNG or SVG as the sidebar says, and every page offers the
numbers behind its view as JSON with the settings that reproduce it."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lmviz.app.export import plain_data, view_json

PAGES = {"app_pages/home.py": "sizes and training curves", "app_pages/tokenization.py": "this view", "app_pages/masking.py": "this view",
         "app_pages/attention.py": "this view", "app_pages/masks.py": "these masks", "app_pages/compare.py": "this view",
         "app_pages/generation.py": "this view"}


def _app(page: str, **state) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.switch_page(page)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_figure_toolbar_saves_svg_when_the_sidebar_asks_and_png_otherwise():
    for fmt in ("svg", "png"):
        at = _app("app_pages/masks.py", w_figure_format=fmt)
        configs = [json.loads(c.proto.config) for c in at.get("plotly_chart")]
        assert configs and all(c["toImageButtonOptions"]["format"] == fmt for c in configs)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_offers_the_numbers_behind_its_view_as_json(page):
    at = _app(page)
    labels = [b.proto.label for b in at.get("download_button")]
    assert any("JSON" in label and PAGES[page] in label for label in labels), labels


def test_a_view_json_carries_its_settings_and_plain_numbers():
    from lmviz.pretrain.objectives import MlmPrediction

    pred = MlmPrediction(3, "be", "[MASK]", 1, [("be", 0.5)], math.nan, True, math.inf)
    data = json.loads(view_json("masking", {"model": "bert", "text": "To be"}, {"p": pred, "m": np.eye(2, dtype=np.float32)}))
    assert data["settings"] == {"model": "bert", "text": "To be"} and data["page"] == "masking"
    assert data["numbers"]["p"]["top"] == [["be", 0.5]] and data["numbers"]["p"]["true_prob"] is None
    assert data["numbers"]["m"] == [[1.0, 0.0], [0.0, 1.0]]
    assert plain_data(b"\xff") == "ff"
