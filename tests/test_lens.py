"""The lens reads every layer's guess through the model's own head: its last row is the model's output, each row
is what the model cut after that layer would say, and a folder with no head says it cannot."""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
import transformers

from lmviz.analysis.lens import layer_logits, lens, lens_data
from lmviz.analysis.targets import targets
from lmviz.errors import LmvizError
from lmviz.models import checkpoints

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer."
HIDE = [2, 5]  # BERT: "be" and "not"


@pytest.fixture(scope="module")
def models():
    return {k: checkpoints.load(checkpoints.shipped(k), "cpu") for k in ("bert", "gpt2", "t5")}


def problem(loaded, text=TEXT):
    return targets(loaded, text, hide=HIDE if loaded.kind == "bert" else None)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_the_lens_at_the_last_layer_is_the_models_own_output(models, kind):
    rows, own = layer_logits(models[kind], problem(models[kind]))
    assert rows.shape[0] == 5 and torch.allclose(rows[-1], own, atol=1e-5, rtol=0)


def truncated(loaded, layers: int):
    """A copy of the model that stops after ``layers`` layers of its predicting stack (the same head after it)."""
    cut = copy.deepcopy(loaded)
    m = cut.model
    stack = {"bert": lambda: m.bert.encoder.layer, "gpt2": lambda: m.transformer.h, "t5": lambda: m.decoder.block}[loaded.kind]()
    del stack[layers:]
    return cut


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_each_row_is_what_the_model_cut_after_that_layer_predicts(models, kind):
    tg = problem(models[kind])
    rows, _ = layer_logits(models[kind], tg)
    for layers in (1, 2):
        _, own = layer_logits(truncated(models[kind], layers), tg)
        assert torch.allclose(rows[layers], own, atol=1e-4, rtol=0), (kind, layers, (rows[layers] - own).abs().max())


def test_t5s_lens_rescales_by_d_model_before_the_tied_head(models):
    """Without T5 v1.0's d_model ** -0.5 the middle rows would be far too confident."""
    m = models["t5"].model
    h = torch.randn(3, m.config.d_model)
    by_hand = m.decoder.final_layer_norm(h) @ m.shared.weight.T / m.config.d_model ** 0.5
    assert torch.allclose(m.unembed(h), by_hand, atol=1e-5)


def test_gpt2s_lens_shows_the_next_token_its_probability_and_the_top_five(models):
    tg = problem(models["gpt2"])
    ln = lens(models["gpt2"], tg)
    assert ln.target_tokens[1] == "␣be" and ln.columns[1] == "To (1)"  # after "To" comes " be"
    assert np.isnan(ln.prob[:, -1]).all() and ln.target_tokens[-1] is None  # the last token has no next one here
    assert all(len(cell) == 5 and cell[0][1] >= cell[-1][1] for row in ln.top for cell in row)
    right = ln.rank == 1
    assert np.array_equal(right, np.array([[c[0][0] == ln.target_tokens[j] for j, c in enumerate(row)] for row in ln.top]))
    assert (ln.prob[-1, :-1] > ln.prob[0, :-1]).mean() > 0.8  # the guess forms over the layers
    assert ln.prob[-1, ln.surest()] == np.nanmax(ln.prob[-1])  # the attribution view opens on this prediction
    data = lens_data(ln)
    assert data["target_probability"][0][-1] is None and len(data["top5"]) == 5


def test_berts_lens_reads_only_the_hidden_words(models):
    ln = lens(models["bert"], problem(models["bert"]))
    assert ln.columns == ["be (2)", "not (5)"] and ln.target_tokens == ["be", "not"]
    assert ln.prob.shape == (5, 2) and not np.isnan(ln.prob).any()


def test_a_mask_typed_in_the_text_is_predicted_without_a_truth(models):
    tg = targets(models["bert"], "To be, or not to [MASK], that is the question.")
    ln = lens(models["bert"], tg)
    assert tg.target == [None] and np.isnan(ln.prob).all() and ln.top[-1][0][0][0]


def test_a_bert_folder_without_its_mlm_head_says_the_lens_cannot(tmp_path, models):
    hf = transformers.BertForPreTraining.from_pretrained(checkpoints.shipped("bert"))
    hf.bert.save_pretrained(tmp_path)
    shutil.copy(checkpoints.shipped("bert") / "tokenizer.json", tmp_path)
    bare = checkpoints.load(tmp_path, "cpu")
    with pytest.raises(LmvizError, match="no MLM head"):
        lens(bare, problem(bare))


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_text_is_a_message(models, text):
    for kind in ("bert", "t5"):
        with pytest.raises(LmvizError, match="empty"):
            problem(models[kind], text)
    assert lens(models["gpt2"], problem(models["gpt2"], text)).columns[0] == "<|endoftext|> (0)"  # GPT-2 starts from it


def test_ten_thousand_words_are_cut_to_the_context_and_said(models):
    text = " ".join(["word"] * 10_000)
    for kind in ("bert", "gpt2", "t5"):
        tg = targets(models[kind], text, hide=[3] if kind == "bert" else None, target="word word")
        assert any("at most" in n for n in tg.notes)
        assert lens(models[kind], tg).prob.shape[0] == 5


def test_hiding_a_position_that_is_not_a_word_is_a_message(models):
    for bad in ([0], [999], [-1]):
        with pytest.raises(LmvizError, match="not a word"):
            targets(models["bert"], TEXT, hide=bad)
    with pytest.raises(LmvizError, match="Nothing is hidden"):
        targets(models["bert"], TEXT, hide=[])


def test_a_t5_trained_text_to_text_is_asked_to_punctuate_and_scored_on_the_text_as_typed(models):
    import dataclasses

    taught = dataclasses.replace(models["t5"], extra={"train": {"mixture": {"punctuate": 1.0}}})
    tg = targets(taught, "To be, or not to be: that is the question.")
    read = "".join(tg.source_tokens).replace("▁", " ")
    assert read.startswith(" punctuate: to be or not") and "," not in tg.source_tokens
    assert tg.target_tokens[:4] == ["▁To", "▁be", ",", "▁or"] and tg.target_tokens[-1] == "</s>"
    assert any("punctuate" in n for n in tg.notes)
    assert targets(taught, "genre: To be, or not to be.").notes[-1].startswith("T5's target is its own greedy output")
    with pytest.raises(LmvizError, match="no words"):
        targets(taught, "?!")
