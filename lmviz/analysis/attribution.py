"""Attribution beside attention for one prediction.

The prediction is the log-probability of one column's target token (or, where the truth is unknown, of the
model's own top guess). Per input token (GPT-2: the tokens up to the query; BERT: the whole text; T5: the
encoder's tokens):

- gradient × input: ``∑_d ∂f/∂e_d · (e − b)_d`` at the token's embedding ``e`` (``b``: the baseline below) (Simonyan et al. 2014; Shrikumar 2017);
- integrated gradients (Sundararajan et al., 2017): ``∑_d (e − b)_d · mean_k ∂f/∂e_d(b + α_k (e − b))``, from a
  baseline token embedding ``b`` (``baseline``; positions and segments kept) along a straight path,
  ``α_k = (k + ½)/steps`` (midpoint rule). The
  attributions sum to ``f(e) − f(0)`` up to the rule's error, which ``completeness_gap`` reports;
- the query's attention row (a layer and head, or the mean of a layer's heads) and the attention rollout
  (Abnar & Zuidema, 2020: ``∏_l (½·mean_h A_l + ½·I)``, rows renormalised). For T5 the rollout is the decoder's
  cross-attention row (mean of layers and heads) through the encoder's own rollout.

Attention is a weight, not an effect; the rank correlation (Spearman) of ``|integrated gradients|`` with each
attention view says how far they agree on which tokens matter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from lmviz.analysis.targets import Targets, forward, require_head
from lmviz.errors import LmvizError
from lmviz.models.checkpoints import Loaded
from lmviz.models.kinds import kind_of
from lmviz.models.record import Want

STEPS = 32
AGREE = 0.5  # a rank correlation at least this high: attention and attribution broadly agree


@dataclass
class Attribution:
    """One prediction's attributions over ``tokens`` (``[S]`` each) and the attention of its query."""

    column: int
    query: int
    target: str
    guessed: bool  # True when the target is the model's own guess (the truth is unknown here)
    tokens: list[str]
    grad_input: np.ndarray
    integrated: np.ndarray
    f_input: float  # log p(target) with the real embeddings
    f_baseline: float  # ... with every token embedding at the baseline
    steps: int
    attention: np.ndarray  # [L, H, S]: the query's row in every layer and head (T5: cross-attention)
    rollout: np.ndarray  # [S]
    attention_kind: str = "self"  # the record's kind of ``attention``: "self", "causal" or "cross"

    @property
    def completeness_gap(self) -> float:
        """``|∑ IG − (f(x) − f(0))|``, in nats: how far the path integral's midpoint rule is from exact."""
        return abs(float(self.integrated.sum()) - (self.f_input - self.f_baseline))

    def row(self, layer: int, head: int | None) -> np.ndarray:
        """The query's attention in one head, or the mean of the layer's heads (``head=None``)."""
        a = self.attention[layer]
        return a.mean(0) if head is None else a[head]

    def agreement(self, layer: int, head: int | None) -> dict[str, float | None]:
        """Spearman's ρ of ``|IG|`` with the attention row and with the rollout (None with fewer than 3 tokens
        or a constant series, where ranks say nothing)."""
        return {"attention row": rank_correlation(np.abs(self.integrated), self.row(layer, head)),
                "rollout": rank_correlation(np.abs(self.integrated), self.rollout),
                "gradient × input": rank_correlation(np.abs(self.integrated), np.abs(self.grad_input))}

    def verdict(self, layer: int, head: int | None) -> str:
        """One sentence for the page: do attention and attribution point at the same tokens?"""
        rho = self.agreement(layer, head)["attention row"]
        if rho is None:
            return "Too few tokens to rank: attention and attribution cannot be compared here."
        who = "the layer's heads (on average) look" if head is None else "the head looks"
        looked = self.tokens[int(np.argmax(self.row(layer, head)))]
        moved = self.tokens[int(np.argmax(np.abs(self.integrated)))]
        if rho >= AGREE:
            if looked == moved:
                return f"They agree (ρ = {rho:.2f}): {who} most at “{looked}”, which is also the token that moves the prediction most."
            return (f"They broadly agree (ρ = {rho:.2f}) but differ on the first: {who} most at “{looked}”, while the token "
                    f"that moves the prediction most is “{moved}”.")
        if looked == moved:
            return (f"They disagree on the ranking (ρ = {rho:.2f}), though both put “{looked}” first. Attention says where a "
                    f"head reads, not what changes the answer.")
        return (f"They disagree (ρ = {rho:.2f}): {who} most at “{looked}”, but the token that moves the prediction most is "
                f"“{moved}”. Attention says where a head reads, not what changes the answer.")


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def rollout(stacked: np.ndarray) -> np.ndarray:
    """``[Q, K]`` attention rollout of ``stacked [L, H, Q, K]`` (square: self-attention)."""
    n = stacked.shape[-1]
    out = np.eye(n)
    for layer in stacked:
        a = 0.5 * layer.mean(0) + 0.5 * np.eye(n)
        out = (a / a.sum(-1, keepdims=True)) @ out
    return out


def attribute(loaded: Loaded, tg: Targets, column: int, steps: int = STEPS) -> Attribution:
    """Gradient × input, integrated gradients (``steps`` points, one batched forward) and the attention views
    for the prediction at ``tg.columns[column]``."""
    require_head(loaded, "attribution")
    if not 0 <= column < len(tg.columns):
        raise LmvizError(f"There is no prediction {column}; this text has {len(tg.columns)} (0–{len(tg.columns) - 1}).")
    if not 1 <= steps <= 256:
        raise LmvizError(f"Integrated gradients takes 1 to 256 steps; got {steps}.")
    query = tg.columns[column]
    dev = next(loaded.model.parameters()).device
    with torch.inference_mode():
        plain = forward(loaded, tg, want=Want(attention=True))
    guessed = tg.target[column] is None
    target = int(plain.logits[0, query].argmax()) if guessed else tg.target[column]
    kind = kind_of(loaded)
    seen = query + 1 if kind.causal else len(tg.source_ids)  # a decoder's query sees itself and what came before
    with torch.inference_mode(False), torch.enable_grad():
        table = loaded.model.get_input_embeddings().weight
        e = table[torch.tensor(tg.source_ids, device=dev)].detach().clone()
        base = baseline(loaded, table).detach().clone()
        alphas = torch.cat([torch.ones(1), (torch.arange(steps) + 0.5) / steps, torch.zeros(1)]).to(dev, e.dtype)
        path = (base + alphas[:, None, None] * (e - base)[None]).requires_grad_(True)
        logits = forward(loaded, tg, batch=len(alphas), inputs_embeds=path).logits[:, query].float()
        f = torch.log_softmax(logits, dim=-1)[:, target]
        (grad,) = torch.autograd.grad(f.sum(), path)
    contrib = (grad * (e - base)[None]).sum(-1).detach().float().cpu().numpy()[:, :seen]  # [steps + 2, S]
    rec = plain.record
    if "cross" in kind.attention:  # the decoder's query reads the source through cross-attention
        cross = rec.stacked("cross").numpy()[:, :, query, :seen]
        attention = cross
        roll = cross.mean((0, 1)) @ rollout(rec.stacked("self").numpy())
    else:
        stacked = rec.stacked(kind.attention[0]).numpy()
        attention = stacked[:, :, query, :seen]
        roll = rollout(stacked[:, :, :seen, :seen])[query]
    return Attribution(column, query, _name(loaded, target), guessed, tg.source_tokens[:seen], contrib[0],
                       contrib[1:-1].mean(0), float(f[0].detach()), float(f[-1].detach()), steps, attention, roll,
                       "cross" if "cross" in kind.attention else kind.attention[0])


def baseline(loaded: Loaded, table: torch.Tensor) -> torch.Tensor:
    """``[D]``: where the path starts. The padding token's embedding where the model has one (BERT's [PAD], T5's
    <pad>, the reference Captum's BERT tutorial uses); GPT-2 has none, so zero (its position embeddings keep the
    input away from the origin). T5 must not start at zero: its first RMS norm is scale-free, so every point of
    the path but the origin would look alike and the midpoint rule would miss the whole change."""
    pad = getattr(loaded.model.config, "pad_token_id", None)
    return table[pad] if pad is not None else torch.zeros_like(table[0])


def _name(loaded: Loaded, i: int) -> str:
    from lmviz.analysis.inference import label
    from lmviz.analysis.lens import token_text

    return label(token_text(loaded, i))


def attribution_data(at: Attribution, layer: int, head: int | None) -> dict:
    """The view's numbers for the JSON download."""
    return {"query_position": at.query, "target": at.target, "target_is_models_guess": at.guessed, "tokens": at.tokens,
            "gradient_x_input": at.grad_input.round(6).tolist(), "integrated_gradients": at.integrated.round(6).tolist(),
            "ig_steps": at.steps, "log_p_input": at.f_input, "log_p_baseline": at.f_baseline,
            "completeness_gap": at.completeness_gap, "attention_layer": layer, "attention_head": "mean" if head is None else head,
            "attention_row": at.row(layer, head).round(6).tolist(), "rollout": at.rollout.round(6).tolist(),
            "spearman_with_abs_ig": at.agreement(layer, head)}


def baseline_name(loaded) -> str:
    """What integrated gradients starts from for this model, in words (the page's completeness caption)."""
    return "the padding token" if getattr(loaded.model.config, "pad_token_id", None) is not None else "zero"
