"""Every layer's guess: a lens matched to each model's objective.

GPT-2: each layer's residual stream through the final LayerNorm ``ln_f`` and the tied LM head (the logit
lens, nostalgebraist 2020). BERT: the MLM head (``cls.predictions``) after every layer, read at each
``[MASK]`` (BERT is post-LN, so each layer's output is already normalised as the head expects). T5: the
decoder's residual at every layer through its ``final_layer_norm``, the ``d_model ** -0.5`` rescale T5 v1.0
applies, and the tied LM head. Row 0 is the embeddings; the last row is the model's own output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmviz.analysis.inference import label
from lmviz.analysis.targets import Targets, forward, require_head
from lmviz.models.checkpoints import Loaded
from lmviz.models.kinds import kind_of
from lmviz.models.record import Want

TOP = 5


@dataclass
class Lens:
    """``prob[layer, column]``: the probability of the column's target (NaN where unknown); ``top[layer][column]``:
    the five likeliest tokens and their probabilities; ``rank[layer, column]``: the target's rank (1 = top)."""

    rows: list[str]
    columns: list[str]
    target_tokens: list[str | None]
    prob: np.ndarray
    rank: np.ndarray
    top: list[list[list[tuple[str, float]]]]

    def top_token(self) -> list[list[str]]:
        return [[cell[0][0] for cell in row] for row in self.top]

    def surest(self) -> int:
        """The column whose right token the model's output gives the highest probability (0 when none is known):
        a prediction worth explaining."""
        last = self.prob[-1]
        return 0 if np.isnan(last).all() else int(np.nanargmax(last))

    def first_layer_right(self) -> list[int | None]:
        """Per column, the first row from which the target stays the top guess to the end (None: it never does)."""
        out = []
        for c in range(len(self.columns)):
            right = self.rank[:, c] == 1
            first = None
            for r in range(len(self.rows) - 1, -1, -1):
                if not right[r]:
                    break
                first = r
            out.append(first)
        return out


def how(loaded: Loaded) -> str:
    """One sentence for the page: what this model's lens reads, by its objective."""
    kind = kind_of(loaded)
    if not kind.writes:
        return f"{kind.short}'s MLM head applied after every layer at each hidden word: how the guess forms."
    if len(kind.stacks) == 1:
        return (f"{kind.short}'s final LayerNorm and LM head applied to the residual stream after every layer (the logit lens): "
                "at each position, the next token.")
    return (f"{kind.short}'s decoder residual after every layer, through its final norm, the d_model^-0.5 rescale and the LM "
            "head: each next token of the target.")


def layer_logits(loaded: Loaded, tg: Targets) -> tuple[torch.Tensor, torch.Tensor]:
    """``([L + 1, C, vocab], model logits [C, vocab])``: every layer's logits at ``tg``'s columns, and the model's own."""
    require_head(loaded, "the lens")
    stack = kind_of(loaded).stacks[-1]  # the stack that predicts: BERT's encoder, GPT-2's and T5's decoder
    with torch.inference_mode():
        out = forward(loaded, tg, want=Want(attention=False, hidden=True))
        hidden = out.record.hidden[stack]
        cols = torch.tensor(tg.columns)
        dev = next(loaded.model.parameters()).device
        # the whole sequence through the head, then the columns: the same arithmetic as the model, so the last row is exact
        rows = [loaded.model.unembed(h[0].to(dev), normed=i == len(hidden) - 1)[cols.to(dev)].float().cpu() for i, h in enumerate(hidden)]
        return torch.stack(rows), out.logits[0, cols.to(out.logits.device)].float().cpu()


def lens(loaded: Loaded, tg: Targets) -> Lens:
    """The lens of ``tg``: per layer and column, the target's probability and rank and the top five guesses."""
    logits, _ = layer_logits(loaded, tg)
    probs = torch.softmax(logits, dim=-1)
    L, C = probs.shape[:2]
    prob, rank = np.full((L, C), np.nan), np.full((L, C), np.nan)
    for c, t in enumerate(tg.target):
        if t is not None:
            prob[:, c] = probs[:, c, t].numpy()
            rank[:, c] = (probs[:, c] > probs[:, c, t:t + 1]).sum(-1).numpy() + 1
    p, i = probs.topk(TOP, dim=-1)
    names = {int(v): label(token_text(loaded, int(v))) for v in i.unique()}
    top = [[[(names[int(i[r, c, k])], float(p[r, c, k])) for k in range(TOP)] for c in range(C)] for r in range(L)]
    rows = ["embeddings"] + [f"layer {n}" for n in range(1, L)]
    return Lens(rows, tg.column_labels(), tg.target_tokens, prob, rank, top)


def token_text(loaded: Loaded, i: int) -> str:
    """A token id as the user reads it: GPT-2's byte-level pieces decoded (``Ġthe`` → `` the``), others as pieces."""
    piece = loaded.tokenizer.id_to_token(i) or "?"
    if type(loaded.tokenizer.decoder).__name__ == "ByteLevel":  # its pieces are bytes, not text
        return loaded.tokenizer.decode([i], skip_special_tokens=False) or piece
    return piece


def lens_data(ln: Lens) -> dict:
    """The view's numbers for the JSON download."""
    return {"rows": ln.rows, "columns": ln.columns, "targets": ln.target_tokens,
            "target_probability": [[None if np.isnan(v) else float(v) for v in row] for row in ln.prob],
            "target_rank": [[None if np.isnan(v) else int(v) for v in row] for row in ln.rank],
            "top5": [[[[t, round(p, 6)] for t, p in cell] for cell in row] for row in ln.top]}
