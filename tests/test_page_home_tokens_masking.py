"""Home, Tokenization and Masking: their figure functions (without Streamlit) on the shipped models (the pages
themselves, in AppTest, are in test_app_home_tokens_masking.py)."""
from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest


from lmviz.pretrain import objectives
from lmviz.pretrain.masking import MASKED, UNSELECTED
from lmviz.pretrain.tokenizers import explain
from lmviz.viz import home, masking as vm
from lmviz.viz.evaluation import evaluation_rows, not_yet_learnt
from lmviz.viz.tokens import _groups, aligned_rows, clicked_piece, token_counts, unk_story
from lmviz.viz.strips import Cell, token_strip

HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "**bold** $x$ [MASK] </s> <extra_id_0>",
           "👨‍👩‍👧 👍🏽 مرحبا שלום 生存", "a" * 500]


def _texts(fig: go.Figure) -> str:
    """Every string plotly will draw or hover, joined."""
    return json.dumps(fig.to_plotly_json(), ensure_ascii=False)


# --- Home ------------------------------------------------------------------------------------------

def test_sizes_come_from_the_checkpoints(models):
    for kind, loaded in models.items():
        s = home.sizes_of(loaded)
        assert s.params == sum(p.numel() for p in loaded.model.parameters())
        assert s.vocab == loaded.tokenizer.get_vocab_size()
        fig = home.architecture_diagram(s)
        assert f"{s.heads} heads" in _texts(fig) and home.human(s.params) in fig.layout.title.text
    assert home.sizes_of(models["t5"]).decoder_layers == models["t5"].model.config.num_decoder_layers


def test_decoder_diagram_draws_a_causal_mask_and_the_encoder_a_full_one(models):
    def filled(kind):
        fig = home.architecture_diagram(home.sizes_of(models[kind]))
        return sum(sh.fillcolor == home.MODEL_COLOURS[kind] for sh in fig.layout.shapes)
    assert filled("bert") == 25  # every query sees every key
    assert filled("gpt2") == 15  # the lower triangle of 5 × 5


def test_size_chart_is_log_scale_with_ours_and_the_originals():
    fig = home.size_chart({"bert": 2_670_210, "gpt2": 5_322_240, "t5": 4_919_680})
    assert fig.layout.xaxis.type == "log"
    names = list(fig.data[0].y)
    assert "our BERT" in names and "GPT-3" in names and "T5-11B" in names and len(names) == 15
    assert max(fig.data[0].x) == 175e9


def test_training_curves_draw_train_and_held_out_loss(models):
    log = models["bert"].train_log  # the H100 phase, then the CPU phase that renamed speakers
    parts = home.phases(log)
    fig = home.training_curves("bert", log)
    names = [t.name for t in fig.data]
    assert [p.name for p in parts] == ["phase 1 (cuda)", "phase 2 (cpu)"]
    assert all(f"{what} · {p.name}" in names for what in ("training loss", "held-out loss") for p in parts)
    assert "NSP accuracy" in names
    held = next(t for t in fig.data if t.name == "held-out loss · phase 2 (cpu)")
    assert list(held.x) == [e["tokens"] + parts[1].offset for e in log["evals"]]


def test_an_init_phase_is_drawn_before_the_second(models):
    log = {k: v for k, v in models["t5"].train_log.items() if k != "init"}  # one phase (the shipped T5 has three)
    first = json.loads(json.dumps(log))
    log["init"] = {"from": "t5-first", "log": first}
    parts = home.phases(log)
    assert len(parts) == 2 and parts[1].offset == max(e["tokens"] for e in first["train"] + first["evals"])
    fig = home.training_curves("t5", log)
    second = [t for t in fig.data if t.name == "training loss · " + parts[1].name][0]
    assert min(second.x) > max(next(t for t in fig.data if t.name == "training loss · " + parts[0].name).x)


def test_every_phase_of_a_chain_of_inits_is_drawn_in_order():
    """GPT-2: an H100 phase, a CPU phase from it, another from that: each log holds the one before."""
    one = {"device": "cuda", "train": [{"step": 1, "tokens": 100, "loss": 5.0}]}
    two = {"device": "cpu", "train": [{"step": 1, "tokens": 40, "loss": 4.0}], "init": {"from": "gpt2", "log": one}}
    three = {"device": "cpu", "evals": [{"step": 1, "tokens": 10, "loss": 3.0}], "init": {"from": "gpt2", "log": two}}
    parts = home.phases(three)
    assert [p.name for p in parts] == ["phase 1 (cuda)", "phase 2 (cpu)", "phase 3 (cpu)"]
    assert [p.offset for p in parts] == [0, 100, 140]
    assert "3 phases" not in home.training_summary(three) and "150" in home.training_summary(three)


def test_training_curves_survive_missing_or_malformed_logs():
    for log in (None, {}, {"train": "nonsense", "evals": [None, {"tokens": "x"}]}, {"init": 3, "train": []}):
        assert isinstance(home.training_curves("gpt2", log), go.Figure)
        assert isinstance(home.training_summary(log), str)


def test_evaluation_rows_pair_figures_with_baselines_and_skip_what_is_missing():
    data = {"held_out": ["Hamlet"],
            "gpt2": {"figures": {"loss": 4.1, "bits_per_char": 1.9, "new_figure": 0.5},
                     "baselines": {"unigram": {"loss": 6.0, "bits_per_char": 2.8}, "bigram": {"loss": 5.0}}},
            "bert": {"figures": {"mlm_top1": 0.4, "nsp_acc": "n/a"}, "baselines": {"most_frequent_top1": 0.05}},
            "t5": "broken"}
    rows = evaluation_rows(data)
    loss = next(r for r in rows if r["figure"].startswith("next-token loss"))
    assert loss["ours"] == 4.1 and "unigram 6.000" in loss["baselines"] and "bigram 5.000" in loss["baselines"]
    assert any(r["figure"] == "new figure" for r in rows)
    assert not any(r["figure"] == "NSP accuracy" for r in rows)
    assert evaluation_rows(None) == [] and evaluation_rows([1, 2]) == []


def test_evaluation_rows_show_every_baseline_and_say_when_ours_loses():
    data = {"bert": {"figures": {"mlm_loss": 3.5, "mlm_top5": 0.58},
                     "baselines": {"unigram_loss": 6.3, "most_frequent_top5": 0.17}},
            "t5": {"figures": {"loss": 4.7, "content_acc": 0.02},
                   "baselines": {"unigram_loss": 6.0, "most_frequent_acc": 0.03}}}
    rows = {r["figure"]: r for r in evaluation_rows(data)}
    assert rows["MLM loss (nats/masked token)"]["baselines"] == "unigram 6.300"
    assert rows["MLM top-5 over the 80/10/10 draw"]["baselines"] == "5 most frequent tokens 0.170"
    assert rows["fill: span loss (nats/target token)"]["baselines"] == "unigram 6.000"
    assert rows["MLM top-5 over the 80/10/10 draw"]["beats baselines"] == "yes"
    assert rows["fill: non-sentinel target accuracy"]["beats baselines"] == "no"


def test_training_curves_mark_the_kept_step(models):
    log = models["gpt2"].train_log
    fig = home.training_curves("gpt2", log)
    assert any(f"kept: step {log['best']['step']}" in a.text for a in fig.layout.annotations)
    assert "from step 500 (dashed line)" in home.training_summary({**log, "best": {**log["best"], "step": 500}})
    assert "shipped weights" not in home.training_summary({**log, "best": {**log["best"], "step": log["train"][-1]["step"]}})


def test_device_text_names_one_shared_training_device_once():
    assert home.device_text("CPU", {k: {"device": "cuda"} for k in ("bert", "gpt2", "t5")}).endswith(
        "All three were trained on a GPU (CUDA).")
    assert "BERT on a GPU (CUDA), GPT-2 on the CPU" in home.device_text("CPU", {"bert": {"device": "cuda"}, "gpt2": {"device": "cpu"}})


# --- Tokenization ------------------------------------------------------------------------------------

def test_wordpiece_gives_up_on_emoji_where_bpe_spells_bytes(models):
    text = "love 😍"
    ex = {k: explain(k, m.tokenizer, text) for k, m in models.items()}
    assert any(p.unknown for p in ex["bert"].pieces)
    assert not any(p.unknown for p in ex["gpt2"].pieces)
    assert b"".join(p.raw_bytes for p in ex["gpt2"].pieces) == text.encode()


def test_bert_pair_marks_the_final_sep_as_segment_b(models):
    enc = models["bert"].tokenizer.encode("to be", "or not")
    ex = explain("bert", models["bert"].tokenizer, "to be", "or not")
    assert [p.sequence for p in ex.pieces] == enc.type_ids == [0, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("text", HOSTILE)
def test_aligned_rows_escape_user_text(models, text):
    ex = {k: explain(k, m.tokenizer, text) for k, m in models.items()}
    dump = _texts(aligned_rows(text, ex))
    assert "<script>" not in dump and "<img" not in dump


# --- Masking figures ---------------------------------------------------------------------------------

def test_wrapped_lines_start_with_the_space_so_bpe_pieces_stay_whole(models):
    text = "Now is the winter of our discontent made glorious summer by this sun of York and all the clouds"
    fig = aligned_rows(text, {k: explain(k, models[k].tokenizer, text) for k in ("gpt2",)}, width=30)
    shown = [t for tr in fig.data if tr.type == "bar" for t in tr.text]
    assert "…" not in shown  # no piece is cut in two by a line end


def test_narrow_wordpiece_boxes_drop_the_hashes(models):
    text = "wreaths bruised alarums"
    fig = aligned_rows(text, {"bert": explain("bert", models["bert"].tokenizer, text)}, width=56)
    shown = [t for tr in fig.data if tr.type == "bar" for t in tr.text]
    assert all(not (t.startswith("##") and len(t) == 3) for t in shown)  # a one-character ##x box shows x


def test_unknown_story_keeps_right_to_left_words_in_order(models):
    text = "مرحبا بالعالم"
    story = " ".join(unk_story({"bert": explain("bert", models["bert"].tokenizer, text)}))
    assert "“\u2068" in story and "\u2069”" in story


def test_mlm_figure_colours_each_position_by_its_outcome(models):
    r = objectives.mlm_predict(models["bert"], "to be or not to be that is the question", seed=1, rate=0.5)
    fig = vm.mlm_figure(r)
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    colours = list(bars[0].marker.color)
    for i, oc in enumerate(r.outcome):
        if oc != UNSELECTED:
            assert colours[i] == vm.OUTCOME_COLOURS[oc]
    assert [p.position for p in r.predictions] == [i for i, oc in enumerate(r.outcome) if oc != UNSELECTED]
    top5 = vm.mlm_top5_figure(r)
    assert top5.data[0].z.shape == (len(r.predictions), 5)


def test_top5_probabilities_come_from_the_model(models):
    import torch
    bert = models["bert"]
    r = objectives.mlm_predict(bert, "good night , sweet prince", seed=0, chosen=(3,))
    p = r.predictions[0]
    ids = [bert.tokenizer.token_to_id(t) for t in ["[CLS]", "good", "night", ",", "[MASK]", "prince", "[SEP]"]]
    with torch.inference_mode():
        probs = bert.model(torch.tensor([ids])).logits[0, p.position].softmax(-1)
    assert abs(probs.max().item() - p.top[0][1]) < 1e-4


def test_token_strip_wraps_long_sequences_and_aligns_rows():
    cells = [Cell(str(i), "#FFFFFF", str(i)) for i in range(64)]
    fig = token_strip([("a", cells), ("b", cells)], per_line=16)
    a, b = fig.data[0], fig.data[1]
    assert len(a.y) == 64 and len(set(a.y)) == 4  # four lines of 16
    assert list(a.base) == list(b.base)  # position t of row b sits under position t of row a
    unaligned = token_strip([("a", cells[:3]), ("b", cells)], per_line=16, aligned=False)
    assert max(unaligned.data[1].y) < min(unaligned.data[0].y)
    # a long label gets a wider box instead of a smaller font, in both rows, and the rows stay aligned
    words = [Cell(w, "#FFFFFF", w) for w in ["to", "be", "question", "[MASK]", "honorificabilitudinitatibus"]]
    fig = token_strip([("a", words), ("b", words[:2] + [Cell("x", "#FFFFFF", "x")] + words[3:])], per_line=14)
    a, b = fig.data[0], fig.data[1]
    assert list(a.x) == list(b.x) and list(a.base) == list(b.base)
    assert a.x[0] < a.x[2] < a.x[4] and a.x[4] > 3, list(a.x)


def test_t5s_zero_width_word_boundary_shares_the_box_of_the_piece_it_starts(models):
    """T5 spells '漢字 hello' as '▁' (no characters of its own) then '漢字': one box, not two on top of each other."""
    exp = explain("t5", models["t5"].tokenizer, "漢字 hello")
    boundary = next(i for i, p in enumerate(exp.pieces) if p.display == "▁")
    assert exp.pieces[boundary].start == exp.pieces[boundary].end
    assert any(boundary in g and boundary + 1 in g for g in _groups(exp))


def test_a_lit_piece_lights_up_exactly_its_characters_and_every_box_reports_itself(models):
    text = "To be, or not to be"
    exps = {k: explain(k, models[k].tokenizer, text) for k in ("bert", "gpt2", "t5")}
    i = next(j for j, p in enumerate(exps["gpt2"].pieces) if p.display.endswith("not"))  # GPT-2's " not": characters 9-12
    fig = aligned_rows(text, exps, lit=("gpt2", i))
    source = next(t for t in fig.data if t.mode == "text")
    lit_chars = [x for x in source.x if any(s.layer == "below" and s.x0 <= x <= s.x1 for s in fig.layout.shapes)]
    assert len(lit_chars) == exps["gpt2"].pieces[i].end - exps["gpt2"].pieces[i].start == 4
    outlined = [s for s in fig.layout.shapes if s.layer == "above"]
    assert len(outlined) == 1
    boxes = [t for t in fig.data if t.type == "bar"]
    assert [list(c) for c in boxes[1].customdata][:3] == [["gpt2", 0], ["gpt2", 1], ["gpt2", 2]]
    assert not aligned_rows(text, exps).layout.shapes, "nothing is lit until a piece is clicked"
    assert clicked_piece(["gpt2", 3]) == ("gpt2", 3)
    for forged in (None, "x", ["gpt2"], ["<b>", 1], ["gpt2", -1], ["gpt2", 1.5], ["gpt2", 1, 2]):
        assert clicked_piece(forged) is None


def test_t5_and_shift_figures(models):
    t = objectives.t5_reconstruct(models["t5"], "All the world's a stage, and all the men and women merely players.", seed=2)
    fig = vm.t5_figure(t)
    assert "⟨0⟩" in _texts(fig) and len(vm.t5_rows(t)) == len(t.fills)
    g = objectives.gpt2_shift_table(models["gpt2"], "But soft, what light through yonder window breaks?")
    sf = vm.shift_figure(g)
    assert list(sf.data[0].y) == [r.prob for r in g.rows] and len(sf.layout.xaxis.tickvals) <= 32


@pytest.mark.parametrize("text", HOSTILE)
def test_masking_figures_escape_user_text(models, text):
    r = objectives.mlm_predict(models["bert"], text, seed=0)
    n = objectives.nsp_predict(models["bert"], text, text)
    g = objectives.gpt2_shift_table(models["gpt2"], text)
    for fig in (vm.mlm_figure(r), vm.mlm_top5_figure(r), vm.nsp_figure(n), vm.shift_figure(g)):
        dump = _texts(fig)
        assert "<script" not in dump and "<img" not in dump


@pytest.mark.parametrize("data,warns", [
    ({"t5": {"figures": {"content_acc": 0.025}, "baselines": {"most_frequent_acc": 0.029}}}, True),
    ({"t5": {"figures": {"content_acc": 0.20}, "baselines": {"most_frequent_acc": 0.029}}}, False),
    ({"t5": {"figures": {"content_acc": "n/a"}}}, False), (None, False), ("unreadable", False), ([1, 2], False),
])
def test_the_t5_warning_follows_the_figures_and_ignores_a_malformed_file(data, warns):
    note = not_yet_learnt(data, "t5")
    assert (note is not None) == warns
    if warns:
        assert "2.5%" in note and "2.9%" in note


# --- uploads, hand-chosen words, typed special tokens, links ---------------------------------------------------------



def test_chosen_words_all_become_mask_whatever_the_split(models):
    bert = models["bert"]
    text = "to be or not to be that is the question"
    words = objectives.bert_words(bert, text)
    chosen = (words.index("not"), words.index("question"))
    for seed in range(5):  # with BERT's 80/10/10 some of these would be random or kept
        r = objectives.mlm_predict(bert, text, seed=seed, rate=0.5, split=(0.0, 0.5), chosen=chosen)
        assert [p.truth for p in r.predictions] == ["not", "question"]
        assert [p.shown for p in r.predictions] == ["[MASK]", "[MASK]"] and r.outcome.count(MASKED) == 2


def test_a_typed_mask_is_a_hole_bert_fills_outside_the_loss(models):
    import torch
    bert = models["bert"]
    r = objectives.mlm_predict(bert, "to be or not to [MASK]", seed=0, chosen=(0,))
    assert [(p.truth, p.typed) for p in r.predictions] == [("to", False), ("[MASK]", True)]
    typed = r.predictions[1]
    assert r.outcome[typed.position] == MASKED and any("typed [MASK]" in n for n in r.notes)
    assert r.loss == r.predictions[0].loss  # the typed hole has no truth, so it is not in the loss
    ids = bert.tokenizer.encode("[MASK] be or not to [MASK]").ids
    with torch.inference_mode():
        probs = bert.model(torch.tensor([ids])).logits[0, typed.position].softmax(-1)
    best = probs.topk(5)
    assert [t for t, _ in typed.top] == [bert.tokenizer.id_to_token(int(i)) for i in best.indices]
    assert typed.top[0][1] == pytest.approx(float(best.values[0]), abs=1e-5)
    assert vm.mlm_top5_figure(r).layout.yaxis.ticktext[1].endswith("you typed [MASK]")
    strip = vm.mlm_figure(r)
    colours = list(strip.data[0].marker.color)
    assert colours[typed.position] == vm.TYPED_COLOUR != colours[r.predictions[0].position]  # the drawn hole looks different
    assert any(t.name == "[MASK] you typed" for t in strip.data)
    only = objectives.mlm_predict(bert, "[MASK]", seed=0)
    assert len(only.predictions) == 1 and only.scored == [] and only.loss != only.loss  # NaN: nothing to score


def test_a_typed_endoftext_is_named_as_a_document_boundary(models):
    g = objectives.gpt2_shift_table(models["gpt2"], "Exeunt.<|endoftext|>Enter Hamlet")
    assert [r.input for r in g.rows].count("<|endoftext|>") == 2  # the start of every text, and the typed one
    assert any("<|endoftext|>" in n and "new text" in n for n in g.notes)
    assert not any("<|endoftext|>" in n for n in objectives.gpt2_shift_table(models["gpt2"], "Exeunt.").notes)


def test_nsp_token_type_ids_mark_sentence_a_then_b(models):
    n = objectives.nsp_predict(models["bert"], "to be", "or not to be")
    assert n.tokens == ["[CLS]", "to", "be", "[SEP]", "or", "not", "to", "be", "[SEP]"]
    assert n.type_ids == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    row = vm.nsp_figure(n).data[1]  # the token_type_ids row
    assert list(row.text) == [str(t) for t in n.type_ids]


def test_shift_figure_at_64_tokens_thins_ticks_so_labels_do_not_overlap(models):
    import html
    import math
    text = " ".join(["the king is dead, long live the king"] * 12)
    g = objectives.gpt2_shift_table(models["gpt2"], text)
    assert len(g.rows) >= 64
    g.rows = g.rows[:64]
    fig = vm.shift_figure(g)
    vals = list(fig.layout.xaxis.tickvals)
    assert len(vals) <= 32 and vals == sorted(vals)
    # on a 900-px plot, neighbouring labels slanted at the figure's angle must be a line height apart
    gap_px = 900 / 64 * (vals[1] - vals[0])
    assert gap_px * math.sin(math.radians(abs(fig.layout.xaxis.tickangle))) >= 1.2 * fig.layout.font.size
    assert all(len(html.unescape(t)) <= 14 for t in fig.layout.xaxis.ticktext)  # long labels are cut


def test_emoji_bytes_get_a_readable_box_each_and_the_other_rows_stretch(models):
    text = "Love 😍 now"
    ex = {k: explain(k, m.tokenizer, text) for k, m in models.items()}
    fig = aligned_rows(text, ex)
    bars = {t.name: t for t in fig.data if t.type == "bar"}
    gpt2 = bars["GPT-2"]
    bytes_ = [(b, w, t) for b, w, t in zip(gpt2.base, gpt2.x, gpt2.text) if t in ("F0", "9F", "98", "8D")]
    assert [t for *_, t in bytes_] == ["F0", "9F", "98", "8D"] and all(w >= 1 - 1e-9 for _, w, _ in bytes_)
    emoji_x0, emoji_x1 = bytes_[0][0], bytes_[-1][0] + bytes_[-1][1]
    unk = [(b, w) for b, w, t in zip(bars["BERT"].base, bars["BERT"].x, bars["BERT"].text) if t == "[UNK]"][0]
    assert unk == pytest.approx((emoji_x0, emoji_x1 - emoji_x0))  # BERT's [UNK] spans the same stretched column
    chars = fig.data[0]
    emoji = list(chars.text).index("😍")
    assert emoji_x0 < chars.x[emoji] < emoji_x1
    assert "GPT-2: pieces 2–5" in chars.hovertext[emoji] and "BERT:" in chars.hovertext[emoji]


def test_token_counts_divide_the_characters_by_the_tokens_made_from_them(models):
    a, b = "to be, or not to be", "that is the question"
    ex = {"bert": explain("bert", models["bert"].tokenizer, a, b)}
    row = token_counts(ex, b)[0]
    assert row["characters"] == len(a) + len(b) and row["added by the template"] == 3
    assert row["characters per token"] == round(row["characters"] / (row["tokens"] - 3), 2)


def test_a_line_never_cuts_a_template_token_and_invisible_characters_are_named(models):
    text = "Love 😍 and a family 👨‍👩‍👧, thumbs-up 👍🏽! 生存还是毁灭"
    ex = {k: explain(k, m.tokenizer, text) for k, m in models.items()}
    for width in (30, 44, 56, 80):
        fig = aligned_rows(text, ex, width=width)
        for tr in fig.data:
            if tr.type == "bar":
                template = [t for t, h in zip(tr.text, tr.hovertext) if "added by the template" in h]
                assert "…" not in template, (width, tr.name)  # each [CLS], [SEP], </s> drawn whole, once
                assert len(template) == sum(p.special and p.start == p.end for p in ex[{"BERT": "bert", "GPT-2": "gpt2", "T5": "t5"}[tr.name]].pieces)
    assert list(fig.data[0].text).count("ZWJ") == 2  # the family's two zero-width joiners have a visible column


def test_a_floor_that_asks_to_beat_a_baseline_is_strict_and_the_command_line_prints_the_same_table(capsys):
    """Issue #14: T5's label task must beat the majority label, its punctuate: words must beat copying. A tie is not a
    win; `python -m lmviz evaluate` prints the Home page's rows (one list of floors, not two)."""
    from lmviz.pretrain.evaluate import print_table

    data = {"held_out": ["macbeth"], "t5": {"figures": {"content_acc": 0.05}, "baselines": {"most_frequent_acc": 0.02},
                                            "genre": {"acc": 0.6, "majority": "comedy", "majority_acc": 0.6},
                                            "punctuate": {"word_acc": 0.7, "copy_word_acc": 0.65}}}
    rows = {r["figure"]: r for r in evaluation_rows(data)}
    genre, words, fill = (rows[k] for k in ("genre: accuracy (every test speech)", "punctuate: words written exactly (greedy)",
                                            "fill: non-sentinel target accuracy"))
    assert (genre["floor"], genre["meets floor"]) == ("> majority label (comedy)", "no")
    assert (words["floor"], words["meets floor"]) == ("> copying the input", "yes")
    assert fill["meets floor"] == "no" and not_yet_learnt(data, "t5"), "2.5x the most frequent token is under the 3x floor"
    print_table(data)
    out = capsys.readouterr().out
    assert "| T5 | genre: accuracy (every test speech) | 0.600 | majority label (comedy) 0.600 | > majority label (comedy) ✘ |" in out
