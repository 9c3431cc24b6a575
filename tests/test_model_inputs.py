"""The models refuse what they would compute wrong: bad token ids, masks, lengths, caches and record lookups, each
named in a readable error (never a traceback, never a silent wrong picture)."""
from __future__ import annotations

import pytest
import torch

from lmviz.errors import LmvizError
from lmviz.models.record import Want


# --- bad input is named, never a traceback ----------------------------------------------------------

def _call(model, ids):
    if model.kind == "t5":
        return model(ids, torch.zeros(1, 1, dtype=torch.long))
    return model(ids)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_token_ids_outside_the_vocabulary_are_refused_with_the_vocabulary_range(kind, request):
    model = request.getfixturevalue(f"tiny_{kind}")
    vocab = model.config.vocab_size
    with pytest.raises(LmvizError, match=f"0–{vocab - 1}"):
        _call(model, torch.tensor([[1, vocab]]))
    with pytest.raises(LmvizError, match="outside the vocabulary"):
        _call(model, torch.tensor([[-1, 2]]))


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_an_empty_sequence_is_refused(kind, request):
    model = request.getfixturevalue(f"tiny_{kind}")
    with pytest.raises(LmvizError, match="at least one token"):
        _call(model, torch.zeros(1, 0, dtype=torch.long))


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_float_token_ids_are_refused(kind, request):
    model = request.getfixturevalue(f"tiny_{kind}")
    with pytest.raises(LmvizError, match="integers"):
        _call(model, torch.tensor([[1.0, 2.0]]))


@pytest.mark.parametrize("kind, limit", [("bert", 24), ("gpt2", 40)])
def test_a_sequence_longer_than_the_positions_is_refused_naming_the_limit(kind, limit, request):
    model = request.getfixturevalue(f"tiny_{kind}")
    with pytest.raises(LmvizError, match=f"at most {limit}"):
        _call(model, torch.ones(1, limit + 1, dtype=torch.long))
    assert _call(model, torch.ones(1, limit, dtype=torch.long)).logits.shape[1] == limit


@torch.no_grad()
def test_gpt2_refuses_to_decode_past_its_context_with_a_cache(tiny_gpt2):
    out = tiny_gpt2(torch.ones(1, 38, dtype=torch.long))
    with pytest.raises(LmvizError, match="cache holds 38 tokens and the input adds 3: GPT-2 reads at most n_positions = 40"):
        tiny_gpt2(torch.ones(1, 3, dtype=torch.long), cache=out.cache)
    assert tiny_gpt2(torch.ones(1, 2, dtype=torch.long), cache=out.cache).cache[0][0].shape[2] == 40


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_ragged_rows_and_text_are_refused_as_token_ids(kind, request):
    model = request.getfixturevalue(f"tiny_{kind}")
    with pytest.raises(LmvizError, match="every row the same length"):
        _call(model, [[1, 2, 3], [4, 5]])
    with pytest.raises(LmvizError, match="encode the text with the model's tokenizer"):
        _call(model, "hello")


@pytest.mark.parametrize("mask, message", [
    (torch.ones(2, 13), r"shape \(2, 13\); it must be \(2, 14\)"),
    (torch.ones(3, 14), r"shape \(3, 14\); it must be \(2, 14\)"),
    (torch.full((2, 14), 0.5), "only 1 .* and 0"),
    (torch.full((2, 14), 2), "only 1 .* and 0"),
])
@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_a_padding_mask_of_the_wrong_shape_or_values_is_refused(kind, mask, message, request):
    model = request.getfixturevalue(f"tiny_{kind}")
    ids = torch.ones(2, 14, dtype=torch.long)
    with pytest.raises(LmvizError, match=message):
        if kind == "t5":
            model(ids, torch.zeros(2, 1, dtype=torch.long), attention_mask=mask)
        else:
            model(ids, attention_mask=mask)


@torch.no_grad()
def test_a_cached_gpt2_step_needs_a_mask_over_the_cache_and_the_new_token(tiny_gpt2):
    out = tiny_gpt2(torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(LmvizError, match=r"must be \(2, 6\).*the cached 5 and the 1 new tokens"):
        tiny_gpt2(torch.ones(2, 1, dtype=torch.long), cache=out.cache, attention_mask=torch.ones(2, 1))
    with pytest.raises(LmvizError, match="cache is for a batch of 2 .* input is a batch of 1"):
        tiny_gpt2(torch.ones(1, 1, dtype=torch.long), cache=out.cache)


@torch.no_grad()
def test_t5_names_a_missing_decoder_input_a_batch_mismatch_and_its_input_limit(tiny_t5):
    ids = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(LmvizError, match=r"needs decoder_input_ids.*decoder_start_token_id \(0\)"):
        tiny_t5(ids)
    with pytest.raises(LmvizError, match="encoder read 2 sequences but the decoder input has 3"):
        tiny_t5(ids, torch.zeros(3, 1, dtype=torch.long))
    step = tiny_t5(ids, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(LmvizError, match="cache is for a batch of 2 .* decoder input is a batch of 1"):
        tiny_t5(decoder_input_ids=torch.zeros(1, 1, dtype=torch.long), encoder_out=tiny_t5.encode(ids[:1]), cache=step.cache)
    with pytest.raises(LmvizError, match="513 tokens; this model reads at most 512"):  # n_positions of its config.json
        tiny_t5(torch.ones(1, 513, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long))


def test_record_names_a_missing_kind_or_layer(tiny_gpt2):
    rec = tiny_gpt2(torch.ones(1, 3, dtype=torch.long), want=Want()).record
    with pytest.raises(LmvizError, match="no cross attention"):
        rec.attention("cross", 0)
    with pytest.raises(LmvizError, match="layers 0–1"):
        rec.attention("causal", 2)
