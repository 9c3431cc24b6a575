"""Home, Tokenization and Masking: the figures (without Streamlit) and the pages (AppTest), on the shipped models."""
from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from lmviz import checkpoints, objectives
from lmviz.masking import MASKED, UNSELECTED
from lmviz.tokenizers import explain
from lmviz.viz import home, masking as vm
from lmviz.viz.tokens import Cell, _groups, aligned_rows, token_counts, token_strip, unk_story

APP = str(checkpoints.ASSETS.parent.parent / "app.py")
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "**bold** $x$ [MASK] </s> <extra_id_0>",
           "👨‍👩‍👧 👍🏽 مرحبا שלום 生存", "a" * 500]


@pytest.fixture(scope="module")
def models():
    return {k: checkpoints.load(checkpoints.shipped(k), "cpu") for k in ("bert", "gpt2", "t5")}


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
    fig = home.training_curves("bert", models["bert"].train_log)
    names = [t.name for t in fig.data]
    assert "training loss" in names and "held-out loss" in names and "NSP accuracy" in names
    held = next(t for t in fig.data if t.name == "held-out loss")
    assert list(held.x) == [e["tokens"] for e in models["bert"].train_log["evals"]]


def test_an_init_phase_is_drawn_before_the_second(models):
    log = dict(models["t5"].train_log)
    first = json.loads(json.dumps(log))
    log["init"] = {"from": "t5-first", "log": first}
    parts = home.phases(log)
    assert len(parts) == 2 and parts[1].offset == max(e["tokens"] for e in first["train"] + first["evals"])
    fig = home.training_curves("t5", log)
    second = [t for t in fig.data if t.name == "training loss · " + parts[1].name][0]
    assert min(second.x) > max(next(t for t in fig.data if t.name == "training loss · " + parts[0].name).x)


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
    rows = home.evaluation_rows(data)
    loss = next(r for r in rows if r["figure"].startswith("next-token loss"))
    assert loss["ours"] == 4.1 and "unigram 6.000" in loss["baselines"] and "bigram 5.000" in loss["baselines"]
    assert any(r["figure"] == "new figure" for r in rows)
    assert not any(r["figure"] == "NSP accuracy" for r in rows)
    assert home.evaluation_rows(None) == [] and home.evaluation_rows([1, 2]) == []


def test_evaluation_rows_show_every_baseline_and_say_when_ours_loses():
    data = {"bert": {"figures": {"mlm_loss": 3.5, "mlm_top5": 0.58},
                     "baselines": {"unigram_loss": 6.3, "most_frequent_top5": 0.17}},
            "t5": {"figures": {"loss": 4.7, "content_acc": 0.02},
                   "baselines": {"unigram_loss": 6.0, "most_frequent_acc": 0.03}}}
    rows = {r["figure"]: r for r in home.evaluation_rows(data)}
    assert rows["MLM loss (nats/masked token)"]["baselines"] == "unigram 6.300"
    assert rows["MLM top-5 accuracy"]["baselines"] == "5 most frequent tokens 0.170"
    assert rows["span loss (nats/target token)"]["baselines"] == "unigram 6.000"
    assert rows["MLM top-5 accuracy"]["beats baselines"] == "yes"
    assert rows["span-token accuracy"]["beats baselines"] == "no"


def test_training_curves_mark_the_kept_step(models):
    log = models["gpt2"].train_log
    fig = home.training_curves("gpt2", log)
    assert any(f"kept: step {log['best']['step']}" in a.text for a in fig.layout.annotations)
    assert f"from step {log['best']['step']}" in home.training_summary(log)
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


def test_a_link_lights_up_a_piece_and_a_stale_one_is_dropped():
    at = _page("pages/tokenization.py", text="To be, or not to be", lit="gpt2:3")
    assert any("Lit up: byte-level BPE (GPT-2)'s piece 3" in c.value for c in at.caption)
    assert at.query_params["lit"] in ("gpt2:3", ["gpt2:3"])
    at = _page("pages/tokenization.py", text="To be", lit="gpt2:99")
    assert not any("Lit up" in c.value for c in at.caption) and "lit" not in at.query_params


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


# --- the pages -----------------------------------------------------------------------------------------

def _page(page: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page != "pages/home.py":
        at.switch_page(page)
        at.run()
    assert not at.exception
    return at


def test_home_shows_three_diagrams_sizes_curves_and_the_device():
    at = _page("pages/home.py")
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
    at = _page("pages/tokenization.py")
    counts = at.dataframe[0].value
    assert list(counts["tokenizer"]) == ["WordPiece (BERT)", "byte-level BPE (GPT-2)", "Unigram (T5)"]
    at.text_area(key="w_text").set_value("love 😍").run()
    assert not at.exception and at.query_params["text"] in ("love 😍", ["love 😍"])
    assert at.dataframe[0].value["unknown"].tolist()[0] >= 1
    assert any("unknown token" in m.value for m in at.markdown)


@pytest.mark.parametrize("text", ["", "   ", *HOSTILE, "word " * 10_000])
def test_tokenization_page_takes_bad_input(text):
    at = _page("pages/tokenization.py")
    at.text_area(key="w_text").set_value(text).run()
    assert not at.exception and not at.error


def test_tokenization_link_restores_the_view():
    at = _page("pages/tokenization.py", text="'Tis true", tok="t5", width="40")
    assert at.text_area(key="w_text").value == "'Tis true"
    assert at.radio(key="w_tok").value == "t5" and at.slider(key="w_width").value == 40


def test_masking_mlm_reroll_draws_again():
    at = _page("pages/masking.py", text="to be or not to be that is the question whether tis nobler in the mind")
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
    at = _page("pages/masking.py")
    for objective, n_metrics in (("nsp", 1), ("t5", 2), ("gpt2", 3)):
        at.radio(key="w_objective").set_value(objective).run()
        assert not at.exception and not at.error, objective
        assert len(at.metric) == n_metrics and len(at.get("plotly_chart")) == 1
    assert at.query_params["objective"] in ("gpt2", ["gpt2"])


@pytest.mark.parametrize("objective", ["mlm", "t5", "gpt2"])
@pytest.mark.parametrize("text", ["", *HOSTILE])
def test_masking_page_takes_bad_input(objective, text):
    at = _page("pages/masking.py", objective=objective)
    at.text_area(key="w_text").set_value(text).run()
    assert not at.exception


def test_masking_t5_warns_exactly_when_the_shipped_t5_is_below_its_floor():
    at = _page("pages/masking.py", objective="t5")
    path = checkpoints.ASSETS / "evaluation.json"
    data = json.loads(path.read_text()) if path.is_file() else None
    below = home.t5_not_yet_learnt(data) is not None
    assert [w.value for w in at.warning if "has not finished learning" in w.value] == ([home.t5_not_yet_learnt(data)] if below else [])


@pytest.mark.parametrize("data,warns", [
    ({"t5": {"figures": {"content_acc": 0.025}, "baselines": {"most_frequent_acc": 0.029}}}, True),
    ({"t5": {"figures": {"content_acc": 0.20}, "baselines": {"most_frequent_acc": 0.029}}}, False),
    ({"t5": {"figures": {"content_acc": "n/a"}}}, False), (None, False), ("unreadable", False), ([1, 2], False),
])
def test_the_t5_warning_follows_the_figures_and_ignores_a_malformed_file(data, warns):
    note = home.t5_not_yet_learnt(data)
    assert (note is not None) == warns
    if warns:
        assert "2.5%" in note and "2.9%" in note


def test_masking_nsp_own_pair_shows_token_types():
    at = _page("pages/masking.py", objective="nsp", pair="own", a="<b>hi</b>", b="[SEP] $x$")
    assert not at.exception and not at.error
    assert at.metric[0].value.endswith("%")


# --- uploads, hand-chosen words, typed special tokens, links ---------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"


@pytest.mark.parametrize("page", ["pages/tokenization.py", "pages/masking.py"])
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
    at = _page("pages/tokenization.py", text="'Tis true")
    at.file_uploader(key="w_text_file").set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] and why in at.error[0].value and name in at.error[0].value.replace("\\", "")
    assert at.text_area(key="w_text").value == "'Tis true"
    assert at.dataframe[0].value["characters"].tolist()[0] == len("'Tis true")  # the figures still show the old text


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


def test_the_sentence_pair_preset_fills_both_sentences():
    at = _page("pages/tokenization.py")
    at.selectbox(key="w_text_preset").set_value("A sentence pair (BERT)").run()
    assert not at.exception
    assert at.text_area(key="w_text").value.startswith("To be, or not to be")
    assert at.text_area(key="w_pair").value.startswith("Whether 'tis nobler")
    assert at.dataframe[0].value["added by the template"].tolist()[0] == 3  # [CLS] A [SEP] B [SEP]


def test_masking_mlm_link_restores_seed_rate_split_and_words():
    text = "to be or not to be that is the question whether tis nobler in the mind"
    at = _page("pages/masking.py", text=text, seed="7", rate="0.3", maskp="0.5", randp="0.3")
    assert at.number_input(key="w_seed").value == 7 and at.slider(key="w_rate").value == 0.3
    assert (at.slider(key="w_maskp").value, at.slider(key="w_randp").value) == (0.5, 0.3)
    shown = at.dataframe[0].value["position"].tolist()
    again = _page("pages/masking.py", **{k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()})
    assert again.dataframe[0].value["position"].tolist() == shown  # the same link, the same draw
    words = _page("pages/masking.py", text=text, words="3,9")
    assert words.multiselect(key="w_words").value == [3, 9]
    assert words.dataframe[0].value["true token"].tolist() == ["not", "question"]
    assert words.dataframe[0].value["BERT read"].tolist() == ["[MASK]", "[MASK]"]
    assert words.slider(key="w_rate").disabled and words.button(key="reroll").disabled


def test_masking_chosen_words_are_dropped_when_the_text_changes():
    at = _page("pages/masking.py", text="to be or not to be", words="3")
    assert at.multiselect(key="w_words").value == [3] and at.query_params["words"] in ("3", ["3"])
    at.text_area(key="w_text").set_value("the lady doth protest too much methinks").run()
    assert not at.exception and at.multiselect(key="w_words").value == []
    assert "words" not in at.query_params and not at.slider(key="w_rate").disabled


def test_masking_page_top5_is_the_models_own_forward_pass(models):
    import torch
    bert = models["bert"]
    at = _page("pages/masking.py", text="good night sweet prince", words="2")
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
    at = _page("pages/masking.py", objective="t5", text=text, seed="3", noise="0.3", span="2.0")
    assert at.slider(key="w_noise").value == 0.3 and at.slider(key="w_span").value == 2.0 and at.number_input(key="w_seed").value == 3
    fills = at.dataframe[0].value["hidden text"].tolist()
    again = _page("pages/masking.py", objective="t5", text=text, seed="3", noise="0.3", span="2.0")
    assert again.dataframe[0].value["hidden text"].tolist() == fills and len(fills) >= 2


@pytest.mark.parametrize("mode", ["true", "random"])
def test_masking_nsp_link_restores_the_pair(mode):
    at = _page("pages/masking.py", objective="nsp", pair=mode, seed="5")
    assert at.radio(key="w_pair").value == mode and at.number_input(key="w_seed").value == 5
    a, b = objectives.nsp_sample(5, mode == "true")
    assert [t.value for t in at.text_area if t.disabled] == [a, b]


def test_a_seed_out_of_range_in_a_link_is_clamped_with_a_note():
    at = _page("pages/masking.py", seed="-99999999999999999999")
    assert at.number_input(key="w_seed").value == 0 and any("outside 0–999,999" in i.value for i in at.info)
    big = _page("pages/masking.py", objective="t5", seed="123456789")
    assert big.number_input(key="w_seed").value == 999_999 and big.query_params["seed"] in ("999999", ["999999"])


def test_masking_page_predicts_at_a_typed_mask():
    at = _page("pages/masking.py", text="to be or not to [MASK]")
    table = at.dataframe[0].value
    assert "(none: you typed [MASK])" in table["true token"].tolist()
    assert any("You typed [MASK]" in i.value for i in at.info)
    assert at.metric[0].value == str(len(table) - 1)  # the typed hole is shown, not counted as selected


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
