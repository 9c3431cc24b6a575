"""What every page benchmark shares: a new text for every repeat (``edited_text``) and one row of timings
(``PageRow``)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

PASSAGE = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and arrows of "
           "outrageous fortune, or to take arms against a sea of troubles and by opposing end them. To die, to sleep, no "
           "more; and by a sleep to say we end the heart-ache and the thousand natural shocks that flesh is heir to: "
           "'tis a consummation devoutly to be wish'd. To die, to sleep; to sleep, perchance to dream.")
EDITS = ["dream", "sleep", "night", "king", "love", "death", "crown", "heaven", "soul", "blood", "grief", "honour"]


def edited_text(n_words: int, edit: int) -> str:
    """``n_words`` words of Hamlet's soliloquy with the last word replaced: a new text for every ``edit``."""
    words = (PASSAGE.split() * (n_words // len(PASSAGE.split()) + 1))[:n_words]
    words[-1] = f"{EDITS[edit % len(EDITS)]}{edit // len(EDITS) or ''}."
    return " ".join(words)


@dataclass
class PageRow:
    page: str
    times: list[float]
    goal_ms: float
    skipped: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1e3 if self.times else float("nan")

    @property
    def met(self) -> bool:
        return bool(self.times) and self.median_ms < self.goal_ms
