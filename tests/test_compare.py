"""Compare: one sentence through BERT, GPT-2 and T5, and per-layer numbers that tell their attention apart."""
import numpy as np
import plotly.graph_objects as go
import pytest

from lmviz.analysis.compare import attention_stats, compare, view_data
from lmviz.errors import LmvizError
from lmviz.viz.compare import stats_figure

TEXT = "But soft, what light through yonder window breaks?"


@pytest.fixture(scope="module")
def comparison(models):
    return compare(models, TEXT)


def test_uniform_attention_has_entropy_log_k_and_known_distance():
    K = 5
    p = np.full((1, 1, K, K), 1 / K)
    s = attention_stats(p, [True] + [False] * (K - 1), same_sequence=True)
    assert s["entropy"][0] == pytest.approx(np.log(K))
    assert s["special"][0] == pytest.approx(1 / K) and s["self"][0] == pytest.approx(1 / K)
    expected = np.mean([np.mean(np.abs(np.arange(K) - i)) for i in range(K)])
    assert s["distance"][0] == pytest.approx(expected) and s["offset"][0] == pytest.approx(0)


def test_attending_to_itself_gives_zero_entropy_and_distance():
    p = np.eye(4)[None, None]
    s = attention_stats(p, [False] * 4, same_sequence=True)
    assert s["entropy"][0] == 0 and s["distance"][0] == 0 and s["self"][0] == 1 and s["special"][0] == 0


def test_previous_token_attention_looks_back_by_one():
    p = np.zeros((1, 2, 4, 4))
    p[:, :, 0, 0] = 1
    for i in range(1, 4):
        p[:, :, i, i - 1] = 1
    s = attention_stats(p, [False] * 4, same_sequence=True, head=1)
    assert s["offset"][0] == pytest.approx(-0.75) and s["distance"][0] == pytest.approx(0.75)


def test_cross_attention_has_no_distance_or_self():
    s = attention_stats(np.full((2, 1, 3, 4), 0.25), [False, False, False, True], same_sequence=False)
    assert np.isnan(s["distance"]).all() and np.isnan(s["self"]).all() and s["special"] == pytest.approx([0.25, 0.25])


def test_all_three_models_and_five_kinds_of_attention(comparison):
    names = [v.name for v in comparison.views]
    assert names == ["BERT (bidirectional)", "GPT-2 (causal)", "T5 encoder (bidirectional)", "T5 decoder (causal)",
                     "T5 cross (decoder → encoder)"]
    bert = comparison.view("bert", "self")
    assert bert.queries[0] == "[CLS]" and bert.special_keys[0] and bert.probs.shape[2] == len(bert.queries)
    cross = comparison.view("t5", "cross")
    assert cross.probs.shape[2:] == (len(comparison.view("t5", "causal").queries), len(comparison.view("t5", "self").keys))


def test_decoders_upper_triangle_is_zero_and_encoders_is_not(comparison):
    for model in ("gpt2", "t5"):
        m = comparison.view(model, "causal").probs
        assert np.abs(np.triu(m, k=1)).max() == 0
    assert np.triu(comparison.view("bert", "self").probs, k=1).max() > 0.01


def test_causal_attention_only_looks_back(comparison):
    stats = comparison.stats()
    assert (stats["GPT-2 (causal)"]["offset"] <= 0).all() and (stats["T5 decoder (causal)"]["offset"] <= 0).all()
    assert all(len(s["entropy"]) == 4 for s in stats.values())


def test_one_head_and_a_head_too_far_fall_back(comparison):
    assert not np.allclose(comparison.stats(0)["BERT (bidirectional)"]["entropy"], comparison.stats(1)["BERT (bidirectional)"]["entropy"])
    assert np.allclose(comparison.stats(99)["GPT-2 (causal)"]["entropy"], comparison.stats(None)["GPT-2 (causal)"]["entropy"])
    bert = comparison.view("bert", "self")
    assert np.allclose(bert.matrix(99, None), bert.probs[-1].mean(0))


def test_export_holds_tokens_matrices_and_stats(comparison):
    data = view_data(comparison, 1, 2)
    assert data["head"] == 2 and len(data["views"]) == 5 and len(data["stats"]) == 20
    v = data["views"][0]
    assert np.asarray(v["attention"]).shape == (len(v["queries"]), len(v["keys"]))
    assert {r["self"] for r in comparison.table() if r["attention"] == "cross"} == {None}


def test_stats_figure_has_a_line_per_series_and_metric(comparison):
    fig = stats_figure(comparison.stats())
    assert isinstance(fig, go.Figure) and len(fig.data) == 5 * 4
    assert sum(t.showlegend for t in fig.data) == 5 and fig.layout.font.size >= 14


def test_a_missing_model_is_left_out_and_said(models):
    c = compare({"gpt2": models["gpt2"]}, TEXT)
    assert [v.model for v in c.views] == ["gpt2"] and len(c.notes) == 2


def test_empty_text_is_an_lmviz_error(models):
    with pytest.raises(LmvizError, match="empty"):
        compare(models, " \n ")


def test_hostile_text_still_compares(models):
    c = compare(models, "<img src=x onerror=alert(1)> 👩‍👩‍👧 [MASK] </s> <extra_id_0> **b** $x$ שלום")
    assert len(c.views) == 5 and all(np.isfinite(v.probs).all() for v in c.views)
