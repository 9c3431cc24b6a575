"""Decoding one token at a time: GPT-2 continuing a prompt, T5's decoder writing from an input.

Each step runs the decoder on the newest token with the KV cache (or, with ``use_cache=False``,
on the whole sequence again), turns the last position's logits into probabilities, lets the
strategy reshape and cut them, and picks a token. A ``Step`` keeps everything the Generation
page draws: the top candidates before and after the strategy, the chosen token and why, the
attention row of the position that made the prediction (and T5's cross-attention row), the KV
cache's shape per layer, the measured time of the step's own cached forward, and the token ids it
read. A recompute of the whole sequence is timed only when asked: ``measure_step`` for the step a
page shows (or ``measure=True`` for every step, which costs several full forwards per token).

Sampling draws from ``numpy.random.default_rng([seed, step])``: the same seed gives the same
text, and a branch (a token forced at step ``k``) leaves every step before ``k`` unchanged.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from lmviz.models.checkpoints import Loaded
from lmviz.errors import LmvizError
from lmviz.analysis.inference import MAX_CHARS, T5_MAX_TARGET, encode
from lmviz.models.record import Want
from lmviz.pretrain.objectives import _token as token_label
from lmviz.analysis.strategies import Shaped, Strategy, pick, shape, step_rng
from lmviz.pretrain.tokenizers import GPT2_EOT, safe_text

if TYPE_CHECKING:
    from lmviz.analysis.beam import Beam

MAX_STEPS = 64
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


def _record_step(index, position, query, shaped: Shaped, chosen_id, draw, forced, strategy: Strategy, label,
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
    return Step(index, position, query, top, chosen, _reason(strategy, shaped, chosen, draw, forced, kept_mass), shaped.kept,
                kept_mass, (at + 1).tolist(), shaped.raw[shaped.order][at].tolist(), tempered[at].tolist(),
                np.cumsum(tempered)[at].tolist(), draw, forced, attention, cache, ms_cached, ms_recompute, inputs, repeats)


def curve_ranks(vocab: int, kept: int) -> np.ndarray:
    """The ranks a curve is drawn at: every one of the first 20, ``CURVE_N`` log-spaced up to ``vocab``, and the
    two either side of the cut (``kept``, ``kept + 1``), so the cut and the mass it keeps are drawn exactly."""
    spaced = np.geomspace(1, vocab, CURVE_N).round().astype(int)
    return np.unique(np.concatenate([np.arange(1, min(vocab, 20) + 1), spaced, [kept, min(kept + 1, vocab)]]))


def _reason(s: Strategy, shaped: Shaped, c: Candidate, draw: float | None, forced: bool, kept_mass: float) -> str:
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


# --- the two decoders ------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Decoder:
    """The decoder side of GPT-2 or T5 as one interface: a forward on new tokens with a cache, or on everything."""

    def __init__(self, loaded: Loaded, text: str, room: int):
        if loaded.kind not in ("gpt2", "t5"):
            raise LmvizError(f"Generation needs a decoder: GPT-2 or T5. {loaded.folder.name} is a {loaded.kind} model (an encoder).")
        self.loaded, self.model = loaded, loaded.model
        self.device = next(self.model.parameters()).device
        self.label = lambda i: token_label(loaded, i)
        self.notes: list[str] = []
        self.source: list[str] = []
        self.encoder_out = None
        if loaded.kind == "gpt2":
            self.start, self.eos = self._prompt(text, room), self.model.config.eos_token_id
            self.limit = self.model.config.n_positions
        else:
            enc = encode(loaded, text)
            self.notes += enc.notes
            self.source = enc.labels
            with torch.inference_mode():
                self.encoder_out = self.model.encode(torch.tensor([enc.ids], device=self.device))
            self.start, self.eos = [self.model.config.decoder_start_token_id], self.model.config.eos_token_id
            self.limit = 1 + T5_MAX_TARGET
        self.vocab_size = self.model.config.vocab_size

    def _prompt(self, text: str, room: int) -> list[int]:
        """``<|endoftext|>`` (where every training document starts) and the prompt's last tokens that leave ``room``."""
        tok = self.loaded.tokenizer
        text = safe_text(text or "")
        if len(text) > MAX_CHARS:
            text = text[-MAX_CHARS:]
        eot = tok.token_to_id(GPT2_EOT)
        ids = tok.encode(text).ids if text.strip() else []
        if not ids:
            self.notes.append(f"The prompt is empty, so GPT-2 starts from {GPT2_EOT} alone, the token that begins "
                              f"every document it read in training.")
        keep = self.model.config.n_positions - 1 - room
        if len(ids) > keep:
            self.notes.append(f"The prompt is longer than GPT-2 can read: it reads at most {self.model.config.n_positions} "
                              f"tokens and {room} are kept free for new ones, so only the last {keep} prompt tokens are used.")
            ids = ids[-keep:]
        return [eot] + ids

    def forward(self, ids: torch.Tensor, cache, want: Want | None):
        if self.loaded.kind == "gpt2":
            return self.model(ids, cache=cache, want=want)
        enc, mask = self.encoder_out
        if cache is None and ids.shape[0] > 1:
            enc = enc.expand(ids.shape[0], -1, -1)
        return self.model(decoder_input_ids=ids, encoder_out=(enc, mask), cache=cache, want=want)

    def timed(self, ids: torch.Tensor, cache, want: Want | None, repeats: int = 1):
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
    def cache_shapes(cache) -> list[dict[str, tuple[int, ...]]]:
        if isinstance(cache, dict):
            return [{"self": tuple(s[0].shape), "cross": tuple(c[0].shape)} for s, c in zip(cache["self"], cache["cross"])]
        return [{"self": tuple(k.shape)} for k, _ in cache]

    @staticmethod
    def reorder(cache, idx: torch.Tensor):
        """The cache of the beams ``idx`` (batch rows), in that order."""
        sel = lambda kv: (kv[0].index_select(0, idx), kv[1].index_select(0, idx))  # noqa: E731
        if isinstance(cache, dict):
            return {"self": [sel(kv) for kv in cache["self"]], "cross": [sel(kv) for kv in cache["cross"]]}
        return [sel(kv) for kv in cache]

    @staticmethod
    def rows(record, b: int = 0) -> dict[str, np.ndarray]:
        """Each kind's last query row for batch row ``b``: ``[layers, heads, keys]``."""
        return {kind: np.stack([p[b, :, -1].numpy() for p in layers]) for kind, layers in record.probs.items()}


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
    beams: list[list["Beam"]] = field(default_factory=list)  # beam search: the live beams after each step
    finished: list["Beam"] = field(default_factory=list)
    text: str = ""

    @property
    def tokens(self) -> list[str]:
        """Every decoder token: the prompt, then each step's choice."""
        return self.prompt + [s.chosen.token for s in self.steps]

    def context(self, step: int) -> list[str]:
        """The decoder tokens step ``step`` could attend to (its attention row's keys)."""
        return self.tokens[: len(self.prompt) + step]


class Decoding:
    """A greedy or sampled run advanced one ``step()`` at a time, with the KV cache kept between steps."""

    def __init__(self, loaded: Loaded, text: str, strategy: Strategy, seed: int = 0, max_steps: int = 20,
                 forced: dict[int, int] | None = None, use_cache: bool = True, measure: bool = False):
        if strategy.name == "beam":
            raise LmvizError("Beam search runs all its steps at once: use generate().")
        self.max_steps = max(1, min(int(max_steps), MAX_STEPS))
        self.dec = _Decoder(loaded, text, self.max_steps)
        strategy, notes = strategy.checked(self.dec.vocab_size)
        if int(max_steps) > MAX_STEPS:
            notes.append(f"At most {MAX_STEPS} steps are generated; {max_steps} were asked for.")
        self.use_cache, self.measure = use_cache, measure
        self.ids = list(self.dec.start)
        self.cache = None
        checked = self._check_forced(forced or {})
        self.gen = Generation(loaded.kind, strategy, int(seed), [self.dec.label(i) for i in self.dec.start], self.dec.source,
                              notes=self.dec.notes + notes, forced=checked)

    def _check_forced(self, forced: dict[int, int]) -> dict[int, int]:
        """Branch choices that exist: a token outside the vocabulary or a step past the limit is dropped, with a note."""
        keep = {int(k): int(v) for k, v in forced.items() if 0 <= int(v) < self.dec.vocab_size and 0 <= int(k) < self.max_steps}
        if len(keep) < len(forced):
            self.dec.notes.append(f"{len(forced) - len(keep)} branch choice(s) name a token outside the vocabulary "
                                  f"(0–{self.dec.vocab_size - 1}) or a step past the limit, so they were ignored.")
        return keep

    @property
    def done(self) -> bool:
        return self.gen.stop_reason is not None

    @torch.inference_mode()
    def step(self) -> Step | None:
        """Choose one more token; None once the run has stopped (``gen.stop_reason`` says why)."""
        if self.done:
            return None
        gen, dec, k = self.gen, self.dec, len(self.gen.steps)
        if k >= self.max_steps:
            gen.stop_reason = f"the step limit ({self.max_steps} steps)"
            return None
        if len(self.ids) >= dec.limit:
            gen.stop_reason = f"the context limit ({dec.limit} tokens)"
            return None
        every = torch.tensor([self.ids], device=dec.device)
        ms_cached = ms_recompute = None
        if self.use_cache:
            new = every if self.cache is None else every[:, -1:]
            out, ms_cached = dec.timed(new, self.cache, ROWS, TIMING_REPEATS if self.measure else 1)
            self.cache = out.cache
            if self.measure:
                _, ms_recompute = dec.timed(every, None, None, TIMING_REPEATS)
        else:
            out, ms_recompute = dec.timed(every, None, ROWS)
        shaped = shape(out.logits[0, -1].float().cpu().numpy(), gen.strategy)
        forced = k in gen.forced
        chosen, draw = (gen.forced[k], None) if forced else pick(shaped, step_rng(gen.seed, k))
        step = _record_step(k, len(self.ids) - 1, dec.label(self.ids[-1]), shaped, chosen, draw, forced, gen.strategy,
                            dec.label, dec.rows(out.record), dec.cache_shapes(out.cache), ms_cached, ms_recompute,
                            [list(self.ids)], TIMING_REPEATS if self.measure else 1)
        gen.steps.append(step)
        self.ids.append(chosen)
        gen.text = self._text()
        if chosen == dec.eos:
            gen.stop_reason = f"the model chose the end-of-text token {step.chosen.token}"
        return step

    def run(self, n: int) -> Generation:
        """Advance until ``n`` steps exist (or the run stops)."""
        while len(self.gen.steps) < min(n, self.max_steps) and self.step() is not None:
            pass
        if len(self.gen.steps) >= self.max_steps and not self.done:
            self.gen.stop_reason = f"the step limit ({self.max_steps} steps)"
        return self.gen

    def _text(self) -> str:
        new = self.ids[len(self.dec.start):]
        return self.dec.loaded.tokenizer.decode(new, skip_special_tokens=False)


def generate(loaded: Loaded, text: str, strategy: Strategy, steps: int = 20, seed: int = 0,
             forced: dict[int, int] | None = None, use_cache: bool = True, measure: bool = False) -> Generation:
    """``steps`` tokens from GPT-2 (continuing ``text``) or T5 (decoding from ``text``) with ``strategy``.

    Each step's ``ms_cached`` is the measured time of its own forward; ``measure=True`` also times it
    best of 3 and a recompute of the whole sequence at every step (slow); ``measure_step`` does that
    for one step, the one a page shows."""
    if strategy.name == "beam":
        from lmviz.analysis.beam import beam_search  # beam.py builds on this module's decoder and records

        return beam_search(loaded, text, strategy, steps, measure)
    return Decoding(loaded, text, strategy, seed, steps, forced, use_cache, measure).run(steps)


@torch.inference_mode()
def measure_step(loaded: Loaded, gen: Generation, text: str, step: int, repeats: int = TIMING_REPEATS) -> Step:
    """Time step ``step`` of ``gen`` (a run of ``loaded`` on ``text``) properly: its forward on the newest
    token with the KV cache of the positions before it, and a recompute of the whole sequence without a
    cache, best of ``repeats`` runs each. Both are real forwards on the ids the step read; the step's
    ``ms_cached``/``ms_recompute`` are filled in (once: a step already timed this way is returned as is)."""
    s = gen.steps[step]
    if s.ms_recompute is not None or not s.inputs:
        return s
    dec = _Decoder(loaded, text, 1)
    every = torch.tensor(s.inputs, device=dec.device)
    if s.index == 0:  # the first step reads the whole prompt; there is nothing cached yet
        new, cache = every, None
    else:
        new, cache = every[:, -1:], dec.forward(every[:, :-1], None, None).cache
    _, ms_cached = dec.timed(new, cache, ROWS, repeats)
    _, s.ms_recompute = dec.timed(every, None, None, repeats)
    s.ms_cached = ms_cached if s.ms_cached is None else min(s.ms_cached, ms_cached)
    s.timed_repeats += repeats
    return s


def branch(loaded: Loaded, gen: Generation, text: str, at: int, token_id: int, steps: int | None = None) -> Generation:
    """The run of ``gen`` with ``token_id`` chosen at step ``at``: steps before ``at`` are the same, later ones new."""
    if gen.strategy.name == "beam":
        raise LmvizError("Branching works with greedy and sampling; beam search keeps its alternatives in the tree.")
    if not 0 <= at <= len(gen.steps):
        raise LmvizError(f"Step {at} does not exist; this run has steps 0–{len(gen.steps) - 1}.")
    forced = {k: v for k, v in gen.forced.items() if k < at} | {at: int(token_id)}
    return generate(loaded, text, gen.strategy, max(steps or len(gen.steps), at + 1), gen.seed, forced)


def parse_forced(text: str) -> tuple[dict[int, int], str | None]:
    """A link's branch choices, ``"4:812,7:93"`` (step:token id), and a note if part of it could not be read."""
    forced, bad = {}, []
    for part in filter(None, (text or "").split(",")):
        try:
            k, v = (int(x) for x in part.split(":"))
            if k < 0 or v < 0:
                raise ValueError
            forced[k] = v
        except ValueError:
            bad.append(part)
    return forced, (f"The link's branch choice {bad[0][:40]!r} is not step:token, so it was ignored." if bad else None)


def format_forced(forced: dict[int, int]) -> str | None:
    return ",".join(f"{k}:{v}" for k, v in sorted(forced.items())) or None


def clamp_step(gen: Generation, step: int) -> tuple[int, str | None]:
    """A step index that exists in ``gen`` and, if it had to move, a note saying so (an old link's step)."""
    last = len(gen.steps) - 1
    if last < 0:
        return 0, None
    if step > last:
        return last, f"Step {step} is past the end of this run (it has {last + 1} steps); showing the last step, {last}."
    if step < 0:
        return 0, f"Step {step} does not exist; showing step 0."
    return step, None


# --- export and measurement --------------------------------------------------------------------------

def step_table(gen: Generation, step: int) -> list[dict]:
    """One row per candidate of step ``step``: the CSV export of the current view."""
    s = gen.steps[step]
    return [{"step": s.index, "rank": c.rank, "token": c.token, "id": c.id, "prob": c.prob, "after_temperature": c.tempered,
             "after_strategy": c.final, "chosen": c.id == s.chosen.id} for c in s.candidates]


def view_data(gen: Generation, step: int, layer: int, head: int | None) -> dict:
    """The current view as plain data (the JSON export): tokens, the step's candidates, its attention row,
    and for beam search the tree of beams with their scores (``beam_levels``)."""
    s = gen.steps[step]
    att = {kind: (rows[layer].mean(0) if head is None else rows[layer, head]).round(6).tolist()
           for kind, rows in s.attention.items()}
    return {"model": gen.kind, "strategy": asdict(gen.strategy), "seed": gen.seed, "forced": gen.forced,
            "prompt_tokens": gen.prompt, "source_tokens": gen.source, "generated": [x.chosen.token for x in gen.steps],
            "text": gen.text, "stop_reason": gen.stop_reason, "step": step, "layer": layer,
            "head": "mean" if head is None else head, "query": s.query, "reason": s.reason,
            "candidates": step_table(gen, step), "attention": att, "attention_keys": {"causal": gen.context(step), "cross": gen.source},
            "kv_cache": s.cache, "ms_cached": s.ms_cached, "ms_recompute": s.ms_recompute,
            **({"beams": beam_levels(gen)} if gen.strategy.name == "beam" else {})}


def beam_levels(gen: Generation) -> list[list[dict]]:
    """Beam search's tree as plain data: per step, each kept beam's tokens, ``score`` (Σ log p), the score it is
    ranked by at the end (``score / length ** length_penalty``), its parent among the previous step's live beams,
    whether it ended, and whether it lies on the winning beam."""
    best = [s.chosen.id for s in gen.steps]
    return [[{"tokens": b.tokens, "ids": b.ids, "score": b.score, "ranked": b.ranked(gen.strategy.length_penalty),
              "parent": b.parent, "finished": b.finished, "on_best": b.ids == best[: len(b.ids)]} for b in level]
            for level in gen.beams]
