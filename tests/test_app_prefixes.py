"""T5's task prefixes as a user meets them (AppTest, real forward passes): a preset per task on Generation and
Attention, a note for a prefix T5 does not know, Compare's punctuate: reading, the Home table's new figures, and a
T5 without prefixes behaving as before."""
from __future__ import annotations

import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from lmviz.analysis import prefixes
from lmviz.models import checkpoints
from t5_folders import assets_with, plain_t5, prefixed_t5
from test_app_generation_compare import ok, open_page, texts
from test_prefixes import EVAL

APP = str(checkpoints.ASSETS.parent.parent / "app.py")  # Home is the app's own first page
PUNCTUATE = prefixes.presets()["punctuate"]


def _assets(tmp_path, monkeypatch, t5) -> None:
    root = assets_with(tmp_path / "models", t5)
    (root / "evaluation.json").write_text(json.dumps(EVAL))
    monkeypatch.setenv("LMVIZ_ASSETS", str(root))
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def new_t5(tmp_path, monkeypatch):
    """The app with a T5 that knows the prefixes as its shipped T5."""
    folder, _ = prefixed_t5(tmp_path / "t5")
    _assets(tmp_path, monkeypatch, folder)
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def old_t5(tmp_path, monkeypatch):
    """The app with a T5 that was not trained with prefixes."""
    _assets(tmp_path, monkeypatch, plain_t5(tmp_path / "t5"))
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def test_generation_offers_a_preset_per_task_and_punctuate_writes_with_cross_attention(new_t5):
    at = open_page("generation", model="t5", n=4)
    ok(at)
    box = at.selectbox(key="w_input_preset")
    assert box.options == ["(your own)", *(p.label for p in prefixes.presets().values())]
    assert box.value == PUNCTUATE.label and at.text_area(key="w_input").value == PUNCTUATE.text  # the page opens on it
    fill = prefixes.presets()["fill"]
    at.selectbox(key="w_input_preset").set_value(fill.label).run()
    ok(at)
    assert at.text_area(key="w_input").value == fill.text and any("\\<extra\\_id\\_0\\> food" in c.value for c in at.caption)
    at.selectbox(key="w_input_preset").set_value(PUNCTUATE.label).run()
    ok(at)
    assert at.text_area(key="w_input").value == PUNCTUATE.text and at.query_params["input"] == PUNCTUATE.text
    assert "The play has" in texts(at) and "its **cross-attention** over the input tokens" in texts(at)
    assert at.get("code")[0].value.strip() and len(at.get("plotly_chart")) >= 4  # the cross-attention row among them
    assert not any("not a task" in i.value for i in at.info)


@pytest.mark.parametrize("page, box", [("generation", "w_input"), ("attention", "w_text")])
def test_an_unknown_prefix_gets_a_note_and_an_empty_task_a_message(new_t5, page, box):
    at = open_page(page, model="t5", n=2)
    at.text_area(key=box).set_value("translate: hello").run()
    assert not at.exception and not at.error
    (note,) = [i.value for i in at.info if "not a task" in i.value]
    assert "`translate:`" in note and "`fill:`, `punctuate:`, `genre:`" in note
    at.text_area(key=box).set_value("punctuate:  ").run()
    assert not at.exception and any("nothing after `punctuate:`" in e.value for e in at.error)
    at.text_area(key=box).set_value("<b>genre:</b> <script>x</script>").run()
    assert not at.exception and not at.error


def test_attention_opens_t5_on_the_punctuate_preset_and_shows_its_cross_attention(new_t5):
    at = open_page("attention", model="t5", kind="cross")
    ok(at)
    assert at.text_area(key="w_text").value == PUNCTUATE.text
    assert at.radio(key="w_kind").value == "cross" and at.query_params["kind"] == "cross"
    assert len(at.get("plotly_chart")) >= 1 and "trained text-to-text" in texts(at)


def test_compare_reads_t5_as_punctuate_by_default_and_as_the_same_sentence_on_request(new_t5):
    at = open_page("compare")
    ok(at)
    assert at.radio(key="w_t5").value == "punctuate" and at.query_params["t5"] == "punctuate"
    assert "as its `punctuate:` task" in texts(at)
    at.radio(key="w_t5").set_value("same").run()
    ok(at)
    assert at.query_params["t5"] == "same" and "as its `punctuate:` task" not in texts(at)
    assert any("has none" in i.value for i in at.info)  # T5 is read without a prefix, and the page says so


def test_home_shows_the_new_figures_beside_baselines_and_floors(new_t5):
    at = AppTest.from_file(APP, default_timeout=300).run()
    ok(at)
    table = next(d.value for d in at.dataframe if "figure" in d.value.columns)
    rows = {f: r for f, r in zip(table["figure"], table.to_dict("records"))}
    assert rows["MLM top-1 at [MASK] positions"]["floor"] == "≥ 0.30 ✘"  # the floor, and whether ours meets it
    assert rows["punctuate: alignment head (layer 3, head 1): strongest key on the aligned word"]["ours"] == 0.82
    assert rows["genre: accuracy (every test speech)"]["baselines"] == "majority label (comedy) 0.500"
    assert "Below the floor" in texts(at) and "bits per character (2.250, floor ≤ 2.20)" in texts(at)


def test_a_t5_without_prefixes_is_offered_what_it_was_before(old_t5):
    at = open_page("generation", model="t5", n=2)
    ok(at)
    assert "punctuate: Twelfth Night" not in at.selectbox(key="w_input_preset").options
    at.text_area(key="w_input").set_value("translate: hello").run()
    ok(at)
    assert not any("not a task" in i.value for i in at.info)
    at = open_page("compare")
    ok(at)
    assert not [r for r in at.radio if r.key == "w_t5"] and "t5" not in at.query_params
    at = open_page("attention", model="t5")
    ok(at)
    assert at.text_area(key="w_text").value.startswith("To be, or not to be")
