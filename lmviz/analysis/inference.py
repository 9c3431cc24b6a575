"""Text in, attention record out: what every page calls to run a model on a user's text.

Texts longer than a model's context are truncated to it, and the run says so in ``notes``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lmviz.models.checkpoints import Loaded
from lmviz.errors import LmvizError
from lmviz.models.record import ALL, AttentionRecord, Want
from lmviz.pretrain.tokenizers import GPT2_EOT, explain, safe_text

MAX_CHARS = 200_000  # longer texts are cut before tokenizing; no model reads this far anyway
T5_MAX_INPUT = 128
T5_MAX_TARGET = 64
FIGURES = Want(attention=True, scores=True, qkv=True)
"""What the pages' figures and one head's arithmetic read from a run (no hidden states)."""


def label(display: str) -> str:
    """A token as an axis label: spaces and newlines made visible, nothing interpreted as markup."""
    return display.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


@dataclass
class Encoded:
    ids: list[int]
    labels: list[str]
    type_ids: list[int]
    special: list[bool]
    notes: list[str] = field(default_factory=list)


def context_limit(loaded: Loaded, stack: str = "encoder") -> int:
    cfg = loaded.model.config
    if loaded.kind == "bert":
        return cfg.max_position_embeddings
    if loaded.kind == "gpt2":
        return cfg.n_positions
    return T5_MAX_INPUT if stack == "encoder" else T5_MAX_TARGET


def encode(loaded: Loaded, text: str, pair: str | None = None, *, stack: str = "encoder", add_special: bool = True) -> Encoded:
    """Tokenize for ``loaded``'s model, truncated to its context (BERT pairs: the longer side first)."""
    text = safe_text(text)
    notes = []
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
        notes.append(f"The text was cut to its first {MAX_CHARS:,} characters.")
    if not text.strip() and not (loaded.kind == "gpt2"):
        raise LmvizError("The text is empty: type a sentence to see what the model does with it.")
    tok = loaded.tokenizer
    limit = context_limit(loaded, stack)
    exp = explain(loaded.kind, tok, text, pair if loaded.kind == "bert" else None)
    pieces = list(exp.pieces)
    if loaded.kind == "t5" and not add_special:
        pieces = [p for p in pieces if not (p.special and p.display == "</s>")]
    if loaded.kind == "gpt2":
        eot = tok.token_to_id(GPT2_EOT)
        if not pieces:
            notes.append(f"The prompt is empty, so GPT-2 starts from {GPT2_EOT}.")
            return Encoded([eot], [GPT2_EOT], [0], [True], notes)
    n = len(pieces)
    if n > limit:
        if loaded.kind == "bert":
            pieces = _truncate_bert(pieces, limit)
        elif loaded.kind == "t5" and add_special:
            pieces = pieces[: limit - 1] + pieces[-1:]
        else:
            pieces = pieces[:limit]
        notes.append(f"The text has {n} tokens; this model reads at most {limit}, so only the first {len(pieces)} are shown.")
    sources = (text, safe_text(pair) if pair is not None else "")
    return Encoded([p.id for p in pieces], [piece_label(p, sources, tok) for p in pieces], [p.sequence for p in pieces],
                   [p.special for p in pieces], notes)


def piece_label(piece, sources: tuple[str, str], tok) -> str:
    """A piece's axis label. An unknown piece is labelled one way for every model and stack: the unknown token
    with the characters it stands for, ``<unk> (<)`` or ``[UNK] (漢)``."""
    if not piece.unknown:
        return label(piece.display)
    source = sources[piece.sequence][piece.start:piece.end] if piece.sequence in (0, 1) else ""
    unk = tok.id_to_token(piece.id)
    return f"{unk}\u00a0({label(source)})" if source else unk  # a no-break space: label() would show a plain one as ␣


def encode_gpt2(loaded: Loaded, text: str) -> Encoded:
    """GPT-2's input as in training and on the Masking and Generation pages: ``<|endoftext|>`` (where every
    training document starts), then the text, cut to the context."""
    enc = encode(loaded, text, stack="decoder")
    if enc.labels == [GPT2_EOT] and enc.special == [True]:
        return enc  # the empty prompt is <|endoftext|> alone already
    n = context_limit(loaded, "decoder") - 1
    return Encoded([loaded.tokenizer.token_to_id(GPT2_EOT)] + enc.ids[:n], [GPT2_EOT] + enc.labels[:n],
                   [0] + enc.type_ids[:n], [True] + enc.special[:n], enc.notes)


def _truncate_bert(pieces, limit):
    a = [p for p in pieces if p.sequence == 0 and not p.special]
    b = [p for p in pieces if p.sequence == 1 and not p.special]
    cls, seps = pieces[0], [p for p in pieces if p.special and p is not pieces[0]]
    room = limit - 1 - len(seps)
    while len(a) + len(b) > room:
        (a if len(a) >= len(b) else b).pop()
    return [cls, *a, seps[0], *b, *seps[1:]] if b or len(seps) > 1 else [cls, *a, *seps]


@dataclass
class AttentionRun:
    """A model's forward on a text, ready for every figure.

    ``tokens["encoder"]`` labels BERT's and T5's encoder positions, ``tokens["decoder"]`` GPT-2's
    and T5's decoder positions; ``axes(kind)`` gives (query labels, key labels) for a kind.
    """

    kind: str
    tokens: dict[str, list[str]]
    ids: dict[str, list[int]]
    record: AttentionRecord
    notes: list[str]
    type_ids: list[int] = field(default_factory=list)
    special: dict[str, list[bool]] = field(default_factory=dict)

    def head(self, kind: str, layer: int, head: int) -> np.ndarray:
        """``[Q, K]``: one head's attention, as numpy for a figure."""
        return self.record.attention(kind, layer)[head].numpy()

    def heads(self, kind: str) -> np.ndarray:
        """``[L, H, Q, K]``: every head of every layer of one kind."""
        return self.record.stacked(kind).numpy()

    def position_bias(self, kind: str) -> np.ndarray | None:
        """T5's relative position bias ``[H, Q, K]`` for ``self`` or ``causal``; None for models without one."""
        bias = self.record.position_bias.get(kind)
        return None if bias is None else bias[0].numpy()

    def axes(self, kind: str) -> tuple[list[str], list[str]]:
        if kind == "self":
            return self.tokens["encoder"], self.tokens["encoder"]
        if kind == "causal":
            return self.tokens["decoder"], self.tokens["decoder"]
        return self.tokens["decoder"], self.tokens["encoder"]


@torch.inference_mode()
def attention_run(loaded: Loaded, text: str, pair: str | None = None, target: str | None = None,
                  want: Want = ALL, causal: bool = False) -> AttentionRun:
    """Run ``loaded`` on ``text`` and keep the whole record.

    BERT reads ``text`` (and ``pair``); GPT-2 reads ``text``; T5 encodes ``text`` and decodes
    ``target`` if given, else its own greedy output (up to 24 tokens). ``causal=True`` removes
    BERT's bidirectional view or is ignored for models that are causal already.
    """
    model = loaded.model
    device = next(model.parameters()).device
    if loaded.kind == "bert":
        enc = encode(loaded, text, pair)
        out = model(torch.tensor([enc.ids], device=device), torch.tensor([enc.type_ids], device=device), want=want, causal=causal)
        return AttentionRun("bert", {"encoder": enc.labels}, {"encoder": enc.ids}, out.record, enc.notes, enc.type_ids,
                            {"encoder": enc.special})
    if loaded.kind == "gpt2":
        enc = encode_gpt2(loaded, text)
        out = model(torch.tensor([enc.ids], device=device), want=want)
        return AttentionRun("gpt2", {"decoder": enc.labels}, {"decoder": enc.ids}, out.record, enc.notes, [],
                            {"decoder": enc.special})
    enc = encode(loaded, text)
    tok = loaded.tokenizer
    start = model.config.decoder_start_token_id
    if target is not None and target.strip():
        tgt = encode(loaded, target, stack="decoder")
        dec_ids = [start] + tgt.ids[: T5_MAX_TARGET - 1]
        dec_labels = [label(tok.id_to_token(start))] + tgt.labels[: T5_MAX_TARGET - 1]
        notes = enc.notes + tgt.notes
    else:
        dec_ids = greedy_t5(loaded, enc.ids, 24)
        dec_labels = [label(tok.id_to_token(i) or "?") for i in dec_ids]  # the model's own output has no source text
        notes = enc.notes + ["The decoder side shows the model's own greedy output."]
    out = model(torch.tensor([enc.ids], device=device), torch.tensor([dec_ids], device=device), want=want)
    specials = {tok.token_to_id(t) for t in ("<pad>", "</s>")}
    return AttentionRun("t5", {"encoder": enc.labels, "decoder": dec_labels}, {"encoder": enc.ids, "decoder": dec_ids},
                        out.record, notes, [], {"encoder": enc.special, "decoder": [i in specials for i in dec_ids]})


@torch.inference_mode()
def greedy_t5(loaded: Loaded, input_ids: list[int], max_new: int) -> list[int]:
    """The decoder start token followed by T5's greedy output (stops at ``</s>``), with the KV cache."""
    model = loaded.model
    device = next(model.parameters()).device
    encoder_out = model.encode(torch.tensor([input_ids], device=device))
    ids, cache = [model.config.decoder_start_token_id], None
    for _ in range(max_new):
        out = model(decoder_input_ids=torch.tensor([[ids[-1]]], device=device), encoder_out=encoder_out, cache=cache)
        cache = out.cache
        nxt = int(out.logits[0, -1].argmax())
        ids.append(nxt)
        if nxt == model.config.eos_token_id:
            break
    return ids
