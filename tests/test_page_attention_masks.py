"""The Attention and Masks pages: their figure functions on real forward passes, and the pages in AppTest."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from streamlit.testing.v1 import AppTest

from lmviz import checkpoints
from lmviz.arithmetic import head_arithmetic
from lmviz.heads import named_heads
from lmviz.inference import attention_run, encode
from lmviz.masks import bert_padded_batch, bert_with_causal_mask, fill_in_loss, gpt2_without_mask, keep_matrix, mask_matrices
from lmviz.viz.arithmetic import MASK_EFFECT, steps_figure, vectors_figure, weighted_sum_figure
from lmviz.viz.attention import CAUSAL_HIDDEN, HIDDEN_COLOUR, attention_heatmap, head_grid, layer_means
from lmviz.viz.masks import experiment_figure, loss_figure, mask_effect_figure, mask_heatmap, position_bias_figure

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer."
HOSTILE = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "**bold** $x$ [MASK] </s> <extra_id_0>",
           "👩‍👩‍👧 שלום עולם", "x" * 500]


@pytest.fixture(scope="module")
def models():
    return {k: checkpoints.load(checkpoints.shipped(k), "cpu") for k in ("bert", "gpt2", "t5")}


@pytest.fixture(scope="module")
def runs(models):
    return {"bert": attention_run(models["bert"], TEXT, "Whether 'tis nobler in the mind."),
            "gpt2": attention_run(models["gpt2"], TEXT), "t5": attention_run(models["t5"], TEXT)}


# --- figures read the record ---------------------------------------------------------------------

def test_heatmap_values_are_the_records_probabilities(runs):
    run = runs["gpt2"]
    q, k = run.axes("causal")
    probs = run.record.attention("causal", 2)[1].numpy()
    fig = attention_heatmap(probs, q, k, highlight=3)
    assert np.array_equal(np.asarray(fig.data[0].z), probs)
    assert len(fig.layout.shapes) == 1  # the outlined query row


def test_causal_hidden_cells_are_grey_not_weight_zero(runs):
    """Masked future cells are empty (NaN) over a light grey background, and hover says they are hidden."""
    run = runs["gpt2"]
    q, k = run.axes("causal")
    probs = run.record.attention("causal", 1)[0].numpy()
    keep = keep_matrix(run.record, "causal")
    fig = attention_heatmap(probs, q, k, zmax=1.0, mask=keep)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.isnan(z[~keep]).all() and np.array_equal(z[keep], probs[keep])
    grey = fig.data[1]
    assert np.array_equal(np.isnan(np.asarray(grey.z, dtype=float)), keep) and grey.colorscale[0][1] == HIDDEN_COLOUR
    assert CAUSAL_HIDDEN in grey.hovertemplate
    grid = head_grid(run.record.stacked("causal").numpy(), mask=keep)
    assert np.isnan(np.asarray(grid.data[0].z, dtype=float)[~keep]).all() and CAUSAL_HIDDEN in grid.data[1].hovertemplate
    assert len(attention_heatmap(probs, q, k).data) == 1  # no mask given: as before


def test_long_text_colours_top_out_at_a_percentile(runs):
    run = runs["bert"]
    q, k = run.axes("self")
    probs = run.record.attention("self", 0)[0].numpy()
    fig = attention_heatmap(probs, q, k, zmax=1.0, percentile=99)
    assert np.isclose(fig.data[0].zmax, np.percentile(probs, 99)) and "99th" in fig.data[0].colorbar.title.text


def test_gpt2_starts_from_endoftext_as_in_training(runs, models):
    assert runs["gpt2"].tokens["decoder"][0] == "<|endoftext|>" and runs["gpt2"].special["decoder"][0]
    assert runs["gpt2"].tokens["decoder"][1] == "To"
    assert attention_run(models["gpt2"], "").tokens["decoder"] == ["<|endoftext|>"]


def test_every_head_grid_and_layer_means_read_the_record(runs):
    run = runs["t5"]
    stacked = run.record.stacked("cross").numpy()
    grid = head_grid(stacked)
    assert len(grid.data) == stacked.shape[0] * stacked.shape[1]
    assert np.array_equal(np.asarray(grid.data[5].z), stacked[5 // stacked.shape[1], 5 % stacked.shape[1]])
    means = layer_means(stacked, *run.axes("cross"))
    assert np.allclose(np.asarray(means.data[1].z), stacked[1].mean(0))
    assert grid.layout.margin.t >= 35 and means.layout.margin.t >= 35  # the column titles are not clipped


@pytest.mark.parametrize("kind,attn", [("bert", "self"), ("gpt2", "causal"), ("t5", "self"), ("t5", "causal"), ("t5", "cross")])
def test_arithmetic_softmax_row_equals_the_heatmap_row(runs, kind, attn):
    run = runs[kind]
    q, k = run.axes(attn)
    query = len(q) // 2
    a = head_arithmetic(run.record, attn, 1, 2, query)
    heat = attention_heatmap(run.record.attention(attn, 1)[2].numpy(), q, k)
    steps = steps_figure(a, k)
    last = [t for t in steps.data if t.type == "bar"][3]
    assert np.allclose(np.asarray(last.y), np.asarray(heat.data[0].z)[query], atol=1e-6)
    assert np.isclose(np.asarray(last.y).sum(), 1.0)
    if kind == "t5":
        assert a.scale == 1.0 and (a.position_bias is not None) == (attn != "cross")
        assert "no ÷√d" in steps.layout.annotations[1].text
    else:
        assert np.isclose(a.scale, 1 / np.sqrt(a.d_head)) and "1/√d" in steps.layout.annotations[1].text
    assert vectors_figure(a, k, q[query]).data[0].z.shape == (len(k) + 1, a.d_head)
    out = weighted_sum_figure(a, k).data[0].z
    assert np.allclose(out[-1], a.output) and np.allclose(out[:-1].sum(0), a.output)


def test_mask_effect_hides_future_keys_with_exactly_zero(runs):
    run = runs["gpt2"]
    q, k = run.axes("causal")
    a = head_arithmetic(run.record, "causal", 0, 0, 3)
    fig = steps_figure(a, k, MASK_EFFECT)
    probs = np.asarray(fig.data[2].y)
    assert a.hidden.sum() == len(k) - 4 and np.all(probs[4:] == 0.0) and np.isclose(probs[:4].sum(), 1.0)
    assert [ann.text for ann in fig.layout.annotations][0].startswith("1. scores before the mask")
    assert mask_effect_figure(a, k).layout.margin.t >= 40  # room for the first panel's title


# --- the mask matrices are what the papers say ---------------------------------------------------

def test_causal_masks_are_lower_triangular_and_cross_is_not_causal(runs):
    gpt2 = {m.kind: m for m in mask_matrices(runs["gpt2"])}
    n = len(runs["gpt2"].tokens["decoder"])
    assert np.array_equal(gpt2["causal"].keep, np.tril(np.ones((n, n), dtype=bool)))
    t5 = {m.kind: m for m in mask_matrices(runs["t5"])}
    assert t5["self"].keep.all() and t5["cross"].keep.all()
    d = t5["causal"].keep.shape[0]
    assert np.array_equal(t5["causal"].keep, np.tril(np.ones((d, d), dtype=bool)))
    assert t5["cross"].keep.shape == (d, len(runs["t5"].tokens["encoder"]))


def test_bert_mask_is_bidirectional_with_segments(runs):
    (m,) = mask_matrices(runs["bert"])
    assert m.keep.all() and m.segments == runs["bert"].type_ids and 1 in m.segments
    fig = mask_heatmap(m)
    assert {a.text for a in fig.layout.annotations} == {"sentence A", "sentence B"}
    assert fig.layout.title.text and mask_heatmap(m, titled=False).layout.title.text is None  # the page heads it already


def test_bert_padding_columns_are_hidden(models):
    batch = bert_padded_batch(models["bert"], ["Good night.", "Good night, good night! Parting is such sweet sorrow."])
    short, long = batch.matrices
    n_real = short.queries.index("[PAD]")
    assert short.keep.shape == long.keep.shape and long.keep.all()
    assert short.keep[:, :n_real].all() and not short.keep[:, n_real:].any()
    assert batch.most_padded == 0
    a = head_arithmetic(batch.record, "self", 0, 0, 1, batch=0)  # the padding example's softmax row
    assert a.hidden[n_real:].all() and not a.hidden[:n_real].any() and np.all(a.probs[n_real:] == 0.0)


def test_t5_position_bias_figure_has_one_panel_per_head(runs):
    bias = runs["t5"].record.position_bias["self"][0].numpy()
    fig = position_bias_figure(bias, *runs["t5"].axes("self"))
    assert len(fig.data) == bias.shape[0] and np.array_equal(np.asarray(fig.data[0].z), bias[0])
    assert all(len(fig.layout[f"xaxis{i or ''}"].tickvals) <= 6 for i in range(len(fig.data)))  # narrow panels: few ticks


def test_t5_decoder_bias_is_grey_where_the_causal_mask_hides_it(runs):
    run = runs["t5"]
    keep = keep_matrix(run.record, "causal")
    bias = run.record.position_bias["causal"][0].numpy()
    fig = position_bias_figure(bias, *run.axes("causal"), mask=keep)
    z = np.asarray(fig.data[2].z, dtype=float)  # head 1 (each head: its bias, then the grey hidden cells)
    assert np.isnan(z[~keep]).all() and np.array_equal(z[keep], bias[1][keep])


# --- removing the mask: real forward passes --------------------------------------------------------

def test_removing_gpt2_causal_mask_puts_weight_above_the_diagonal(models):
    e = gpt2_without_mask(models["gpt2"], TEXT)
    above = np.triu(np.ones(e.own.shape[-2:], dtype=bool), 1)
    assert np.all(e.own[..., above] == 0.0)
    assert e.swapped[..., above].max() > 0.01 and e.future_share("swapped") > 0
    assert np.isfinite(e.loss_own) and np.isfinite(e.loss_swapped) and e.loss_own != e.loss_swapped
    assert np.isnan(e.per_token_own[-1])
    fig = experiment_figure(e, 1, 1)
    assert np.array_equal(np.asarray(fig.data[1].z), e.swapped[1, 1])
    assert f"{e.loss_own:.2f}" in loss_figure(e).data[0].name


def test_bert_under_a_causal_mask_sees_no_future(models):
    e = bert_with_causal_mask(models["bert"], TEXT)
    above = np.triu(np.ones(e.own.shape[-2:], dtype=bool), 1)
    assert e.own[..., above].max() > 0.01 and np.all(e.swapped[..., above] == 0.0)
    assert np.isnan(e.per_token_own[0]) and np.isnan(e.per_token_own[-1])  # [CLS] and [SEP] are not scored
    assert e.loss_swapped > e.loss_own  # without its right-hand context BERT fills holes worse


def test_subplot_grids_are_make_subplots_copies():
    """``style.subplots`` builds each grid once: every call gives a fresh figure equal to ``make_subplots``'s."""
    from plotly.subplots import make_subplots

    from lmviz.viz.style import subplots

    args = dict(rows=2, cols=3, column_titles=["a", "b", "c"], shared_yaxes=True, horizontal_spacing=0.02)
    first = subplots(**args)
    assert json.loads(first.to_json()) == json.loads(make_subplots(**args).to_json())
    first.add_trace(go.Bar(x=[1], y=[2]), row=2, col=2)
    first.update_layout(height=999)
    again = subplots(**args)
    assert not again.data and again.layout.height is None


@pytest.mark.parametrize("causal", [False, True])
def test_fill_in_loss_equals_one_full_forward_per_hole(models, causal):
    """The fast fill-in loss (hole positions only; causal: one sequence of extra [MASK] queries) against the
    plain definition: one full forward of the model per hole, cross-entropy at the hole."""
    bert = models["bert"]
    enc = encode(bert, "Good night, sweet prince: and flights of angels sing thee to thy rest!", "Why does the drum come hither?")
    ids, types = torch.tensor([enc.ids]), torch.tensor([enc.type_ids])
    scored = [i for i, s in enumerate(enc.special) if not s]
    fast = fill_in_loss(bert, ids, types, scored, causal)
    with torch.inference_mode():
        for i in scored:
            hole = ids.clone()
            hole[0, i] = bert.tokenizer.token_to_id("[MASK]")
            logits = bert.model(hole, types, causal=causal).logits[0, i]
            assert fast[i] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, ids[0, i])), abs=1e-4)
    assert np.isnan(fast[[i for i in range(len(enc.ids)) if i not in scored]]).all()


# --- named heads --------------------------------------------------------------------------------

def test_named_heads_read_evaluation_defensively(tmp_path):
    path = tmp_path / "evaluation.json"
    assert named_heads("gpt2", path) == []  # no file
    path.write_text("{not json")
    assert named_heads("gpt2", path) == []
    path.write_text(json.dumps({"gpt2": {"probes": {"previous_token_head": [2, 3, 0.4], "induction_head": ["x", 0]}},
                                "bert": {"probes": {"sink_heads": [[1, 2, 0.5], [0, -1, 0.2], "bad"]}}}))
    gpt2 = named_heads("gpt2", path)
    assert [(h.name, h.layer, h.head, h.weak) for h in gpt2] == [("previous-token head", 2, 3, False)]
    bert = named_heads("bert", path)
    assert [(h.layer, h.head) for h in bert] == [(1, 2)] and bert[0].pair
    assert named_heads("t5", path) == []


# --- the pages ------------------------------------------------------------------------------------

def page(path: str, params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page(path)
    at.run()
    return at


def shown(at) -> str:
    return " ".join(str(e.value) for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error])


@pytest.mark.parametrize("model", ["bert", "gpt2", "t5"])
def test_attention_page_for_each_model(model):
    at = page("pages/attention.py", {"model": model})
    assert not at.exception and not at.error
    assert at.selectbox(key="w_layer").value == 0 and at.selectbox(key="w_head").value == 0
    if model == "t5":
        assert at.radio(key="w_kind").options == ["encoder self-attention", "decoder self-attention (causal)",
                                                  "cross-attention (decoder → encoder)"]
    at.selectbox(key="w_layer").set_value(2).run()
    at.selectbox(key="w_head").set_value(1).run()
    assert not at.exception and "Layer 2, head 1" in shown(at)
    assert at.query_params["layer"] == "2" and at.query_params["head"] == "1"


def test_attention_page_falls_back_from_an_old_links_layer_and_head():
    at = page("pages/attention.py", {"model": "gpt2", "layer": "9", "head": "-1", "query": "999"})
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "no layer 9" in warnings and "no head -1" in warnings and "no query position 999" in warnings
    assert at.selectbox(key="w_layer").value == 0


def test_attention_page_named_head_preset_sets_layer_head_and_text():
    heads = named_heads("gpt2")
    if not heads:
        pytest.skip("evaluate has not written assets/models/evaluation.json")
    at = page("pages/attention.py", {"model": "gpt2"})
    at.button(key=f"named_{heads[0].name}").click().run()
    assert not at.exception
    assert at.selectbox(key="w_layer").value == heads[0].layer and at.selectbox(key="w_head").value == heads[0].head
    assert at.text_area(key="w_text").value == heads[0].text and heads[0].name in shown(at)


@pytest.mark.parametrize("bad", HOSTILE + ["", "   ", "word " * 10_000])
def test_attention_page_bad_input_never_raises(bad):
    at = page("pages/attention.py", {"model": "bert"})
    at.text_area(key="w_text").set_value(bad).run()
    assert not at.exception
    if not bad.strip():
        assert "empty" in " ".join(e.value for e in at.error)
    elif len(bad) > 20_000:
        assert "only the first" in shown(at)


@pytest.mark.parametrize("model", ["bert", "gpt2", "t5"])
def test_masks_page_for_each_model(model):
    at = page("pages/masks.py", {"model": model})
    assert not at.exception and not at.error
    headers = [h.value for h in at.header]
    assert "The mask matrices" in headers and "What the mask does to the softmax" in headers
    if model == "gpt2":
        assert "Remove the mask" in headers and len(at.metric) == 2
    if model == "bert":
        assert "Give BERT a causal mask" in headers and "Padding in a batch" in [s.value for s in at.subheader]
        assert len(at.metric) == 0, "the per-word experiment runs only when asked"
        at.toggle(key="w_exp").set_value(True).run()
        assert not at.exception and len(at.metric) == 2 and at.query_params["exp"] in ("1", ["1"])
    if model == "t5":
        assert "T5's relative position bias" in [s.value for s in at.subheader]
    hidden = next(m.value for m in at.markdown if m.value.startswith("Layer 0, head 0, query"))
    assert "keys become −∞" in hidden  # the default example shows the mask hiding something
    if model == "t5":
        at.radio(key="w_kind").set_value("cross").run()
        assert "hides **nothing**" in " ".join(m.value for m in at.markdown)


@pytest.mark.parametrize("bad", HOSTILE + ["", "a"])
def test_masks_page_bad_input_never_raises(bad):
    at = page("pages/masks.py", {"model": "gpt2"})
    at.text_area(key="w_text").set_value(bad).run()
    assert not at.exception


def test_masks_page_query_from_an_old_link_falls_back():
    at = page("pages/masks.py", {"model": "gpt2", "query": "500"})
    assert not at.exception and "no query position 500" in " ".join(w.value for w in at.warning)


# --- speed: a layer/head switch does not rerun the model --------------------------------------------

def test_layer_switch_and_new_text_speed(capsys):
    """Median AppTest rerun after a layer/head switch, and the first run of a new 64-word text (warm caches)."""
    at = page("pages/attention.py", {"model": "gpt2"})
    switches = []
    for layer, head in [(1, 0), (2, 1), (3, 2), (0, 3), (1, 1), (2, 2), (3, 3)]:
        at.selectbox(key="w_layer").set_value(layer)
        at.selectbox(key="w_head").set_value(head)
        start = time.perf_counter()
        at.run()
        switches.append(time.perf_counter() - start)
    words = TEXT.split()
    texts = []
    for i in range(3):
        at.text_area(key="w_text").set_value(" ".join((words * 8)[i:i + 64]))
        start = time.perf_counter()
        at.run()
        texts.append(time.perf_counter() - start)
    assert not at.exception
    with capsys.disabled():
        print(f"\nAttention page (GPT-2, AppTest): layer/head switch median {1000 * statistics.median(switches):.0f} ms; "
              f"new 64-word text median {1000 * statistics.median(texts):.0f} ms")
    assert statistics.median(switches) < 2.0  # generous: CI machines are slow; the README reports the measured figure
