"""Attribution beside attention for one prediction: integrated gradients add up to the change they explain, a decoder's
prediction is attributed only to what it could see, and the page's sentence says when attention and attribution part."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmviz.analysis.attribution import attribute, attribution_data, rank_correlation, rollout
from lmviz.analysis.targets import targets
from lmviz.errors import LmvizError
from lmviz.models import checkpoints

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer."
# The midpoint rule's error at the default 32 steps: under 0.006 nats for GPT-2 and BERT, up to 10 % for T5 (its
# embeddings pass through a scale-free RMS norm first, so the path's change is steep near the baseline).
TOLERANCE = 0.1  # of |f(x) − f(baseline)|, plus 0.01 nats


@pytest.fixture(scope="module")
def models():
    return {k: checkpoints.load(checkpoints.shipped(k), "cpu") for k in ("bert", "gpt2", "t5")}


def problem(models, kind):
    return targets(models[kind], TEXT, hide=[2, 5] if kind == "bert" else None, target="<extra_id_0> be <extra_id_1>")


@pytest.mark.parametrize("kind,column", [("gpt2", 6), ("gpt2", 12), ("bert", 0), ("bert", 1), ("t5", 1), ("t5", 2)])
def test_integrated_gradients_add_up_to_the_change_they_explain(models, kind, column):
    at = attribute(models[kind], problem(models, kind), column)
    change = at.f_input - at.f_baseline
    assert abs(change) > 0.05  # the baseline changes the prediction, so there is something to explain
    assert at.completeness_gap <= TOLERANCE * abs(change) + 0.01, (at.completeness_gap, change)


def test_more_steps_close_the_gap(models):
    tg = problem(models, "t5")
    assert attribute(models["t5"], tg, 1, steps=64).completeness_gap < attribute(models["t5"], tg, 1, steps=4).completeness_gap


def test_a_decoders_prediction_is_attributed_only_to_what_it_could_see(models):
    tg = problem(models, "gpt2")
    at = attribute(models["gpt2"], tg, 5)
    assert at.tokens == tg.tokens[:6] and at.attention.shape == (4, 4, 6) and at.target == tg.target_tokens[5]
    assert np.allclose(at.attention.sum(-1), 1, atol=1e-5) and at.rollout.sum() == pytest.approx(1, abs=1e-5)


def test_t5s_attribution_is_over_its_source_through_cross_attention(models):
    tg = problem(models, "t5")
    at = attribute(models["t5"], tg, 1)
    assert at.tokens == tg.source_tokens and at.attention.shape[-1] == len(tg.source_ids) and at.attention_kind == "cross"
    assert at.rollout.sum() == pytest.approx(1, abs=1e-5)


def test_where_the_truth_is_unknown_the_models_own_guess_is_explained(models):
    tg = problem(models, "gpt2")
    at = attribute(models["gpt2"], tg, len(tg.columns) - 1)  # the last token: nothing follows it in the text
    assert at.guessed and at.target


def test_the_verdict_names_the_tokens_and_says_when_they_disagree(models):
    at = attribute(models["gpt2"], problem(models, "gpt2"), 12)
    rho = at.agreement(3, None)["attention row"]
    verdict = at.verdict(3, None)
    assert f"ρ = {rho:.2f}" in verdict and verdict.startswith("They ")
    assert verdict.startswith("They disagree") == (rho < 0.5)
    data = attribution_data(at, 3, None)
    assert json.dumps(data, ensure_ascii=False) and len(data["integrated_gradients"]) == len(at.tokens)


def test_rank_correlation_and_rollout_by_hand():
    assert rank_correlation(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1)
    assert rank_correlation(np.array([1, 2]), np.array([2, 1])) is None  # two tokens: nothing to rank
    assert rank_correlation(np.ones(4), np.arange(4)) is None
    a = np.array([[[[1.0, 0.0], [0.5, 0.5]]]])  # one layer, one head
    expected = 0.5 * a[0, 0] + 0.5 * np.eye(2)
    assert np.allclose(rollout(a), expected / expected.sum(-1, keepdims=True))


def test_bad_choices_are_messages(models):
    tg = problem(models, "gpt2")
    for column in (-1, 999):
        with pytest.raises(LmvizError, match="no prediction"):
            attribute(models["gpt2"], tg, column)
    with pytest.raises(LmvizError, match="steps"):
        attribute(models["gpt2"], tg, 3, steps=0)


def test_attribution_leaves_the_shared_model_untouched(models):
    m = models["gpt2"].model
    before = m.transformer.wte.weight.clone()
    attribute(models["gpt2"], problem(models, "gpt2"), 4)
    assert torch.equal(before, m.transformer.wte.weight) and all(p.grad is None for p in m.parameters())
