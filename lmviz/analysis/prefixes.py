"""T5's task prefixes on the pages: one preset per task, from a held-out play, and what a page tells a user about
the prefix at the start of the text they typed.

A T5 trained text-to-text here (``text2text.knows_prefixes``) read inputs that start with ``fill:``, ``punctuate:``
or ``genre:``; the text box holds the whole input, prefix included, so a user can type one or pick a preset. The
rule for what to say about it (``prefix_notes``) lives here, and ``inference.model_input`` applies it wherever an
encoder-decoder reads a text: every page says the same thing, and none decides for itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from lmviz.errors import LmvizError
from lmviz.pretrain import text2text
from lmviz.pretrain.corpus import HELD_OUT

ASKED = {"fill": "what each sentinel <extra_id_i> hides", "punctuate": "the line with its capitals and punctuation",
         "genre": "the play's First Folio genre: comedy, history or tragedy"}
"""What the decoder writes for each task, for a page's caption."""


@dataclass(frozen=True)
class Preset:
    task: str
    play: str  # a held-out play (``corpus.HELD_OUT``): the model never trained on it
    lines: str  # the lines as the play has them
    text: str  # the model's input: the prefix, then the lines as the task reads them
    answer: str  # what the model should write

    @property
    def label(self) -> str:
        """"punctuate: Twelfth Night": the preset's name in a select box."""
        return f"{self.task}: {self.play.replace('-', ' ').title()}"


def _fill(lines: str, hidden: tuple[str, ...]) -> tuple[str, str]:
    """``lines`` with each of ``hidden`` (in order, first occurrence after the previous one) behind a sentinel, and
    the target T5 was trained to write: each sentinel, then what it hides."""
    text, target, at = lines, [], 0
    for k, words in enumerate(hidden):
        at = text.index(words, at)
        text = text[:at] + f"<extra_id_{k}>" + text[at + len(words):]
        target.append(f"<extra_id_{k}> {words}")
    return text, " ".join(target)


_FILL = ("twelfth-night", "If music be the food of love, play on;\nGive me excess of it, that, surfeiting,\n"
         "The appetite may sicken, and so die.", ("food", "excess", "so die"))
_PUNCTUATE = ("twelfth-night", "I left no ring with her: what means this lady?\nFortune forbid my outside have not charm'd her!")
_GENRE = ("macbeth", "Is this a dagger which I see before me,\nThe handle toward my hand? Come, let me clutch thee.\n"
          "I have thee not, and yet I see thee still.", "tragedy")


@cache
def presets() -> dict[str, Preset]:
    """One preset per task (``text2text.TASKS``' order), each from a held-out play (built once; do not change it)."""
    play, lines, hidden = _FILL
    filled, target = _fill(lines, hidden)
    out = {"fill": Preset("fill", play, lines, text2text.prefixed("fill", filled), target)}
    play, lines = _PUNCTUATE
    out["punctuate"] = Preset("punctuate", play, lines, text2text.prefixed("punctuate", text2text.strip_punctuation(lines)),
                              lines)
    play, lines, genre = _GENRE
    out["genre"] = Preset("genre", play, lines, text2text.prefixed("genre", lines), genre)
    assert all(p.play in HELD_OUT for p in out.values()) and tuple(out) == text2text.TASKS
    return out


def preset_texts() -> dict[str, str]:
    """``{label: input}`` for a page's preset select box."""
    return {p.label: p.text for p in presets().values()}


def preset_for(text: str) -> Preset | None:
    """The preset whose input ``text`` is, or None (a user's own text)."""
    return next((p for p in presets().values() if p.text == text), None)


_LOOKS = re.compile(r"\s*([a-z][a-z0-9_-]*(?: [a-z][a-z0-9_-]*){0,3})\s*:")
"""Looks like a task prefix: the text opens with one to four lower-case words and a colon (``translate:``,
``summarize:``, ``translate english to german:``). A speaker's name in capitals (``ROMEO:``) does not."""


def looks_like_prefix(text: str) -> str | None:
    """The prefix-like opening of ``text`` that is not a task T5 knows (``"translate"``), or None."""
    m = _LOOKS.match(text or "")
    if m is None or text2text.split_prefix(text)[0] is not None:
        return None
    return m.group(1)


def _known() -> str:
    return ", ".join(f"`{t}:`" for t in text2text.TASKS)


def prefix_notes(loaded, text: str) -> list[str]:
    """What to tell a user about the task prefix of ``text``, the input of the encoder-decoder ``loaded``. A prefix
    with nothing after it is an error (``LmvizError``) for a T5 that knows prefixes; everything else is a note, and
    the model reads the text as it is. A T5 that was not trained with prefixes gets a note only when a known prefix
    is typed (it reads it as ordinary words)."""
    task, rest = text2text.split_prefix(text or "")
    if not text2text.knows_prefixes(loaded):
        if task is not None:
            return [f"This T5 was not trained with task prefixes, so it reads `{task}:` as ordinary words."]
        return []
    if task is None:
        odd = looks_like_prefix(text)
        if odd is not None:
            return [f"`{odd}:` is not a task this T5 knows, so it reads it as ordinary words. It was trained on "
                    f"{_known()}: start the text with one of them (or pick a preset)."]
        return [f"This T5 was trained text-to-text: every input it read started with a task prefix ({_known()}). "
                "This text has none, so the model reads it as it is; start it with a prefix or pick a preset."]
    if not rest.strip():
        raise LmvizError(f"There is nothing after `{task}:`: type the text the task should read after the prefix "
                         f"(for instance `{preset_text(task)}`).")
    if task == text2text.WARMUP:
        return [f"`{task}:` was only the warm-up of this T5's training (it copies its input); its tasks are {_known()}."]
    if task == "punctuate" and text2text.strip_punctuation(rest) != " ".join(rest.split()):
        plain = text2text.strip_punctuation(rest)
        shown = plain if len(plain) <= 80 else plain[:80] + "…"
        return ["`punctuate:` was trained on lines lower-cased with their punctuation removed; this text still has "
                f"capitals or punctuation, so the model reads it as typed. As trained, it would read `punctuate: {shown}`."]
    return []


def preset_text(task: str) -> str:
    """The preset input of ``task``, shortened for a message."""
    text = presets()[task].text.split("\n")[0]
    return text if len(text) <= 60 else text[:60] + "…"
