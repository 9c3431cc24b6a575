"""Named heads: the heads ``python -m lmviz evaluate`` found, as presets for the Attention page, each measured
against chance on the text the preset shows.

``assets/models/evaluation.json`` is read defensively: a missing file, a missing probe or a
malformed entry gives fewer presets, never an error. The indices refer to the shipped checkpoints.

A head's score only means something beside what attention with no pattern at all would score: a query that
spreads its weight evenly over the keys it may see (``1/visible`` each). ``NamedHead.chance`` is that
baseline on the same text, and a head is ``found`` only when its score is at least ``CLEARLY`` times it;
otherwise the page offers it as the best candidate, at chance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmviz.models import checkpoints
from lmviz.models.checkpoints import Loaded
from lmviz.errors import LmvizError
from lmviz.analysis.inference import attention_run
from lmviz.models.kinds import kind_of
from lmviz.models.record import Want

CLEARLY = 2.0  # a head does its job on a text when it scores at least twice what even attention would
REPEATED = "But soft, what light through yonder window breaks? It is the east, and Juliet is the sun."
TEXTS = {
    "previous": "Now is the winter of our discontent made glorious summer by this sun of York.",
    "induction": f"{REPEATED} {REPEATED}",
    "sink": ("To be, or not to be, that is the question.", "Whether 'tis nobler in the mind to suffer."),
}
PROBES = {  # evaluation.json's probe → (the preset's name, its text, its pair, whether it ranks several candidates)
    "previous_token_head": ("previous-token head", TEXTS["previous"], None, False),
    "induction_head": ("induction head", TEXTS["induction"], None, False),
    "sink_heads": ("[CLS]/[SEP] sink #{rank}", *TEXTS["sink"], True),
}


@dataclass(frozen=True)
class NamedHead:
    """One head worth a look: where it is, how strongly it does its job on ``text`` beside chance, and what it does."""

    name: str
    kind: str  # the model kind: bert, gpt2
    layer: int
    head: int
    score: float  # on ``text`` (and ``pair``): the share of attention that goes where this job sends it
    chance: float  # the same share under even attention over the keys each query may see, on the same text
    what: str  # one plain sentence for the page: what such a head does
    measure: str  # what ``score`` measures, e.g. "weight on the token just before"
    text: str
    pair: str | None = None
    evaluated: float | None = None  # evaluate's score on held-out text, as written in evaluation.json

    @property
    def found(self) -> bool:
        return self.score >= CLEARLY * self.chance


# --- scores of one head [Q, K] and their chance baselines ------------------------------------------

def even_attention(keep: np.ndarray) -> np.ndarray:
    """``[Q, K]``: attention spread evenly over the keys each query may see (the chance pattern)."""
    keep = np.asarray(keep, dtype=float)
    return keep / keep.sum(-1, keepdims=True)


def previous_token_score(probs: np.ndarray) -> float:
    """Mean weight each query (from position 1 on) puts on the token just before it."""
    return float(np.diagonal(probs, offset=-1).mean())


def induction_targets(ids: list[int]) -> list[tuple[int, int]]:
    """``(query, key)`` pairs: each token that appeared before, and the token that followed its latest earlier copy."""
    out, last = [], {}
    for t, i in enumerate(ids):
        if i in last and last[i] + 1 < t:
            out.append((t, last[i] + 1))
        last[i] = t
    return out


def induction_score(probs: np.ndarray, ids: list[int]) -> float:
    """Mean weight a repeated token puts on the token that followed its earlier copy (NaN if nothing repeats)."""
    pairs = induction_targets(ids)
    return float(np.mean([probs[q, k] for q, k in pairs])) if pairs else float("nan")


def sink_score(probs: np.ndarray, special: list[bool]) -> float:
    """Mean share of each query's weight that goes to the special tokens ([CLS], [SEP])."""
    return float(probs[:, np.asarray(special, dtype=bool)].sum(-1).mean())


# --- evaluation.json --------------------------------------------------------------------------------

def _index(entry) -> tuple[int, int, float | None] | None:
    """``[layer, head, score]`` as written by evaluate, or None if it is not that shape."""
    if not isinstance(entry, (list, tuple)) or len(entry) < 2:
        return None
    layer, head = entry[0], entry[1]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (layer, head)):
        return None
    score = entry[2] if len(entry) > 2 and isinstance(entry[2], (int, float)) else None
    return layer, head, score


def read_evaluation(path: Path | None = None) -> dict:
    """``evaluation.json`` (default: the shipped one), or {} when it is missing or unreadable."""
    try:
        return checkpoints.read_json(Path(path) if path is not None else checkpoints.evaluation_path())
    except (LmvizError, OSError):
        return {}


def _probes(kind: str, source: Path | dict | None) -> dict:
    data = source if isinstance(source, dict) else read_evaluation(source)
    entry = data.get(kind)
    probes = entry.get("probes") if isinstance(entry, dict) else None
    return probes if isinstance(probes, dict) else {}


def named_heads(loaded: Loaded, source: Path | dict | None = None) -> list[NamedHead]:
    """The named heads of ``loaded`` (a shipped BERT or GPT-2) that evaluate found, from ``evaluation.json`` at
    ``source`` (default: the shipped one) or from its contents already read, each measured on its preset text beside chance. Empty if
    evaluate has not run, found none, or names a head this model does not have.

    BERT's sink candidates: those found, or only the best one when none beats chance."""
    probes = _probes(loaded.kind, source)
    runs, out = {}, []
    for probe in kind_of(loaded).head_probes:
        name, text, pair, ranked = PROBES[probe]  # ranked candidates (BERT's sinks): those found, or the best one
        raw = probes.get(probe)
        found_here = []
        for rank, one in enumerate((raw if isinstance(raw, list) else []) if ranked else [raw]):
            found = _index(one)
            if found is None:
                continue
            if (text, pair) not in runs:
                runs[text, pair] = attention_run(loaded, text, pair, want=Want(attention=True, scores=True))  # scores: the record keeps its mask
            head = _measure(name.format(rank=rank + 1), runs[text, pair], *found, text, pair)
            if head is not None:
                found_here.append(head)
        out += ([h for h in found_here if h.found] or found_here[:1]) if ranked else found_here
    return out


def _measure(name: str, run, layer: int, head: int, evaluated: float | None, text: str, pair: str | None) -> NamedHead | None:
    kind = run.record.kinds[0]
    if layer >= run.record.n_layers(kind) or head >= run.record.n_heads(kind):
        return None
    probs, even = run.head(kind, layer, head), even_attention(run.record.keep(kind).numpy())
    if name.startswith("previous"):
        return NamedHead(name, run.kind, layer, head, previous_token_score(probs), previous_token_score(even),
                         "Each token looks mostly at the token just before it: a diagonal one step below the main one.",
                         "weight on the token just before", text, pair, evaluated)
    if name.startswith("induction"):
        ids = run.ids["decoder"]
        return NamedHead(name, run.kind, layer, head, induction_score(probs, ids), induction_score(even, ids),
                         "In the repeated half, each token looks at the token that followed its earlier copy, so the "
                         "model can continue a pattern it has seen: a diagonal stripe in the lower-left block.",
                         "weight on the token after the earlier copy", text, pair, evaluated)
    special = run.special["encoder"]
    return NamedHead(name, run.kind, layer, head, sink_score(probs, special), sink_score(even, special),
                     "Most tokens put their weight on [CLS] or [SEP]: a head with nothing useful to do parks its "
                     "attention on a token that is always there (vertical stripes).",
                     "weight on [CLS] and [SEP]", text, pair, evaluated)
