"""One head's arithmetic, step by step, from the real numbers a forward pass kept.

For one query position ``i`` of one head::

    dots_j   = q_i · k_j                      (raw dot products)
    scores_j = dots_j · scale (+ bias_ij)     (BERT, GPT-2: scale = 1/√d;  T5: scale = 1, plus its position bias)
    masked_j = scores_j + mask_ij             (mask: 0, or a huge negative number standing for −∞)
    probs_j  = softmax(masked)_j
    output   = Σ_j probs_j · v_j

Everything is recomputed here in float64 from the record's ``q``, ``k`` and ``v``, while the forward
pass computed in float32; so ``probs`` equals the record's own row (``record_probs``) up to float32
rounding, which grows with the scores' size: within ``tolerance`` = 1e-6 × max(1, largest |score| of the
row). The tests hold it for every kind; trained models land below a tenth of it (T5's scores reach ~100).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmviz.errors import LmvizError
from lmviz.models.record import HIDDEN_BELOW, AttentionRecord


@dataclass
class HeadArithmetic:
    """The numbers of one head for one query. Vectors are ``[d]`` and rows are ``[K]`` (keys)."""

    kind: str
    layer: int
    head: int
    query: int
    q: np.ndarray  # [d]
    keys: np.ndarray  # [K, d]
    values: np.ndarray  # [K, d]
    dots: np.ndarray  # [K]  q · k_j
    scale: float  # 1/√d, or 1 for T5
    scaled: np.ndarray  # [K]  dots · scale
    position_bias: np.ndarray | None  # [K]  T5 only
    scores: np.ndarray  # [K]  scaled (+ bias): the record's pre-mask scores
    mask: np.ndarray  # [K]  additive: 0 or a huge negative
    masked: np.ndarray  # [K]  scores + mask
    probs: np.ndarray  # [K]  softmax(masked), recomputed here
    record_probs: np.ndarray  # [K]  the record's own row, for comparison
    output: np.ndarray  # [d]  Σ probs_j v_j

    @property
    def d_head(self) -> int:
        return int(self.q.shape[0])

    @property
    def hidden(self) -> np.ndarray:
        """``[K]`` bool: keys the mask hides from this query."""
        return self.mask <= HIDDEN_BELOW

    @property
    def max_difference(self) -> float:
        """Largest gap between the recomputed softmax row and the record's row."""
        return float(np.abs(self.probs - self.record_probs).max()) if self.probs.size else 0.0

    @property
    def tolerance(self) -> float:
        """How far float32 rounding in the forward pass may put the record's row from this float64 one."""
        visible = self.scores[~self.hidden]
        return 1e-6 * max(1.0, float(np.abs(visible).max()) if visible.size else 1.0)


def check_index(name: str, value: int, count: int) -> int:
    """``value`` as an index into ``count`` things, or a readable error naming the valid range."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise LmvizError(f"The {name} must be a whole number; got {value!r}.")
    if not 0 <= value < count:
        raise LmvizError(f"There is no {name} {value}; this choice has {name}s 0–{count - 1}.")
    return int(value)


def softmax(x: np.ndarray) -> np.ndarray:
    """A numerically stable softmax over the last axis (float64)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def head_arithmetic(record: AttentionRecord, kind: str, layer: int, head: int, query: int, batch: int = 0) -> HeadArithmetic:
    """Walk one head's attention for one query position through every step, from ``record.qkv``.

    The record must have been made with ``Want(qkv=True, scores=True)`` (``ALL`` does).
    """
    if kind not in record.probs:
        raise LmvizError(f"This model has no {kind} attention; it has {', '.join(record.kinds) or 'none'}.")
    if kind not in record.qkv or kind not in record.scores:
        raise LmvizError("This run did not keep the query, key and value vectors; run it with want=ALL.")
    layer = check_index("layer", layer, len(record.qkv[kind]))
    q_all, k_all, v_all = record.qkv[kind][layer]
    head = check_index("head", head, q_all.shape[1])
    query = check_index("query position", query, q_all.shape[2])
    batch = check_index("batch row", batch, q_all.shape[0])
    q = q_all[batch, head, query].double().numpy()
    keys = k_all[batch, head].double().numpy()
    values = v_all[batch, head].double().numpy()
    scale = float(record.scale.get(kind, 1.0))
    dots = keys @ q
    scaled = dots * scale
    bias = None
    if kind in record.position_bias:
        bias = record.position_bias[kind][0, head, query].double().numpy()
    scores = scaled if bias is None else scaled + bias
    mask = record.masks[kind][layer][batch, 0, query].double().numpy()
    masked = scores + mask
    probs = softmax(masked)
    return HeadArithmetic(
        kind=kind, layer=layer, head=head, query=query, q=q, keys=keys, values=values, dots=dots, scale=scale,
        scaled=scaled, position_bias=bias, scores=scores, mask=mask, masked=masked, probs=probs,
        record_probs=record.probs[kind][layer][batch, head, query].double().numpy(), output=probs @ values,
    )
