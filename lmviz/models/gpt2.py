"""GPT-2: a pre-LN decoder with causal self-attention (Radford et al., 2019).

Parameter names are those of ``transformers.GPT2LMHeadModel``. Its ``Conv1D`` keeps weights as
``[in, out]``; ours does too, so weights load both ways with no transpose.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmviz.errors import LmvizError
from lmviz.models.record import (AttentionRecord, KVCache, Want, additive_mask, attend, causal_keep, check_embeds, check_head_mask, check_ids,
                                 check_mask, check_sizes, heads_kept)


@dataclass
class GPT2Config:
    vocab_size: int = 8192
    n_positions: int = 256
    n_embd: int = 192
    n_layer: int = 4
    n_head: int = 4
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.0
    eos_token_id: int = 0
    n_inner: int | None = None  # the MLP's width; None means 4 * n_embd, as in GPT-2

    def __post_init__(self):
        check_sizes(self, ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") + (("n_inner",) if self.n_inner is not None else ()),
                    divides=("n_head", "n_embd"))

    def to_hf(self) -> dict:
        return {
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": self.vocab_size,
            "n_positions": self.n_positions, "n_embd": self.n_embd, "n_layer": self.n_layer, "n_head": self.n_head,
            "n_inner": self.n_inner, "activation_function": "gelu_new", "layer_norm_epsilon": self.layer_norm_epsilon,
            "resid_pdrop": self.dropout, "embd_pdrop": self.dropout, "attn_pdrop": self.dropout,
            "bos_token_id": self.eos_token_id, "eos_token_id": self.eos_token_id, "tie_word_embeddings": True,
            "scale_attn_weights": True,
        }

    @classmethod
    def from_hf(cls, d: dict) -> "GPT2Config":
        """Our config from a ``transformers`` one; the variants our GPT-2 does not compute are refused by name."""
        act = d.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):  # both are GELU's tanh approximation
            raise LmvizError(f"activation_function is {act!r}; lmviz's GPT-2 computes 'gelu_new' (GELU, tanh approximation) only.")
        for key, ours in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                          ("reorder_and_upcast_attn", False), ("tie_word_embeddings", True), ("add_cross_attention", False)):
            if d.get(key, ours) != ours:
                raise LmvizError(f"{key} is {d[key]!r}; lmviz's GPT-2 computes only {key} = {ours}, as the original GPT-2 does.")
        return cls(vocab_size=d["vocab_size"], n_positions=d["n_positions"], n_embd=d["n_embd"], n_layer=d["n_layer"],
                   n_head=d["n_head"], layer_norm_epsilon=d.get("layer_norm_epsilon", 1e-5),
                   eos_token_id=d.get("eos_token_id") or 0, n_inner=d.get("n_inner"))


class Conv1D(nn.Module):
    """A linear layer with its weight stored ``[in, out]``, as GPT-2's checkpoints have it."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.n_embd // cfg.n_head
        self.c_attn = Conv1D(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_embd)

    def forward(self, x, mask, past, want: Want | None, record: AttentionRecord | None, keep=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.d_head).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        scale = 1.0 / math.sqrt(self.d_head)
        explicit = want is not None
        if not explicit and mask is None and past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # fused training path
        else:
            y, probs, scores = attend(q, k, v, scale=scale, bias=None, mask=mask, explicit=explicit)
            if record is not None:
                record.add("causal", probs if want.attention else None, scores if want.scores else None, mask,
                           (q, k, v) if want.qkv else None)
        if keep is not None:  # a knocked-out head adds nothing to the residual stream
            y = y * keep.to(y.dtype)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        inner = cfg.n_inner or 4 * cfg.n_embd
        self.c_fc = Conv1D(cfg.n_embd, inner)
        self.c_proj = Conv1D(inner, cfg.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask, past, want, record, keep=None):
        a, kv = self.attn(self.ln_1(x), mask, past, want, record, keep)
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.ln_2(x))), kv


class Transformer(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)


@dataclass
class GPT2Output:
    logits: torch.Tensor
    cache: KVCache
    record: AttentionRecord | None
    loss: torch.Tensor | None = None


class GPT2LMHeadModel(nn.Module):
    kind = "gpt2"
    config_class = GPT2Config

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.config = cfg
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))
        nn.init.normal_(self.transformer.wte.weight, std=0.02)
        nn.init.normal_(self.transformer.wpe.weight, std=0.01)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def unembed(self, h: torch.Tensor, normed: bool = False) -> torch.Tensor:
        """Logits ``[..., vocab]`` of a residual ``h [..., n_embd]`` through ``ln_f`` and the LM head (the logit lens);
        ``normed``: ``h`` is after ``ln_f`` already (the record's last hidden state)."""
        return self.lm_head(h if normed else self.transformer.ln_f(h))

    def adapt_state(self, state: dict) -> dict:
        """Accept a bare ``GPT2Model`` folder (no ``transformer.`` prefix): its ``wte`` is the LM head too."""
        if not any(k.startswith("transformer.") for k in state):
            state = {f"transformer.{k}": v for k, v in state.items()}
        return state

    def forward(self, input_ids, attention_mask=None, cache=None, want: Want | None = None, labels=None,
                causal: bool = True, head_mask: dict | None = None, inputs_embeds=None) -> GPT2Output:
        """``input_ids [B, T]``; ``attention_mask [B, T_past + T]`` (1 = real token, 0 = padding, on the right
        only: position ids count from the first column, as in ``transformers`` without ``position_ids``);
        ``cache`` from a previous call continues the sequence one step (or more) at a time.
        ``causal=False`` removes the causal mask so every token sees the future (the Masks page's experiment).
        ``head_mask`` ``{"causal": [n_layer, n_head] or [B, n_layer, n_head]}`` scales each head's output (0 knocks it out);
        ``inputs_embeds [B, T, n_embd]`` replaces the token embeddings of ``input_ids`` (attribution's gradients and paths)."""
        cfg = self.config
        past_len = cache[0][0].shape[2] if cache else 0
        ids = check_ids(input_ids, cfg.vocab_size, None if past_len else cfg.n_positions)
        B, T = ids.shape
        if cache:
            if len(cache) != cfg.n_layer or cache[0][0].shape[0] != B:
                raise LmvizError(f"The cache is for a batch of {cache[0][0].shape[0]} in {len(cache)} layers, but the input is a batch "
                                 f"of {B} and this model has {cfg.n_layer} layers: pass the cache of the same batch and model.")
            if past_len + T > cfg.n_positions:
                raise LmvizError(f"The cache holds {past_len} tokens and the input adds {T}: GPT-2 reads at most "
                                 f"n_positions = {cfg.n_positions} positions.")
        ids = ids.to(self.transformer.wte.weight.device)
        if attention_mask is not None:
            real = check_mask(attention_mask, (B, past_len + T), covers=f"the cached {past_len} and the {T} new tokens" if past_len else "the input")
            if bool((real[:, 1:] & ~real[:, :-1]).any()):
                raise LmvizError("attention_mask has padding before a real token (left padding); lmviz's GPT-2 counts positions "
                                 "from the first column, so pad on the right.")
        pos = torch.arange(past_len, past_len + T, device=ids.device)
        check_head_mask(head_mask, ("causal",))
        keeps = heads_kept(head_mask, "causal", cfg.n_layer, cfg.n_head, ids.device)
        tokens = self.transformer.wte(ids) if inputs_embeds is None else check_embeds(inputs_embeds, (B, T, cfg.n_embd)).to(ids.device)
        x = self.transformer.drop(tokens + self.transformer.wpe(pos))
        mask = None
        if want is not None or attention_mask is not None or cache or not causal:
            keep = causal_keep(T, past_len + T, ids.device)[None, None]
            if not causal:
                keep = torch.ones_like(keep)
            if attention_mask is not None:
                keep = keep & real.to(ids.device)[:, None, None, :]
            mask = additive_mask(keep)
        record = AttentionRecord() if want is not None else None
        if record is not None:
            record.scale["causal"] = 1.0 / math.sqrt(cfg.n_embd // cfg.n_head)
        hidden = [x] if want is not None and want.hidden else None
        new_cache = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, mask, cache[i] if cache else None, want, record, keeps[i])
            new_cache.append(kv)
            if hidden is not None:
                hidden.append(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        if record is not None:
            if hidden is not None:
                hidden[-1] = x  # the last hidden state is after ln_f, as transformers' output_hidden_states has it
                record.hidden["decoder"] = [h.detach().float().cpu() for h in hidden]
            record.logits = logits.detach().float().cpu()
        loss = None
        if labels is not None:
            if tuple(labels.shape) != (B, T):
                raise LmvizError(f"labels have shape {tuple(labels.shape)}; they must match input_ids, {(B, T)}.")
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return GPT2Output(logits, KVCache(new_cache), record, loss)
