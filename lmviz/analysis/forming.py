"""Heads forming during training: a run's float16 snapshots, what one head does at each, and the lens at each step.

A snapshot is ``<model>/snapshots/<step>/`` (``checkpoints.save_snapshot``); it loads like any model, with its
model's tokenizer. Every snapshot's previous-token score of every head on one text is one forward each, so the
page can draw a head's score against the step; the chosen step's attention and lens are one forward more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmviz.analysis.heads import previous_token_score
from lmviz.analysis.lens import lens
from lmviz.analysis.targets import Targets, forward, has_head
from lmviz.errors import LmvizError
from lmviz.models import checkpoints
from lmviz.models.checkpoints import Loaded
from lmviz.models.kinds import kind_of
from lmviz.models.record import Want


@dataclass(frozen=True)
class Snapshot:
    step: int
    fraction: float  # of the run's steps
    figures: dict  # the held-out figures at that step, as training wrote them
    folder: Path


def load_snapshots(folder: str | Path) -> tuple[list[Snapshot], list[Loaded]]:
    """A model folder's snapshots and each loaded for inference, on the device the app uses."""
    from lmviz.models.device import pick_device

    snaps = list_snapshots(folder)
    return snaps, [checkpoints.load(s.folder, pick_device()) for s in snaps]


def list_snapshots(folder: str | Path) -> list[Snapshot]:
    """The snapshots of a model folder, by step (``checkpoints.snapshots``), with their fraction and figures."""
    out = []
    for path in checkpoints.snapshots(folder):
        meta = checkpoints.read_json(path / "snapshot.json")
        fraction = meta.get("fraction", 0.0)
        figures = meta.get("figures") if isinstance(meta.get("figures"), dict) else {}
        out.append(Snapshot(meta["step"], float(fraction) if isinstance(fraction, (int, float)) else 0.0, figures, path))
    return out


def _rows(log: dict, offset: int, upto: float) -> list[tuple[int, float]]:
    rows = log.get("train")
    if not isinstance(rows, list):
        return []
    return [(int(r["step"]) + offset, float(r["loss"])) for r in rows
            if isinstance(r, dict) and isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))
            and np.isfinite(r["loss"]) and r["step"] <= upto]


def phase_logs(log: dict | None) -> list[dict]:
    """A ``train_log.json`` and the logs of the phases it started from (``init``, each holding the one before),
    latest first; a chain that names itself stops after 8."""
    chain: list[dict] = []
    while isinstance(log, dict) and len(chain) < 8:
        chain.append(log)
        init = log.get("init")
        log = init.get("log") if isinstance(init, dict) and "log" in init else init
    return chain


def loss_points(log: dict | None, steps_before: int = 0) -> list[tuple[int, float]]:
    """``(step, training loss)`` from a ``train_log.json``'s ``train`` entries (empty when it has none), counted as the
    snapshots count them: a later phase's after ``steps_before`` (its ``config.json``), and the earlier phases its log
    holds (``init``) before it, each up to the step it kept, as far back as the snapshots' count goes."""
    points: list[tuple[int, float]] = []
    offset, upto = steps_before, math.inf
    chain = phase_logs(log)
    for part, earlier in zip(chain, chain[1:] + [None]):
        points = _rows(part, offset, upto) + points
        best = earlier.get("best") if isinstance(earlier, dict) else None
        kept = best.get("step") if isinstance(best, dict) else None
        if not isinstance(kept, int) or kept > offset:
            break  # the snapshots' count starts with the phase just drawn
        offset, upto = offset - kept, kept
    return points


@dataclass
class Forming:
    """``scores[i, layer, head]``: each head's previous-token score (mean weight on the token just before) on the text
    at snapshot ``steps[i]``; ``chance``: the same under even attention (a diagonal that beats it is forming)."""

    steps: list[int]
    scores: np.ndarray
    chance: float
    attention: str  # the record's kind scored: GPT-2's causal self-attention, BERT's and T5's encoder self-attention

    def best_head(self) -> tuple[int, int]:
        """The head with the highest score at the last snapshot."""
        layer, head = np.unravel_index(int(np.argmax(self.scores[-1])), self.scores.shape[1:])
        return int(layer), int(head)

    def formed_at(self, layer: int, head: int, times: float = 2.0) -> int | None:
        """The first step from which the head scores at least ``times`` chance for good (None: never)."""
        above = self.scores[:, layer, head] >= times * self.chance
        first = None
        for i in range(len(self.steps) - 1, -1, -1):
            if not above[i]:
                break
            first = self.steps[i]
        return first


def _attention(loaded: Loaded, tg: Targets) -> np.ndarray:
    """``[L, H, S, S]``: the first attention kind of ``loaded`` on ``tg``'s input (the text's own tokens)."""
    with torch.inference_mode():
        record = forward(loaded, tg, want=Want(attention=True)).record
    return record.stacked(kind_of(loaded).attention[0]).numpy()


def forming(models: list[Loaded], steps: list[int], tg: Targets) -> Forming:
    """Every head's previous-token score on ``tg``'s text at each snapshot (``models``, in step order). ``tg`` is the
    text as the finished model reads it (its tokenizer is the snapshots' too), so every step reads the same input."""
    if not models:
        raise LmvizError("This model has no training snapshots.")
    kind = kind_of(models[0]).attention[0]
    scores = []
    for m in models:
        stacked = _attention(m, tg)
        scores.append([[previous_token_score(stacked[l, h]) for h in range(stacked.shape[1])] for l in range(stacked.shape[0])])
    n = stacked.shape[-1]
    keep = np.tril(np.ones((n, n))) if kind == "causal" else np.ones((n, n))
    chance = previous_token_score(keep / keep.sum(-1, keepdims=True))
    return Forming(list(steps), np.asarray(scores), chance, kind)


def at_step(loaded: Loaded, tg: Targets, layer: int, head: int):
    """What the page shows at one snapshot: the lens (None for a model without its LM head), one head's attention
    ``[S, S]`` and its ``(queries, keys)``."""
    ln = lens(loaded, tg) if has_head(loaded) else None
    return ln, _attention(loaded, tg)[layer, head], (tg.source_tokens, tg.source_tokens)


def memory_bytes(models: list[Loaded]) -> int:
    """What the loaded snapshots hold in memory: every parameter and buffer, once (tied weights are shared)."""
    seen, total = set(), 0
    for m in models:
        for t in [*m.model.parameters(), *m.model.buffers()]:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total


def forming_data(f: Forming, layer: int, head: int, step: int) -> dict:
    """The view's numbers for the JSON download."""
    return {"steps": f.steps, "attention": f.attention, "layer": layer, "head": head, "step_shown": step,
            "previous_token_score": f.scores[:, layer, head].round(6).tolist(), "chance": f.chance,
            "formed_at_step": f.formed_at(layer, head)}
