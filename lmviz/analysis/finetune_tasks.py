"""Classification tasks from the plays, with labels for free, and the two baselines each is measured against.

Every task trains on speeches of the training plays and is measured on speeches of plays no training run reads
(``corpus.HELD_OUT``: *Macbeth* and *Twelfth Night*; the three-genre task adds the validation play *Richard II*,
the only held-out history). A speech is the model's input with its line breaks turned into spaces, so the
verse/prose task is about the words and their capitals, not where a printer broke the lines.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from lmviz.errors import LmvizError
from lmviz.pretrain import corpus

MIN_WORDS = 8  # shorter speeches ("Ay, my lord.") say nothing about any label
HELD_OUT_SIZE = 300  # the fixed held-out sample every figure is measured on (±3 points at 70 %)
MIN_EXAMPLES = 16


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    play: str


def _genre(labels: tuple[str, ...]) -> Callable[[corpus.Document, corpus.Speech], str | None]:
    return lambda doc, speech: doc.genre if doc.genre in labels else None


def verse_or_prose(doc: corpus.Document, speech: corpus.Speech) -> str | None:
    """Verse when every line after the first starts with a capital (as verse is printed), prose when most start
    lower-case (a prose sentence wrapped by the printer); too short or mixed speeches are left out."""
    lines = [line for line in speech.text.split("\n")[1:] if line[:1].isalpha()]
    if len(lines) < 2:
        return None
    lower = sum(line[0].islower() for line in lines)
    return "verse" if lower == 0 else "prose" if lower >= len(lines) / 2 else None


@dataclass(frozen=True)
class Task:
    key: str
    title: str
    labels: tuple[str, ...]
    prefix: str  # T5 reads "<prefix>: <speech>" and writes the label, as its pretraining tasks are named
    label_of: Callable[[corpus.Document, corpus.Speech], str | None]
    validation_too: bool = False  # measured on the validation play as well (it holds the only held-out history)
    about: str = ""

    def held_out_plays(self) -> list[str]:
        return list(corpus.HELD_OUT) + (list(corpus.VALIDATION) if self.validation_too else [])


TASKS: dict[str, Task] = {t.key: t for t in (
    Task("genre", "Comedy or tragedy?", ("comedy", "tragedy"), "genre", _genre(("comedy", "tragedy")),
         about="Which kind of play a speech comes from (First Folio genres; histories left out). Held out: "
               "Macbeth (tragedy) and Twelfth Night (comedy)."),
    Task("verse", "Verse or prose?", ("verse", "prose"), "form", verse_or_prose,
         about="Whether a speech is verse or prose, with its line breaks removed: the model must hear the metre "
               "(and, if its tokenizer keeps capitals, see the capital that starts each verse line)."),
    Task("genre3", "Comedy, history or tragedy?", ("comedy", "history", "tragedy"), "genre", _genre(("comedy", "history", "tragedy")),
         validation_too=True,
         about="The three First Folio genres. Held out: Macbeth, Twelfth Night and, for the histories, Richard II "
               "(the validation play, which no training run reads either)."),
)}


def task(key: str) -> Task:
    if key not in TASKS:
        raise LmvizError(f"There is no task {str(key)[:40]!r}; the tasks are {', '.join(TASKS)}.")
    return TASKS[key]


def _examples(t: Task, docs) -> list[Example]:
    out = []
    for doc in docs:
        for speech in doc.speeches:
            name = t.label_of(doc, speech)
            text = " ".join(speech.text.split())
            if name is not None and len(text.split()) >= MIN_WORDS:
                out.append(Example(text, t.labels.index(name), doc.name))
    return out


@lru_cache(maxsize=8)
def pools(key: str) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(every training example, the fixed held-out sample of at most ``HELD_OUT_SIZE``) of a task."""
    t = task(key)
    parts = corpus.split()
    held_names = set(t.held_out_plays())
    train = _examples(t, [d for d in parts.train if d.name not in held_names])
    held = _examples(t, [d for d in parts.test + parts.validation if d.name in held_names])
    rng = np.random.default_rng(0)  # the same sample for every run, seed and model, so figures compare
    if len(held) > HELD_OUT_SIZE:
        held = [held[i] for i in sorted(rng.choice(len(held), HELD_OUT_SIZE, replace=False))]
    return tuple(train), tuple(held)


def training_sample(key: str, n: int, seed: int) -> list[Example]:
    """``n`` training examples drawn by ``seed``; fewer than ``MIN_EXAMPLES``, or fewer than two labels, is refused."""
    train, _ = pools(key)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < MIN_EXAMPLES:
        raise LmvizError(f"{n!r} training examples are too few: a classifier needs at least {MIN_EXAMPLES} "
                         f"(a few of each label) to learn anything.")
    n = min(int(n), len(train))
    rng = np.random.default_rng(int(seed))
    sample = [train[i] for i in rng.choice(len(train), n, replace=False)]
    if len({e.label for e in sample}) < 2:
        raise LmvizError(f"These {n} examples all have one label; draw more examples or another seed.")
    return sample


# --- baselines -------------------------------------------------------------------------------------------------------

WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass
class Baselines:
    majority_label: int
    majority_accuracy: float
    bow_accuracy: float
    bow_predictions: list[int]


def majority(train: list[Example]) -> int:
    return Counter(e.label for e in train).most_common(1)[0][0]


def bag_of_words(train: list[Example], held: list[Example], n_labels: int, l2: float = 1e-2, steps: int = 200) -> list[int]:
    """A logistic regression on which words a speech contains (words seen at least twice in training), fitted on the
    same training examples as the transformer by full-batch L-BFGS; returns its labels for ``held``."""
    counts = Counter(w for e in train for w in set(words(e.text)))
    vocab = {w: i for i, (w, c) in enumerate(counts.most_common(20_000)) if c >= 2}

    def features(examples):
        x = torch.zeros(len(examples), max(1, len(vocab)))
        for row, e in enumerate(examples):
            cols = [vocab[w] for w in set(words(e.text)) if w in vocab]
            x[row, cols] = 1.0
        return x

    x, y = features(train), torch.tensor([e.label for e in train])
    w = torch.zeros(x.shape[1], n_labels, requires_grad=True)
    b = torch.zeros(n_labels, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (features(held) @ w + b).argmax(-1).tolist()


def baselines(train: list[Example], held: list[Example], n_labels: int) -> Baselines:
    m = majority(train)
    bow = bag_of_words(train, held, n_labels)
    truth = [e.label for e in held]
    return Baselines(m, float(np.mean([t == m for t in truth])), float(np.mean([p == t for p, t in zip(bow, truth)])), bow)
