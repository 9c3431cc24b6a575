"""Named heads: the heads ``python -m lmviz evaluate`` found, as presets for the Attention page.

``assets/models/evaluation.json`` is read defensively: a missing file, a missing probe or a
malformed entry gives fewer presets, never an error. The indices refer to the shipped checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmviz import checkpoints
from lmviz.checkpoints import ASSETS
from lmviz.errors import LmvizError

EVALUATION = ASSETS / "evaluation.json"
REPEATED = "But soft, what light through yonder window breaks? It is the east, and Juliet is the sun."
TEXTS = {
    "previous": "Now is the winter of our discontent made glorious summer by this sun of York.",
    "induction": f"{REPEATED} {REPEATED}",
    "sink": ("To be, or not to be, that is the question.", "Whether 'tis nobler in the mind to suffer."),
}


@dataclass(frozen=True)
class NamedHead:
    """One head worth a look: where it is, how strongly it does its job, and a text that shows it."""

    name: str
    kind: str  # the model kind: bert, gpt2
    layer: int
    head: int
    score: float | None
    what: str  # one plain sentence for the page
    text: str
    pair: str | None = None
    strong_from: float = 0.0  # a score below this is a weak candidate, and the page says so

    @property
    def weak(self) -> bool:
        return self.score is not None and self.score < self.strong_from


def _index(entry) -> tuple[int, int, float | None] | None:
    """``[layer, head, score]`` as written by evaluate, or None if it is not that shape."""
    if not isinstance(entry, (list, tuple)) or len(entry) < 2:
        return None
    layer, head = entry[0], entry[1]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (layer, head)):
        return None
    score = entry[2] if len(entry) > 2 and isinstance(entry[2], (int, float)) else None
    return layer, head, score


def read_evaluation(path: Path = EVALUATION) -> dict:
    """``evaluation.json``, or {} when it is missing or unreadable."""
    try:
        return checkpoints.read_json(Path(path))
    except (LmvizError, OSError):
        return {}


def named_heads(kind: str, source: Path | dict | None = EVALUATION) -> list[NamedHead]:
    """The named heads of the shipped model of ``kind`` (empty if evaluate has not run or found none), from
    ``evaluation.json`` at ``source`` or from its contents already read."""
    data = source if isinstance(source, dict) else read_evaluation(source) if source is not None else {}
    entry = data.get(kind)
    probes = entry.get("probes") if isinstance(entry, dict) else None
    if not isinstance(probes, dict):
        return []
    out = []
    if kind == "gpt2":
        found = _index(probes.get("previous_token_head"))
        if found:
            out.append(NamedHead("previous-token head", "gpt2", *found,
                                 "Each token looks mostly at the token just before it: a diagonal one step below the main one.",
                                 TEXTS["previous"], strong_from=0.3))
        found = _index(probes.get("induction_head"))
        if found:
            out.append(NamedHead("induction head", "gpt2", *found,
                                 "In the repeated half, each token looks at the token that followed its earlier copy, "
                                 "so the model can continue a pattern it has seen: a diagonal stripe in the lower-left block.",
                                 TEXTS["induction"], strong_from=0.2))
    elif kind == "bert":
        sinks = probes.get("sink_heads")
        for rank, raw in enumerate(sinks if isinstance(sinks, list) else []):
            found = _index(raw)
            if found:
                out.append(NamedHead(f"[CLS]/[SEP] sink #{rank + 1}", "bert", *found,
                                     "Most tokens put their weight on [CLS] or [SEP]: a head with nothing useful to do "
                                     "parks its attention on a token that is always there (vertical stripes).",
                                     *TEXTS["sink"], strong_from=0.3))
    return out
