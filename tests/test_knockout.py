"""Knocking out a head removes exactly that head's output: nothing knocked out is the plain run; a BERT head is what
``transformers`` computes with that head's context zeroed; a GPT-2 or T5 head is the model with that head's slice of
the output projection set to zero by hand; the every-head grid is the one-at-a-time knock-outs, batched."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers

from lmviz.analysis.knockout import every_head, head_mask, knockout, knockout_data
from lmviz.analysis.targets import forward, targets
from lmviz.errors import LmvizError
from lmviz.models import checkpoints

transformers.logging.set_verbosity_error()
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer."


@pytest.fixture(scope="module")
def models():
    return {k: checkpoints.load(checkpoints.shipped(k), "cpu") for k in ("bert", "gpt2", "t5")}


@pytest.fixture(scope="module")
def problems(models):
    return {k: targets(m, TEXT, hide=[2, 5] if k == "bert" else None, target="<extra_id_0> be <extra_id_1>")
            for k, m in models.items()}


def logits(loaded, tg, mask=None):
    with torch.inference_mode():
        return forward(loaded, tg, head_mask=mask).logits[0]


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_knocking_out_nothing_is_the_plain_run(models, problems, kind):
    loaded, tg = models[kind], problems[kind]
    assert torch.allclose(logits(loaded, tg, head_mask(loaded, [])), logits(loaded, tg), atol=1e-6, rtol=0)
    ko = knockout(loaded, tg, [])
    assert np.allclose(ko.delta[~np.isnan(ko.delta)], 0, atol=1e-5)


def test_a_bert_head_knocked_out_is_transformers_with_that_head_zeroed(models, problems):
    """transformers 5 dropped ``head_mask``; what it did (zero the head's probabilities, so its context) is done
    here in transformers' own model, before its attention output projection."""
    loaded, tg = models["bert"], problems["bert"]
    hf = transformers.BertForPreTraining.from_pretrained(checkpoints.shipped("bert"), attn_implementation="eager").eval()
    layer, head, d = 2, 1, hf.config.hidden_size // hf.config.num_attention_heads

    def zero_head(module, args):
        ctx = args[0].clone()
        ctx[..., head * d:(head + 1) * d] = 0
        return (ctx,)

    hook = hf.bert.encoder.layer[layer].attention.output.dense.register_forward_pre_hook(zero_head)
    try:
        with torch.inference_mode():
            ref = hf(input_ids=torch.tensor([tg.ids]), token_type_ids=torch.tensor([tg.type_ids])).prediction_logits[0]
    finally:
        hook.remove()
    ours = logits(loaded, tg, head_mask(loaded, [("self", layer, head)]))
    assert not torch.allclose(ours, logits(loaded, tg), atol=1e-3)  # the head mattered somewhere
    # 1e-5 of the logits' scale (|logit| reaches 18 here; the plain run already differs by 1.1e-5 in float32)
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max(), (ours - ref).abs().max()


def zero_projection_slice(loaded, kind: str, layer: int, head: int):
    """A copy of the model with one head's rows (GPT-2's ``[in, out]`` Conv1D) or columns (T5's Linear) of the attention
    output projection set to zero: that head then adds nothing, computed with no head mask at all."""
    cut = copy.deepcopy(loaded)
    m = cut.model
    if loaded.kind == "gpt2":
        d = m.config.n_embd // m.config.n_head
        with torch.no_grad():
            m.transformer.h[layer].attn.c_proj.weight[head * d:(head + 1) * d] = 0
        return cut
    d = m.config.d_kv
    block = {"self": m.encoder.block, "causal": m.decoder.block, "cross": m.decoder.block}[kind][layer]
    proj = block.layer[1].EncDecAttention.o if kind == "cross" else block.layer[0].SelfAttention.o
    with torch.no_grad():
        proj.weight[:, head * d:(head + 1) * d] = 0
    return cut


@pytest.mark.parametrize("kind,attention,layer,head", [("gpt2", "causal", 2, 3), ("gpt2", "causal", 0, 0), ("t5", "self", 1, 2),
                                                        ("t5", "causal", 2, 0), ("t5", "cross", 3, 1)])
def test_a_head_knocked_out_is_the_same_computation_done_by_hand(models, problems, kind, attention, layer, head):
    loaded, tg = models[kind], problems[kind]
    ours = logits(loaded, tg, head_mask(loaded, [(attention, layer, head)]))
    by_hand = logits(zero_projection_slice(loaded, attention, layer, head), tg)
    assert not torch.allclose(ours, logits(loaded, tg), atol=1e-3)
    assert torch.allclose(ours, by_hand, atol=1e-5, rtol=0), (ours - by_hand).abs().max()


def test_a_whole_layer_knocked_out_is_each_of_its_heads(models, problems):
    loaded, tg = models["gpt2"], problems["gpt2"]
    whole = knockout(loaded, tg, [("causal", 1, -1)])
    each = knockout(loaded, tg, [("causal", 1, h) for h in range(4)])
    assert np.allclose(whole.knocked, each.knocked, equal_nan=True, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_the_every_head_grid_is_the_one_at_a_time_knockouts(models, problems, kind):
    loaded, tg = models[kind], problems[kind]
    grid = every_head(loaded, tg)
    assert grid.kinds == {"bert": ["self"], "gpt2": ["causal"], "t5": ["self", "causal", "cross"]}[kind]
    (att, layer, head), effect = grid.strongest(1)[0]
    one = knockout(loaded, tg, [(att, layer, head)])
    assert effect == pytest.approx(np.nanmean(one.knocked) - np.nanmean(one.base), abs=1e-4)
    assert effect > 0.01  # some head matters
    assert all(g.shape == (4, 4) for g in grid.delta.values())
    data = knockout_data(one, tg, grid)
    assert len(data["every_head"]["change_of_mean_loss"][att]) == 4


def test_bad_head_choices_are_messages(models, problems):
    loaded, tg = models["gpt2"], problems["gpt2"]
    for heads, match in (([("cross", 0, 0)], "no cross"), ([("causal", 9, 0)], "no layer 9"), ([("causal", 0, 4)], "head 4")):
        with pytest.raises(LmvizError, match=match):
            knockout(loaded, tg, heads)
    with pytest.raises(LmvizError, match="head mask has shape"):
        forward(loaded, tg, head_mask={"causal": torch.ones(3, 4)})
    with pytest.raises(LmvizError, match="no self attention"):
        forward(loaded, tg, head_mask={"self": torch.ones(4, 4)})
    with pytest.raises(LmvizError, match="No position"):
        knockout(models["bert"], targets(models["bert"], "To be or not to [MASK]."), [])
