"""bertviz's head and model views, rebuilt to need no network and to show user tokens as text."""
from __future__ import annotations

import json
import re

import pytest
from bertviz.util import format_special_chars

from lmviz.models import checkpoints
from lmviz.viz.bertviz_offline import VENDOR, VENDORED, bertviz_arguments, head_view_html, model_view_html, script_json, view_height
from lmviz.analysis.inference import attention_run

EVIL = "<img src=x onerror=alert(1)> </script><script>alert(2)</script> <!-- &amp;"


@pytest.fixture(scope="module")
def runs():
    loaded = {k: checkpoints.load(checkpoints.shipped(k), "cpu") for k in ("bert", "gpt2", "t5")}
    return {"bert": attention_run(loaded["bert"], EVIL, "a second sentence"),
            "gpt2": attention_run(loaded["gpt2"], EVIL), "t5": attention_run(loaded["t5"], EVIL, target=EVIL)}


def test_vendored_libraries_ship_with_their_licences():
    for name in VENDORED:
        assert (VENDOR / name).stat().st_size > 10_000
    for lib in ("requirejs", "d3", "jquery"):
        assert "Permission" in (VENDOR / f"LICENSE-{lib}.txt").read_text() or "Redistribution" in (VENDOR / f"LICENSE-{lib}.txt").read_text()


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
@pytest.mark.parametrize("view", [head_view_html, model_view_html])
def test_views_ask_nothing_of_the_network(runs, kind, view):
    html = view(runs[kind])
    assert "cdnjs" not in html and "paths:" not in html.split("requirejs([")[-1] and "require.config({\n  paths" not in html
    assert not re.search(r"<script[^>]+src=", html)
    assert html.count("define('d3'") == 1 and html.count("requirejs([") == 1


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_tokens_stay_strings_inside_the_script(runs, kind):
    html = head_view_html(runs[kind])
    bertviz = html.split("requirejs([", 1)[1]  # bertviz's own script, after the vendored libraries
    assert "<img" not in bertviz and "<!--" not in bertviz
    assert bertviz.lower().count("</script") == 1  # no token closes the script early
    params = json.loads(re.search(r"const params = (\{.*?\}); //", bertviz).group(1))
    tokens = runs[kind].tokens["encoder" if kind != "gpt2" else "decoder"]
    assert params["attention"][0]["left_text"] == format_special_chars(tokens)  # the tokens arrive intact, as data
    assert kind == "bert" or any("<" in t for t in tokens)  # (BERT's WordPiece reads "<" as [UNK])


def test_script_json_escapes_markup_and_round_trips():
    value = {"t": ["</script><b>&", "\u2028"]}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == value


def test_t5_shows_encoder_decoder_and_cross_attention(runs):
    args = bertviz_arguments(runs["t5"])
    assert set(args) == {"encoder_attention", "decoder_attention", "cross_attention", "encoder_tokens", "decoder_tokens"}
    assert args["cross_attention"][0].shape[-2:] == (len(args["decoder_tokens"]), len(args["encoder_tokens"]))
    html = head_view_html(runs["t5"])
    assert all(f">{name}</option>" in html for name in ("Encoder", "Decoder", "Cross"))


def test_bert_pair_starts_sentence_b_and_values_are_the_records(runs):
    run = runs["bert"]
    args = bertviz_arguments(run)
    assert args["sentence_b_start"] == run.type_ids.index(1)
    assert abs(float(args["attention"][2][0, 1, 3, 4]) - float(run.record.probs["self"][2][0, 1, 3, 4])) < 1e-4


def test_view_height_is_capped(runs):
    assert 100 < view_height(runs["gpt2"], "head") <= 1400 and view_height(runs["t5"], "model") <= 1400
