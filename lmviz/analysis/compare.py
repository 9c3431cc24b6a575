"""One sentence through an encoder, a decoder and an encoder-decoder, and numbers that tell them apart.

Per layer, averaged over heads (or for one head) and over query positions:

- entropy: ``−Σ p log p`` of a query's attention row, in nats (0 = all on one token; ``log K`` = uniform);
- distance: ``Σ_j p_ij |i − j|``, how many positions away a query looks on average, and ``offset``,
  ``Σ_j p_ij (j − i)``: negative looks back, positive forward (a causal decoder can only look back);
- special: the share of attention on special tokens (``[CLS]``, ``[SEP]``, ``</s>``, ``<pad>``…);
- self: the share a token puts on itself.

Cross-attention (T5's decoder reading the encoder) has no self and no distance: queries and keys
are different sequences, so those two are NaN there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmviz.models.checkpoints import Loaded
from lmviz.errors import LmvizError
from lmviz.analysis.inference import attention_run
from lmviz.models.record import Want
from lmviz.models.kinds import KINDS, kind_of
from lmviz.pretrain.text2text import knows_prefixes, prefixed, split_prefix, strip_punctuation

METRICS = {"entropy": "entropy (nats)", "distance": "mean distance (tokens)", "special": "share to special tokens",
           "self": "share to itself"}
PARTS = {"self": ("encoder", "bidirectional"), "causal": ("decoder", "causal"), "cross": ("cross", "decoder → encoder")}


def series_name(model: str, attention: str) -> str:
    """"GPT-2 (causal)", "T5 encoder (bidirectional)": one model's attention of one kind."""
    kind = kind_of(model)
    stack, how = PARTS[attention]
    return f"{kind.short} ({how})" if len(kind.stacks) == 1 else f"{kind.short} {stack} ({how})"


@dataclass
class View:
    """One model's attention of one kind: ``probs [L, H, Q, K]`` with its token labels."""

    model: str  # bert | gpt2 | t5
    kind: str  # self | causal | cross
    queries: list[str]
    keys: list[str]
    probs: np.ndarray
    special_keys: list[bool]
    hidden: np.ndarray | None = None  # [Q, K] bool: where the mask hid a key (the record's own mask); None if nowhere

    @property
    def name(self) -> str:
        return series_name(self.model, self.kind)

    @property
    def layers(self) -> int:
        return self.probs.shape[0]

    @property
    def heads(self) -> int:
        return self.probs.shape[1]

    @property
    def keep(self) -> np.ndarray | None:
        """``[Q, K]`` bool: where a query may attend, as the record's mask says; None where nothing is hidden."""
        return None if self.hidden is None else ~self.hidden

    def matrix(self, layer: int, head: int | None) -> np.ndarray:
        """``[Q, K]`` of one layer, for one head or the mean of the heads; out-of-range indices are clamped."""
        a = self.probs[min(max(layer, 0), self.layers - 1)]
        return a.mean(0) if head is None else a[min(max(head, 0), self.heads - 1)]


def attention_stats(probs: np.ndarray, special_keys: list[bool] | np.ndarray, same_sequence: bool,
                    head: int | None = None) -> dict[str, np.ndarray]:
    """``probs [L, H, Q, K]`` → ``{metric: [L]}`` (see the module docstring); ``head=None`` averages the heads."""
    p = np.asarray(probs, dtype=np.float64)
    if head is not None:
        p = p[:, head: head + 1]
    L, _, Q, K = p.shape
    logp = np.log(np.where(p > 0, p, 1.0))
    out = {"entropy": -(p * logp).sum(-1).mean((1, 2)),
           "special": p[..., np.asarray(special_keys, dtype=bool)].sum(-1).mean((1, 2))}
    if same_sequence:
        offset = np.arange(K)[None, :] - np.arange(Q)[:, None]  # j − i
        out["distance"] = (p * np.abs(offset)).sum(-1).mean((1, 2))
        out["offset"] = (p * offset).sum(-1).mean((1, 2))
        out["self"] = np.einsum("lhqq->lhq", p[..., :Q]).mean((1, 2)) if K >= Q else np.full(L, np.nan)
    else:
        out["distance"] = out["offset"] = out["self"] = np.full(L, np.nan)
    return out


@dataclass
class Comparison:
    text: str
    views: list[View]
    notes: list[str] = field(default_factory=list)

    def view(self, model: str, kind: str) -> View | None:
        return next((v for v in self.views if v.model == model and v.kind == kind), None)

    def stats(self, head: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        """``{series name: {metric: [L]}}``; a head beyond a model's heads falls back to the mean of its heads."""
        return {v.name: attention_stats(v.probs, v.special_keys, v.kind != "cross",
                                        head if head is not None and head < v.heads else None) for v in self.views}

    def table(self, head: int | None = None) -> list[dict]:
        """The stats as rows (model, attention, layer, metric values): the CSV export."""
        rows = []
        for v in self.views:
            s = attention_stats(v.probs, v.special_keys, v.kind != "cross", head if head is not None and head < v.heads else None)
            for layer in range(v.layers):
                rows.append({"series": v.name, "model": v.model, "attention": v.kind, "layer": layer,
                             **{m: (None if np.isnan(s[m][layer]) else round(float(s[m][layer]), 6)) for m in (*METRICS, "offset")}})
        return rows


def reads_punctuate(loaded: Loaded, text: str) -> bool:
    """Whether an encoder-decoder trained text-to-text reads ``text`` as a ``punctuate:`` example (not when the text
    names a task itself, or has no words to punctuate)."""
    return (kind_of(loaded).reads_target and knows_prefixes(loaded) and split_prefix(text)[0] is None
            and bool(strip_punctuation(text)))


def compare(models: dict[str, Loaded], text: str, punctuate: bool = True) -> Comparison:
    """Run ``text`` through each of ``models`` (keyed ``bert``, ``gpt2``, ``t5``; any may be missing).

    T5's decoder reads the same sentence (teacher-forced, after its start token), so its causal
    triangle and its cross-attention are over the student's words, not over what T5 would write. With ``punctuate``,
    a T5 trained text-to-text reads it as ``punctuate:`` does (``reads_punctuate``): its encoder the sentence
    lower-cased without punctuation after the prefix, its decoder the sentence as written, so its cross-attention
    shows which input word each written word looks at.
    """
    if not (text or "").strip():
        raise LmvizError("The text is empty: type a sentence to compare how the models attend to it.")
    views, notes = [], []
    for kind in KINDS.values():
        loaded = models.get(kind.name)
        if loaded is None:
            if kind.shipped:
                notes.append(f"No {kind.name} model is loaded, so it is left out.")
            continue
        source = prefixed("punctuate", strip_punctuation(text)) if punctuate and reads_punctuate(loaded, text) else text
        run = attention_run(loaded, source, target=text, want=Want(attention=True, scores=True))  # a decoder reads the sentence too
        for note in run.notes:
            notes.append(f"{kind.short}: {note}")
        for att in run.record.kinds:
            queries, keys = run.axes(att)
            special = run.special["decoder" if att == "causal" else "encoder"]
            keep = run.record.keep(att).numpy()
            views.append(View(kind.name, att, queries, keys, run.record.stacked(att).numpy(), list(special),
                              None if keep.all() else ~keep))
    return Comparison(text, views, notes)


def view_data(comparison: Comparison, layer: int, head: int | None) -> dict:
    """The current view as plain data (the JSON export): each model's tokens, its matrix at ``layer``/``head``, the stats."""
    return {"text": comparison.text, "layer": layer, "head": "mean" if head is None else head,
            "views": [{"series": v.name, "queries": v.queries, "keys": v.keys,
                       "attention": v.matrix(layer, head).round(6).tolist()} for v in comparison.views],
            "stats": comparison.table(head)}
