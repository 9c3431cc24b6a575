"""Model folders load back exactly, load from ``save_pretrained``, and every broken folder gets a named error."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

from lmviz import checkpoints
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


@torch.no_grad()
def test_a_bare_transformers_bert_model_loads_for_attention_without_heads(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=24, attn_implementation="eager")
    bare = transformers.BertModel(cfg).eval()
    bare.save_pretrained(tmp_path, safe_serialization=True)
    loaded = checkpoints.load(tmp_path, need_tokenizer=False)
    assert loaded.kind == "bert" and loaded.has_heads is False
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    ours = loaded.model(ids, want=Want())
    ref = bare(input_ids=ids, output_attentions=True)
    for a, b in zip(ours.record.probs["self"], ref.attentions):
        assert (a - b).abs().max() <= 1e-5


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


def test_a_config_with_more_layers_than_the_tensors_is_named(saved_gpt2):
    _edit_config(saved_gpt2, n_layer=3)
    with pytest.raises(LmvizError, match=r"model.safetensors lacks .* transformer\.h\.2\."):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_a_config_with_fewer_layers_than_the_tensors_is_named(saved_gpt2):
    _edit_config(saved_gpt2, n_layer=1)
    with pytest.raises(LmvizError, match=r"model.safetensors holds .* config.json does not describe, e.g. transformer\.h\.1\."):
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
    with pytest.raises(LmvizError, match=r"config.json has model_type .*; lmviz knows bert, gpt2 and t5"):
        checkpoints.load(saved_gpt2, need_tokenizer=False)


def test_a_broken_tokenizer_file_is_named(saved_gpt2):
    (saved_gpt2 / "tokenizer.json").write_text("{not a tokenizer")
    with pytest.raises(LmvizError, match="tokenizer.json cannot be read"):
        checkpoints.load(saved_gpt2)


def test_the_shipped_gpt2_folder_loads_if_present():
    folder = checkpoints.shipped("gpt2")
    if not (folder / "model.safetensors").is_file():
        pytest.skip("no shipped GPT-2 checkpoint yet")
    loaded = checkpoints.load(folder)
    assert loaded.kind == "gpt2" and loaded.has_heads
    assert loaded.model.config.vocab_size == loaded.tokenizer.get_vocab_size()
