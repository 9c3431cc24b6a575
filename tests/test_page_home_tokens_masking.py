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
from lmviz.viz.tokens import Cell, aligned_rows, token_strip, unk_story

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


def test_chosen_words_are_the_ones_masked(models):
    bert = models["bert"]
    words = objectives.bert_words(bert, "to be or not to be")
    r = objectives.mlm_predict(bert, "to be or not to be", seed=0, split=(1.0, 0.0), chosen=(words.index("not"),))
    assert [p.truth for p in r.predictions] == ["not"] and r.outcome.count(MASKED) == 1


def test_top5_probabilities_come_from_the_model(models):
    import torch
    bert = models["bert"]
    r = objectives.mlm_predict(bert, "good night , sweet prince", seed=0, split=(1.0, 0.0), chosen=(3,))
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
