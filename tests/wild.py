"""Model folders as people have them, built here: small random models written by ``transformers``' ``save_pretrained``
beside tokenizers written by ``tokenizers`` in the variants found in the wild (fixed padding, truncation, cased or
lower-cased, added special tokens, no mask token, no template post-processor)."""
from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

TEXTS = ["To be, or not to be, that is the question.", "Whether 'tis nobler in the mind to suffer",
         "The slings and arrows of outrageous fortune,", "Or to take arms against a sea of troubles",
         "But, soft! what light through yonder window breaks?", "It is the east, and Juliet is the sun."] * 4
VOCAB = 320  # every tokenizer here has fewer pieces than the models' embeddings


def wordpiece(lower: bool = True, mask: bool = True, template: bool = True) -> Tokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + (["[MASK]"] if mask else [])
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lower, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(TEXTS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    if template:
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                           special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def byte_bpe(specials: list[str], roberta: bool = False) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=roberta)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if roberta:
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def unigram(template: bool = True) -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(TEXTS, trainers.UnigramTrainer(vocab_size=150, special_tokens=["<pad>", "</s>", "<unk>"],
                                                           unk_token="<unk>"))
    tok.add_special_tokens([f"<extra_id_{i}>" for i in range(4)])
    if template:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return tok


def fixed_padding(tok: Tokenizer, pad: str, length: int = 128, truncate: int | None = 100) -> Tokenizer:
    """As sentence-embedding pipelines save them: every text padded to ``length`` and cut at ``truncate``."""
    tok.enable_padding(length=length, pad_id=tok.token_to_id(pad), pad_token=pad)
    if truncate:
        tok.enable_truncation(truncate)
    return tok


def _bert_config(**kw):
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64, attn_implementation="eager", **kw)


def config(cls: str):
    """A tiny config for one of the matrix's ``transformers`` classes."""
    if cls.startswith("Bert"):
        return _bert_config()
    if cls.startswith("GPT2"):
        return transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                       attn_implementation="eager")
    if cls.startswith("T5"):
        return transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                     relative_attention_num_buckets=8, decoder_start_token_id=0, attn_implementation="eager")
    if cls.startswith("Roberta"):
        return transformers.RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, max_position_embeddings=66, pad_token_id=1, type_vocab_size=1,
                                          attn_implementation="eager")
    raise KeyError(cls)


def write_folder(folder: Path, cls: str, tok: Tokenizer | None) -> torch.nn.Module:
    """``transformers.<cls>`` with random weights saved into ``folder`` (safetensors), with ``tok`` as its tokenizer.json;
    returns the model (eval mode) for the reference run."""
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config(cls)).eval()
    model.save_pretrained(folder, safe_serialization=True)
    if tok is not None:
        tok.save(str(Path(folder) / "tokenizer.json"))
    return model
