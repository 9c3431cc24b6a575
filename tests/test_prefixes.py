"""T5's task prefixes in the library: the presets come from held-out plays, what a page says about a typed prefix,
Compare's punctuate: reading, Masking's fill: strip, and the Home table's text-to-text figures."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmviz.analysis import prefixes
from lmviz.analysis.compare import compare
from lmviz.analysis.inference import attention_run, model_input, token_label
from lmviz.errors import LmvizError
from lmviz.models import checkpoints
from lmviz.pretrain import corpus, objectives, text2text
from lmviz.viz.evaluation import evaluation_rows
from t5_folders import plain_t5, prefixed_t5

torch.set_num_threads(1)


def pieces(loaded, task: str) -> list[str]:
    """How ``loaded``'s tokenizer labels the prefix of ``task``."""
    return [token_label(loaded, i) for i in text2text.prefix_ids(loaded, task)]


@pytest.fixture(scope="module")
def t5s(tmp_path_factory):
    """(a T5 that knows the prefixes, the shipped T5 without them), loaded on the CPU."""
    root = tmp_path_factory.mktemp("t5s")
    folder, _ = prefixed_t5(root / "new")
    return checkpoints.load(folder, "cpu"), checkpoints.load(plain_t5(root / "old"), "cpu")


def test_each_preset_is_real_text_of_a_held_out_play_with_its_prefix():
    plays = {d.name: d for d in corpus.shakespeare()}
    got = prefixes.presets()
    assert tuple(got) == text2text.TASKS
    for task, p in got.items():
        assert p.play in corpus.HELD_OUT and p.lines in "\n\n".join(s.text for s in plays[p.play].speeches)
        assert text2text.split_prefix(p.text)[0] == task
    punct = got["punctuate"]
    assert punct.text == "punctuate: " + text2text.strip_punctuation(punct.lines) and punct.answer == punct.lines
    assert punct.text == punct.text.lower() and "?" not in punct.text and "charm'd" in punct.text
    fill = got["fill"]
    assert "<extra_id_0>" in fill.text and "food" not in fill.text and fill.answer.startswith("<extra_id_0> food")
    assert got["genre"].answer == "tragedy" and prefixes.preset_for(fill.text) == fill and prefixes.preset_for("x") is None


@pytest.mark.parametrize("text, odd", [("translate: hello", "translate"), ("translate english to german: hi", "translate english to german"),
                                       ("summarize:text", "summarize"), ("ROMEO: But soft", None), ("But soft: what light", None),
                                       ("punctuate: hi", None), ("<b>fill:</b> x", None), ("", None), ("a: " + "b" * 9, "a")])
def test_what_looks_like_a_prefix_but_is_not(text, odd):
    assert prefixes.looks_like_prefix(text) == odd


def test_notes_for_a_t5_that_knows_prefixes(t5s):
    new, _ = t5s
    (note,) = prefixes.prefix_notes(new, "translate: hello")
    assert "`translate:` is not a task" in note and all(f"`{t}:`" in note for t in text2text.TASKS)
    (note,) = prefixes.prefix_notes(new, "But soft, what light")
    assert "has none" in note
    assert prefixes.prefix_notes(new, prefixes.presets()["punctuate"].text) == []
    assert prefixes.prefix_notes(new, "genre: <b>hi</b> $x$") == []
    (note,) = prefixes.prefix_notes(new, "punctuate: Hello, World!")
    assert "`punctuate: hello world`" in note
    for empty in ("fill:", "punctuate:   ", "Genre:\n"):
        with pytest.raises(LmvizError, match="nothing after"):
            prefixes.prefix_notes(new, empty)


def test_a_t5_without_prefixes_reads_text_as_before(t5s):
    _, old = t5s
    for text in ("translate: hello", "But soft", "fill:", "<script>x</script>"):
        notes = prefixes.prefix_notes(old, text)
        assert notes == ([] if text2text.split_prefix(text)[0] is None else [notes[0]])
    assert "reads `fill:` as ordinary words" in prefixes.prefix_notes(old, "fill: a <extra_id_0> b")[0]
    assert model_input(old, "To be or not").notes == []


def test_the_punctuate_preset_runs_and_its_cross_attention_reads_the_prefixed_input(t5s):
    new, _ = t5s
    run = attention_run(new, prefixes.presets()["punctuate"].text)
    prefix = pieces(new, "punctuate")
    assert prefix and run.tokens["encoder"][: len(prefix)] == prefix and run.tokens["encoder"][-1] == "</s>"
    cross = run.heads("cross")
    assert cross.shape[2:] == (len(run.tokens["decoder"]), len(run.tokens["encoder"]))
    assert np.allclose(cross.sum(-1), 1, atol=1e-4)
    assert any("not a task" in n for n in attention_run(new, "translate: hello").notes)
    with pytest.raises(LmvizError, match="nothing after `punctuate:`"):
        attention_run(new, "punctuate:")


def test_compare_gives_t5_a_punctuate_example_and_leaves_the_others_alone(t5s, models):
    new, old = t5s
    text = "But soft, what light through yonder window breaks?"
    both = {"bert": models["bert"], "gpt2": models["gpt2"]}
    punct = compare({**both, "t5": new}, text)
    same = compare({**both, "t5": new}, text, punctuate=False)
    cross = punct.view("t5", "cross")
    prefix = pieces(new, "punctuate")
    assert cross.keys[: len(prefix) + 1] == prefix + ["▁but"] and "," not in cross.keys and "," in cross.queries
    assert same.view("t5", "cross").keys[:2] == ["▁But", "▁soft"]
    for kind, att in (("bert", "self"), ("gpt2", "causal")):
        assert np.array_equal(punct.view(kind, att).probs, same.view(kind, att).probs)
    assert compare({**both, "t5": old}, text).view("t5", "cross").keys[:2] == ["▁But", "▁soft"]
    typed = compare({"t5": new}, "genre: " + text)  # a task typed by the user is read as typed
    assert typed.view("t5", "cross").keys[: len(pieces(new, "genre"))] == pieces(new, "genre")


def test_masking_puts_fill_before_the_corrupted_input_only_for_a_t5_that_knows_it(t5s):
    new, old = t5s
    text = "If music be the food of love, play on; give me excess of it."
    assert objectives.t5_reconstruct(new, text).input_tokens[: len(pieces(new, "fill"))] == pieces(new, "fill")
    assert objectives.t5_reconstruct(old, text).input_tokens[0] == "▁If"


EVAL = {"held_out": ["macbeth", "twelfth-night"],
        "gpt2": {"figures": {"loss": 4.6, "bits_per_char": 2.25},
                 "baselines": {"unigram": {"loss": 6.4, "bits_per_char": 3.0}, "bigram": {"loss": 5.2, "bits_per_char": 2.43}},
                 "probes": {"previous_token_head": [1, 2, 0.61], "previous_token_chance": 0.12}},
        "bert": {"figures": {"mlm_loss": 3.4, "mlm_top1": 0.39, "mask_top1": 0.27, "mlm_top5": 0.6, "nsp_acc": 0.77},
                 "baselines": {"most_frequent_top1": 0.058, "most_frequent_top5": 0.17, "unigram_loss": 6.3, "nsp_chance": 0.5}},
        "t5": {"figures": {"fill_loss": 3.9, "content_acc": 0.08, "punctuate_loss": 0.8, "loss": 2.35},
               "baselines": {"most_frequent_acc": 0.029, "unigram_loss": 5.96},
               "punctuate": {"word_acc": 0.71, "copy_word_acc": 0.52, "exact": 0.21, "copy_exact": 0.03,
                             "alignment_head": [3, 1, 0.82]},
               "genre": {"acc": 0.45, "majority_acc": 0.5, "majority": "comedy"}}}


def test_the_home_table_shows_the_text_to_text_figures_with_baselines_and_floors():
    rows = {(r["model"], r["figure"]): r for r in evaluation_rows(EVAL)}
    row = lambda model, start: next(r for (m, f), r in rows.items() if m == model and f.startswith(start))  # noqa: E731
    assert row("BERT", "MLM top-1 at [MASK]")["meets floor"] == "no" and row("BERT", "MLM top-1 at [MASK]")["floor"] == "≥ 0.30"
    assert row("BERT", "MLM top-1 over the 80/10/10")["meets floor"] == "yes" and row("BERT", "NSP")["floor"] == "≥ 0.75"
    assert row("GPT-2", "bits per character")["meets floor"] == "no" and row("GPT-2", "bits per character")["floor"] == "≤ 2.20"
    head = row("GPT-2", "previous-token head (layer 1, head 2)")
    assert head["ours"] == 0.61 and head["baselines"] == "even attention 0.120" and head["meets floor"] == "yes"
    fill = row("T5", "fill: non-sentinel")
    assert fill["floor"] == "≥ 0.087 (3× most frequent token)" and fill["meets floor"] == "no" and fill["beats baselines"] == "yes"
    assert row("T5", "fill: span loss")["ours"] == 3.9 and row("T5", "mean of the fill:")["ours"] == 2.35
    word = row("T5", "punctuate: words written")
    assert word["baselines"] == "copying the input 0.520" and word["beats baselines"] == "yes"
    assert row("T5", "punctuate: exact")["baselines"] == "copying the input 0.030"
    align = row("T5", "punctuate: alignment head (layer 3, head 1)")
    assert align["ours"] == 0.82 and align["floor"] == "≥ 0.70" and align["meets floor"] == "yes"
    genre = row("T5", "genre: accuracy")
    assert genre["baselines"] == "majority label (comedy) 0.500" and genre["beats baselines"] == "no"
    assert not any(f in ("fill loss", "loss", "punctuate loss") for _, f in rows)  # each named, none twice


def test_an_older_or_damaged_evaluation_shows_what_is_there():
    old = json.loads(json.dumps(EVAL))
    del old["bert"]["figures"]["mask_top1"], old["t5"]["punctuate"], old["t5"]["genre"], old["t5"]["figures"]["fill_loss"], old["t5"]["figures"]["punctuate_loss"]
    old["gpt2"]["probes"]["previous_token_head"] = [1, "x"]
    rows = evaluation_rows(old)
    figures = [r["figure"] for r in rows]
    assert not any(f.startswith(("MLM top-1 at", "punctuate:", "genre:", "previous-token", "mean of")) for f in figures)
    assert "fill: span loss (nats/target token)" in figures and sum(f == "fill: span loss (nats/target token)" for f in figures) == 1
    assert next(r for r in rows if r["figure"].startswith("fill: span"))["ours"] == 2.35  # an old file's "loss" is the span loss
    assert evaluation_rows({"t5": {"figures": {"content_acc": 0.1}, "punctuate": {"alignment_head": "?"}}})[0]["floor"] == ""
