"""The three tokenizers, trained with HF ``tokenizers`` on the training plays, and explained.

- BERT: WordPiece, lower-cased, ``[PAD] [UNK] [CLS] [SEP] [MASK]``, ``##`` continuations,
  pair template ``[CLS] A [SEP] B [SEP]`` with ``token_type_ids``.
- GPT-2: byte-level BPE; every string encodes, never an unknown token; ``<|endoftext|>``.
- T5: Unigram with ``▁`` word boundaries, ``<pad> </s> <unk>`` and sentinels ``<extra_id_i>``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Literal

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from lmviz.errors import LmvizError
from lmviz.paths import ROOT
from lmviz.models.kinds import GPT2_EOT  # the kind owns the encode rule; its prefix token is named once

Kind = Literal["bert", "gpt2", "t5"]
KINDS: tuple[Kind, ...] = ("bert", "gpt2", "t5")
VOCAB_SIZE: dict[Kind, int] = {"bert": 4096, "gpt2": 8192, "t5": 4096}
N_SENTINELS = 32

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
T5_SPECIALS = ["<pad>", "</s>", "<unk>"]
SENTINELS = [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
DISPLAY_NAME: dict[Kind, str] = {"bert": "WordPiece (BERT)", "gpt2": "byte-level BPE (GPT-2)", "t5": "Unigram (T5)"}


def safe_text(text: str) -> str:
    """The text with lone surrogates replaced by U+FFFD, one for one, so offsets stay valid."""
    if not isinstance(text, str):
        raise LmvizError("Text must be a string.")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _bert_tokenizer() -> tuple[Tokenizer, trainers.Trainer]:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE["bert"], special_tokens=BERT_SPECIALS, min_frequency=2, limit_alphabet=200)
    return tok, trainer


def _gpt2_tokenizer() -> tuple[Tokenizer, trainers.Trainer]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE["gpt2"], special_tokens=[GPT2_EOT], min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    return tok, trainer


def _t5_tokenizer() -> tuple[Tokenizer, trainers.Trainer]:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE["t5"] - N_SENTINELS, special_tokens=T5_SPECIALS, unk_token="<unk>", max_piece_length=16,
    )
    return tok, trainer


def _finish(kind: Kind, tok: Tokenizer) -> Tokenizer:
    if kind == "bert":
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
    elif kind == "t5":
        tok.add_special_tokens(SENTINELS)
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))],
        )
    return tok


def train_tokenizer(kind: Kind, texts: Iterable[str]) -> Tokenizer:
    """Train one tokenizer on an iterable of texts."""
    tok, trainer = {"bert": _bert_tokenizer, "gpt2": _gpt2_tokenizer, "t5": _t5_tokenizer}[kind]()
    tok.train_from_iterator(texts, trainer=trainer)
    return _finish(kind, tok)


DEFAULT_OUT = ROOT / "runs" / "tokenizers"
"""Where ``python -m lmviz tokenizers`` writes: a fresh folder, never the shipped models' (their ids would change)."""


def train_all(out_dir: Path, docs: Iterable | None = None) -> dict[Kind, dict]:
    """Train the three tokenizers on the training split of ``docs`` (default: the plays); write ``out_dir/<kind>/tokenizer.json``.

    Refuses a folder that holds a ``model.safetensors``: a new tokenizer numbers its pieces
    differently, so writing it beside a trained model would silently break that model.
    """
    from lmviz.pretrain.corpus import split

    folders = {kind: Path(out_dir) / kind for kind in KINDS}
    for folder in folders.values():
        if (folder / "model.safetensors").exists():
            raise LmvizError(f"{folder / 'model.safetensors'} is a trained model; a new tokenizer.json beside it would "
                             "renumber its tokens. Choose another --out folder.")
    train = split(docs).train
    texts = [str(s) for d in train for s in d.speeches]
    report = {}
    for kind, folder in folders.items():
        start = time.perf_counter()
        tok = train_tokenizer(kind, texts)
        seconds = time.perf_counter() - start
        folder.mkdir(parents=True, exist_ok=True)
        tok.save(str(folder / "tokenizer.json"))
        report[kind] = {"vocab_size": tok.get_vocab_size(), "seconds": round(seconds, 2), "path": str(folder / "tokenizer.json")}
    return report


def load_tokenizer(path: str | Path, notes: list[str] | None = None) -> Tokenizer:
    """A ``tokenizer.json``; a readable error if it is missing or broken.

    A padding or truncation rule saved in the file (sentence-embedding pipelines save ``"Fixed": 128``) is
    switched off: lmviz reads every token a text has and cuts to the model's context itself, saying so. What was
    switched off is appended to ``notes``."""
    path = Path(path)
    if not path.is_file():
        raise LmvizError(f"Tokenizer file {path} is missing.")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception for bad JSON
        raise LmvizError(f"Tokenizer file {path.name} cannot be read: {str(err)[:200]}") from err
    if tok.padding is not None or tok.truncation is not None:
        if notes is not None:
            notes.append(_length_rule_note(tok.padding, tok.truncation))
        tok.no_padding()
        tok.no_truncation()
    return tok


def _length_rule_note(padding: dict | None, truncation: dict | None) -> str:
    """What a saved padding/truncation rule would have done, and what lmviz does instead."""
    rules = []
    if padding is not None:
        length = padding.get("length")
        rules.append(f"pads every text to {length} tokens" if length else "pads texts to the longest")
    if truncation is not None:
        rules.append(f"cuts texts at {truncation.get('max_length')} tokens")
    return (f"Its tokenizer.json {' and '.join(rules)}; lmviz ignores that rule and reads the text's own tokens, cut to "
            "the model's context (padding would add [PAD] positions that change the attention).")


def special_ids(tok: Tokenizer) -> set[int]:
    return {i for i, added in tok.get_added_tokens_decoder().items() if added.special}


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character alphabet back to bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(token: str) -> bytes:
    """The raw bytes behind one byte-level BPE token."""
    table = _byte_decoder()
    return bytes(table[c] for c in token if c in table)


@dataclass(frozen=True)
class Piece:
    """One token of an explained text.

    ``start``/``end`` are character offsets into the original text of its ``sequence`` (0 for the
    text, 1 for a BERT pair's second sentence): ``text[start:end]`` is the source of the piece;
    special tokens added by the template have ``start == end``.
    """

    display: str
    id: int
    start: int
    end: int
    special: bool
    unknown: bool
    continues_word: bool
    sequence: int = 0
    raw_bytes: bytes | None = None
    partial_char: bool = False


@dataclass(frozen=True)
class Explanation:
    kind: Kind
    text: str
    pieces: tuple[Piece, ...]

    @property
    def n_tokens(self) -> int:
        return len(self.pieces)


def _byte_piece(token: str) -> tuple[bytes, str, bool]:
    """A byte-level BPE token's raw bytes, how it reads, and whether it holds only part of a character."""
    raw = token_bytes(token)
    try:
        return raw, raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw, raw.decode("utf-8", errors="replace"), True


def explain(kind: Kind, tok: Tokenizer, text: str, pair: str | None = None) -> Explanation:
    """Every piece of ``text`` (and ``pair``, for BERT) with its id, offsets and what it is."""
    text = safe_text(text)
    pair = safe_text(pair) if pair is not None else None
    enc = tok.encode(text, pair) if pair is not None else tok.encode(text)
    specials = special_ids(tok)
    # the rule is the tokenizer's, not the kind's: a RoBERTa folder's byte-level BPE reads as GPT-2's does
    byte_level = "ByteLevel" in (type(tok.decoder).__name__, type(tok.pre_tokenizer).__name__)
    wordpiece = type(tok.model).__name__ == "WordPiece"
    unks = [] if byte_level else [i for i in (tok.token_to_id(t) for t in ("[UNK]", "<unk>")) if i is not None]
    unk = unks[0] if unks else None
    byte_pieces: dict[int, tuple[bytes, str, bool]] = {}  # a long text repeats its pieces: decode each id once
    pieces = []
    prev_word = None
    for i, (tid, token, (start, end), word, seq) in enumerate(zip(enc.ids, enc.tokens, enc.offsets, enc.word_ids, enc.sequence_ids)):
        special = tid in specials and tid != unk  # [UNK] stands for text, so it is content, not a template token
        raw, partial, display = None, False, token
        if byte_level and not special:
            if tid not in byte_pieces:
                byte_pieces[tid] = _byte_piece(token)
            raw, display, partial = byte_pieces[tid]
        if wordpiece:
            cont = token.startswith("##")
        elif byte_level:
            cont = not special and not display[:1].isspace() and prev_word is not None and word == prev_word
        else:
            cont = not special and not token.startswith("▁")
            source = (pair if seq == 1 else text) or ""
            if token == "▁" and source[start:end].strip(" "):
                end = start  # the word boundary Metaspace adds before the first word stands for no character
        prev_word = word if seq is not None else None
        # a template token belongs to the segment its token_type_id names (BERT's final [SEP] is segment B)
        segment = seq if seq is not None else enc.type_ids[i]
        pieces.append(Piece(display, tid, start, end, special, tid == unk, cont, segment, raw, partial))
    return Explanation(kind, text, tuple(pieces))
