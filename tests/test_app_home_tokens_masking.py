"""The Home, Tokenization and Masking pages in AppTest: links, presets, uploads, chosen words, typed special
tokens, bad input (their figure functions are tested in test_page_home_tokens_masking.py)."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from lmviz.models import checkpoints

from lmviz.pretrain import objectives
from lmviz.viz import home
from lmviz.viz.evaluation import not_yet_learnt

APP = str(checkpoints.ASSETS.parent.parent / "app.py")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "**bold** $x$ [MASK] </s> <extra_id_0>",
           "👨‍👩‍👧 👍🏽 مرحبا שלום 生存", "a" * 500]


def _page(page: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page != "app_pages/home.py":
        at.switch_page(page)
        at.run()
    assert not at.exception
    return at


def test_a_link_lights_up_a_piece_and_a_stale_one_is_dropped():
    at = _page("app_pages/tokenization.py", text="To be, or not to be", lit="gpt2:3")
    assert any("Lit up: byte-level BPE (GPT-2)'s piece 3" in c.value for c in at.caption)
    assert at.query_params["lit"] in ("gpt2:3", ["gpt2:3"])
    at = _page("app_pages/tokenization.py", text="To be", lit="gpt2:99")
    assert not any("Lit up" in c.value for c in at.caption) and "lit" not in at.query_params


# --- the pages -----------------------------------------------------------------------------------------

def test_home_shows_three_diagrams_sizes_curves_and_the_device():
    at = _page("app_pages/home.py")
    assert len(at.get("plotly_chart")) == 3 + 1 + 3
    table = at.dataframe[0].value
    assert list(table["parameters"].str.contains("M")) == [True] * 3
    assert any("runs the models on" in m.value for m in at.markdown)
    if (checkpoints.ASSETS / "evaluation.json").is_file():
        evaluation = at.dataframe[1].value
        assert len(at.dataframe) == 2 and len(evaluation) > 0
        losing = evaluation[evaluation["beats baselines"] == "no"]
        assert len([c for c in at.caption if "does not beat its baseline" in c.value]) == len(losing)
    else:
        assert any("python -m lmviz evaluate" in i.value for i in at.info)


def test_tokenization_page_counts_pieces_and_follows_the_text():
    at = _page("app_pages/tokenization.py")
    counts = at.dataframe[0].value
    assert list(counts["tokenizer"]) == ["WordPiece (BERT)", "byte-level BPE (GPT-2)", "Unigram (T5)"]
    at.text_area(key="w_text").set_value("love 😍").run()
    assert not at.exception and at.query_params["text"] in ("love 😍", ["love 😍"])
    assert at.dataframe[0].value["unknown"].tolist()[0] >= 1
    assert any("unknown token" in m.value for m in at.markdown)


@pytest.mark.parametrize("text", ["", "   ", *HOSTILE, "word " * 10_000])
def test_tokenization_page_takes_bad_input(text):
    at = _page("app_pages/tokenization.py")
    at.text_area(key="w_text").set_value(text).run()
    assert not at.exception and not at.error


def test_tokenization_link_restores_the_view():
    at = _page("app_pages/tokenization.py", text="'Tis true", tok="t5", width="40")
    assert at.text_area(key="w_text").value == "'Tis true"
    assert at.radio(key="w_tok").value == "t5" and at.slider(key="w_width").value == 40


def test_masking_mlm_reroll_draws_again():
    at = _page("app_pages/masking.py", text="to be or not to be that is the question whether tis nobler in the mind")
    first = at.metric[1].value, at.dataframe[0].value["position"].tolist()
    at.button(key="reroll").click().run()
    assert at.number_input(key="w_seed").value == 1 and at.query_params["seed"] in ("1", ["1"])
    draws = {tuple(at.dataframe[0].value["position"].tolist())}
    for _ in range(3):  # dynamic masking: new seeds give new draws
        at.button(key="reroll").click().run()
        draws.add(tuple(at.dataframe[0].value["position"].tolist()))
    assert len(draws | {tuple(first[1])}) > 1
    assert not at.exception


def test_masking_every_objective_runs_on_the_real_models():
    at = _page("app_pages/masking.py")
    for objective, n_metrics in (("nsp", 1), ("t5", 2), ("gpt2", 3)):
        at.radio(key="w_objective").set_value(objective).run()
        assert not at.exception and not at.error, objective
        assert len(at.metric) == n_metrics and len(at.get("plotly_chart")) == 1
    assert at.query_params["objective"] in ("gpt2", ["gpt2"])


@pytest.mark.parametrize("objective", ["mlm", "t5", "gpt2"])
@pytest.mark.parametrize("text", ["", *HOSTILE])
def test_masking_page_takes_bad_input(objective, text):
    at = _page("app_pages/masking.py", objective=objective)
    at.text_area(key="w_text").set_value(text).run()
    assert not at.exception


def test_masking_t5_warns_exactly_when_the_shipped_t5_is_below_its_floor():
    at = _page("app_pages/masking.py", objective="t5")
    path = checkpoints.ASSETS / "evaluation.json"
    data = json.loads(path.read_text()) if path.is_file() else None
    below = not_yet_learnt(data, "t5") is not None
    assert [w.value for w in at.warning if "has not finished learning" in w.value] == ([not_yet_learnt(data, "t5")] if below else [])


def test_masking_nsp_own_pair_shows_token_types():
    at = _page("app_pages/masking.py", objective="nsp", pair="own", a="<b>hi</b>", b="[SEP] $x$")
    assert not at.exception and not at.error
    assert at.metric[0].value.endswith("%")


@pytest.mark.parametrize("page", ["app_pages/tokenization.py", "app_pages/masking.py"])
def test_an_uploaded_text_file_replaces_the_text(page):
    at = _page(page)
    at.file_uploader(key="w_text_file").set_value(("sonnet.txt", "Shall I compare thee 🌞 to a summer's day?\n".encode(), "text/plain"))
    at.run()
    assert not at.exception and not at.error
    assert at.text_area(key="w_text").value == "Shall I compare thee 🌞 to a summer's day?\n"
    assert "summer" in at.query_params["text"] or "summer" in at.query_params["text"][0]


@pytest.mark.parametrize("name,data,why", [("picture.png", PNG, "binary"), ("empty.txt", b"", "empty"),
                                           ("blank.txt", b" \n\t\n", "empty"),
                                           ("latin1.txt", "Café naïve".encode("latin-1"), "not UTF-8")])
def test_an_upload_that_is_not_text_is_refused_and_the_text_stays(name, data, why):
    at = _page("app_pages/tokenization.py", text="'Tis true")
    at.file_uploader(key="w_text_file").set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] and why in at.error[0].value and name in at.error[0].value.replace("\\", "")
    assert at.text_area(key="w_text").value == "'Tis true"
    assert at.dataframe[0].value["characters"].tolist()[0] == len("'Tis true")  # the figures still show the old text


def test_the_sentence_pair_preset_fills_both_sentences():
    at = _page("app_pages/tokenization.py")
    at.selectbox(key="w_text_preset").set_value("A sentence pair (BERT)").run()
    assert not at.exception
    assert at.text_area(key="w_text").value.startswith("To be, or not to be")
    assert at.text_area(key="w_pair").value.startswith("Whether 'tis nobler")
    assert at.dataframe[0].value["added by the template"].tolist()[0] == 3  # [CLS] A [SEP] B [SEP]


def test_masking_mlm_link_restores_seed_rate_split_and_words():
    text = "to be or not to be that is the question whether tis nobler in the mind"
    at = _page("app_pages/masking.py", text=text, seed="7", rate="0.3", maskp="0.5", randp="0.3")
    assert at.number_input(key="w_seed").value == 7 and at.slider(key="w_rate").value == 0.3
    assert (at.slider(key="w_maskp").value, at.slider(key="w_randp").value) == (0.5, 0.3)
    shown = at.dataframe[0].value["position"].tolist()
    again = _page("app_pages/masking.py", **{k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()})
    assert again.dataframe[0].value["position"].tolist() == shown  # the same link, the same draw
    words = _page("app_pages/masking.py", text=text, words="3,9")
    assert words.multiselect(key="w_words").value == [3, 9]
    assert words.dataframe[0].value["true token"].tolist() == ["not", "question"]
    assert words.dataframe[0].value["BERT read"].tolist() == ["[MASK]", "[MASK]"]
    assert words.slider(key="w_rate").disabled and words.button(key="reroll").disabled


def test_masking_chosen_words_are_dropped_when_the_text_changes():
    at = _page("app_pages/masking.py", text="to be or not to be", words="3")
    assert at.multiselect(key="w_words").value == [3] and at.query_params["words"] in ("3", ["3"])
    at.text_area(key="w_text").set_value("the lady doth protest too much methinks").run()
    assert not at.exception and at.multiselect(key="w_words").value == []
    assert "words" not in at.query_params and not at.slider(key="w_rate").disabled


def test_masking_page_top5_is_the_models_own_forward_pass(models):
    import torch
    bert = models["bert"]
    at = _page("app_pages/masking.py", text="good night sweet prince", words="2")
    table = at.dataframe[0].value
    ids = bert.tokenizer.encode("good night sweet prince").ids
    pos = int(table["position"][0])
    ids[pos] = bert.tokenizer.token_to_id("[MASK]")
    with torch.inference_mode():
        probs = bert.model(torch.tensor([ids])).logits[0, pos].softmax(-1)
    best = probs.topk(5)
    expected = " · ".join(f"{bert.tokenizer.id_to_token(int(i))} {float(p):.0%}" for p, i in zip(best.values, best.indices))
    assert table["top 5"][0] == expected


def test_masking_t5_link_restores_noise_and_span():
    text = "All the world's a stage, and all the men and women merely players; they have their exits and their entrances."
    at = _page("app_pages/masking.py", objective="t5", text=text, seed="3", noise="0.3", span="2.0")
    assert at.slider(key="w_noise").value == 0.3 and at.slider(key="w_span").value == 2.0 and at.number_input(key="w_seed").value == 3
    fills = at.dataframe[0].value["hidden text"].tolist()
    again = _page("app_pages/masking.py", objective="t5", text=text, seed="3", noise="0.3", span="2.0")
    assert again.dataframe[0].value["hidden text"].tolist() == fills and len(fills) >= 2


@pytest.mark.parametrize("mode", ["true", "random"])
def test_masking_nsp_link_restores_the_pair(mode):
    at = _page("app_pages/masking.py", objective="nsp", pair=mode, seed="5")
    assert at.radio(key="w_pair").value == mode and at.number_input(key="w_seed").value == 5
    a, b = objectives.nsp_sample(5, mode == "true")
    assert [t.value for t in at.text_area if t.disabled] == [a, b]


def test_a_seed_out_of_range_in_a_link_is_clamped_with_a_note():
    at = _page("app_pages/masking.py", seed="-99999999999999999999")
    assert at.number_input(key="w_seed").value == 0 and any("outside 0–999,999" in i.value for i in at.info)
    big = _page("app_pages/masking.py", objective="t5", seed="123456789")
    assert big.number_input(key="w_seed").value == 999_999 and big.query_params["seed"] in ("999999", ["999999"])


def test_masking_page_predicts_at_a_typed_mask():
    at = _page("app_pages/masking.py", text="to be or not to [MASK]")
    table = at.dataframe[0].value
    assert "(none: you typed [MASK])" in table["true token"].tolist()
    assert any("You typed [MASK]" in i.value for i in at.info)
    assert at.metric[0].value == str(len(table) - 1)  # the typed hole is shown, not counted as selected
