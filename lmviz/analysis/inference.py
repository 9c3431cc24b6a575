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
from lmviz.analysis.prefixes import prefix_notes
from lmviz.models.kinds import T5_MAX_INPUT, T5_MAX_TARGET, device_of, kind_of  # noqa: F401 (the limits' old address)
from lmviz.pretrain.tokenizers import explain, safe_text, token_bytes

MAX_CHARS = 200_000  # longer texts are cut before tokenizing; no model reads this far anyway
FIGURES = Want(attention=True, scores=True, qkv=True)
"""What the pages' figures and one head's arithmetic read from a run (no hidden states)."""


def label(display: str) -> str:
    """A token as an axis label: spaces and newlines made visible, nothing interpreted as markup."""
    return display.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def token_label(loaded: Loaded, i: int) -> str:
    """A vocabulary entry as a label; a byte-level vocabulary (GPT-2's ``Ġthe``) shown as the text it stands for."""
    kind = kind_of(loaded)
    raw = loaded.tokenizer.id_to_token(int(i)) or "?"
    if kind.byte_level and raw not in kind.prefix:
        data = token_bytes(raw)
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError:  # part of a character: show its bytes, as BPE sees them
            raw = "⟨" + " ".join(f"{b:02X}" for b in data) + "⟩"
    return label(raw)


@dataclass
class Encoded:
    ids: list[int]
    labels: list[str]
    type_ids: list[int]
    special: list[bool]
    notes: list[str] = field(default_factory=list)


def context_limit(loaded: Loaded, stack: str = "encoder") -> int:
    return kind_of(loaded).context(loaded.model.config, stack)


def encode(loaded: Loaded, text: str, pair: str | None = None, *, stack: str = "encoder", add_special: bool = True) -> Encoded:
    """Tokenize for ``loaded``'s model, truncated to its context (BERT pairs: the longer side first). Without the
    kind's prefix: ``model_input`` adds it."""
    kind = kind_of(loaded)
    text = safe_text(text)
    notes = []
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
        notes.append(f"The text was cut to its first {MAX_CHARS:,} characters.")
    if not text.strip() and not kind.prefix:
        raise LmvizError("The text is empty: type a sentence to see what the model does with it.")
    tok = loaded.tokenizer
    limit = context_limit(loaded, stack)
    exp = explain(kind.name, tok, text, pair if kind.reads_pair else None)
    pieces = list(exp.pieces)
    if not add_special:
        pieces = [p for p in pieces if not (p.special and p.display == "</s>")]  # T5's closing </s>
    n = len(pieces)
    if n > limit:
        pieces = kind.truncate(pieces, limit, add_special)
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


def model_input(loaded: Loaded, text: str, pair: str | None = None) -> Encoded:
    """What the model reads of ``text`` as in training and on every page: the kind's prefix (GPT-2's
    ``<|endoftext|>``, where every training document starts), then the text, cut to the context. An encoder-decoder's
    input says what its task prefix means to this model (``prefixes.prefix_notes``)."""
    kind = kind_of(loaded)
    told = prefix_notes(loaded, text) if kind.reads_target else []
    enc = encode(loaded, text, pair, stack=kind.text_stack)
    enc.notes[:0] = told
    if not kind.prefix:
        return enc
    if not enc.ids:
        enc.notes.append(f"The prompt is empty, so {kind.short} starts from {' '.join(kind.prefix)}.")
    n = context_limit(loaded, kind.text_stack) - len(kind.prefix)
    tok = loaded.tokenizer
    return Encoded([tok.token_to_id(t) for t in kind.prefix] + enc.ids[:n], list(kind.prefix) + enc.labels[:n],
                   [0] * len(kind.prefix) + enc.type_ids[:n], [True] * len(kind.prefix) + enc.special[:n], enc.notes)


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

    The stack that reads text (BERT's and T5's encoder, GPT-2's decoder) reads ``text`` (BERT: and ``pair``);
    an encoder-decoder's decoder reads ``target`` if given, else its own greedy output (up to 24 tokens).
    ``causal=True`` removes BERT's bidirectional view or is ignored for models that are causal already.
    """
    kind = kind_of(loaded)
    first = kind.text_stack
    enc = model_input(loaded, text, pair)
    tokens, ids, special, notes = {first: enc.labels}, {first: enc.ids}, {first: enc.special}, list(enc.notes)
    if "decoder" in kind.stacks and first != "decoder":
        tok = loaded.tokenizer
        start = kind.decoder_start(loaded.model.config)
        if target is not None and target.strip():
            tgt = encode(loaded, target, stack="decoder")
            room = context_limit(loaded, "decoder") - len(start)
            ids["decoder"] = start + tgt.ids[:room]
            tokens["decoder"] = [label(tok.id_to_token(i)) for i in start] + tgt.labels[:room]
            notes += tgt.notes
        else:
            ids["decoder"] = greedy_t5(loaded, enc.ids, 24)
            tokens["decoder"] = [label(tok.id_to_token(i) or "?") for i in ids["decoder"]]  # no source text to point at
            notes.append("The decoder side shows the model's own greedy output.")
        specials = {tok.token_to_id(t) for t in ("<pad>", "</s>")}
        special["decoder"] = [i in specials for i in ids["decoder"]]
    out = kind.forward(loaded.model, ids, enc.type_ids, want, causal)
    return AttentionRun(kind.name, tokens, ids, out.record, notes, enc.type_ids if kind.reads_pair else [], special)


@torch.inference_mode()
def greedy_t5(loaded: Loaded, input_ids: list[int], max_new: int) -> list[int]:
    """An encoder-decoder's decoder start followed by its greedy output from ``input_ids`` (stops at the end
    token), with the KV cache."""
    kind, model = kind_of(loaded), loaded.model
    source = kind.encode_source(model, input_ids)
    ids, cache = kind.decoder_start(model.config), None
    device = device_of(model)
    for _ in range(max_new):
        out = kind.step(model, torch.tensor([ids[-1:]], device=device), cache, None, source)
        cache = out.cache
        nxt = int(out.logits[0, -1].argmax())
        ids.append(nxt)
        if nxt == model.config.eos_token_id:
            break
    return ids


def vocab_size(loaded: Loaded) -> int:
    """How many tokens the model chooses among (its output layer's size, which may exceed the tokenizer's)."""
    return int(loaded.model.config.vocab_size)
