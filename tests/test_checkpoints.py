"""Model folders load back exactly, load from ``save_pretrained``, and every broken folder gets a named error."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from lmviz.models import checkpoints
from lmviz.errors import LmvizError
from lmviz.models.record import Want

transformers.logging.set_verbosity_error()


def _inputs(kind: str) -> dict:
    ids = torch.tensor([[3, 14, 15, 9, 26, 5, 35]])
    return {"input_ids": ids, "decoder_input_ids": ids[:, :4]} if kind == "t5" else {"input_ids": ids}


@pytest.fixture()
def saved_gpt2(tiny_gpt2, tmp_path):
    return checkpoints.save(tiny_gpt2, tmp_path / "gpt2")


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
@torch.no_grad()
def test_save_then_load_gives_identical_logits_and_attention(kind, request, tokenizers, tmp_path):
    model = request.getfixturevalue(f"tiny_{kind}")
    folder = checkpoints.save(model, tmp_path / kind, tokenizer=tokenizers[kind], extra={"note": "test"})
    loaded = checkpoints.load(folder)
    assert loaded.kind == kind and loaded.has_heads
    assert loaded.extra == {"note": "test"}
    assert loaded.tokenizer.get_vocab_size() == tokenizers[kind].get_vocab_size()
    assert not any(p.requires_grad for p in loaded.model.parameters())
    before, after = model(**_inputs(kind), want=Want()), loaded.model(**_inputs(kind), want=Want())
    assert torch.equal(before.logits, after.logits)
    for k in before.record.kinds:
        assert all(torch.equal(a, b) for a, b in zip(before.record.probs[k], after.record.probs[k]))


def _hf_bert_config():
    torch.manual_seed(0)
    return transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=24, attn_implementation="eager")


@pytest.mark.parametrize("pooler", [True, False])
@torch.no_grad()
def test_a_bare_transformers_bert_model_loads_for_attention_without_heads(pooler, tmp_path):
    bare = transformers.BertModel(_hf_bert_config(), add_pooling_layer=pooler).eval()
    bare.save_pretrained(tmp_path, safe_serialization=True)
    loaded = checkpoints.load(tmp_path, need_tokenizer=False)
    assert loaded.kind == "bert" and loaded.heads == frozenset() and loaded.has_heads is False
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    ours = loaded.model(ids, want=Want())
    ref = bare(input_ids=ids, output_attentions=True)
    for a, b in zip(ours.record.probs["self"], ref.attentions, strict=True):
        assert (a - b).abs().max() <= 1e-5


@torch.no_grad()
def test_a_bert_for_masked_lm_loads_with_its_mlm_head_and_no_nsp(tmp_path):
    mlm = transformers.BertForMaskedLM(_hf_bert_config()).eval()
    mlm.save_pretrained(tmp_path, safe_serialization=True)
    loaded = checkpoints.load(tmp_path, need_tokenizer=False)
    assert loaded.heads == {"mlm"} and loaded.has_heads is False  # has_heads: every pretraining head, NSP included
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    assert (loaded.model(ids).logits - mlm(input_ids=ids).logits).abs().max() <= 1e-5


def test_writing_leaves_no_temporary_files(tiny_t5, tokenizers, tmp_path):
    checkpoints.save(tiny_t5, tmp_path, tokenizer=tokenizers["t5"])
    checkpoints.save(tiny_t5, tmp_path, tokenizer=tokenizers["t5"])  # overwriting too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_a_failed_write_keeps_the_previous_file_and_no_temporary(saved_gpt2, tiny_gpt2, tokenizers):
    checkpoints.save(tiny_gpt2, saved_gpt2, tokenizer=tokenizers["gpt2"])
    before = (saved_gpt2 / "tokenizer.json").read_bytes()

    class BrokenTokenizer:
        def save(self, path):
            with open(path, "w") as f:
                f.write('{"half": ')
            raise OSError("disk full")

    with pytest.raises(OSError):
        checkpoints.save(tiny_gpt2, saved_gpt2, tokenizer=BrokenTokenizer())
    assert (saved_gpt2 / "tokenizer.json").read_bytes() == before
    assert not [p for p in saved_gpt2.iterdir() if p.name.endswith(".tmp")]


def test_a_truncated_safetensors_file_is_named(saved_gpt2):
    weights = saved_gpt2 / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(LmvizError, match="model.safetensors is corrupt or truncated"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_garbage_in_the_safetensors_header_is_named(saved_gpt2):
    (saved_gpt2 / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(LmvizError, match="model.safetensors"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "tokenizer.json"])
def test_a_missing_file_is_named(missing, tiny_gpt2, tokenizers, tmp_path):
    checkpoints.save(tiny_gpt2, tmp_path, tokenizer=tokenizers["gpt2"])
    (tmp_path / missing).unlink()
    with pytest.raises(LmvizError, match=missing):
        checkpoints.load(tmp_path)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(LmvizError, match="no-such-model"):
        checkpoints.load(tmp_path / "no-such-model")


def test_a_config_that_is_not_json_is_named(saved_gpt2):
    (saved_gpt2 / "config.json").write_text('{"model_type": "gpt2", ')
    with pytest.raises(LmvizError, match="config.json is not valid JSON"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_a_config_that_is_not_an_object_is_named(saved_gpt2):
    (saved_gpt2 / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(LmvizError, match="config.json should hold a JSON object"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_a_config_whose_vocabulary_does_not_match_the_tensors_names_the_tensor(saved_gpt2):
    _edit_config(saved_gpt2, vocab_size=202)
    with pytest.raises(LmvizError, match=r"transformer\.wte\.weight has shape \(101, 32\) but config.json implies \(202, 32\)"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_a_config_far_larger_than_its_tensors_is_named_before_any_memory_is_taken(saved_gpt2):
    _edit_config(saved_gpt2, vocab_size=10**9)  # 128 GB of float32 if the model were built first
    with pytest.raises(LmvizError, match=r"describes a model of 32,\d{3} million parameters"):  # refused while shapes only
        checkpoints.load(saved_gpt2, need_tokenizer=False)
    _edit_config(saved_gpt2, vocab_size=101, n_layer=10**7)  # ten million blocks would take hours to build, even without memory
    with pytest.raises(LmvizError, match="n_layer = 10000000, but model.safetensors holds only 28 tensors"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_a_config_asking_for_a_billion_parameters_is_refused_while_it_is_shapes_only(saved_gpt2, monkeypatch):
    _edit_config(saved_gpt2, n_embd=8192)  # 2 layers of width 8192: 1.6 billion parameters, 6 GiB of float32
    read = []
    monkeypatch.setattr(checkpoints, "read_weights", lambda folder: read.append(folder))
    with pytest.raises(LmvizError, match=r"gpt2/config.json describes a model of 1,6\d\d million parameters .*at most 800 million"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)
    assert not read


def test_a_config_with_more_layers_than_the_tensors_is_named(saved_gpt2):
    _edit_config(saved_gpt2, n_layer=3)
    with pytest.raises(LmvizError, match=r"model.safetensors lacks .* transformer\.h\.2\."):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_a_config_with_fewer_layers_than_the_tensors_is_named(saved_gpt2):
    _edit_config(saved_gpt2, n_layer=1)
    with pytest.raises(LmvizError, match=r"model.safetensors holds .* config.json does not describe, e.g. transformer\.h\.1\."):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


@pytest.mark.parametrize("change, message", [
    ({"vocab_size": -1}, "vocab_size must be a positive whole number; got -1"),
    ({"n_embd": "32"}, "n_embd must be a positive whole number; got '32'"),
    ({"n_layer": None}, "n_layer must be a positive whole number; got None"),
    ({"n_layer": 2.5}, "n_layer must be a positive whole number; got 2.5"),
    ({"n_head": 5}, "n_head = 5 does not divide n_embd = 32"),
    ({"layer_norm_epsilon": 0}, "layer_norm_epsilon must be a positive number"),
    ({"activation_function": "relu"}, "activation_function is 'relu'; lmviz's GPT-2 computes 'gelu_new'"),
    ({"scale_attn_weights": False}, "scale_attn_weights is False"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx is True"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn is True"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings is False"),
])
def test_a_config_lmviz_would_compute_wrongly_is_named(saved_gpt2, change, message):
    _edit_config(saved_gpt2, **change)
    with pytest.raises(LmvizError, match=f"gpt2/config.json: {message}"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


@pytest.mark.parametrize("change, message", [
    ({"feed_forward_proj": "gated-gelu"}, "feed_forward_proj is 'gated-gelu'; lmviz's T5 is T5 v1.0, whose feed-forward is 'relu'.$"),
    ({"tie_word_embeddings": False}, "This T5 has no d_model \\*\\* -0.5 rescale before its LM head"),
    ({"scale_decoder_outputs": False}, "This T5 has no d_model \\*\\* -0.5 rescale before its LM head"),  # how transformers 5 says T5 v1.1
    ({"relative_attention_num_buckets": 2}, "relative_attention_num_buckets = 2 .* T5 needs at least 4 buckets"),
])
def test_a_t5_config_that_is_not_t5_v1_0_is_named(tiny_t5, tmp_path, change, message):
    folder = checkpoints.save(tiny_t5, tmp_path / "t5")
    _edit_config(folder, **change)
    with pytest.raises(LmvizError, match=f"^t5/config.json: {message}"):
        checkpoints.load(folder, need_tokenizer=False)


@pytest.mark.parametrize("kind, embedding", [("gpt2", "transformer.wte.weight"), ("t5", "shared.weight"),
                                             ("bert", "bert.embeddings.word_embeddings.weight")])
def test_an_untied_lm_head_is_refused_not_loaded_over_the_embedding(kind, embedding, request, tmp_path):
    folder = checkpoints.save(request.getfixturevalue(f"tiny_{kind}"), tmp_path / kind)
    state = load_file(folder / "model.safetensors")
    head = "cls.predictions.decoder.weight" if kind == "bert" else "lm_head.weight"
    state[head] = state[embedding] + 1
    save_file(state, folder / "model.safetensors")
    with pytest.raises(LmvizError, match=f"has its own {head}, different from {embedding}"):
        checkpoints.load(folder, need_tokenizer=False)
    state[head] = state[embedding].clone()  # a copy of the same numbers is still one matrix
    save_file(state, folder / "model.safetensors")
    assert checkpoints.load(folder, need_tokenizer=False).has_heads


def test_integer_weights_are_named(saved_gpt2):
    state = load_file(saved_gpt2 / "model.safetensors")
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"].to(torch.int32)
    save_file(state, saved_gpt2 / "model.safetensors")
    with pytest.raises(LmvizError, match="transformer.wpe.weight holds I32 numbers"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_a_config_lacking_a_size_is_named(saved_gpt2):
    config = json.loads((saved_gpt2 / "config.json").read_text())
    del config["n_embd"]
    (saved_gpt2 / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmvizError, match="config.json lacks a setting .*n_embd"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_a_folder_with_only_pytorch_model_bin_is_refused_as_pickle(saved_gpt2):
    (saved_gpt2 / "model.safetensors").rename(saved_gpt2 / "pytorch_model.bin")
    with pytest.raises(LmvizError, match="only pytorch_model.bin, a pickle file"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


@pytest.mark.parametrize("model_type", ["llama", None, 7])
def test_an_unknown_model_type_is_named(model_type, saved_gpt2):
    _edit_config(saved_gpt2, model_type=model_type)
    with pytest.raises(LmvizError, match=r"config.json has model_type .*; lmviz knows bert, gpt2, t5 and roberta"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_a_broken_tokenizer_file_is_named(saved_gpt2):
    (saved_gpt2 / "tokenizer.json").write_text("{not a tokenizer")
    with pytest.raises(LmvizError, match="tokenizer.json cannot be read"):
        checkpoints.load(saved_gpt2)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_the_shipped_folders_load_every_tensor_as_stored(kind):
    folder = checkpoints.shipped(kind)
    loaded = checkpoints.load(folder)
    assert loaded.kind == kind and loaded.has_heads
    assert loaded.model.config.vocab_size == loaded.tokenizer.get_vocab_size()
    own = loaded.model.state_dict()
    stored = load_file(folder / "model.safetensors")
    assert stored and all(torch.equal(own[name], t) for name, t in stored.items())


@torch.no_grad()
def test_a_bert_for_masked_lm_predicts_masked_words_and_says_it_has_no_nsp(tmp_path):
    from lmviz.pretrain import objectives

    shipped = checkpoints.shipped("bert")
    cfg = _hf_bert_config()
    cfg.vocab_size = checkpoints.load(shipped).tokenizer.get_vocab_size()
    transformers.BertForMaskedLM(cfg).eval().save_pretrained(tmp_path, safe_serialization=True)
    shutil.copy(shipped / "tokenizer.json", tmp_path / "tokenizer.json")
    loaded = checkpoints.load(tmp_path)
    result = objectives.mlm_predict(loaded, "To be or not to [MASK].", seed=0)
    assert result.predictions and all(len(p.top) == 5 for p in result.predictions)
    with pytest.raises(LmvizError, match="no NSP head"):
        objectives.nsp_predict(loaded, "To be or not to be.", "That is the question.")
