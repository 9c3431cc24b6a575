"""The evaluation table: ``evaluation.json`` (written by ``python -m lmviz evaluate``) read defensively, each of our
figures beside its baselines, and the warning for a model that has not finished learning. A missing or renamed
figure drops its row; nothing here ever breaks a page."""
from __future__ import annotations

import math
from dataclasses import dataclass

from lmviz.models.kinds import KINDS
from lmviz.viz.style import escape


def number(x) -> float | None:
    """``x`` if it is a finite number (a bool is not), else None: a figure read from a file."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def dig(d, *keys):
    """``d[k1][k2]…``, or None where a level is missing or not a dict."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _fmt(x: float | None) -> str:
    return f"{x:.3f}" if x is not None else ""


@dataclass(frozen=True)
class Figure:
    """One row of the table: where ``evaluate`` writes our figure in a model's entry (the first path that holds a
    number; a ``[layer, head, score]`` triple is a named head), what it is, which way is better, its baselines (label,
    path in the entry), and issue #14's floor: an absolute number, or ``times`` × the first baseline."""

    kind: str
    paths: tuple[tuple[str, ...], ...]
    name: str  # "{layer}" and "{head}" are filled in for a named head
    better: str  # "higher" | "lower"
    baselines: tuple[tuple[str, tuple[str, ...]], ...] = ()
    floor: float | None = None
    times: float | None = None
    above: bool = False  # the floor is beating the first baseline


F, B, P = ("figures",), ("baselines",), ("probes",)
EVAL_ROWS = [
    Figure("gpt2", (F + ("loss",),), "next-token loss (nats/token)", "lower",
           (("unigram", B + ("unigram", "loss")), ("bigram", B + ("bigram", "loss")))),
    Figure("gpt2", (F + ("bits_per_char",),), "bits per character", "lower",
           (("unigram", B + ("unigram", "bits_per_char")), ("bigram", B + ("bigram", "bits_per_char"))), floor=2.20),
    Figure("gpt2", (P + ("previous_token_head",),), "previous-token head (layer {layer}, head {head}): attention to i−1",
           "higher", (("even attention", P + ("previous_token_chance",)),), floor=0.5),
    Figure("gpt2", (P + ("induction_head",),), "induction head (layer {layer}, head {head}): attention to after the earlier copy",
           "higher", (("even attention", P + ("induction_chance",)),)),
    Figure("bert", (F + ("mlm_loss",),), "MLM loss (nats/masked token)", "lower", (("unigram", B + ("unigram_loss",)),)),
    Figure("bert", (F + ("mask_top1",),), "MLM top-1 at [MASK] positions",
           "higher", (("most frequent token", B + ("most_frequent_top1",)),), floor=0.30),
    Figure("bert", (F + ("mlm_top1",),), "MLM top-1 over the 80/10/10 draw",
           "higher", (("most frequent token", B + ("most_frequent_top1",)),), floor=0.38),
    Figure("bert", (F + ("mlm_top5",),), "MLM top-5 over the 80/10/10 draw", "higher",
           (("5 most frequent tokens", B + ("most_frequent_top5",)),)),
    Figure("bert", (F + ("nsp_acc",),), "NSP accuracy", "higher", (("chance", B + ("nsp_chance",)),), floor=0.75),
    Figure("t5", (F + ("fill_loss",), F + ("loss",)), "fill: span loss (nats/target token)", "lower",
           (("unigram", B + ("unigram_loss",)),)),
    Figure("t5", (F + ("content_acc",),), "fill: non-sentinel target accuracy", "higher",
           (("most frequent token", B + ("most_frequent_acc",)),), times=3.0),
    Figure("t5", (("punctuate", "word_acc"),), "punctuate: words written exactly (greedy)", "higher",
           (("copying the input", ("punctuate", "copy_word_acc")),), above=True),
    Figure("t5", (("punctuate", "exact"),), "punctuate: exact lines (greedy)", "higher",
           (("copying the input", ("punctuate", "copy_exact")),)),
    Figure("t5", (("punctuate", "alignment_head"),),
           "punctuate: alignment head (layer {layer}, head {head}): strongest key on the aligned word", "higher",
           floor=0.70),
    Figure("t5", (("genre", "acc"),), "genre: accuracy (every test speech)", "higher",
           (("majority label{majority}", ("genre", "majority_acc")),), above=True),
    Figure("t5", (F + ("loss",),), "mean of the fill: and punctuate: losses (picks the checkpoint)", "lower"),
    Figure("t5", (F + ("punctuate_loss",),), "punctuate: loss (nats/target token, teacher-forced)", "lower"),
    Figure("t5", (F + ("punctuate_acc",),), "punctuate: token accuracy (teacher-forced)", "higher"),
    Figure("t5", (F + ("genre_loss",),), "genre: loss (nats/target token, teacher-forced)", "lower"),
    Figure("t5", (F + ("genre_acc",),), "genre: accuracy (teacher-forced, genres drawn evenly)", "higher"),
]


def _value(entry, path) -> tuple[float | None, str]:
    """A figure's number at ``path`` and, for a named head ``[layer, head, score]``, the head's name."""
    x = dig(entry, *path)
    if isinstance(x, list) and len(x) == 3 and all(number(v) is not None for v in x):
        return number(x[2]), f"{int(x[0])}/{int(x[1])}"
    return number(x), ""


def _floor(fig: Figure, found: list[tuple[str, float]]) -> tuple[float | None, str]:
    """The floor's number and how the table writes it ("≥ 0.30", "≥ 0.087 (3× most frequent token)")."""
    sign = "≥" if fig.better == "higher" else "≤"
    if fig.floor is not None:
        return fig.floor, f"{sign} {fig.floor:.2f}"
    if fig.times is not None and found:
        value = fig.times * found[0][1]
        return value, f"{sign} {value:.3f} ({fig.times:g}× {found[0][0]})"
    if fig.above and found:
        return found[0][1], f"{'>' if fig.better == 'higher' else '<'} {found[0][0]}"
    return None, ""


def evaluation_rows(data) -> list[dict]:
    """The rows of ``evaluation.json``: model, figure, ours, baselines, which way is better, whether ours beats every
    baseline, and issue #14's floor with whether ours meets it. Unknown figures get a plain row; anything missing or
    malformed is left out rather than failing (an older file simply has fewer rows)."""
    rows: list[dict] = []
    if not isinstance(data, dict):
        return rows
    for kind in dict.fromkeys(r.kind for r in EVAL_ROWS):  # the kinds in the table's order
        entry = data.get(kind)
        figures = dig(entry, "figures")
        if not isinstance(figures, dict):
            continue
        done: set[tuple[str, ...]] = set()
        for fig in (r for r in EVAL_ROWS if r.kind == kind):
            path = next((p for p in fig.paths if p not in done and _value(entry, p)[0] is not None), None)
            if path is None:
                continue
            done.add(path)
            ours, head = _value(entry, path)
            layer, _, head = head.partition("/")
            majority = dig(entry, "genre", "majority")
            found = [(lab.format(majority=f" ({majority})" if isinstance(majority, str) else ""), number(dig(entry, *p)))
                     for lab, p in fig.baselines if number(dig(entry, *p)) is not None]
            better = (lambda a, b: a < b) if fig.better == "lower" else (lambda a, b: a > b)
            beats = all(better(ours, v) for _, v in found)
            floor, floor_text = _floor(fig, found)
            strict = fig.above  # beating a baseline means more than equalling it
            meets = floor is not None and ((ours > floor if strict else ours >= floor) if fig.better == "higher"
                                           else (ours < floor if strict else ours <= floor))
            rows.append({"model": KINDS[kind].short, "figure": escape(fig.name.format(layer=layer, head=head)),
                         "ours": round(ours, 4), "baselines": " · ".join(f"{lab} {_fmt(v)}" for lab, v in found),
                         "better": fig.better, "beats baselines": ("yes" if beats else "no") if found else "",
                         "floor": floor_text, "meets floor": ("yes" if meets else "no") if floor is not None else ""})
        for key, value in figures.items():
            if F + (key,) not in done and number(value) is not None:
                rows.append({"model": KINDS[kind].short, "figure": escape(str(key).replace("_", " ")), "ours": round(number(value), 4),
                             "baselines": "", "better": "", "beats baselines": "", "floor": "", "meets floor": ""})
    return rows


def not_yet_learnt(data, name: str) -> str | None:
    """A warning for pages that show the shipped model ``name``'s output, when on held-out text it does not yet guess
    hidden pieces as often as issue #14's floor for T5's span filling asks (3x always guessing the most frequent one);
    else None, also for a model without that figure."""
    acc = number(dig(data, name, "figures", "content_acc"))
    base = number(dig(data, name, "baselines", "most_frequent_acc"))
    (fill,) = [f for f in EVAL_ROWS if f.paths == (F + ("content_acc",),)]
    if acc is None or base is None or acc >= fill.times * base:
        return None
    return (f"This T5 has not finished learning: on the held-out plays it guesses {acc:.1%} of the hidden pieces, and "
            f"always guessing the most frequent piece scores {base:.1%}. So its fills show what a model writes before it "
            "has learnt to read its input (mostly punctuation); the sentinels, the target and its loss are real.")
