"""The three models match ``transformers`` on the same weights, both ways, to 1e-5 (logits and every attention)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers

from lmviz.models import checkpoints
from lmviz.analysis.arithmetic import head_arithmetic
from lmviz.errors import LmvizError
from lmviz.models.record import ALL, Want

TOL = 1e-5
transformers.logging.set_verbosity_error()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


def assert_attention_equal(ours: list[torch.Tensor], theirs, rows: torch.Tensor | None = None) -> None:
    """Every layer's probabilities agree; ``rows`` ([B, Q] bool) limits the check to real query positions."""
    assert len(ours) == len(theirs)
    for layer, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, f"layer {layer}: {tuple(a.shape)} vs {tuple(b.shape)}"
        if rows is not None:
            a, b = a.permute(0, 2, 1, 3)[rows], b.permute(0, 2, 1, 3)[rows]
        assert max_diff(a, b) <= TOL, f"layer {layer} differs by {max_diff(a, b)}"


def assert_hidden_equal(ours: list[torch.Tensor], theirs, rows: torch.Tensor | None = None) -> None:
    """The embedding output and every layer's output agree, the last one after the final norm in both."""
    assert len(ours) == len(theirs)
    for layer, (a, b) in enumerate(zip(ours, theirs)):
        if rows is not None:
            a, b = a[rows], b[rows]
        assert max_diff(a, b) <= TOL, f"hidden state {layer} differs by {max_diff(a, b)}"


# --- inputs: a BERT sentence pair with padding, GPT-2 right padding, a padded T5 source ---------

def bert_inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 97, (2, 12), generator=g)
    types = torch.tensor([[0] * 6 + [1] * 6, [0] * 5 + [1] * 7])
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    ids[1, 8:] = 0
    return ids, types, mask


def gpt2_inputs():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 101, (2, 14), generator=g)
    mask = torch.ones(2, 14, dtype=torch.long)
    mask[1, 9:] = 0
    return ids, mask


def t5_inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 103, (2, 13), generator=g)
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, 9:] = 0
    dec = torch.randint(3, 103, (2, 9), generator=g)
    return ids, mask, dec


# --- parity, ours → transformers ------------------------------------------------------------------

def test_bert_matches_transformers_loading_our_checkpoint(tiny_bert, tmp_path):
    checkpoints.save(tiny_bert, tmp_path)
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, types, mask = bert_inputs()
    ours = tiny_bert(ids, types, mask, want=Want(hidden=True))
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert max_diff(ours.logits, ref.prediction_logits) <= TOL
    assert max_diff(ours.nsp_logits, ref.seq_relationship_logits) <= TOL
    assert_attention_equal(ours.record.probs["self"], ref.attentions, rows=mask.bool())
    assert_hidden_equal(ours.record.hidden["encoder"], ref.hidden_states)


def test_gpt2_matches_transformers_with_right_padding(tiny_gpt2, tmp_path):
    checkpoints.save(tiny_gpt2, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask = gpt2_inputs()
    ours = tiny_gpt2(ids, attention_mask=mask, want=Want(hidden=True))
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    real = mask.bool()
    assert max_diff(ours.logits[real], ref.logits[real]) <= TOL
    assert_attention_equal(ours.record.probs["causal"], ref.attentions, rows=real)
    assert_hidden_equal(ours.record.hidden["decoder"], ref.hidden_states, rows=real)


def test_t5_matches_transformers_in_encoder_decoder_and_cross_attention(tiny_t5, tmp_path):
    checkpoints.save(tiny_t5, tmp_path)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask, dec = t5_inputs()
    ours = tiny_t5(ids, dec, attention_mask=mask, want=Want(hidden=True))
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_attentions=True, output_hidden_states=True)
    assert max_diff(ours.logits, ref.logits) <= TOL
    assert_attention_equal(ours.record.probs["self"], ref.encoder_attentions, rows=mask.bool())
    assert_attention_equal(ours.record.probs["causal"], ref.decoder_attentions)
    assert_attention_equal(ours.record.probs["cross"], ref.cross_attentions)
    assert_hidden_equal(ours.record.hidden["encoder"], ref.encoder_hidden_states)
    assert_hidden_equal(ours.record.hidden["decoder"], ref.decoder_hidden_states)


@torch.no_grad()
def test_gpt2_left_padding_is_refused_because_positions_would_shift(tiny_gpt2):
    ids, _ = gpt2_inputs()
    left = torch.ones(2, 14, dtype=torch.long)
    left[1, :4] = 0
    with pytest.raises(LmvizError, match="left padding.*pad on the right"):
        tiny_gpt2(ids, attention_mask=left)
    right = tiny_gpt2(ids[:, :10], attention_mask=torch.tensor([[1] * 10, [1] * 6 + [0] * 4]))
    with pytest.raises(LmvizError, match="left padding"):  # a real token after the padding, one cached step later
        tiny_gpt2(ids[:, 10:11], cache=right.cache, attention_mask=torch.tensor([[1] * 11, [1] * 6 + [0] * 4 + [1]]))


# --- parity, transformers → ours --------------------------------------------------------------------

def _hf_folder(model, tmp_path):
    model.save_pretrained(tmp_path, safe_serialization=True)
    return checkpoints.load(tmp_path, need_tokenizer=False)


def test_bert_loads_a_transformers_checkpoint_and_matches_it(tmp_path):
    torch.manual_seed(4)
    cfg = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=24, hidden_act="gelu",
                                  attn_implementation="eager")
    hf = transformers.BertForPreTraining(cfg).eval()
    loaded = _hf_folder(hf, tmp_path)
    assert loaded.kind == "bert" and loaded.has_heads
    ids, types, mask = bert_inputs()
    ours = loaded.model(ids, types, mask, want=Want())
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, output_attentions=True)
    assert max_diff(ours.logits, ref.prediction_logits) <= TOL
    assert max_diff(ours.nsp_logits, ref.seq_relationship_logits) <= TOL
    assert_attention_equal(ours.record.probs["self"], ref.attentions, rows=mask.bool())


def test_gpt2_loads_a_transformers_checkpoint_and_matches_it(tmp_path):
    torch.manual_seed(5)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=101, n_positions=40, n_embd=32, n_layer=2, n_head=4,
                                                                attn_implementation="eager")).eval()
    loaded = _hf_folder(hf, tmp_path)
    ids, mask = gpt2_inputs()
    ours = loaded.model(ids, attention_mask=mask, want=Want())
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_attentions=True)
    real = mask.bool()
    assert max_diff(ours.logits[real], ref.logits[real]) <= TOL
    assert_attention_equal(ours.record.probs["causal"], ref.attentions, rows=real)


def test_t5_loads_a_transformers_checkpoint_and_matches_it(tmp_path):
    torch.manual_seed(6)
    cfg = transformers.T5Config(vocab_size=103, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                                relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="relu",
                                decoder_start_token_id=0, attn_implementation="eager")
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    loaded = _hf_folder(hf, tmp_path)
    ids, mask, dec = t5_inputs()
    ours = loaded.model(ids, dec, attention_mask=mask, want=Want())
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_attentions=True)
    assert max_diff(ours.logits, ref.logits) <= TOL
    assert_attention_equal(ours.record.probs["self"], ref.encoder_attentions, rows=mask.bool())
    assert_attention_equal(ours.record.probs["causal"], ref.decoder_attentions)
    assert_attention_equal(ours.record.probs["cross"], ref.cross_attentions)


@torch.no_grad()
def test_a_bare_transformers_gpt2model_with_its_own_mlp_width_loads_and_predicts_as_the_lm_head_model(tmp_path):
    torch.manual_seed(7)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=101, n_positions=40, n_embd=32, n_layer=2, n_head=4,
                                                                n_inner=48, attn_implementation="eager")).eval()
    hf.transformer.save_pretrained(tmp_path, safe_serialization=True)  # GPT2Model: no lm_head, no "transformer." prefix
    loaded = checkpoints.load(tmp_path, need_tokenizer=False)
    assert loaded.model.config.n_inner == 48 and loaded.has_heads
    ids, mask = gpt2_inputs()
    ours = loaded.model(ids, attention_mask=mask, want=Want())
    ref = hf(input_ids=ids, attention_mask=mask, output_attentions=True)
    real = mask.bool()
    assert max_diff(ours.logits[real], ref.logits[real]) <= TOL
    assert_attention_equal(ours.record.probs["causal"], ref.attentions, rows=real)


# --- the fused path and the explicit path agree -----------------------------------------------------

@torch.no_grad()
def test_fused_and_explicit_attention_give_the_same_bert_logits(tiny_bert):
    ids, types, mask = bert_inputs()
    for attention_mask in (None, mask):
        fused = tiny_bert(ids, types, attention_mask, want=None)
        explicit = tiny_bert(ids, types, attention_mask, want=Want())
        assert fused.record is None
        assert max_diff(fused.logits, explicit.logits) <= TOL


@torch.no_grad()
def test_fused_and_explicit_attention_give_the_same_gpt2_logits(tiny_gpt2):
    ids, mask = gpt2_inputs()
    for attention_mask in (None, mask):
        fused = tiny_gpt2(ids, attention_mask=attention_mask, want=None)
        explicit = tiny_gpt2(ids, attention_mask=attention_mask, want=Want())
        assert fused.record is None
        assert max_diff(fused.logits, explicit.logits) <= TOL


@torch.no_grad()
def test_fused_and_explicit_attention_give_the_same_t5_logits(tiny_t5):
    ids, mask, dec = t5_inputs()
    for attention_mask in (None, mask):
        fused = tiny_t5(ids, dec, attention_mask=attention_mask, want=None)
        explicit = tiny_t5(ids, dec, attention_mask=attention_mask, want=Want())
        assert max_diff(fused.logits, explicit.logits) <= TOL


# --- masks ------------------------------------------------------------------------------------------

@torch.no_grad()
def test_causal_mask_hides_future_tokens(tiny_gpt2):
    ids, _ = gpt2_inputs()
    out = tiny_gpt2(ids, want=Want())
    for probs in out.record.probs["causal"]:
        assert torch.all(probs.triu(diagonal=1) == 0)
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-6)
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 101
    again = tiny_gpt2(changed)
    assert max_diff(out.logits[:, :10], again.logits[:, :10]) <= TOL


@torch.no_grad()
def test_padding_mask_gives_padded_keys_no_attention(tiny_bert):
    ids, types, mask = bert_inputs()
    out = tiny_bert(ids, types, mask, want=Want(scores=True))
    for probs in out.record.probs["self"]:
        assert torch.all(probs[1, :, :, 8:] == 0)
    for mask_applied in out.record.masks["self"]:
        assert torch.all(mask_applied[1, 0, :, 8:] < -1e30)
        assert torch.all(mask_applied[1, 0, :, :8] == 0)


# --- the record's arithmetic ------------------------------------------------------------------------

@torch.no_grad()
def test_bert_record_scores_are_q_dot_k_over_sqrt_d_head(tiny_bert):
    ids, types, mask = bert_inputs()
    rec = tiny_bert(ids, types, mask, want=ALL).record
    d_head = 32 // 4
    assert rec.scale["self"] == pytest.approx(1 / math.sqrt(d_head))
    for layer, (q, k, _v) in enumerate(rec.qkv["self"]):
        assert q.shape == (2, 4, 12, d_head)
        assert max_diff(rec.scores["self"][layer], q @ k.transpose(-1, -2) / math.sqrt(d_head)) <= TOL
        expected = torch.softmax(rec.scores["self"][layer] + rec.masks["self"][layer], dim=-1)
        assert max_diff(rec.probs["self"][layer], expected) <= TOL


@torch.no_grad()
def test_gpt2_record_scale_is_one_over_sqrt_d_head(tiny_gpt2):
    ids, _ = gpt2_inputs()
    rec = tiny_gpt2(ids, want=ALL).record
    d_head = 32 // 4
    assert rec.scale["causal"] == pytest.approx(1 / math.sqrt(d_head))
    q, k, _v = rec.qkv["causal"][0]
    assert max_diff(rec.scores["causal"][0], q @ k.transpose(-1, -2) / math.sqrt(d_head)) <= TOL


@torch.no_grad()
def test_t5_record_scores_are_q_dot_k_plus_position_bias_without_sqrt_d(tiny_t5):
    ids, mask, dec = t5_inputs()
    rec = tiny_t5(ids, dec, attention_mask=mask, want=ALL).record
    assert rec.scale == {"self": 1.0, "causal": 1.0, "cross": 1.0}
    assert rec.position_bias["self"].shape == (1, 4, 13, 13)
    assert rec.position_bias["causal"].shape == (1, 4, 9, 9)
    for kind in ("self", "causal"):
        for layer, (q, k, _v) in enumerate(rec.qkv[kind]):
            expected = q @ k.transpose(-1, -2) + rec.position_bias[kind]
            assert max_diff(rec.scores[kind][layer], expected) <= TOL
    for layer, (q, k, _v) in enumerate(rec.qkv["cross"]):
        assert max_diff(rec.scores["cross"][layer], q @ k.transpose(-1, -2)) <= TOL


def _arithmetic_worst(record, kind: str, batch: int) -> float:
    """The largest recomputed-vs-record gap over every layer, head and query, each held to its documented tolerance."""
    worst = 0.0
    for layer in range(record.n_layers(kind)):
        for head in range(record.n_heads(kind)):
            for query in range(record.probs[kind][layer].shape[2]):
                a = head_arithmetic(record, kind, layer, head, query, batch=batch)
                assert a.max_difference <= a.tolerance, (kind, layer, head, query, a.max_difference, a.tolerance)
                worst = max(worst, a.max_difference)
    return worst


@torch.no_grad()
def test_one_heads_arithmetic_reproduces_the_records_rows_for_every_kind(tiny_bert, tiny_gpt2, tiny_t5):
    ids, types, mask = bert_inputs()
    bert = tiny_bert(ids, types, mask, want=ALL).record
    g_ids, g_mask = gpt2_inputs()
    gpt2 = tiny_gpt2(g_ids, attention_mask=g_mask, want=ALL).record
    t_ids, t_mask, dec = t5_inputs()
    t5 = tiny_t5(t_ids, dec, attention_mask=t_mask, want=ALL).record
    prompt = tiny_gpt2(g_ids[:, :9], attention_mask=g_mask[:, :9])
    step = tiny_gpt2(g_ids[:, 9:10], attention_mask=g_mask[:, :10], cache=prompt.cache, want=ALL).record  # one cached row
    worst = {name: _arithmetic_worst(rec, kind, batch=1)  # batch row 1 is the padded one
             for name, rec, kind in [("bert self", bert, "self"), ("gpt2 causal", gpt2, "causal"), ("t5 self", t5, "self"),
                                     ("t5 causal", t5, "causal"), ("t5 cross", t5, "cross"), ("gpt2 cached step", step, "causal")]}
    assert max(worst.values()) < 1e-6, worst  # small random models: scores near 1, so the tolerance is 1e-6
    with pytest.raises(LmvizError, match="no batch row 5; this choice has batch rows 0–1"):
        head_arithmetic(gpt2, "causal", 0, 0, 0, batch=5)


# --- KV cache ---------------------------------------------------------------------------------------

@torch.no_grad()
def test_gpt2_decoding_with_the_kv_cache_matches_full_recompute(tiny_gpt2):
    ids, _ = gpt2_inputs()
    full = tiny_gpt2(ids, want=Want())
    prompt = 5
    step = tiny_gpt2(ids[:, :prompt])
    assert max_diff(step.logits, full.logits[:, :prompt]) <= TOL
    cache = step.cache
    for t in range(prompt, ids.shape[1]):
        step = tiny_gpt2(ids[:, t : t + 1], cache=cache, want=ALL)
        cache = step.cache
        assert step.logits.shape == (2, 1, 101)
        assert max_diff(step.logits[:, 0], full.logits[:, t]) <= TOL
        for layer, probs in enumerate(step.record.probs["causal"]):
            assert probs.shape == (2, 4, 1, t + 1)
            assert max_diff(probs[:, :, 0], full.record.probs["causal"][layer][:, :, t, : t + 1]) <= TOL
    assert cache[0][0].shape == (2, 4, ids.shape[1], 8)


@torch.no_grad()
def test_t5_decoding_with_the_kv_cache_matches_full_recompute(tiny_t5):
    ids, mask, dec = t5_inputs()
    full = tiny_t5(ids, dec, attention_mask=mask, want=Want())
    encoder_out = tiny_t5.encode(ids, mask)
    cache = None
    for t in range(dec.shape[1]):
        step = tiny_t5(decoder_input_ids=dec[:, t : t + 1], encoder_out=encoder_out, cache=cache, want=ALL)
        cache = step.cache
        assert max_diff(step.logits[:, 0], full.logits[:, t]) <= TOL
        for layer in range(2):
            causal = step.record.probs["causal"][layer]
            assert causal.shape == (2, 4, 1, t + 1)
            assert max_diff(causal[:, :, 0], full.record.probs["causal"][layer][:, :, t, : t + 1]) <= TOL
            cross = step.record.probs["cross"][layer]
            assert max_diff(cross[:, :, 0], full.record.probs["cross"][layer][:, :, t]) <= TOL
        assert step.record.position_bias["causal"].shape == (1, 4, 1, t + 1)


# --- the record as numpy ------------------------------------------------------------------------------

@torch.no_grad()
def test_record_numpy_holds_every_tensor_the_record_kept(tiny_t5):
    ids, mask, dec = t5_inputs()
    rec = tiny_t5(ids, dec, attention_mask=mask, want=ALL).record
    arrays = rec.numpy()
    for key in ("probs", "scores", "masks", "hidden"):
        original = getattr(rec, key)
        assert arrays[key].keys() == original.keys() and arrays[key]
        for name in original:
            assert all(np.array_equal(a, t.numpy()) for a, t in zip(arrays[key][name], original[name], strict=True))
    assert np.array_equal(arrays["qkv"]["cross"][1][2], rec.qkv["cross"][1][2].numpy())
    assert np.array_equal(arrays["position_bias"]["self"], rec.position_bias["self"].numpy())
    assert arrays["logits"].shape == (2, 9, 103) and arrays["scale"] == {"self": 1.0, "causal": 1.0, "cross": 1.0}
