"""The evaluation table: ``evaluation.json`` (written by ``python -m lmviz evaluate``) read defensively, each of our
figures beside its baselines, and the warning for a model that has not finished learning. A missing or renamed
figure drops its row; nothing here ever breaks a page."""
from __future__ import annotations

import math

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


# (model kind, figure key, what it is, better when, baselines as (label, path in "baselines"))
EVAL_ROWS = [
    ("gpt2", "loss", "next-token loss (nats/token)", "lower", [("unigram", ("unigram", "loss")), ("bigram", ("bigram", "loss"))]),
    ("gpt2", "bits_per_char", "bits per character", "lower",
     [("unigram", ("unigram", "bits_per_char")), ("bigram", ("bigram", "bits_per_char"))]),
    ("bert", "mlm_loss", "MLM loss (nats/masked token)", "lower", [("unigram", ("unigram_loss",))]),
    ("bert", "mlm_top1", "MLM top-1 accuracy", "higher", [("most frequent token", ("most_frequent_top1",))]),
    ("bert", "mlm_top5", "MLM top-5 accuracy", "higher", [("5 most frequent tokens", ("most_frequent_top5",))]),
    ("bert", "nsp_acc", "NSP accuracy", "higher", [("chance", ("nsp_chance",))]),
    ("t5", "loss", "span loss (nats/target token)", "lower", [("unigram", ("unigram_loss",))]),
    ("t5", "content_acc", "span-token accuracy", "higher", [("most frequent token", ("most_frequent_acc",))]),
]


def evaluation_rows(data) -> list[dict]:
    """The rows of ``evaluation.json``: model, figure, ours, baselines, which way is better, and whether ours
    beats every baseline. Unknown figures get a plain row; anything missing or malformed is left out rather than failing."""
    rows: list[dict] = []
    if not isinstance(data, dict):
        return rows
    for kind in dict.fromkeys(r[0] for r in EVAL_ROWS):  # the kinds in the table's order
        entry = data.get(kind)
        figures = dig(entry, "figures")
        if not isinstance(figures, dict):
            continue
        baselines = dig(entry, "baselines") or {}
        done = set()
        for k, key, name, better, bases in EVAL_ROWS:
            if k != kind or number(figures.get(key)) is None:
                continue
            done.add(key)
            found = [(lab, number(dig(baselines, *path))) for lab, path in bases if number(dig(baselines, *path)) is not None]
            ours = number(figures[key])
            beats = all(ours < v if better == "lower" else ours > v for _, v in found)
            rows.append({"model": KINDS[kind].short, "figure": name, "ours": round(ours, 4),
                         "baselines": " · ".join(f"{lab} {_fmt(v)}" for lab, v in found), "better": better,
                         "beats baselines": ("yes" if beats else "no") if found else ""})
        for key, value in figures.items():
            if key not in done and number(value) is not None:
                rows.append({"model": KINDS[kind].short, "figure": escape(str(key).replace("_", " ")), "ours": round(number(value), 4),
                             "baselines": "", "better": "", "beats baselines": ""})
    return rows


def not_yet_learnt(data, name: str) -> str | None:
    """A warning for pages that show the shipped model ``name``'s output, when on held-out text it does not yet guess
    hidden pieces twice as often as always guessing the most frequent one (the floor this project set for T5's span
    filling); else None, also for a model without that figure."""
    acc = number(dig(data, name, "figures", "content_acc"))
    base = number(dig(data, name, "baselines", "most_frequent_acc"))
    if acc is None or base is None or acc >= 2 * base:
        return None
    return (f"This T5 has not finished learning: on the held-out plays it guesses {acc:.1%} of the hidden pieces, and "
            f"always guessing the most frequent piece scores {base:.1%}. So its fills show what a model writes before it "
            "has learnt to read its input (mostly punctuation); the sentinels, the target and its loss are real.")
