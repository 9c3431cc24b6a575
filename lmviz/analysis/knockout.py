"""Knock out a head: remove its output from the residual stream and see what the prediction loses.

A head "knocked out" adds nothing: its output is multiplied by 0 before the output projection (what
``transformers``' former ``head_mask`` did by zeroing its probabilities). The change in the loss of each
target (nats; positive = the model got worse) says whether the head matters, which its attention
pattern alone cannot. The every-head grid runs all knock-outs of a text in one batched forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmviz.analysis.targets import Targets, column_losses, forward, require_head
from lmviz.errors import LmvizError
from lmviz.models.checkpoints import Loaded
from lmviz.models.kinds import kind_of

Head = tuple[str, int, int]
"""``(attention kind, layer, head)``; ``head = -1`` is every head of that layer."""


def shape(loaded: Loaded) -> tuple[int, int]:
    """``(layers, heads)`` of every attention kind (our T5's encoder and decoder are equally deep)."""
    cfg = loaded.model.config
    layers = {getattr(cfg, n) for n in ("n_layer", "num_hidden_layers", "num_layers", "num_decoder_layers") if hasattr(cfg, n)}
    heads = next(getattr(cfg, n) for n in ("n_head", "num_attention_heads", "num_heads") if hasattr(cfg, n))
    if len(layers) != 1:
        raise LmvizError("This model's encoder and decoder have different depths; the knock-out grid needs them equal.")
    return layers.pop(), heads


def head_mask(loaded: Loaded, heads: list[Head]) -> dict[str, torch.Tensor]:
    """The model's ``head_mask`` with ``heads`` knocked out; a head that does not exist is a readable error."""
    L, H = shape(loaded)
    masks = {k: torch.ones(L, H) for k in kind_of(loaded).attention}
    for kind, layer, head in heads:
        if kind not in masks:
            raise LmvizError(f"{kind_of(loaded).short} has no {kind} attention; it has {', '.join(masks)}.")
        if not 0 <= layer < L or not -1 <= head < H:
            raise LmvizError(f"There is no layer {layer}, head {head}: this model has layers 0–{L - 1} and heads 0–{H - 1}.")
        masks[kind][layer, slice(None) if head == -1 else head] = 0.0
    return masks


@dataclass
class Knockout:
    """Per column of ``Targets``: the loss (nats) with every head, with ``heads`` knocked out, and the change."""

    heads: list[Head]
    base: np.ndarray
    knocked: np.ndarray

    @property
    def delta(self) -> np.ndarray:
        return self.knocked - self.base

    @property
    def mean_delta(self) -> float:
        d = self.delta[~np.isnan(self.delta)]
        return float(d.mean()) if d.size else float("nan")


def knockout(loaded: Loaded, tg: Targets, heads: list[Head]) -> Knockout:
    """The loss of each target with and without ``heads`` (one batched forward of two rows)."""
    require_head(loaded, "a knock-out")
    if not tg.scored:
        raise LmvizError("No position here has a known target, so there is no loss to change.")
    mask = head_mask(loaded, heads)
    both = {k: torch.stack([torch.ones_like(m), m]) for k, m in mask.items()}
    with torch.inference_mode():
        losses = column_losses(tg, forward(loaded, tg, batch=2, head_mask=both).logits)
    return Knockout(list(heads), losses[0], losses[1])


@dataclass
class Grid:
    """``delta[kind]`` ``[L, H]``: the change of the mean target loss (nats) when that one head is knocked out."""

    kinds: list[str]
    delta: dict[str, np.ndarray]
    base: float

    def strongest(self, n: int = 3) -> list[tuple[Head, float]]:
        """The ``n`` heads whose removal hurts most, with their effect."""
        cells = [((k, int(l), int(h)), float(v)) for k in self.kinds for (l, h), v in np.ndenumerate(self.delta[k])]
        return sorted(cells, key=lambda c: -c[1])[:n]


def every_head(loaded: Loaded, tg: Targets, chunk: int = 16) -> Grid:
    """Each head knocked out alone, all of them in batched forwards of ``chunk`` rows (plus the plain run)."""
    require_head(loaded, "the knock-out grid")
    if not tg.scored:
        raise LmvizError("No position here has a known target, so there is no loss to change.")
    L, H = shape(loaded)
    kinds = list(kind_of(loaded).attention)
    jobs = [None] + [(k, l, h) for k in kinds for l in range(L) for h in range(H)]
    means = []
    with torch.inference_mode():
        for start in range(0, len(jobs), chunk):
            part = jobs[start:start + chunk]
            masks = {k: torch.ones(len(part), L, H) for k in kinds}
            for row, job in enumerate(part):
                if job is not None:
                    masks[job[0]][row, job[1], job[2]] = 0.0
            losses = column_losses(tg, forward(loaded, tg, batch=len(part), head_mask=masks).logits)
            means += list(np.nanmean(losses, axis=1))
    base, rest = means[0], np.asarray(means[1:]).reshape(len(kinds), L, H)
    return Grid(kinds, {k: rest[i] - base for i, k in enumerate(kinds)}, float(base))


def knockout_data(ko: Knockout, tg: Targets, grid: Grid | None) -> dict:
    """The view's numbers for the JSON download."""
    def num(v):
        return None if np.isnan(v) else float(v)

    out = {"knocked_out": [list(h) for h in ko.heads], "columns": tg.column_labels(), "targets": tg.target_tokens,
           "loss_all_heads": [num(v) for v in ko.base], "loss_knocked_out": [num(v) for v in ko.knocked],
           "change": [num(v) for v in ko.delta], "mean_change": num(ko.mean_delta)}
    if grid is not None:
        out["every_head"] = {"mean_loss_all_heads": grid.base,
                             "change_of_mean_loss": {k: grid.delta[k].round(6).tolist() for k in grid.kinds}}
    return out
