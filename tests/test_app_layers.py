"""The Layers page in AppTest: each view for each model draws real numbers, is a link, exports JSON, and answers bad
input, a folder without an MLM head and forged choices with a message, never a traceback."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import transformers
from streamlit.testing.v1 import AppTest

from hostile import HOSTILE
from snapshots import make_snapshots
from lmviz.models import checkpoints

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "app_pages/layers.py"


def page(params: dict | None = None, clear: bool = False) -> AppTest:
    if clear:
        st.cache_resource.clear()
        st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page(PAGE)
    at.run()
    return at


def shown(at) -> str:
    return " ".join(str(e.value) for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.subheader])


def figures(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def array(value) -> np.ndarray:
    """A figure's array as plotly's JSON writes it: a list, or ``{"bdata", "dtype", "shape"}`` (base64)."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value.get("shape", len(flat))).split(",")])
    return np.asarray(value, dtype=object)


def exports(at) -> list[str]:
    """The labels of the page's download buttons (AppTest keeps no file behind them; the JSON is the library's
    ``*_data``, tested with it)."""
    return [b.proto.label for b in at.get("download_button")]


@pytest.mark.parametrize("model", ["gpt2", "bert", "t5"])
def test_the_lens_draws_every_layer_with_the_top_guess(model):
    at = page({"model": model, "view": "lens"})
    assert not at.exception and not at.error, [e.value for e in at.error]
    lens = figures(at)[0]
    heat = lens["data"][-1]
    assert array(heat["z"]).shape[1] == 5 and heat["zmax"] == 1  # the embeddings and four layers, a probability
    assert at.query_params["view"] == ["lens"] or at.query_params["view"] == "lens"
    if model == "bert":
        assert array(heat["y"]).tolist() == [0]  # one hidden word by default: the second "morrow"
        assert "morrow (13)" in lens["layout"]["yaxis"]["ticktext"]


def test_the_knockout_view_shows_the_change_and_the_every_head_grid():
    at = page({"model": "gpt2", "view": "knockout", "layer": "2", "head": "3"})
    assert not at.exception and not at.error
    assert "Without causal self-attention layer 2 head 3" in shown(at)
    bars, grid = figures(at)[:2]
    assert bars["data"][0]["type"] == "bar" and array(grid["data"][0]["z"]).shape == (4, 4)
    assert "The head the text needs most" in shown(at)
    at.selectbox(key="w_head").set_value(-1).run()
    assert "layer 2 (all heads)" in shown(at) and at.query_params["head"] in ("-1", ["-1"])


def test_a_link_knocks_out_the_named_heads_together():
    at = page({"model": "gpt2", "view": "knockout", "named": "1"})
    assert not at.exception
    if not at.toggle:
        pytest.skip("evaluate has found no named head (assets/models/evaluation.json)")
    assert at.toggle(key="w_named").value and "Without causal self-attention layer 2 head 3" in shown(at)


def test_t5s_knockout_offers_its_three_attentions():
    at = page({"model": "t5", "view": "knockout", "attention": "cross"})
    assert not at.exception and not at.error
    assert "Without cross-attention layer 0 head 0" in shown(at)
    grid = figures(at)[1]
    assert [a["text"] for a in grid["layout"]["annotations"]][:3] == ["self-attention", "causal self-attention", "cross-attention"]


@pytest.mark.parametrize("model", ["gpt2", "bert", "t5"])
def test_attribution_sits_beside_attention_and_says_whether_they_agree(model):
    at = page({"model": model, "view": "attribution"})
    assert not at.exception and not at.error, [e.value for e in at.error]
    text = shown(at)
    assert "Spearman ρ" in text and "Completeness" in text and "They " in text
    assert [m.label for m in at.metric] == ["attention row", "rollout", "gradient × input"]
    rows = figures(at)[0]["layout"]["yaxis"]["ticktext"]
    assert rows[0] == "integrated gradients" and rows[-1] == "attention rollout"
    assert "32-step midpoint rule" in text and exports(at) == ["Download this view (JSON)"]


def test_a_link_restores_the_view_and_its_choices():
    at = page({"model": "gpt2", "view": "attribution", "column": "4", "alayer": "1", "ahead": "2", "steps": "8"})
    assert not at.exception
    assert "at position 4" in shown(at) and "8-step midpoint rule" in shown(at)
    assert "attention (layer 1, head 2)" in figures(at)[0]["layout"]["yaxis"]["ticktext"]


@pytest.mark.parametrize("text", ["", "   ", " ".join(["word"] * 10_000), *HOSTILE[:4]])
def test_bad_text_gets_a_message_not_a_traceback(text):
    for model in ("bert", "gpt2", "t5"):
        at = page({"model": model, "view": "lens", "text": text[:2000]})
        assert not at.exception, (model, text[:40], at.exception)


def test_forged_choices_fall_back_to_the_default():
    at = page({"model": "gpt2", "view": "zz<script>", "layer": "999", "head": "-7", "steps": "NaN"})
    assert not at.exception and at.radio(key="w_view").value == "lens"


@pytest.fixture
def assets_with_snapshots(tmp_path, monkeypatch):
    dst = tmp_path / "models"
    for kind in ("bert", "t5"):
        shutil.copytree(checkpoints.shipped(kind), dst / kind)
    if checkpoints.snapshots(checkpoints.shipped("gpt2")):
        shutil.copytree(checkpoints.shipped("gpt2"), dst / "gpt2")
    else:
        make_snapshots(dst)
    monkeypatch.setenv("LMVIZ_ASSETS", str(dst))
    yield dst
    st.cache_resource.clear()
    st.cache_data.clear()


def test_the_training_slider_shows_the_previous_token_head_forming(assets_with_snapshots):
    at = page({"model": "gpt2", "view": "training"}, clear=True)
    assert not at.exception and not at.error, [e.value for e in at.error]
    text = shown(at)
    assert "previous-token score" in text and "snapshots cached in memory" in text
    curve, attention, lens = figures(at)[:3]
    steps = at.select_slider(key="w_step")
    assert steps.value == max(steps.options, key=int) or str(steps.value) == steps.options[-1]
    first = steps.options[0]
    steps.set_value(int(first)).run()
    assert not at.exception and f"at step {first}" in shown(at)
    assert not np.array_equal(array(figures(at)[1]["data"][0]["z"]), array(attention["data"][0]["z"]))  # the head's attention at another step


def test_a_model_without_snapshots_says_so(tmp_path, monkeypatch):
    dst = tmp_path / "models"
    for kind in ("bert", "gpt2", "t5"):  # the shipped set, the BERT without its snapshots (as a run before them had)
        shutil.copytree(checkpoints.shipped(kind), dst / kind, ignore=shutil.ignore_patterns("snapshots") if kind == "bert" else None)
    monkeypatch.setenv("LMVIZ_ASSETS", str(dst))
    try:
        at = page({"model": "bert", "view": "training"}, clear=True)
        assert not at.exception and "no training snapshots" in shown(at)
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()


def test_a_bert_without_its_mlm_head_says_the_lens_cannot_and_its_attention_views_work(tmp_path, monkeypatch):
    hf = transformers.BertForPreTraining.from_pretrained(checkpoints.shipped("bert"))
    (tmp_path / "bare-bert").mkdir()
    hf.bert.save_pretrained(tmp_path / "bare-bert")
    shutil.copy(checkpoints.shipped("bert") / "tokenizer.json", tmp_path / "bare-bert")
    monkeypatch.setenv("LMVIZ_MODELS", str(tmp_path))
    try:
        at = page({"model": "bare-bert (yours)", "view": "lens"}, clear=True)
        assert not at.exception and "no MLM head" in " ".join(e.value for e in at.error)
        at = page({"model": "bare-bert (yours)", "view": "training"})
        assert not at.exception and "no training snapshots" in shown(at)
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()


def test_ten_thousand_words_typed_in_the_box_are_cut_and_said():
    at = page({"model": "gpt2", "view": "knockout"})
    at.text_area(key="w_text").set_value(" ".join(["tomorrow"] * 10_000)).run()
    assert not at.exception and not at.error
    assert "reads at most 256" in shown(at) and "only the first 20,000" in shown(at)
    assert len(figures(at)) >= 2
