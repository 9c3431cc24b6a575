"""Folders as people have them (``tests/wild.py`` builds them): each loads, with attention equal to ``transformers``'
``output_attentions`` within 1e-5 on the text as the pages read it, or is refused with a message naming what lmviz
does not support."""
from __future__ import annotations

import pytest
import torch
import transformers

from lmviz.analysis.inference import attention_run
from lmviz.errors import LmvizError
from lmviz.models import checkpoints
from wild import byte_bpe, fixed_padding, unigram, wordpiece, write_folder

transformers.logging.set_verbosity_error()
torch.set_num_threads(1)
TEXT = "To be, or not to be: whether 'tis nobler in the mind."
STACK_KINDS = {"self": "encoder_attentions", "causal": "decoder_attentions", "cross": "cross_attentions"}

GPT2_SPECIALS = ["<|endoftext|>"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MATRIX = {  # name: (transformers class, tokenizer)
    "bert-model": ("BertModel", lambda: wordpiece()),
    "bert-mlm": ("BertForMaskedLM", lambda: wordpiece()),
    "bert-pretraining": ("BertForPreTraining", lambda: wordpiece()),
    "bert-fixed-padding": ("BertModel", lambda: fixed_padding(wordpiece(), "[PAD]")),
    "bert-cased": ("BertForMaskedLM", lambda: wordpiece(lower=False)),
    "bert-no-mask-token": ("BertForMaskedLM", lambda: wordpiece(mask=False)),
    "bert-no-template": ("BertForMaskedLM", lambda: wordpiece(template=False)),
    "bert-added-special": ("BertForPreTraining", lambda: _added(wordpiece(), "[SPEAKER]")),
    "gpt2-model": ("GPT2Model", lambda: byte_bpe(GPT2_SPECIALS)),
    "gpt2-lm": ("GPT2LMHeadModel", lambda: byte_bpe(GPT2_SPECIALS)),
    "gpt2-fixed-padding": ("GPT2LMHeadModel", lambda: fixed_padding(byte_bpe(GPT2_SPECIALS), "<|endoftext|>", 96, None)),
    "gpt2-added-special": ("GPT2LMHeadModel", lambda: _added(byte_bpe(GPT2_SPECIALS), "<|speaker|>")),
    "t5": ("T5ForConditionalGeneration", lambda: unigram()),
    "t5-fixed-padding": ("T5ForConditionalGeneration", lambda: fixed_padding(unigram(), "<pad>")),
    "t5-no-template": ("T5ForConditionalGeneration", lambda: unigram(template=False)),
    "roberta-mlm": ("RobertaForMaskedLM", lambda: byte_bpe(ROBERTA_SPECIALS, roberta=True)),
    "roberta-fixed-padding": ("RobertaForMaskedLM", lambda: fixed_padding(byte_bpe(ROBERTA_SPECIALS, roberta=True), "<pad>")),
}
REFUSED = {  # name: (transformers class, tokenizer, what the message must name)
    "gpt2-without-endoftext": ("GPT2LMHeadModel", lambda: byte_bpe(["<|speaker|>"]), "<|endoftext|>"),
    "roberta-without-s": ("RobertaForMaskedLM", lambda: wordpiece(), "<s>"),
}


def _added(tok, token: str):
    tok.add_special_tokens([token])
    return tok


def _reference(model, run) -> dict[str, tuple]:
    """``transformers``' attention on the ids the page ran, by our record's kind."""
    ids = {stack: torch.tensor([i]) for stack, i in run.ids.items()}
    if "encoder" in ids and "decoder" in ids:
        out = model(input_ids=ids["encoder"], decoder_input_ids=ids["decoder"], output_attentions=True)
        return {kind: getattr(out, name) for kind, name in STACK_KINDS.items()}
    out = model(input_ids=next(iter(ids.values())), output_attentions=True)
    return {run.record.kinds[0]: out.attentions}


@pytest.mark.parametrize("name", MATRIX)
@torch.no_grad()
def test_a_folder_from_the_wild_gives_transformers_attention(name, tmp_path):
    cls, make = MATRIX[name]
    tok = make()
    reference = write_folder(tmp_path / name, cls, tok)
    loaded = checkpoints.load(tmp_path / name)
    run = attention_run(loaded, TEXT, target="Whether 'tis nobler" if "t5" in name else None)
    pad = tok.token_to_id("[PAD]") or tok.token_to_id("<pad>")
    for stack, ids in run.ids.items():
        assert 3 < len(ids) < 40, f"{stack} read {len(ids)} tokens: the tokenizer's own padding came through"
        if stack == "encoder" or "gpt2" in name:
            assert pad not in ids
    expected = _reference(reference, run)
    assert set(expected) == set(run.record.kinds)
    for kind, layers in expected.items():
        for ours, theirs in zip(run.record.probs[kind], layers, strict=True):
            assert ours.shape == theirs.shape and (ours - theirs).abs().max() <= 1e-5, (kind, (ours - theirs).abs().max())


@pytest.mark.parametrize("name", REFUSED)
def test_a_folder_lmviz_cannot_read_is_refused_by_what_it_lacks(name, tmp_path):
    cls, make, needed = REFUSED[name]
    write_folder(tmp_path / name, cls, make())
    with pytest.raises(LmvizError, match=f"{name}.*{needed}|{needed}.*{name}") as err:
        checkpoints.load(tmp_path / name)
    assert "Traceback" not in str(err.value)


@torch.no_grad()
def test_a_fixed_padding_tokenizer_is_read_without_its_padding_and_the_sidebar_says_so(tmp_path):
    tok = fixed_padding(wordpiece(), "[PAD]", 128, 100)
    write_folder(tmp_path / "sbert", "BertModel", tok)
    loaded = checkpoints.load(tmp_path / "sbert")
    assert any("pads every text to 128 tokens" in n and "cuts texts at 100" in n for n in loaded.notes)
    long = " ".join([TEXT] * 12)  # longer than the model's 64 positions
    run = attention_run(loaded, long)
    assert len(run.ids["encoder"]) == 64 and any("reads at most 64" in n for n in run.notes)
    assert "[PAD]" not in run.tokens["encoder"]


@torch.no_grad()
def test_roberta_predicts_masked_words_as_transformers_does_even_with_a_typed_pad(tmp_path):
    tok = byte_bpe(ROBERTA_SPECIALS, roberta=True)
    reference = write_folder(tmp_path / "roberta", "RobertaForMaskedLM", tok)
    loaded = checkpoints.load(tmp_path / "roberta")
    assert loaded.kind == "roberta" and loaded.heads == {"mlm"} and loaded.has_heads
    ids = torch.tensor([tok.encode("To be <mask> not <pad> be.").ids])  # a pad inside the text keeps RoBERTa's position rule honest
    assert tok.token_to_id("<pad>") in ids[0].tolist()
    ours = loaded.model(ids).logits
    assert (ours - reference(input_ids=ids).logits).abs().max() <= 1e-5
    assert loaded.model(ids).nsp_logits is None


def test_roberta_reads_at_most_its_positions_after_the_padding_index(tmp_path):
    write_folder(tmp_path / "roberta", "RobertaForMaskedLM", byte_bpe(ROBERTA_SPECIALS, roberta=True))
    loaded = checkpoints.load(tmp_path / "roberta")
    run = attention_run(loaded, " ".join([TEXT] * 12))
    assert len(run.ids["encoder"]) == 64  # 66 position embeddings, the first two (up to pad_token_id 1) never a token's
    assert run.tokens["encoder"][0] == "<s>" and run.tokens["encoder"][-1] == "</s>"


def test_roberta_fills_masked_words_by_its_own_mask_token_and_words(tmp_path):
    from lmviz.pretrain import objectives

    write_folder(tmp_path / "roberta", "RobertaForMaskedLM", byte_bpe(ROBERTA_SPECIALS, roberta=True))
    loaded = checkpoints.load(tmp_path / "roberta")
    words = objectives.bert_words(loaded, "To be, or not")
    assert words == ["To", "be,", "or", "not"]  # byte-level BPE: a word runs to the next space
    result = objectives.mlm_predict(loaded, "To be, or not to <mask>.", chosen=(1,))
    assert result.shown[3:5] == ["<mask>", "<mask>"] and any("You typed <mask> once: RoBERTa" in n for n in result.notes)
    with pytest.raises(LmvizError, match="RoBERTa has no next-sentence head: Liu et al"):
        objectives.nsp_predict(loaded, "To be.", "Or not.")


def test_a_bert_whose_tokenizer_has_no_mask_token_says_so_on_the_masking_page(tmp_path):
    from lmviz.pretrain import objectives

    write_folder(tmp_path / "nomask", "BertForMaskedLM", wordpiece(mask=False))
    with pytest.raises(LmvizError, match=r"nomask/tokenizer.json has no \[MASK\] token"):
        objectives.mlm_predict(checkpoints.load(tmp_path / "nomask"), TEXT)


def test_a_link_out_of_the_models_folder_and_a_name_with_markup_are_named_as_plain_text(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    root, outside = tmp_path / "models", tmp_path / "elsewhere"
    root.mkdir()
    write_folder(outside, "BertModel", wordpiece())
    (root / "linked").symlink_to(outside, target_is_directory=True)
    write_folder(root / "**bold** [x](javascript:alert(1))", "GPT2Model", byte_bpe(["<|speaker|>"]))  # no <|endoftext|>
    monkeypatch.setenv("LMVIZ_MODELS", str(root))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.run()
    assert not at.exception
    warnings = [w.value for w in at.sidebar.warning]
    assert any("linked (yours) unavailable: linked is a link to a folder outside the models directory" in w.replace("\\", "")
               for w in warnings), warnings
    marked = next(w for w in warnings if "bold" in w)
    assert marked.startswith(r"\*\*bold\*\* \[x\]\(javascript\:alert\(1\)\)") and "has no <|endoftext|>" in marked.replace("\\", "")
    st.cache_resource.clear()
