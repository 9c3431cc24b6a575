"""Each model's pretraining objective run on a user's text, for the Masking page.

- ``mlm_predict``: BERT's masked-LM draw (select, then [MASK] / random / kept) and the model's top-5 at each hole.
- ``nsp_sample`` / ``nsp_predict``: a sentence pair and BERT's IsNext probability.
- ``t5_reconstruct``: T5's span corruption, the target, and the model's own fill of each sentinel.
- ``gpt2_shift_table``: GPT-2's shift-by-one pairs with the probability and loss at each position.

The corruption itself is ``lmviz.pretrain.masking``'s, the very code the pretraining runs use.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lmviz.pretrain import masking, text2text
from lmviz.models.checkpoints import Loaded
from lmviz.errors import LmvizError
from lmviz.analysis.inference import T5_MAX_TARGET, encode, greedy_t5, model_input, token_label
from lmviz.models.kinds import device_of, kind_of
from lmviz.pretrain.tokenizers import GPT2_EOT, SENTINELS

TOP_K = 5


HEAD_USE = {"mlm": "predict masked words", "nsp": "judge whether B follows A"}


def _need(loaded: Loaded, kind: str, head: str | None = None) -> None:
    if loaded.kind != kind:
        raise LmvizError(f"This needs a {kind} model; {loaded.folder.name} is a {loaded.kind} model.")
    if head is not None and head not in loaded.heads:
        raise LmvizError(f"{loaded.folder.name} has no {head.upper()} head, so it cannot {HEAD_USE[head]}.")


def _mask_token(loaded: Loaded, head: bool = True) -> str:
    """The token a masked-LM model (BERT, RoBERTa) hides words behind; what is missing is named."""
    kind = kind_of(loaded)
    if kind.mask_token is None:
        raise LmvizError(f"This needs a model trained to fill masked words; {loaded.folder.name} is a {kind.short} model.")
    if head and "mlm" not in loaded.heads:
        raise LmvizError(f"{loaded.folder.name} has no MLM head, so it cannot {HEAD_USE['mlm']}.")
    if loaded.tokenizer.token_to_id(kind.mask_token) is None:
        raise LmvizError(f"{loaded.folder.name}/tokenizer.json has no {kind.mask_token} token, so no word can be hidden from "
                         "this model the way it was trained.")
    return kind.mask_token


def _continues(label: str, byte_level: bool) -> bool:
    """Whether a piece's label continues the word before it: WordPiece's ``##``; byte-level BPE's pieces without a space."""
    return not label.startswith("␣") if byte_level else label.startswith("##")


# --- BERT and RoBERTa: masked language modelling ------------------------------------------------------

def bert_words(loaded: Loaded, text: str) -> list[str]:
    """The words of ``text`` as a masked-LM model splits them (a word = a piece and its continuations)."""
    _mask_token(loaded, head=False)
    byte_level = kind_of(loaded).byte_level
    enc = encode(loaded, text)
    words: list[str] = []
    for lab, special in zip(enc.labels, enc.special):
        if special:
            continue
        if _continues(lab, byte_level) and words:
            words[-1] += lab if byte_level else lab[2:]
        else:
            words.append(lab.removeprefix("␣"))
    return words


@dataclass
class MlmPrediction:
    """One selected position: what was there, what the model saw, and its five best guesses. A ``[MASK]`` the user
    typed (``typed``) is predicted too, but has no true token: its ``true_prob`` and ``loss`` are NaN."""

    position: int
    truth: str
    shown: str
    outcome: int
    top: list[tuple[str, float]]
    true_prob: float
    in_top5: bool
    loss: float
    typed: bool = False


@dataclass
class MlmResult:
    tokens: list[str]  # the original pieces, ``[CLS] … [SEP]``
    shown: list[str]  # what the model read after corruption
    outcome: list[int]  # masking.UNSELECTED / MASKED / RANDOM / KEPT per position
    predictions: list[MlmPrediction]
    loss: float  # mean cross-entropy (nats) over the selected positions: BERT's MLM loss (NaN if only typed [MASK]s)
    notes: list[str] = field(default_factory=list)

    @property
    def scored(self) -> list[MlmPrediction]:
        """The predictions that have a true token (not a ``[MASK]`` the user typed): the ones in the loss."""
        return [p for p in self.predictions if not p.typed]


def _word_of_piece(labels: list[str], special: list[bool], byte_level: bool = False) -> list[int]:
    """For each piece, the index of its word (as ``bert_words`` counts them), or -1 for specials."""
    out, w = [], -1
    for lab, sp in zip(labels, special):
        if sp:
            out.append(-1)
            continue
        if not (_continues(lab, byte_level) and w >= 0):
            w += 1
        out.append(w)
    return out


@torch.inference_mode()
def mlm_predict(loaded: Loaded, text: str, seed: int = 0, rate: float = 0.15, split: tuple[float, float] = (0.8, 0.1),
                chosen: tuple[int, ...] | None = None) -> MlmResult:
    """BERT's MLM draw on ``text`` with ``seed`` and the model's top-5 at every selected position.

    ``rate`` is the share of pieces selected; ``split`` the shares of the selected that become
    ``[MASK]`` and a random token (the rest stay). ``chosen`` (word indices, see ``bert_words``)
    selects those words' pieces instead of a random draw, and all of them become ``[MASK]``: the
    student chose them to see what BERT guesses there, so ``rate`` and ``split`` do not apply.
    A ``[MASK]`` typed in the text is a hole too: BERT's top-5 there is shown, outside the loss.
    """
    mask = _mask_token(loaded)
    enc = encode(loaded, text)
    tok = loaded.tokenizer
    mask_id = tok.token_to_id(mask)
    ids = torch.tensor(enc.ids)
    special = torch.tensor(enc.special)
    typed = [i for i, (t, sp) in enumerate(zip(enc.ids, enc.special)) if sp and t == mask_id]
    if not (~special).any() and not typed:
        raise LmvizError("The text has no words to mask (only special tokens).")
    notes = list(enc.notes)
    picked = None
    if chosen:
        words = _word_of_piece(enc.labels, enc.special, kind_of(loaded).byte_level)
        picked = torch.tensor([w in set(chosen) for w in words])
        if not picked.any():
            raise LmvizError("None of the chosen words is in the text any more; choose again.")
        split = (1.0, 0.0)
    draw = masking.mlm_mask(ids, special, mask_id=mask_id, vocab_size=tok.get_vocab_size(),
                            generator=torch.Generator().manual_seed(masking.check_seed(seed)), rate=rate, mask_frac=split[0],
                            random_frac=split[1], chosen=picked)
    outcome = draw.outcome[0].tolist()
    if typed:
        for i in typed:
            outcome[i] = masking.MASKED
        notes.append(f"You typed {mask} {'once' if len(typed) == 1 else f'{len(typed)} times'}: {kind_of(loaded).short} guesses there too (its "
                     "top 5 are shown), but there is no true word to score, so those positions are not in the loss.")
    if sum(enc.special) - 2 - len(typed) > 0:  # beyond the template's [CLS] and [SEP]
        notes.append("Special tokens typed in the text (such as [SEP] or [CLS]) are read as BERT's own markers and are "
                     "never selected for masking.")
    device = device_of(loaded.model)
    out = loaded.model(draw.input_ids.to(device), torch.tensor([enc.type_ids], device=device))
    logp = out.logits[0].float().log_softmax(-1).cpu()
    shown = [token_label(loaded, i) for i in draw.input_ids[0].tolist()]
    preds = []
    for pos in sorted((draw.labels[0] != masking.IGNORE).nonzero().flatten().tolist() + typed):
        best = logp[pos].topk(TOP_K)
        top = [(token_label(loaded, i), math.exp(v)) for v, i in zip(best.values.tolist(), best.indices.tolist())]
        if pos in typed:
            preds.append(MlmPrediction(pos, enc.labels[pos], shown[pos], masking.MASKED, top, math.nan, False, math.nan, typed=True))
            continue
        gold = enc.ids[pos]
        preds.append(MlmPrediction(pos, enc.labels[pos], shown[pos], outcome[pos], top, math.exp(logp[pos, gold]),
                                   gold in best.indices.tolist(), -float(logp[pos, gold])))
    scored = [p.loss for p in preds if not p.typed]
    loss = sum(scored) / len(scored) if scored else float("nan")
    return MlmResult(enc.labels, shown, outcome, preds, loss, notes)


# --- BERT: next sentence prediction ----------------------------------------------------------------

def nsp_sample(seed: int, true_next: bool) -> tuple[str, str]:
    """A speech from a held-out play and either the speech that follows it or one from another play."""
    from lmviz.pretrain.corpus import split

    held = split().test
    rng = np.random.default_rng(masking.check_seed(seed))
    d = int(rng.integers(0, len(held)))
    speeches = held[d].speeches
    i = int(rng.integers(0, len(speeches) - 1))
    if true_next:
        return str(speeches[i]), str(speeches[i + 1])
    other = held[(d + 1 + int(rng.integers(0, len(held) - 1))) % len(held)] if len(held) > 1 else held[d]
    j = int(rng.integers(0, len(other.speeches)))
    if other is held[d] and abs(j - i) <= 1:  # a single held-out play: at least avoid the true neighbour
        j = (i + len(speeches) // 2) % len(speeches)
    return str(speeches[i]), str(other.speeches[j])


@dataclass
class NspResult:
    tokens: list[str]
    type_ids: list[int]
    is_next: float  # the model's P(IsNext)
    notes: list[str] = field(default_factory=list)


@torch.inference_mode()
def nsp_predict(loaded: Loaded, a: str, b: str) -> NspResult:
    """``[CLS] A [SEP] B [SEP]``, its ``token_type_ids`` (0 for A, 1 for B) and BERT's P(IsNext)."""
    if kind_of(loaded).no_nsp:  # RoBERTa: trained without the objective, so nothing to show
        raise LmvizError(kind_of(loaded).no_nsp)
    _need(loaded, "bert", "nsp")
    if not (b or "").strip():
        raise LmvizError("Sentence B is empty: NSP needs two sentences.")
    enc = encode(loaded, a, pair=b)
    device = device_of(loaded.model)
    out = loaded.model(torch.tensor([enc.ids], device=device), torch.tensor([enc.type_ids], device=device))
    p = out.nsp_logits[0].float().softmax(-1)
    return NspResult(enc.labels, enc.type_ids, float(p[0]), enc.notes)


# --- T5: span corruption ---------------------------------------------------------------------------

@dataclass
class SpanFill:
    sentinel: str
    truth: str
    model: str

    @property
    def correct(self) -> bool:
        return self.truth.strip() == self.model.strip()


@dataclass
class T5Result:
    original: str
    input_tokens: list[str]  # the corrupted input, sentinels in place of the spans, then ``</s>``
    target_tokens: list[str]  # each sentinel followed by what it hides, then ``</s>``
    output_tokens: list[str]  # the model's greedy output (without the start token)
    fills: list[SpanFill]
    reconstruction: str  # the input with the model's fills put back
    target_loss: float  # mean cross-entropy (nats) of the true target, teacher-forced
    notes: list[str] = field(default_factory=list)


def _fills(ids: list[int], sentinel_ids: set[int], eos: int) -> dict[int, list[int]]:
    out, current = {}, None
    for t in ids:
        if t == eos:
            break
        if t in sentinel_ids:
            current = out.setdefault(t, [])
        elif current is not None:
            current.append(t)
    return out


@torch.inference_mode()
def t5_reconstruct(loaded: Loaded, text: str, seed: int = 0, noise: float = 0.15, mean_span: float = 3.0) -> T5Result:
    """T5's span corruption of ``text`` with ``seed``, and what the model writes for each sentinel."""
    _need(loaded, "t5")
    tok = loaded.tokenizer
    enc = encode(loaded, text, add_special=False)
    ids = [i for i, sp in zip(enc.ids, enc.special) if not sp]
    notes = list(enc.notes)
    if len(ids) < len(enc.ids):
        notes.append("Special tokens typed in the text (such as </s> or <extra_id_0>) were left out of the corruption.")
    if len(ids) < 2:
        raise LmvizError("Span corruption needs at least two tokens of text.")
    # a folder's tokenizer may have fewer sentinels than ours (span_corrupt then corrupts as many spans as it has)
    sentinel_ids = list(itertools.takewhile(lambda i: i is not None, (tok.token_to_id(s) for s in SENTINELS)))
    eos = tok.token_to_id("</s>")
    if eos is None:
        raise LmvizError(f"{loaded.folder.name}/tokenizer.json has no </s>, which ends T5's target; span corruption needs it.")
    sc = masking.span_corrupt(ids, np.random.default_rng(masking.check_seed(seed)), sentinel_ids=sentinel_ids, eos_id=eos,
                              noise_density=noise, mean_span=mean_span)
    notes += sc.notes
    source = text2text.prefix_ids(loaded, "fill") + list(sc.input_ids)  # "fill:" for a T5 trained text-to-text here
    out_ids = greedy_t5(loaded, source, min(T5_MAX_TARGET, len(sc.target_ids) + 8))[1:]
    truth, guess = _fills(sc.target_ids, set(sentinel_ids), eos), _fills(out_ids, set(sentinel_ids), eos)
    fills = [SpanFill(SENTINELS[k], tok.decode(truth.get(s, [])), tok.decode(guess.get(s, [])))
             for k, s in enumerate(sentinel_ids[: len(sc.spans)])]
    rebuilt = masking.uncorrupt(sc.input_ids, out_ids, sentinel_ids, eos)
    device = device_of(loaded.model)
    target = torch.tensor([sc.target_ids[:T5_MAX_TARGET]], device=device)
    dec_in = torch.cat([torch.full_like(target[:, :1], loaded.model.config.decoder_start_token_id), target[:, :-1]], 1)
    logits = loaded.model(torch.tensor([source], device=device), dec_in).logits[0].float()
    loss = float(F.cross_entropy(logits, target[0]))
    return T5Result(tok.decode(ids), [token_label(loaded, i) for i in source], [token_label(loaded, i) for i in sc.target_ids],
                    [token_label(loaded, i) for i in out_ids], fills, tok.decode(rebuilt), loss, notes)


# --- GPT-2: next-token prediction ------------------------------------------------------------------

@dataclass
class ShiftRow:
    position: int
    input: str  # the token read at this position
    target: str  # the next token, which this position must predict
    prob: float  # the model's probability of the target
    loss: float  # −ln prob (nats)
    guess: str  # the model's most likely next token
    guess_prob: float


@dataclass
class ShiftTable:
    rows: list[ShiftRow]
    loss: float  # mean over positions: GPT-2's training loss on this text
    notes: list[str] = field(default_factory=list)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


@torch.inference_mode()
def gpt2_shift_table(loaded: Loaded, text: str) -> ShiftTable:
    """Position ``t`` reads tokens ``0..t`` and predicts token ``t+1``; the text starts after ``<|endoftext|>``
    as every document does in training, so the first word gets a prediction too."""
    _need(loaded, "gpt2")
    if not (text or "").strip():
        raise LmvizError("The text is empty: type a sentence to see what GPT-2 predicts at each position.")
    enc = model_input(loaded, text)  # <|endoftext|> first, as every training document starts
    eot = loaded.tokenizer.token_to_id(GPT2_EOT)
    ids = enc.ids
    notes = list(enc.notes)
    if eot in ids[1:]:
        notes.append(f"You typed {GPT2_EOT}: GPT-2 reads it as the end of one document and the start of the next, as "
                     "in training, so what comes after it is predicted as the start of a new text.")
    pairs_in, pairs_out = masking.causal_lm_pairs(torch.tensor(ids))
    logits = loaded.model(pairs_in.to(device_of(loaded.model))).logits[0].float().cpu()
    logp = logits.log_softmax(-1)
    gold = pairs_out[0]
    picked = logp.gather(1, gold[:, None])[:, 0]
    best = logp.max(-1)
    labels = [token_label(loaded, i) for i in ids]
    rows = [ShiftRow(t, labels[t], labels[t + 1], math.exp(picked[t]), -float(picked[t]), token_label(loaded, best.indices[t]),
                     math.exp(best.values[t])) for t in range(len(gold))]
    return ShiftTable(rows, -float(picked.mean()), notes)
