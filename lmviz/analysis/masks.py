"""The attention masks themselves, read from real forward passes, and what removing one does.

A mask says, for each query position (row) and key position (column), whether the query may
attend to the key. Every matrix here is the additive mask a model really applied (``record.masks``),
turned into a bool: True = may attend, False = hidden (the model added −∞ there).

The experiment swaps a model's mask for the other one: GPT-2 without its causal mask (every token
sees the future, including the token it must predict) and BERT under a causal mask (every token
loses its right-hand context). Both are real forward passes; the losses say what each model makes
of it. A model trained with its causal mask never saw the next token, so it never learned to copy
it: removing the mask shows it the answer, but its loss does not collapse. ``gpt2_without_mask``
takes any GPT-2, so a twin trained without the mask can be put beside the shipped one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmviz.models import checkpoints
from lmviz.models.checkpoints import Loaded
from lmviz.errors import LmvizError
from lmviz.analysis.inference import AttentionRun, encode, model_input
from lmviz.models.kinds import Kind, device_of, kind_of
from lmviz.models.record import AttentionRecord, Want, additive_mask, causal_keep

ATTENTION_TITLES = {"self": "bidirectional self-attention", "causal": "causal self-attention", "cross": "cross-attention"}
STACK_OF = {"self": "encoder", "causal": "decoder", "cross": "decoder → encoder"}


def mask_title(kind: Kind, attention: str) -> str:
    """"GPT-2: causal self-attention", "T5 decoder → encoder: cross-attention"."""
    where = kind.short if len(kind.stacks) == 1 else f"{kind.short} {STACK_OF[attention]}"
    return f"{where}: {ATTENTION_TITLES[attention]}"


@dataclass
class MaskMatrix:
    """One mask as a picture: ``keep [Q, K]`` (True = may attend) with the tokens on both axes."""

    title: str
    kind: str
    keep: np.ndarray
    queries: list[str]
    keys: list[str]
    segments: list[int] = field(default_factory=list)  # BERT pairs: the key's sentence (0 = A, 1 = B)


def mask_matrices(run: AttentionRun) -> list[MaskMatrix]:
    """Every mask of a run: BERT's and T5's encoder self-attention, GPT-2's and T5's causal, T5's cross."""
    out = []
    for kind in run.record.kinds:
        queries, keys = run.axes(kind)
        segments = list(run.type_ids) if 1 in run.type_ids else []  # a sentence pair's segments
        out.append(MaskMatrix(mask_title(kind_of(run.kind), kind), kind, run.record.keep(kind).numpy(), queries, keys, segments))
    return out


@dataclass
class PaddedBatch:
    """BERT's forward pass on a padded batch: one mask matrix per text and the record (batch row = text)."""

    matrices: list[MaskMatrix]
    record: AttentionRecord

    @property
    def most_padded(self) -> int:
        """The batch row with the most hidden ``[PAD]`` keys (the one that shows the padding mask at work)."""
        return int(np.argmin([m.keep[0].sum() for m in self.matrices]))


@torch.inference_mode()
def bert_padded_batch(loaded: Loaded, texts: list[str]) -> PaddedBatch:
    """BERT on several texts in one batch: shorter ones are padded with ``[PAD]``, which the mask hides.

    Returns one matrix per text, all of the batch's length, read from the real forward pass, and its record.
    """
    if kind_of(loaded).role != "encoder":
        raise LmvizError("The padding example needs a BERT model.")
    encs = [encode(loaded, t) for t in texts]
    width = max(len(e.ids) for e in encs)
    pad = loaded.tokenizer.token_to_id("[PAD]")
    pad = loaded.model.config.pad_token_id if pad is None else pad
    ids = torch.tensor([e.ids + [pad] * (width - len(e.ids)) for e in encs])
    real = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in encs])
    device = device_of(loaded.model)
    rec = loaded.model(ids.to(device), attention_mask=real.to(device), want=Want(attention=True, scores=True, qkv=True)).record
    out = []
    for b, e in enumerate(encs):
        labels = e.labels + ["[PAD]"] * (width - len(e.ids))
        out.append(MaskMatrix(f"sentence {b + 1} of the batch ({len(e.ids)} tokens + {width - len(e.ids)} padding)",
                              "self", rec.keep("self", b).numpy(), labels, labels))
    return PaddedBatch(out, rec)


TWIN_OF = "gpt2"  # the shipped model the twin was trained on from (it shares its tokenizer)
TWIN = "gpt2-no-mask"
"""The shipped GPT-2 trained on a little further with no causal mask (``python -m lmviz train gpt2 --init assets/models/gpt2
--no-causal-mask --steps 400 --batch-size 16 --seq-len 128 --short-frac 0 --warmup 20 --lr 1e-3 --out
assets/models/gpt2-no-mask``): it learned to copy the next token, so it shows what the mask prevents."""
CLEAR_CHANGE = 1.0  # nats: a mean loss change smaller than this is not called cheating (or reliance on context)


@dataclass
class MaskExperiment:
    """One model under its own mask and under the other one (real forward passes of the same text).

    ``own``/``swapped``: attention per layer ``[L, H, T, T]``; ``loss_*``: mean loss in nats over
    ``scored`` positions, ``per_token_*`` ``[T]`` (NaN where not scored).
    """

    kind: str
    tokens: list[str]
    own_name: str
    swapped_name: str
    metric: str
    own: np.ndarray
    swapped: np.ndarray
    per_token_own: np.ndarray
    per_token_swapped: np.ndarray
    notes: list[str]

    @property
    def loss_own(self) -> float:
        return float(np.nanmean(self.per_token_own))

    @property
    def loss_swapped(self) -> float:
        return float(np.nanmean(self.per_token_swapped))

    @property
    def loss_change(self) -> float:
        """Mean loss under the swapped mask minus under the model's own (nats; negative = better)."""
        return self.loss_swapped - self.loss_own

    @property
    def clear_change(self) -> bool:
        """Whether the loss moved by at least ``CLEAR_CHANGE`` nats, either way."""
        return abs(self.loss_change) >= CLEAR_CHANGE

    def next_token_weight(self, which: str) -> np.ndarray:
        """``[T - 1]``: the weight query ``i`` puts on key ``i + 1`` (for GPT-2 the answer it must predict), averaged
        over layers and heads."""
        a = self.own if which == "own" else self.swapped
        return np.diagonal(a, offset=1, axis1=-2, axis2=-1).mean(axis=(0, 1))

    def answer_head(self) -> tuple[int, int]:
        """(layer, head) that puts the most weight on the next token without the model's own mask."""
        per_head = np.diagonal(self.swapped, offset=1, axis1=-2, axis2=-1).mean(-1)
        layer, head = np.unravel_index(int(per_head.argmax()), per_head.shape)
        return int(layer), int(head)

    def future_share(self, which: str) -> float:
        """Mean attention weight on keys after the query (above the diagonal), over layers, heads and queries."""
        a = self.own if which == "own" else self.swapped
        above = np.triu(np.ones(a.shape[-2:], dtype=bool), 1)
        return float((a * above).sum(-1).mean())


def mask_experiment(loaded: Loaded, text: str) -> MaskExperiment:
    """The model's own mask swapped for the other one, as its kind's ``experiment`` says (None: it has none)."""
    return {"no mask": gpt2_without_mask, "causal": bert_with_causal_mask}[kind_of(loaded).experiment](loaded, text)


def _stacked(record: AttentionRecord, kind: str) -> np.ndarray:
    return record.stacked(kind).numpy()


def twin_folder() -> Path | None:
    """The folder of the GPT-2 twin trained without its mask, or None when this installation has none."""
    folder = checkpoints.shipped(TWIN)
    return folder if (folder / "config.json").is_file() else None


def load_twin(device=None) -> Loaded | None:
    """The GPT-2 twin, loaded (outside the app: tests and the benchmark), or None."""
    folder = twin_folder()
    return None if folder is None else checkpoints.load(folder, device)


@torch.inference_mode()
def gpt2_without_mask(loaded: Loaded, text: str) -> MaskExperiment:
    """GPT-2 on ``text`` with its causal mask and without it; loss = next-token cross-entropy per position."""
    if kind_of(loaded).experiment != "no mask":
        raise LmvizError("This experiment needs a GPT-2 model.")
    enc = model_input(loaded, text)
    if len(enc.ids) < 2:
        raise LmvizError("Type at least two tokens: the loss needs a next token to predict.")
    device = device_of(loaded.model)
    ids = torch.tensor([enc.ids], device=device)
    runs = [loaded.model(ids, want=Want(attention=True), causal=c) for c in (True, False)]
    losses = []
    for out in runs:
        per = F.cross_entropy(out.logits[0, :-1].float(), ids[0, 1:], reduction="none").cpu().numpy()
        losses.append(np.append(per, np.nan))  # the last position has no next token
    return MaskExperiment("gpt2", enc.labels, "with the causal mask", "without any mask", "next-token loss",
                          _stacked(runs[0].record, "causal"), _stacked(runs[1].record, "causal"), *losses, enc.notes)


def _bert_layers(model, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """BERT's layers on embedded tokens ``x [B, T, hidden]`` under an additive ``mask`` (no record, no logits)."""
    for layer in model.bert.encoder.layer:
        x = layer(x, mask, None, None)
    return x


def fill_in_loss(loaded: Loaded, ids: torch.Tensor, types: torch.Tensor, scored: list[int], causal: bool) -> np.ndarray:
    """``[T]``: ``−log p(token_i)`` when position ``i`` alone is replaced by ``[MASK]`` (NaN where not scored).

    Only each hole's position goes through the vocabulary projection. Bidirectionally every hole
    changes every position, so each hole is one batch row. Under the causal mask a hole at ``i`` changes
    nothing before ``i``: the positions before it are the unmasked text's, computed once, and each hole
    is one extra ``[MASK]`` query (at position ``i``) that sees them and itself. One sequence of
    ``T + holes`` tokens gives the same numbers as one row per hole.
    """
    model, mask_id = loaded.model, loaded.tokenizer.token_to_id("[MASK]")
    T, n = ids.shape[1], len(scored)
    where = torch.tensor(scored, device=ids.device)
    if causal:
        masked = model.bert.embeddings(torch.full_like(ids, mask_id), types)[:, where]  # [MASK] at each hole's position
        x = torch.cat([model.bert.embeddings(ids, types), masked], dim=1)
        keep = torch.zeros(T + n, T + n, dtype=torch.bool, device=ids.device)
        keep[:T, :T] = causal_keep(T, T, ids.device)
        keep[T:, :T] = torch.arange(T, device=ids.device)[None, :] < where[:, None]
        keep[T:, T:] = torch.eye(n, dtype=torch.bool, device=ids.device)
        h = _bert_layers(model, x, additive_mask(keep[None, None]))[0, T:]
    else:
        holes = ids.repeat(n, 1)
        holes[torch.arange(n), where] = mask_id
        h = _bert_layers(model, model.bert.embeddings(holes, types.repeat(n, 1)), None)[torch.arange(n), where]
    per = np.full(T, np.nan)
    per[scored] = F.cross_entropy(model.cls.predictions(h).float(), ids[0, where], reduction="none").cpu().numpy()
    return per


@torch.inference_mode()
def bert_with_causal_mask(loaded: Loaded, text: str) -> MaskExperiment:
    """BERT on ``text`` bidirectionally and under a causal mask; loss = fill-in loss per word piece.

    The fill-in loss of position ``i`` is ``−log p(token_i)`` when ``i`` alone is replaced by
    ``[MASK]`` (``fill_in_loss``), so it measures how much context the model can use.
    """
    if kind_of(loaded).experiment != "causal":
        raise LmvizError("This experiment needs a BERT model.")
    enc = encode(loaded, text)
    scored = [i for i, s in enumerate(enc.special) if not s]
    if not scored:
        raise LmvizError("Type at least one word: special tokens alone have nothing to fill in.")
    device = device_of(loaded.model)
    ids = torch.tensor([enc.ids], device=device)
    types = torch.tensor([enc.type_ids], device=device)
    attention, losses = [], []
    for causal in (False, True):
        attention.append(_stacked(loaded.model(ids, types, want=Want(attention=True), causal=causal).record, "self"))
        losses.append(fill_in_loss(loaded, ids, types, scored, causal))
    return MaskExperiment("bert", enc.labels, "bidirectional (its own)", "with a causal mask", "fill-in loss",
                          attention[0], attention[1], *losses, enc.notes)
