"""Beam search: keep the ``beam_width`` best partial texts by summed log-probability instead of one.

It runs the same decoder as sampling (``lmviz.analysis.decoding``) on every live beam at once, reorders the
KV cache to follow the beams it keeps, and records one ``Step`` per token of the winning beam, so
the Generation page draws it like any other decoding, plus the tree of kept beams.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmviz.models.checkpoints import Loaded
from lmviz.analysis.decoding import MAX_STEPS, ROWS, TIMING_REPEATS, Decoder, Generation, record_step
from lmviz.analysis.arithmetic import softmax
from lmviz.analysis.strategies import Shaped, Strategy


@dataclass
class Beam:
    """One hypothesis: its tokens after the start, ``score = Σ log p`` of those tokens, and where it came from."""

    ids: list[int]
    tokens: list[str]
    score: float
    parent: int  # index of the beam it extends among the previous step's live beams (-1 at the start)
    finished: bool = False

    def ranked(self, length_penalty: float) -> float:
        """The score beams are compared by at the end: ``score / length ** length_penalty``."""
        return self.score / max(1, len(self.ids)) ** length_penalty


@torch.inference_mode()
def beam_search(loaded: Loaded, text: str, strategy: Strategy, max_steps: int = 20, measure: bool = False) -> Generation:
    """Keep the ``beam_width`` best partial sequences by summed log-probability; a beam that writes the
    end-of-text token is finished. Stops when ``beam_width`` beams have finished or after ``max_steps``.
    ``gen.steps`` follow the best beam; ``gen.beams[t]`` are the live beams after step ``t``."""
    max_steps = max(1, min(int(max_steps), MAX_STEPS))
    dec = Decoder(loaded, text, max_steps)
    strategy, notes = strategy.checked(dec.vocab_size)
    width = strategy.beam_width
    gen = Generation(loaded.kind, strategy, 0, [dec.label(i) for i in dec.start], dec.source, notes=dec.notes + notes, decoder=dec)
    live = [Beam([], [], 0.0, -1)]
    history: list[list[dict]] = []  # per step, per live beam: what the best beam's Step needs
    cache, start = None, torch.tensor([dec.start], device=dec.device)
    for t in range(max_steps):
        if len(dec.start) + t >= dec.limit:
            gen.stop_reason = f"the context limit ({dec.limit} tokens)"
            break
        seqs = torch.tensor([dec.start + b.ids for b in live], device=dec.device)
        new = start if cache is None else seqs[:, -1:]
        out, ms_cached = dec.timed(new, cache, ROWS, TIMING_REPEATS if measure else 1)
        ms_recompute = dec.timed(seqs, None, None, TIMING_REPEATS)[1] if measure else None
        logp = torch.log_softmax(out.logits[:, -1].float(), -1).cpu()
        inputs = seqs.tolist()
        history.append([{"logits": out.logits[b, -1].float().cpu().numpy(), "rows": dec.rows(out.record, b),
                         "cache": out.cache.shapes(), "ms": (ms_cached, ms_recompute), "inputs": inputs,
                         "repeats": TIMING_REPEATS if measure else 1, "survivors": []} for b in range(len(live))])
        total = (torch.tensor([b.score for b in live])[:, None] + logp).view(-1)
        order = torch.argsort(total, descending=True, stable=True)
        nxt, parents = [], []
        for rank, flat in enumerate(order[: 2 * width].tolist()):
            b, tok = divmod(flat, dec.vocab_size)
            beam = Beam(live[b].ids + [tok], live[b].tokens + [dec.label(tok)], float(total[flat]), b, tok == dec.eos)
            if beam.finished:
                if rank < width:  # an ended beam counts only if it is among the best `width`; it is drawn, not extended
                    gen.finished.append(beam)
                    nxt.append(beam)
            elif len(parents) < width:
                nxt.append(beam)
                parents.append(b)
        gen.beams.append(nxt)
        for beam in nxt:
            history[t][beam.parent]["survivors"].append(beam.ids[-1])
        live = [b for b in nxt if not b.finished]
        if len(gen.finished) >= width or not live:
            gen.stop_reason = ("every beam ended with the end-of-text token" if not live
                               else f"{width} beams ended with the end-of-text token")
            break
        cache = out.cache.reorder(torch.tensor(parents, device=dec.device))
    else:
        gen.stop_reason = f"the step limit ({max_steps} steps)"
    best = max(gen.finished + live, key=lambda b: b.ranked(strategy.length_penalty))
    _best_path_steps(gen, dec, best, history)
    gen.text = loaded.tokenizer.decode(best.ids, skip_special_tokens=False)
    return gen


def _best_path_steps(gen: Generation, dec: Decoder, best: Beam, history: list[list[dict]]) -> None:
    """One ``Step`` per token of ``best``, read from the live beam that held its prefix at that step."""
    slots = []
    node = next(i for i, b in enumerate(gen.beams[len(best.ids) - 1]) if b is best)
    for t in range(len(best.ids) - 1, -1, -1):
        beam = gen.beams[t][node]
        slots.append(beam.parent)
        if t:
            live_prev = [b for b in gen.beams[t - 1] if not b.finished]
            node = gen.beams[t - 1].index(live_prev[beam.parent])
    slots.reverse()
    ids = list(dec.start)
    for t, (tok, slot) in enumerate(zip(best.ids, slots)):
        h = history[t][slot]
        shaped = beam_view(h["logits"], h["survivors"])
        gen.steps.append(record_step(t, len(ids) - 1, dec.label(ids[-1]), shaped, tok, None, False, gen.strategy, dec.label,
                                     h["rows"], h["cache"], *h["ms"], h["inputs"], h["repeats"]))
        ids.append(tok)


def beam_view(logits, survivors: list[int]) -> Shaped:
    """One beam's next-token distribution as beam search sees it: ``final`` holds the model's probability of the
    continuations that stayed among the best beams (``survivors``) and 0 for the rest; nothing is renormalised,
    because beam search ranks whole beams by summed log-probability rather than drawing from this distribution."""
    raw = softmax(np.asarray(logits, dtype=np.float64))
    final = np.zeros_like(raw)
    final[survivors] = raw[survivors]
    return Shaped(raw, raw, final, np.argsort(-raw, kind="stable"), len(survivors))
