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

from dataclasses import asdict

import torch

from lmviz.analysis.beam import beam_search
from lmviz.analysis.decoding import MAX_STEPS, ROWS, TIMING_REPEATS, Decoder, Generation, Step, measure_step, record_step
from lmviz.analysis.strategies import Strategy, pick, shape, step_rng
from lmviz.errors import LmvizError
from lmviz.models.checkpoints import Loaded


class Decoding:
    """A greedy or sampled run advanced one ``step()`` at a time, with the KV cache kept between steps."""

    def __init__(self, loaded: Loaded, text: str, strategy: Strategy, seed: int = 0, max_steps: int = 20,
                 forced: dict[int, int] | None = None, use_cache: bool = True, measure: bool = False):
        if strategy.name == "beam":
            raise LmvizError("Beam search runs all its steps at once: use generate().")
        self.max_steps = max(1, min(int(max_steps), MAX_STEPS))
        self.dec = Decoder(loaded, text, self.max_steps)
        strategy, notes = strategy.checked(self.dec.vocab_size)
        if int(max_steps) > MAX_STEPS:
            notes.append(f"At most {MAX_STEPS} steps are generated; {max_steps} were asked for.")
        self.use_cache, self.measure = use_cache, measure
        self.ids = list(self.dec.start)
        self.cache = None
        checked = self._check_forced(forced or {})
        self.gen = Generation(loaded.kind, strategy, int(seed), [self.dec.label(i) for i in self.dec.start], self.dec.source,
                              notes=self.dec.notes + notes, forced=checked, decoder=self.dec)

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
        step = record_step(k, len(self.ids) - 1, dec.label(self.ids[-1]), shaped, chosen, draw, forced, gen.strategy,
                           dec.label, dec.rows(out.record), out.cache.shapes(), ms_cached, ms_recompute,
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
        return beam_search(loaded, text, strategy, steps, measure)
    return Decoding(loaded, text, strategy, seed, steps, forced, use_cache, measure).run(steps)


class LiveRun:
    """The run the Generation page shows, kept in its session between reruns: one more step continues it with its
    KV cache; a new setting (model, text, strategy, seed, limit, branch choices) starts it afresh. ``step(i)`` is
    step ``i``, timed against a recompute by the decoder that ran it."""

    def __init__(self):
        self.key, self.decoding, self.gen = None, None, None

    def advance(self, loaded: Loaded, name: str, text: str, strategy: Strategy, seed: int, limit: int,
                forced: dict[int, int], n: int) -> Generation:
        """The run of these settings with ``n`` steps (fewer if it stopped). ``name`` tells models apart."""
        if strategy.name == "beam":  # beam search decides its best beam only at the end: every step count is a new run
            key = ("beam", name, text, strategy, n)
            if key != self.key:
                self.key, self.decoding, self.gen = key, None, generate(loaded, text, strategy, n)
            return self.gen
        key = (name, text, strategy, seed, limit, format_forced(forced))
        if key != self.key or self.decoding is None or len(self.decoding.gen.steps) > n:
            self.key, self.decoding = key, Decoding(loaded, text, strategy, seed, limit, forced)
        self.gen = self.decoding.run(n)
        return self.gen

    def step(self, i: int) -> Step:
        return measure_step(self.gen, i)


def branch(loaded: Loaded, gen: Generation, text: str, at: int, token_id: int, steps: int | None = None) -> Generation:
    """The run of ``gen`` with ``token_id`` chosen at step ``at``: steps before ``at`` are the same, later ones new."""
    if gen.strategy.name == "beam":
        raise LmvizError("Branching works with greedy and sampling; beam search keeps its alternatives in the tree.")
    if not 0 <= at <= len(gen.steps):
        raise LmvizError(f"Step {at} does not exist; this run has steps 0–{len(gen.steps) - 1}.")
    return generate(loaded, text, gen.strategy, max(steps or len(gen.steps), at + 1), gen.seed,
                    branched(gen.forced, at, token_id))


def branched(forced: dict[int, int], at: int, token_id: int) -> dict[int, int]:
    """The branch rule: the choices before step ``at`` stay, ``token_id`` is chosen at ``at``, later ones are dropped."""
    return {k: v for k, v in forced.items() if k < at} | {at: int(token_id)}


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
