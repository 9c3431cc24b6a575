"""The Attention and Masks pages' figure functions on real forward passes of the shipped models (the pages themselves,
in AppTest, are in test_app_attention_masks.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from lmviz.analysis.arithmetic import head_arithmetic
from lmviz.analysis.heads import CLEARLY, induction_score, induction_targets, named_heads, previous_token_score, sink_score
from lmviz.analysis.inference import attention_run, encode
from lmviz.analysis.masks import bert_padded_batch, bert_with_causal_mask, fill_in_loss, gpt2_without_mask, mask_matrices
from lmviz.viz.arithmetic import MASK_EFFECT, steps_figure, vectors_figure, weighted_sum_figure
from lmviz.viz.attention import CAUSAL_HIDDEN, HIDDEN_COLOUR, attention_heatmap, clicked_head, head_grid, layer_means
from lmviz.viz.masks import answer_weight_figure, experiment_figure, loss_figure, mask_effect_figure, mask_heatmap, position_bias_figure

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer."


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
    keep = run.record.keep("causal").numpy()
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
    maps = [t for t in grid.data if isinstance(t, go.Heatmap)]
    assert len(maps) == stacked.shape[0] * stacked.shape[1]
    assert np.array_equal(np.asarray(maps[5].z), stacked[5 // stacked.shape[1], 5 % stacked.shape[1]])
    # one click target per small heatmap, on its own axes, naming its (layer, head)
    targets = [t for t in grid.data if isinstance(t, go.Scatter)]
    assert [list(t.customdata[0]) for t in targets] == [[l, h] for l in range(stacked.shape[0]) for h in range(stacked.shape[1])]
    assert [(t.xaxis, t.yaxis) for t in targets] == [(m.xaxis, m.yaxis) for m in maps]
    assert clicked_head([2, 1]) == (2, 1) and clicked_head(None) is None
    for forged in ("x", [7], ["a", 1], [-1, 0], [1, 2, 3], [1.5, 0]):
        assert clicked_head(forged) is None
    means = layer_means(stacked, *run.axes("cross"))
    assert np.allclose(np.asarray(means.data[1].z), stacked[1].mean(0))
    assert grid.layout.margin.t >= 35 and means.layout.margin.t >= 35  # the column titles are not clipped


@pytest.mark.parametrize("kind,attn", [("bert", "self"), ("gpt2", "causal"), ("t5", "self"), ("t5", "causal"), ("t5", "cross")])
def test_arithmetic_softmax_row_is_the_heatmap_row_for_every_query(runs, kind, attn):
    """The last panel plots the record's own row (the heatmap's, exactly); the walk-through's float64 recomputation
    from q and k agrees with it to float32 precision (1e-5) at every query position."""
    run = runs[kind]
    q, k = run.axes(attn)
    heat = np.asarray(attention_heatmap(run.record.attention(attn, 1)[2].numpy(), q, k).data[0].z)
    for query in range(len(q)):
        a = head_arithmetic(run.record, attn, 1, 2, query)
        last = [t for t in steps_figure(a, k).data if t.type == "bar"][3]
        assert np.array_equal(np.asarray(last.y), heat[query])
        assert a.max_difference < 1e-5, (query, a.max_difference)
    steps = steps_figure(a, k)
    if kind == "t5":
        assert a.scale == 1.0 and (a.position_bias is not None) == (attn != "cross")
        assert "no ÷√d" in steps.layout.annotations[1].text
    else:
        assert np.isclose(a.scale, 1 / np.sqrt(a.d_head)) and "1/√d" in steps.layout.annotations[1].text
    assert vectors_figure(a, k, q[-1]).data[0].z.shape == (len(k) + 1, a.d_head)
    out = weighted_sum_figure(a, k).data[0].z
    assert np.allclose(out[-1], a.output) and np.allclose(out[:-1].sum(0), a.output)


def test_an_unknown_character_is_labelled_one_way_on_every_axis(models):
    """T5's encoder and decoder, and BERT, name an unknown piece the same way: the unknown token and what it stands for."""
    run = attention_run(models["t5"], "<b> a", target="<b> a")
    assert "<unk>\u00a0(<)" in run.tokens["encoder"] and "<unk>\u00a0(<)" in run.tokens["decoder"]
    assert run.tokens["encoder"][:-1] == run.tokens["decoder"][1:-1]
    bert = attention_run(models["bert"], "a <b", "漢")
    assert "[UNK]\u00a0(<)" in bert.tokens["encoder"] and "[UNK]\u00a0(漢)" in bert.tokens["encoder"]


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
    keep = run.record.keep("causal").numpy()
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
    answer = answer_weight_figure(e)  # per query, the weight on the next token (the answer) with and without the mask
    assert np.all(np.asarray(answer.data[0].y) == 0.0)
    assert np.allclose(answer.data[1].y, [e.swapped[:, :, i, i + 1].mean() for i in range(len(e.tokens) - 1)])


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

def test_named_heads_read_evaluation_defensively(tmp_path, models):
    path = tmp_path / "evaluation.json"
    assert named_heads(models["gpt2"], path) == []  # no file
    path.write_text("{not json")
    assert named_heads(models["gpt2"], path) == []
    path.write_text(json.dumps({"gpt2": {"probes": {"previous_token_head": [2, 3, 0.4], "induction_head": ["x", 0]}},
                                "bert": {"probes": {"sink_heads": [[1, 2, 0.5], [0, -1, 0.2], "bad", [99, 0, 0.9]]}}}))
    gpt2 = named_heads(models["gpt2"], path)
    assert [(h.name, h.layer, h.head, h.evaluated) for h in gpt2] == [("previous-token head", 2, 3, 0.4)]
    bert = named_heads(models["bert"], path)  # layer 99 does not exist in this model
    assert [(h.layer, h.head) for h in bert] == [(1, 2)] and bert[0].pair
    assert named_heads(models["t5"], path) == []


def test_even_attention_scores_exactly_chance_and_a_perfect_head_beats_it():
    n = 12
    even = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    previous = np.eye(n, k=-1)
    previous[0, 0] = 1.0
    assert previous_token_score(previous) == 1.0 and previous_token_score(even) == pytest.approx(np.mean(1 / np.arange(2, n + 1)))
    ids = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7, 8]
    assert induction_targets(ids)[0] == (4, 1)  # the second 5 should look at what followed the first: 6
    copy = np.zeros((n, n))
    for q, k in induction_targets(ids):
        copy[q, k] = 1.0
    assert induction_score(copy, ids) == 1.0 and induction_score(even, ids) < 1 / CLEARLY
    special = [True] + [False] * (n - 2) + [True]
    assert sink_score(np.full((n, n), 1 / n), special) == pytest.approx(2 / n)
