"""What each model is asked to predict on a text, matched to its objective, and the loss of each prediction.

GPT-2 predicts the next token at every position; BERT the hidden word at each ``[MASK]``; T5's decoder the
next token of its target (teacher-forced). The Layers page's lens, knock-out and attribution all read one
``Targets``: the model's inputs, the predicting positions and the token each should predict.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lmviz.analysis.inference import encode, greedy_t5, label, model_input
from lmviz.errors import LmvizError
from lmviz.models.checkpoints import Loaded
from lmviz.models.kinds import device_of, kind_of
from lmviz.models.record import Want
from lmviz.pretrain.text2text import knows_prefixes, prefixed, split_prefix, strip_punctuation



@dataclass
class Targets:
    """One text as a model's prediction problem.

    ``ids``: the predicting stack's input ids ``[T]`` (BERT's with ``[MASK]`` in place); ``source_ids``: T5's
    encoder ids (else the same as ``ids``). ``columns``: the positions that predict something (GPT-2 and T5:
    every position; BERT: each ``[MASK]``), ``target``: the id each should predict (None where the truth is
    unknown: GPT-2's last position, a ``[MASK]`` you typed).
    """

    kind: str
    ids: list[int]
    tokens: list[str]
    source_ids: list[int]
    source_tokens: list[str]
    columns: list[int]
    target: list[int | None]
    target_tokens: list[str | None]
    type_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hidden: bool = False  # the columns are hidden words (BERT): name them by the word, not by the [MASK] read there

    @property
    def scored(self) -> list[int]:
        """Indices into ``columns`` whose target is known (the ones a loss can be computed at)."""
        return [i for i, t in enumerate(self.target) if t is not None]

    def column_labels(self) -> list[str]:
        """``"token (position)"``: the token read there, or for a hidden word the word behind the ``[MASK]``."""
        names = [t if self.hidden and t is not None else self.tokens[p] for p, t in zip(self.columns, self.target_tokens)]
        return [f"{n} ({p})" for n, p in zip(names, self.columns)]


def targets(loaded: Loaded, text: str, hide: list[int] | None = None, target: str | None = None) -> Targets:
    """``text`` as ``loaded``'s prediction problem. BERT: ``hide`` lists token positions to replace by ``[MASK]``
    (each scored on the token it hid; a ``[MASK]`` typed in the text is predicted, unscored). T5: ``target`` is
    the decoder's text (default: the model's own greedy output)."""
    tok, kind = loaded.tokenizer, kind_of(loaded)
    if tok is None:
        raise LmvizError("This model was loaded without its tokenizer, so it cannot read text.")
    if kind.stacks == ("decoder",):  # a decoder alone: the next token at every position
        enc = model_input(loaded, text)
        nxt = [*enc.ids[1:], None]
        return Targets(kind.name, enc.ids, enc.labels, enc.ids, enc.labels, list(range(len(enc.ids))), nxt,
                       [None if t is None else enc.labels[i + 1] for i, t in enumerate(nxt)], [], enc.notes)
    if not kind.writes:  # an encoder alone: the hidden words
        enc = model_input(loaded, text)
        mask = kind.mask_token or "[MASK]"  # RoBERTa's <mask>
        mask_id = tok.token_to_id(mask)
        if mask_id is None:
            raise LmvizError(f"{loaded.folder.name}/tokenizer.json has no {mask} token, so no word can be hidden from this model.")
        hide = sorted({int(p) for p in hide or []})
        bad = [p for p in hide if not 0 <= p < len(enc.ids) or enc.special[p]]
        if bad:
            raise LmvizError(f"Position {bad[0]} is not a word of this text (its words are at positions 1–{len(enc.ids) - 2}).")
        typed = [p for p, i in enumerate(enc.ids) if i == mask_id and p not in hide]
        columns = sorted(hide + typed)
        if not columns:
            raise LmvizError("Nothing is hidden: choose a word to hide (or type [MASK] in the text) so BERT has something to guess.")
        ids = [mask_id if p in hide else i for p, i in enumerate(enc.ids)]
        tokens = [mask if p in hide else enc.labels[p] for p in range(len(ids))]
        truth = [enc.ids[p] if p in hide else None for p in columns]
        return Targets(kind.name, ids, tokens, ids, tokens, columns, truth,
                       [enc.labels[p] if p in hide else None for p in columns], enc.type_ids, enc.notes, hidden=True)
    start = kind.decoder_start(loaded.model.config)  # an encoder-decoder: its decoder's target, teacher-forced
    limit = kind.context(loaded.model.config, "decoder")
    typed = target is not None and target.strip()
    if not typed and knows_prefixes(loaded) and split_prefix(text)[0] is None:
        # A T5 trained text-to-text is asked to punctuate the text, and scored on writing it back as it was typed.
        source = prefixed("punctuate", strip_punctuation(text))
        if not strip_punctuation(text):
            raise LmvizError(f"The text {'has no words' if text.strip() else 'is empty'}: type a sentence for T5 to punctuate.")
        enc, tgt = model_input(loaded, source), encode(loaded, text, stack="decoder")
        return _decoder_targets(kind, tok, start, tgt.ids[:limit], tgt.labels[:limit], enc, enc.notes + tgt.notes + [
            "T5 is asked to punctuate: it reads your text lower-cased without punctuation and is scored on writing it as "
            "you typed it (type a target, or start the text with fill: or genre:, to ask another task)."])
    enc = model_input(loaded, text)
    if typed:
        tgt = encode(loaded, target, stack="decoder")
        full, full_labels, notes = tgt.ids[:limit], tgt.labels[:limit], enc.notes + tgt.notes
    else:
        out = greedy_t5(loaded, enc.ids, 24)[1:]
        full, full_labels = out, [label(tok.id_to_token(i) or "?") for i in out]
        notes = enc.notes + ["T5's target is its own greedy output (type a target to score another)."]
    return _decoder_targets(kind, tok, start, full, full_labels, enc, notes)


def _decoder_targets(kind, tok, start: list[int], full: list[int], full_labels: list[str], enc, notes: list[str]) -> Targets:
    """Teacher forcing: the decoder reads its start and the target but its last token, and predicts the target."""
    ids = [*start, *full[:-1]]
    tokens = [label(tok.id_to_token(i) or "?") for i in start] + full_labels[:-1]
    return Targets(kind.name, ids, tokens, enc.ids, enc.labels, list(range(len(ids))), list(full), list(full_labels), [], notes)


def forward(loaded: Loaded, tg: Targets, batch: int = 1, want: Want | None = None, head_mask: dict | None = None,
            inputs_embeds: torch.Tensor | None = None):
    """The model's forward on ``tg``'s inputs, repeated ``batch`` times (one row per head mask or path step)."""
    dev, kind = device_of(loaded.model), kind_of(loaded)
    ids = torch.tensor([tg.ids], device=dev).expand(batch, -1)
    if kind.stacks == ("decoder",):
        return loaded.model(ids, want=want, head_mask=head_mask, inputs_embeds=inputs_embeds)
    if kind.stacks == ("encoder",):
        types = torch.tensor([tg.type_ids], device=dev).expand(batch, -1)
        return loaded.model(ids, types, want=want, head_mask=head_mask, inputs_embeds=inputs_embeds)
    src = torch.tensor([tg.source_ids], device=dev).expand(batch, -1)
    return loaded.model(src, ids, want=want, head_mask=head_mask, inputs_embeds=inputs_embeds)


def column_losses(tg: Targets, logits: torch.Tensor) -> np.ndarray:
    """``[B, C]``: the cross-entropy (nats) of each column's target under ``logits [B, T, V]``; NaN where unknown."""
    out = np.full((logits.shape[0], len(tg.columns)), np.nan)
    known = tg.scored
    if known:
        pos = torch.tensor([tg.columns[i] for i in known], device=logits.device)
        want = torch.tensor([tg.target[i] for i in known], device=logits.device)
        lp = F.log_softmax(logits[:, pos].float(), dim=-1)
        out[:, known] = -lp.gather(-1, want.expand(logits.shape[0], -1)[..., None])[..., 0].cpu().numpy()
    return out


def has_head(loaded: Loaded) -> bool:
    """Whether the folder holds the head that turns states into word guesses (a bare ``BertModel`` has no MLM head)."""
    return "lm" in loaded.heads or "mlm" in loaded.heads


def require_head(loaded: Loaded, what: str) -> None:
    if not has_head(loaded):
        raise LmvizError(f"This {kind_of(loaded).short} folder has no MLM head (cls.predictions), so it makes no word guesses and {what} has "
                         f"nothing to read; its attention, rollout and the training views still work.")
