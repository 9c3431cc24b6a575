"""T5 as text-to-text: every task is named by a prefix in the input, and every answer is text.

| prefix | input | target |
| --- | --- | --- |
| ``fill:`` | a window of a play, noise spans replaced by sentinels (15 %, mean span 3) | each sentinel, then what it hid |
| ``punctuate:`` | a few lines of a speech, lower-cased, punctuation removed | the lines as written |
| ``genre:`` | a speech | its play's First Folio genre: ``comedy``, ``history`` or ``tragedy`` |
| ``copy:`` | a window of a play | the same window (the warm-up that teaches the decoder to read the encoder) |

``copy:`` is only the curriculum's first phase; the pages offer the other three. Every input ends with
``</s>``; every target ends with ``</s>``. An example is a pure function of the random generator it is given.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lmviz.errors import LmvizError
from lmviz.pretrain import masking
from lmviz.pretrain.tokenizers import SENTINELS

TASKS = ("fill", "punctuate", "genre")
"""The tasks a user can name with a prefix, in the order the pages offer them."""
WARMUP = "copy"
GENRE_LABELS = ("comedy", "history", "tragedy")
PUNCT_TARGET = 48
"""The longest ``punctuate:`` / ``copy:`` target in tokens, before ``</s>``."""

_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def strip_punctuation(text: str) -> str:
    """What ``punctuate:`` reads: lower case, one space between words, no punctuation (an apostrophe inside a
    word, as in ``o'er``, stays: it is spelling, not punctuation)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def prefixed(task: str, text: str) -> str:
    """The input text of ``task`` for ``text``."""
    if task not in TASKS + (WARMUP,):
        raise LmvizError(f"Unknown task prefix {task!r}; T5 knows {', '.join(p + ':' for p in TASKS)}.")
    return f"{task}: {text}"


def split_prefix(text: str) -> tuple[str | None, str]:
    """``("punctuate", "rest")`` for ``"punctuate: rest"``; ``(None, text)`` when the text names no known task.
    A word ending in a colon that is not a task (``"ROMEO: …"``) is not a prefix."""
    head, sep, rest = text.partition(":")
    if sep and head.strip().lower() in TASKS + (WARMUP,) and " " not in head.strip():
        return head.strip().lower(), rest.strip()
    return None, text


@dataclass(frozen=True)
class Example:
    task: str
    input_ids: list[int]
    target_ids: list[int]


class Examples:
    """Draws examples of each task from documents (plays with a genre, or a user's text without one)."""

    def __init__(self, tokenizer, docs, seq_len: int):
        self.tok, self.docs, self.seq_len = tokenizer, list(docs), seq_len
        self.pad, self.eos = tokenizer.token_to_id("<pad>"), tokenizer.token_to_id("</s>")
        self.sentinels = [tokenizer.token_to_id(s) for s in SENTINELS]
        self.prefix = {t: tokenizer.encode(f"{t}:", add_special_tokens=False).ids for t in TASKS + (WARMUP,)}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    @cached_property
    def stream(self) -> np.ndarray:
        ids: list[int] = []
        for d in self.docs:
            ids += self.encode(d.text)
        if len(ids) < 2 * self.seq_len:
            raise LmvizError(f"The corpus holds {len(ids)} tokens; T5 needs at least {2 * self.seq_len}.")
        return np.asarray(ids, dtype=np.int64)

    @cached_property
    def word_starts(self) -> np.ndarray:
        """Positions in ``stream`` where a word begins (a ``▁`` piece), so a window never opens mid-word."""
        starts = np.asarray([self.tok.id_to_token(i).startswith("\u2581") for i in range(self.tok.get_vocab_size())])
        return np.flatnonzero(starts[self.stream])

    def window_start(self, rng: np.random.Generator, n: int) -> int:
        ix = self.word_starts[self.word_starts < len(self.stream) - n]
        return int(ix[int(rng.integers(0, len(ix)))]) if len(ix) else int(rng.integers(0, len(self.stream) - n))

    @cached_property
    def speeches(self) -> list[tuple[str, list[str]]]:
        """(genre, lines) of every speech."""
        return [(d.genre, s.text.split("\n")) for d in self.docs for s in d.speeches if s.text.strip()]

    @cached_property
    def by_genre(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {g: [] for g in GENRE_LABELS}
        for i, (genre, _) in enumerate(self.speeches):
            if genre in out:
                out[genre].append(i)
        return {g: ix for g, ix in out.items() if ix}

    def raw_length(self) -> int:
        """The longest raw window whose ``fill:`` input (prefix, noise → sentinels, ``</s>``) fits ``seq_len``."""
        budget, raw = self.seq_len - len(self.prefix["fill"]), 8
        while (raw + 1) - round((raw + 1) * 0.15) + max(1, round((raw + 1) * 0.15 / 3)) + 1 <= budget:
            raw += 1
        return raw - 1

    def fill(self, rng: np.random.Generator) -> Example:
        raw = self.raw_length()
        s = self.window_start(rng, raw)
        sc = masking.span_corrupt(self.stream[s : s + raw], rng, sentinel_ids=self.sentinels, eos_id=self.eos)
        return Example("fill", self.prefix["fill"] + list(sc.input_ids), list(sc.target_ids))

    def copy(self, rng: np.random.Generator) -> Example:
        n = int(rng.integers(PUNCT_TARGET // 2, PUNCT_TARGET + 1))
        s = self.window_start(rng, n)
        window = self.stream[s : s + n].tolist()
        return Example(WARMUP, self.prefix[WARMUP] + window + [self.eos], window + [self.eos])

    def punctuate(self, rng: np.random.Generator) -> Example:
        """One to a few consecutive lines of a speech, as many as fit ``PUNCT_TARGET`` tokens."""
        for _ in range(100):
            _, lines = self.speeches[int(rng.integers(0, len(self.speeches)))]
            start = int(rng.integers(0, len(lines)))
            text, target = "", []
            for line in lines[start:]:
                longer = f"{text} {line}".strip()
                ids = self.encode(longer)
                if len(ids) > PUNCT_TARGET:
                    break
                text, target = longer, ids
            if target and strip_punctuation(text):
                return self.punctuate_example(text, target)
        raise LmvizError("No line of the corpus fits a punctuate: example.")

    def punctuate_example(self, text: str, target: list[int] | None = None) -> Example:
        source = self.encode(prefixed("punctuate", strip_punctuation(text)))[: self.seq_len - 1]
        target = self.encode(text) if target is None else target
        return Example("punctuate", source + [self.eos], target[:PUNCT_TARGET] + [self.eos])

    def genre(self, rng: np.random.Generator) -> Example:
        """A speech of a genre drawn evenly (so the majority genre is not a free answer), its genre as text."""
        if not self.by_genre:
            raise LmvizError("genre: needs plays with a genre; a user's text has none.")
        genres = sorted(self.by_genre)
        ix = self.by_genre[genres[int(rng.integers(0, len(genres)))]]
        i = ix[int(rng.integers(0, len(ix)))]
        genre, lines = self.speeches[i]
        return self.genre_example("\n".join(lines), genre)

    def genre_example(self, text: str, genre: str) -> Example:
        source = self.encode(prefixed("genre", text))[: self.seq_len - 1]
        return Example("genre", source + [self.eos], self.encode(genre) + [self.eos])

    def draw(self, task: str, rng: np.random.Generator) -> Example:
        return getattr(self, task)(rng)


def knows_prefixes(loaded) -> bool:
    """Whether a loaded T5 was trained text-to-text here (its config records the mixture), so its inputs start with a
    task prefix. A T5 from elsewhere gets the text as it is."""
    return bool(((loaded.extra or {}).get("train") or {}).get("mixture"))


def prefix_ids(loaded, task: str) -> list[int]:
    """The ids ``task`` puts before the input of a model trained text-to-text (none for any other T5)."""
    if not knows_prefixes(loaded):
        return []
    return loaded.tokenizer.encode(prefixed(task, "").strip(), add_special_tokens=False).ids


_WORD = re.compile(r"\w+(?:'\w+)*")


def words(text: str, start: int = 0) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` from ``start`` (letters, digits, inner apostrophes): the units that
    ``punctuate:``'s input and target share one for one."""
    return [m.span() for m in _WORD.finditer(text, start)]
