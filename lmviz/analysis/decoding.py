"""One decoding step at a time, for every strategy: the decoder, the record of a step, and a run's steps.

``Decoder`` runs the decoder side of a model that writes (GPT-2 continuing a prompt, T5's decoder writing
from an input) as one interface: a forward on new tokens with the KV cache, or on the whole sequence.
What differs between models is the kind's (``lmviz.models.kinds``): where decoding starts, the step's
forward, the limit. ``record_step`` keeps everything the Generation page draws of one step: the top
candidates before and after the strategy, the chosen token and why, the attention row of the position
that made the prediction (and T5's cross-attention row), the KV cache's shape per layer, the measured time
of the step's own forward, and the token ids it read. Sampling (``lmviz.analysis.generation``) and beam
search (``lmviz.analysis.beam``) both build on this module.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lmviz.analysis.inference import MAX_CHARS, model_input, token_label
from lmviz.analysis.strategies import Shaped, Strategy
from lmviz.errors import LmvizError
from lmviz.models.checkpoints import Loaded
from lmviz.models.kinds import device_of, kind_of
from lmviz.models.record import KVCache, Want
from lmviz.pretrain.tokenizers import safe_text

MAX_STEPS = 64  # tokens one run writes at most
TOP_N = 12  # candidates kept per step for the bar chart
CURVE_N = 200  # log-spaced ranks sampled over the whole vocabulary for the sorted-probability and cumulative curves
ROWS = Want(attention=True)
TIMING_REPEATS = 3  # a step's time is the best of 3 runs of the same forward


@dataclass
class Candidate:
    id: int
    token: str
    prob: float  # the model's probability, softmax(logits)
    tempered: float  # after the temperature
    final: float  # what the strategy draws from (0 if cut)
    rank: int  # 1 = the model's most likely token

    @property
    def kept(self) -> bool:
        return self.final > 0


@dataclass
class Step:
    """Step ``index`` reads the token at ``position`` (``query``) and chooses the next one.

    ``attention[kind]`` is the query's row ``[layers, heads, keys]`` (``causal`` over the
    decoder's tokens so far, for T5 also ``cross`` over the input); ``cache`` the KV cache after
    the step, per layer ``{"self": shape, "cross": shape}``; times in milliseconds.
    """

    index: int
    position: int
    query: str
    candidates: list[Candidate]
    chosen: Candidate
    reason: str
    kept: int
    kept_mass: float  # the model's probability mass on the kept tokens
    curve_ranks: list[int]  # ranks sampled from 1 to the vocabulary size (``curve_ranks``), with the cut at kept / kept + 1
    curve_raw: list[float]  # the model's probability at each of those ranks (tokens sorted by the tempered order)
    curve_tempered: list[float]
    curve_cumulative: list[float]  # the tempered mass of the tokens up to that rank
    draw: float | None
    forced: bool
    attention: dict[str, np.ndarray]
    cache: list[dict[str, tuple[int, ...]]]
    ms_cached: float | None
    ms_recompute: float | None
    inputs: list[list[int]] = field(default_factory=list)  # the decoder ids the step read, one row per beam
    timed_repeats: int = 1  # ms_cached is the best of this many runs

    @property
    def logprob(self) -> float:
        return math.log(max(self.chosen.prob, 1e-300))

    def cache_positions(self) -> int:
        return self.cache[0]["self"][2] if self.cache else 0


def record_step(index, position, query, shaped: Shaped, chosen_id, draw, forced, strategy: Strategy, label,
                 attention, cache, ms_cached, ms_recompute, inputs: list[list[int]], repeats: int = 1) -> Step:
    ranks = np.empty_like(shaped.order)
    ranks[shaped.order] = np.arange(1, shaped.order.size + 1)

    def cand(i: int) -> Candidate:
        return Candidate(int(i), label(int(i)), float(shaped.raw[i]), float(shaped.tempered[i]), float(shaped.final[i]),
                         int(ranks[i]))

    top = [cand(i) for i in shaped.order[:TOP_N]]
    chosen = next((c for c in top if c.id == chosen_id), None) or cand(chosen_id)
    if chosen not in top:
        top.append(chosen)
    kept_mass = float(shaped.raw[shaped.final > 0].sum())
    at = curve_ranks(shaped.order.size, shaped.kept) - 1
    tempered = shaped.tempered[shaped.order]
    return Step(index, position, query, top, chosen, reason(strategy, shaped, chosen, draw, forced, kept_mass), shaped.kept,
                kept_mass, (at + 1).tolist(), shaped.raw[shaped.order][at].tolist(), tempered[at].tolist(),
                np.cumsum(tempered)[at].tolist(), draw, forced, attention, cache, ms_cached, ms_recompute, inputs, repeats)


def curve_ranks(vocab: int, kept: int) -> np.ndarray:
    """The ranks a curve is drawn at: every one of the first 20, ``CURVE_N`` log-spaced up to ``vocab``, and the
    two either side of the cut (``kept``, ``kept + 1``), so the cut and the mass it keeps are drawn exactly."""
    spaced = np.geomspace(1, vocab, CURVE_N).round().astype(int)
    return np.unique(np.concatenate([np.arange(1, min(vocab, 20) + 1), spaced, [kept, min(kept + 1, vocab)]]))


def reason(s: Strategy, shaped: Shaped, c: Candidate, draw: float | None, forced: bool, kept_mass: float) -> str:
    """Why the step chose ``c``, in one sentence for the page."""
    tok = f"«{c.token}»"
    if forced:
        return f"You chose {tok} here (a branch); the model gave it p = {c.prob:.3f}, rank {c.rank}."
    if s.name == "greedy":
        return f"Greedy takes the most likely token: {tok}, p = {c.prob:.3f}."
    if s.name == "beam":
        kept = ("it was this beam's only continuation to stay among the best" if shaped.kept == 1 else
                f"{shaped.kept} continuations of this beam stayed among the {s.beam_width} best")
        return f"{tok} (p = {c.prob:.3f}, rank {c.rank}) is on the winning beam: {kept}, and this one won in the end."
    if draw is None:
        return f"Only one token survives the cut, so {tok} is taken (p = {c.prob:.3f})."
    cut = {"temperature": f"Temperature {s.temperature:g} reshaped the distribution",
           "top_k": f"Top-k kept the {shaped.kept} most likely tokens ({kept_mass:.0%} of the model's probability) and renormalised them",
           "top_p": f"Top-p kept the {shaped.kept} most likely tokens, the fewest whose probability reaches p = {s.top_p:g}, "
                    f"and renormalised them"}[s.name]
    return (f"{cut}; the random draw u = {draw:.3f} landed in the slice of {tok} (rank {c.rank}: p = {c.prob:.3f} from the "
            f"model, {c.final:.3f} after the strategy).")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Decoder:
    """The decoder side of a model that writes, on one text: where decoding starts (``start``), the encoder's
    output for an encoder-decoder (computed once), and a forward on new tokens with the KV cache."""

    def __init__(self, loaded: Loaded, text: str, room: int):
        self.kind = kind_of(loaded)
        if not self.kind.writes:
            raise LmvizError(f"Generation needs a decoder: GPT-2 or T5. {loaded.folder.name} is a {loaded.kind} model "
                             f"({self.kind.role}).")
        self.loaded, self.model = loaded, loaded.model
        config = self.model.config
        self.device = device_of(self.model)
        self.label = lambda i: token_label(loaded, i)
        self.notes: list[str] = []
        self.source: list[str] = []
        self.encoder_out = None
        self.start = self.kind.decoder_start(config)
        if "encoder" in self.kind.stacks:
            enc = model_input(loaded, text)  # the encoder's input, with what its task prefix means to this model
            self.notes += enc.notes
            self.source = enc.labels
            self.encoder_out = self.kind.encode_source(self.model, enc.ids)
        else:
            self.start = self.start + self._prompt(text, room)
        self.eos = config.eos_token_id
        self.limit = self.kind.decoder_limit(config)
        self.vocab_size = config.vocab_size

    def _prompt(self, text: str, room: int) -> list[int]:
        """The kind's prefix (GPT-2's ``<|endoftext|>``, where every training document starts) and the prompt's last
        tokens that leave ``room``."""
        tok, kind = self.loaded.tokenizer, self.kind
        text = safe_text(text or "")
        if len(text) > MAX_CHARS:
            text = text[-MAX_CHARS:]
        ids = kind.encode(tok, text) if text.strip() else kind.encode(tok, "")
        prefix, ids = ids[: len(kind.prefix)], ids[len(kind.prefix):]
        if not ids:
            self.notes.append(f"The prompt is empty, so {kind.short} starts from {' '.join(kind.prefix)} alone, the token "
                              f"that begins every document it read in training.")
        limit = self.kind.decoder_limit(self.model.config)
        keep = limit - len(prefix) - room
        if len(ids) > keep:
            self.notes.append(f"The prompt is longer than {kind.short} can read: it reads at most {limit} "
                              f"tokens and {room} are kept free for new ones, so only the last {keep} prompt tokens are used.")
            ids = ids[-keep:]
        return prefix + ids

    def forward(self, ids: torch.Tensor, cache: KVCache | None, want: Want | None):
        """The model on ``ids [beams, T]``: the new tokens after ``cache``, or the whole sequence with ``cache=None``."""
        return self.kind.step(self.model, ids, cache, want, self.encoder_out)

    def timed(self, ids: torch.Tensor, cache: KVCache | None, want: Want | None, repeats: int = 1):
        """The forward's output and its time in ms, the best of ``repeats`` runs (other work on the machine adds noise)."""
        best, out = math.inf, None
        for _ in range(repeats):
            _sync(self.device)
            t0 = time.perf_counter()
            out = self.forward(ids, cache, want)
            _sync(self.device)
            best = min(best, (time.perf_counter() - t0) * 1000)
        return out, best

    @staticmethod
    def rows(record, b: int = 0) -> dict[str, np.ndarray]:
        """Each kind's last query row for batch row ``b``: ``[layers, heads, keys]``."""
        return {kind: np.stack([p[b, :, -1].numpy() for p in layers]) for kind, layers in record.probs.items()}

    @torch.inference_mode()
    def measure(self, s: Step, repeats: int = TIMING_REPEATS) -> Step:
        """Time step ``s`` properly: its forward on the newest token with the KV cache of the positions before it,
        and a recompute of the whole sequence without a cache, best of ``repeats`` runs each. Both are real forwards
        on the ids the step read; the step's ``ms_cached``/``ms_recompute`` are filled in (once: a step already timed
        this way is returned as is)."""
        if s.ms_recompute is not None or not s.inputs:
            return s
        every = torch.tensor(s.inputs, device=self.device)
        if s.index == 0:  # the first step reads the whole prompt; there is nothing cached yet
            new, cache = every, None
        else:
            new, cache = every[:, -1:], self.forward(every[:, :-1], None, None).cache
        _, ms_cached = self.timed(new, cache, ROWS, repeats)
        _, s.ms_recompute = self.timed(every, None, None, repeats)
        s.ms_cached = ms_cached if s.ms_cached is None else min(s.ms_cached, ms_cached)
        s.timed_repeats += repeats
        return s


def measure_step(gen: Generation, step: int, repeats: int = TIMING_REPEATS) -> Step:
    """Time step ``step`` of ``gen`` with the decoder that ran it (see ``Decoder.measure``): the step a page shows."""
    return gen.decoder.measure(gen.steps[step], repeats)


@dataclass
class Generation:
    """What a run produced: ``steps`` (one per new token), the tokens it read and wrote, and why it stopped."""

    kind: str
    strategy: Strategy
    seed: int
    prompt: list[str]  # GPT-2: <|endoftext|> and the prompt; T5: the decoder start token
    source: list[str]  # T5's encoder input; empty for GPT-2
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    forced: dict[int, int] = field(default_factory=dict)
    beams: list[list] = field(default_factory=list)  # beam search: the live ``beam.Beam``s after each step
    finished: list = field(default_factory=list)
    text: str = ""
    decoder: "Decoder | None" = field(default=None, repr=False, compare=False)  # the decoder that ran it, to time a step

    @property
    def tokens(self) -> list[str]:
        """Every decoder token: the prompt, then each step's choice."""
        return self.prompt + [s.chosen.token for s in self.steps]

    def context(self, step: int) -> list[str]:
        """The decoder tokens step ``step`` could attend to (its attention row's keys)."""
        return self.tokens[: len(self.prompt) + step]
