"""The pretraining objectives as inspectable data: the same code serves training and the pages.

- ``mlm_mask``: BERT's masked LM draw (select 15 %; of those 80 % ``[MASK]``, 10 % random, 10 % kept).
- ``nsp_pair``: BERT's next-sentence pairs (50 % IsNext, 50 % NotNext from another document).
- ``span_corrupt``: T5's span corruption (15 % noise in spans of mean length 3, one sentinel per span).
- ``causal_lm_pairs``: GPT-2's shift-by-one input/target pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from lmviz.errors import LmvizError

UNSELECTED, MASKED, RANDOM, KEPT = 0, 1, 2, 3
OUTCOME_NAMES = ("unselected", "[MASK]", "random token", "kept")
IGNORE = -100


@dataclass(frozen=True)
class MlmDraw:
    """``[batch, seq]`` tensors: corrupted ids, labels (``-100`` where nothing is predicted), outcome codes."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    outcome: torch.Tensor


def mlm_mask(
    ids: torch.Tensor,
    special: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    rate: float = 0.15,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
    chosen: torch.Tensor | None = None,
    special_ids: Iterable[int] = (),
) -> MlmDraw:
    """Draw BERT's MLM corruption for a batch ``ids [batch, seq]``.

    As the original BERT does, each row selects ``max(1, round(rate * n))`` of its ``n``
    non-special positions (``special`` is a bool mask of positions never selected: ``[CLS]``,
    ``[SEP]``, padding). ``chosen`` (bool ``[batch, seq]``) replaces the random selection with the
    user's own. Of the selected, ``mask_frac`` become ``[MASK]``, ``random_frac`` a token drawn
    uniformly from the vocabulary less its special tokens (``mask_id``, ``special_ids`` and every
    id at a ``special`` position), the rest stay as they were; all selected positions get a label.
    """
    ids = _as_batch(ids)
    special = _as_batch(special).bool()
    if special.shape != ids.shape or (chosen is not None and _as_batch(chosen).shape != ids.shape):
        raise LmvizError(f"The special (and chosen) masks must have the shape of the ids {tuple(ids.shape)}; "
                         f"got {tuple(special.shape)}" + (f" and {tuple(_as_batch(chosen).shape)}." if chosen is not None else "."))
    if vocab_size < 1:
        raise LmvizError(f"The vocabulary size must be at least 1; got {vocab_size}.")
    if not 0.0 < rate <= 1.0:
        raise LmvizError(f"The masking rate must be in (0, 1]; got {rate}.")
    if mask_frac < 0 or random_frac < 0 or mask_frac + random_frac > 1.0 + 1e-9:
        raise LmvizError("The [MASK] and random shares must be non-negative and add up to at most 100 %.")
    candidates = ~special
    if chosen is not None:
        selected = _as_batch(chosen).bool() & candidates
    else:
        noise = torch.rand(ids.shape, generator=generator)
        noise = noise.masked_fill(~candidates, 2.0)
        n_cand = candidates.sum(dim=1)
        n_pick = torch.clamp(torch.round(n_cand.float() * rate).long(), min=1)
        n_pick = torch.minimum(n_pick, n_cand)
        ranks = noise.argsort(dim=1).argsort(dim=1)
        selected = ranks < n_pick[:, None]
    roll = torch.rand(ids.shape, generator=generator)
    masked = selected & (roll < mask_frac)
    randomised = selected & (roll >= mask_frac) & (roll < mask_frac + random_frac)
    kept = selected & ~masked & ~randomised
    never = torch.tensor(sorted({mask_id, *special_ids, *ids[special].tolist()}), dtype=torch.long)
    drawable = torch.arange(vocab_size)[~torch.isin(torch.arange(vocab_size), never)]
    if not len(drawable):
        raise LmvizError(f"A vocabulary of {vocab_size} tokens holds no ordinary token to draw as a random replacement.")
    random_ids = drawable[torch.randint(0, len(drawable), ids.shape, generator=generator)]
    corrupted = torch.where(masked, torch.full_like(ids, mask_id), ids)
    corrupted = torch.where(randomised, random_ids, corrupted)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE))
    outcome = masked * MASKED + randomised * RANDOM + kept * KEPT
    return MlmDraw(corrupted, labels, outcome.long())


@dataclass(frozen=True)
class NspPair:
    a: list[int]
    b: list[int]
    is_next: bool


def nsp_pair(docs: Sequence[Sequence[list[int]]], rng: np.random.Generator, max_tokens: int | None = None) -> NspPair:
    """One NSP example from ``docs`` (each a list of sentences as id lists, in order).

    A starts at a random sentence that has a successor; half the time B is what follows it
    (IsNext), otherwise a random stretch of another document (NotNext), as BERT draws them. With
    only one document, NotNext B comes from that document, away from A and what follows it.
    With ``max_tokens``, A and B grow by whole following sentences to fill the budget, as
    BERT packs its segments; ``pair_ids`` then truncates.
    """
    empty = [n for n, doc in enumerate(docs) if not doc]
    if empty:
        raise LmvizError(f"NSP needs documents with sentences; document {empty[0] + 1} has none.")
    eligible = [i for i, d in enumerate(docs) if len(d) >= 2]
    if not eligible:
        raise LmvizError("NSP needs a document with at least two sentences.")
    if len(docs) == 1 and len(docs[0]) < 3:
        raise LmvizError("NSP from a single document needs at least three sentences (paragraphs): NotNext draws B "
                         "from a sentence that does not follow A.")
    d = int(rng.choice(eligible))
    i = int(rng.integers(0, len(docs[d]) - 1))
    budget_a = int(rng.integers(1, max_tokens - 3)) if max_tokens and max_tokens > 4 else 0
    a, j = list(docs[d][i]), i + 1
    while len(a) < budget_a and j < len(docs[d]) - 1:
        a += docs[d][j]
        j += 1
    if rng.random() < 0.5:
        source, k, is_next = d, j, True
    elif len(docs) > 1:
        source = int(rng.integers(0, len(docs) - 1))
        source += source >= d
        k, is_next = int(rng.integers(0, len(docs[source]))), False
    else:
        if i == 0 and j == len(docs[d]) - 1:  # A took the whole document but its last sentence: keep its first only
            a, j = list(docs[d][i]), i + 1
        away = [n for n in range(len(docs[d])) if n < i or n > j]
        source, k, is_next = d, int(rng.choice(away)), False
    budget_b = (max_tokens - 3 - len(a)) if max_tokens else 0
    b = list(docs[source][k])
    stop = i if source == d and k < i else len(docs[source])  # one document: a NotNext B drawn before A stops short of A
    k += 1
    while len(b) < budget_b and k < stop:
        b += docs[source][k]
        k += 1
    if not a or not b:
        raise LmvizError("NSP drew an empty sentence: every sentence must hold at least one token.")
    return NspPair(a, b, is_next)


def pair_ids(a: list[int], b: list[int], *, cls_id: int, sep_id: int, max_len: int) -> tuple[list[int], list[int]]:
    """``[CLS] A [SEP] B [SEP]`` and its ``token_type_ids``, truncating the longer side first."""
    if max_len < 3:
        raise LmvizError(f"A sentence pair needs room for [CLS] and two [SEP]: max_len must be at least 3; got {max_len}.")
    a, b = list(a), list(b)
    while len(a) + len(b) + 3 > max_len:
        (a if len(a) >= len(b) else b).pop()
    ids = [cls_id, *a, sep_id, *b, sep_id]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return ids, types


@dataclass(frozen=True)
class SpanCorruption:
    """T5's span corruption of one sequence: ``spans`` are ``(start, end)`` in the original ids."""

    input_ids: list[int]
    target_ids: list[int]
    spans: list[tuple[int, int]]
    notes: tuple[str, ...] = ()


MAX_SEED = 2**63 - 1


def check_seed(seed) -> int:
    """A seed as the whole number from 0 to ``MAX_SEED`` that numpy and torch both take, or a readable error."""
    try:
        value = int(seed)
    except (TypeError, ValueError, OverflowError):
        raise LmvizError(f"The seed must be a whole number; got {seed!r}.") from None
    if not 0 <= value <= MAX_SEED:
        raise LmvizError(f"The seed must be between 0 and {MAX_SEED:,}; got {value:,}.")
    return value


def random_spans(length: int, rng: np.random.Generator, noise_density: float = 0.15, mean_span: float = 3.0) -> list[tuple[int, int]]:
    """T5's ``random_spans_noise_mask`` as a list of ``(start, end)`` noise spans."""
    if not 0.0 < noise_density < 1.0:
        raise LmvizError(f"The noise density must be between 0 and 1; got {noise_density}.")
    if not mean_span >= 1.0:
        raise LmvizError(f"The mean span length must be at least 1 token; got {mean_span}.")
    if length < 2:
        return [(0, length)] if length == 1 else []
    n_noise = int(np.clip(round(length * noise_density), 1, length - 1))
    n_spans = max(1, int(round(n_noise / mean_span)))
    n_spans = min(n_spans, n_noise, length - n_noise)

    def partition(total: int, parts: int) -> np.ndarray:
        cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.array([], int)
        return np.diff(np.concatenate([[0], cuts, [total]]))

    noise_lengths = partition(n_noise, n_spans)
    keep_lengths = partition(length - n_noise, n_spans)
    spans, pos = [], 0
    for keep, noise in zip(keep_lengths, noise_lengths):
        pos += int(keep)
        spans.append((pos, pos + int(noise)))
        pos += int(noise)
    return spans


def span_corrupt(
    ids: Sequence[int],
    rng: np.random.Generator,
    *,
    sentinel_ids: Sequence[int],
    eos_id: int,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
    spans: list[tuple[int, int]] | None = None,
) -> SpanCorruption:
    """Replace noise spans by sentinels; the target is each sentinel then what it hid, then ``</s>``.

    ``spans`` (sorted, non-overlapping, non-empty ``(start, end)`` within ``ids``) replaces the random
    draw. There is one sentinel per span: a random draw with more spans than ``sentinel_ids`` keeps
    the first ones and says so in ``notes``; spans given explicitly must fit.
    """
    ids = list(ids)
    if not sentinel_ids:
        raise LmvizError("Span corruption needs at least one sentinel token.")
    notes: tuple[str, ...] = ()
    if spans is None:
        spans = random_spans(len(ids), rng, noise_density, mean_span)
        if len(spans) > len(sentinel_ids):
            spans = spans[: len(sentinel_ids)]
            notes = (f"Only the first {len(spans)} spans are corrupted (there are {len(sentinel_ids)} sentinels); "
                     f"the text from token {spans[-1][1]} on is left as it is.",)
    else:
        spans = _checked_spans(spans, len(ids), len(sentinel_ids))
    inputs, targets, pos = [], [], 0
    for k, (start, end) in enumerate(spans):
        inputs += ids[pos:start] + [sentinel_ids[k]]
        targets += [sentinel_ids[k]] + ids[start:end]
        pos = end
    inputs += ids[pos:] + [eos_id]
    targets += [eos_id]
    return SpanCorruption(inputs, targets, spans, notes)


def _checked_spans(spans, length: int, n_sentinels: int) -> list[tuple[int, int]]:
    """``spans`` as ``(start, end)`` pairs, or a readable error if they are not sorted, disjoint spans of the ids."""
    spans = list(spans)
    if len(spans) > n_sentinels:
        raise LmvizError(f"{len(spans)} spans, but only {n_sentinels} sentinels to stand for them.")
    out, pos = [], 0
    for span in spans:
        if not (isinstance(span, (tuple, list)) and len(span) == 2 and all(isinstance(x, (int, np.integer)) for x in span)):
            raise LmvizError(f"A span is a pair of whole numbers (start, end); got {span!r}.")
        start, end = int(span[0]), int(span[1])
        if not pos <= start < end <= length:
            raise LmvizError(f"Span {tuple(span)} must be non-empty, within the {length} tokens, and after the previous span.")
        out.append((start, end))
        pos = end
    return out


def uncorrupt(input_ids: Sequence[int], target_ids: Sequence[int], sentinel_ids: Sequence[int], eos_id: int) -> list[int]:
    """The original ids back from a span corruption's input and target (its inverse)."""
    sentinels = set(sentinel_ids)
    fills: dict[int, list[int]] = {}
    current = None
    for t in target_ids:
        if t in sentinels:
            current = t
            fills[current] = []
        elif t == eos_id:
            break
        elif current is not None:
            fills[current].append(t)
    out = []
    for t in input_ids:
        if t == eos_id:
            break
        out += fills.get(t, []) if t in sentinels else [t]
    return out


def causal_lm_pairs(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-2's objective: position ``t`` reads ``ids[:t+1]`` and predicts ``ids[t+1]``."""
    ids = _as_batch(ids)
    if ids.shape[1] < 2:
        raise LmvizError("Next-token prediction needs at least two tokens.")
    return ids[:, :-1], ids[:, 1:]


def _as_batch(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2:
        raise LmvizError(f"Expected ids of shape [batch, seq]; got {tuple(x.shape)}.")
    return x
