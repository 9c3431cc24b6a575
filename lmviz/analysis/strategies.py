"""What a decoding strategy does to one next-token distribution: greedy, temperature, top-k, top-p, beam.

``Strategy.checked`` turns any settings (from a link, say) into valid ones and says what it changed;
``shape`` reshapes and cuts the probabilities, ``pick`` chooses a token (seeded per step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from lmviz.analysis.arithmetic import softmax

from lmviz.errors import LmvizError

STRATEGIES = ("greedy", "temperature", "top_k", "top_p", "beam")
STRATEGY_NAMES = {"greedy": "greedy", "temperature": "temperature sampling", "top_k": "top-k sampling",
                  "top_p": "top-p (nucleus) sampling", "beam": "beam search"}
USES = {"greedy": (), "temperature": ("temperature",), "top_k": ("temperature", "top_k"),
        "top_p": ("temperature", "top_p"), "beam": ("beam_width", "length_penalty")}  # the settings each strategy reads
MAX_BEAM = 8
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 5.0


# --- strategies: pure functions of one logits vector -----------------------------------------------

@dataclass(frozen=True)
class Strategy:
    """How a token is chosen from the next-token distribution.

    ``temperature`` reshapes every sampling strategy (``softmax(logits / T)``); ``top_k`` and
    ``top_p`` then cut the tail and renormalise. Beam search ranks finished beams by
    ``sum log p / length ** length_penalty``.
    """

    name: str = "greedy"
    temperature: float = 1.0
    top_k: int = 20
    top_p: float = 0.9
    beam_width: int = 3
    length_penalty: float = 1.0

    def checked(self, vocab_size: int) -> tuple["Strategy", list[str]]:
        """The strategy with every setting in range, and a note for each clamped value that this strategy uses
        (a greedy link with ``t=0`` is clamped quietly: greedy never reads the temperature)."""
        if self.name not in STRATEGIES:
            raise LmvizError(f"Unknown strategy {self.name!r}; choose one of {', '.join(STRATEGIES)}.")
        notes, s = {}, self
        t = self.temperature
        if not (isinstance(t, (int, float)) and math.isfinite(t)) or t < MIN_TEMPERATURE:
            notes["temperature"] = (f"Temperature {t} is not above 0 (dividing the logits by it is undefined; greedy is "
                                    f"the limit T → 0), so the smallest temperature, {MIN_TEMPERATURE}, is used.")
            s = replace(s, temperature=MIN_TEMPERATURE)
        elif t > MAX_TEMPERATURE:
            notes["temperature"] = f"Temperature {t} is above {MAX_TEMPERATURE}; {MAX_TEMPERATURE} is used."
            s = replace(s, temperature=MAX_TEMPERATURE)
        if self.top_k < 1:
            notes["top_k"] = f"top-k = {self.top_k} keeps no token; top-k = 1 is used."
            s = replace(s, top_k=1)
        elif self.top_k > vocab_size:
            notes["top_k"] = f"top-k = {self.top_k} is larger than the vocabulary ({vocab_size} tokens); all {vocab_size} are kept."
            s = replace(s, top_k=vocab_size)
        p = self.top_p
        if not (isinstance(p, (int, float)) and math.isfinite(p)) or p <= 0 or p > 1:
            clamped = 1.0 if isinstance(p, (int, float)) and math.isfinite(p) and p > 1 else 0.01
            notes["top_p"] = f"top-p must lie in (0, 1]; {p} is outside, so p = {clamped} is used."
            s = replace(s, top_p=clamped)
        if self.beam_width < 1:
            notes["beam_width"] = f"Beam width {self.beam_width} keeps no beam; width 1 (the same as greedy) is used."
            s = replace(s, beam_width=1)
        elif self.beam_width > MAX_BEAM:
            notes["beam_width"] = f"Beam width {self.beam_width} is more than {MAX_BEAM}; {MAX_BEAM} is used."
            s = replace(s, beam_width=MAX_BEAM)
        if not math.isfinite(self.length_penalty) or abs(self.length_penalty) > 5:
            notes["length_penalty"] = f"Length penalty {self.length_penalty} is outside −5…5; 1.0 is used."
            s = replace(s, length_penalty=1.0)
        return s, [note for setting, note in notes.items() if setting in USES[self.name]]


@dataclass
class Shaped:
    """One next-token distribution through a strategy; every array is ``[vocab]``.

    ``raw = softmax(logits)``, ``tempered = softmax(logits / T)`` (equal to ``raw`` for greedy),
    ``final`` what the token is drawn from: zero outside the ``kept`` most likely tokens, summing to 1.
    ``order`` sorts the vocabulary by ``tempered``, most likely first.
    """

    raw: np.ndarray
    tempered: np.ndarray
    final: np.ndarray
    order: np.ndarray
    kept: int


def shape(logits, strategy: Strategy) -> Shaped:
    """Apply ``strategy`` (already ``checked``; greedy or sampling) to one logits vector. Beam search ranks whole
    beams rather than reshaping one distribution: ``lmviz.analysis.beam.beam_view`` draws its steps."""
    if strategy.name == "beam":
        raise LmvizError("Beam search does not reshape one distribution; lmviz.analysis.beam draws its steps.")
    z = np.asarray(logits, dtype=np.float64)
    raw = softmax(z)
    tempered = raw if strategy.name == "greedy" else softmax(z / strategy.temperature)
    order = np.argsort(-tempered, kind="stable")
    if strategy.name == "greedy":
        kept = 1
    elif strategy.name == "top_k":
        kept = min(strategy.top_k, z.size)
    elif strategy.name == "top_p":
        cum = np.cumsum(tempered[order])
        kept = min(int(np.searchsorted(cum, strategy.top_p, side="left")) + 1, z.size)  # first prefix reaching p
    else:
        kept = z.size
    final = np.zeros_like(tempered)
    final[order[:kept]] = tempered[order[:kept]]
    final /= final.sum()
    return Shaped(raw, tempered, final, order, kept)


def pick(shaped: Shaped, rng: np.random.Generator | None) -> tuple[int, float | None]:
    """The chosen token id and the uniform draw that chose it (None when only one token is kept).

    The kept tokens lie end to end on [0, 1) in order of probability; the draw lands in one slice.
    """
    if shaped.kept == 1 or rng is None:
        return int(shaped.order[0]), None
    ids = shaped.order[: shaped.kept]
    cum = np.cumsum(shaped.final[ids])
    u = float(rng.random())
    i = min(int(np.searchsorted(cum, u, side="right")), len(ids) - 1)
    return int(ids[i]), u


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The draw of step ``step``: independent of every other step, so a branch keeps what came before it."""
    return np.random.default_rng([int(seed) % 2**32, int(step)])
