"""T5 v1.0: an encoder-decoder with RMS LayerNorm and relative position buckets (Raffel et al., 2020).

Parameter names are those of ``transformers.T5ForConditionalGeneration``; weights load both ways
as they are. Unlike BERT and GPT-2, T5 does not divide ``QKᵀ`` by ``√d``: the scale is 1 and a
learned relative position bias is added instead (the record keeps ``scale`` and ``position_bias``).
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
class T5Config:
    vocab_size: int = 4096
    d_model: int = 128
    d_kv: int = 32
    d_ff: int = 512
    num_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 4
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dropout: float = 0.0
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    max_input_length: int = 512
    max_target_length: int = 512

    def __post_init__(self):
        check_sizes(self, ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                           "relative_attention_num_buckets", "relative_attention_max_distance", "max_input_length", "max_target_length"))
        # Half the buckets of a direction are exact; the log-spaced rest need room, or the bucket formula divides by zero.
        if self.relative_attention_num_buckets < 4 or self.relative_attention_max_distance <= self.relative_attention_num_buckets // 2:
            raise LmvizError(f"relative_attention_num_buckets = {self.relative_attention_num_buckets} and relative_attention_max_distance = "
                             f"{self.relative_attention_max_distance}: T5 needs at least 4 buckets and a distance above half of them.")

    def to_hf(self) -> dict:
        return {
            "model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "vocab_size": self.vocab_size,
            "d_model": self.d_model, "d_kv": self.d_kv, "d_ff": self.d_ff, "num_layers": self.num_layers,
            "num_decoder_layers": self.num_decoder_layers, "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "layer_norm_epsilon": self.layer_norm_epsilon, "dropout_rate": self.dropout, "feed_forward_proj": "relu",
            "pad_token_id": self.pad_token_id, "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id, "tie_word_embeddings": True, "is_encoder_decoder": True,
            "n_positions": self.max_input_length,
        }

    @classmethod
    def from_hf(cls, d: dict) -> "T5Config":
        """Our config from a ``transformers`` one; T5 v1.1 and later (gated GELU, no output rescale) are refused."""
        if d.get("feed_forward_proj", "relu") != "relu":
            raise LmvizError(f"feed_forward_proj is {d['feed_forward_proj']!r}; lmviz's T5 is T5 v1.0, whose feed-forward is 'relu'.")
        # Before transformers 5 an untied head marked T5 v1.1; since, scale_decoder_outputs says it.
        if d.get("tie_word_embeddings", True) is False or d.get("scale_decoder_outputs", True) is False:
            raise LmvizError("This T5 has no d_model ** -0.5 rescale before its LM head (T5 v1.1 and later); lmviz's T5 is T5 v1.0, "
                             "whose head is the shared embedding after that rescale.")
        keys = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                "relative_attention_num_buckets", "relative_attention_max_distance", "layer_norm_epsilon",
                "pad_token_id", "eos_token_id", "decoder_start_token_id")
        given = {k: d[k] for k in keys if d.get(k) is not None}
        given.setdefault("num_decoder_layers", given.get("num_layers"))
        return cls(**{k: v for k, v in given.items() if v is not None}, max_input_length=d.get("n_positions") or 512)


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's buckets: exact for small distances, log-spaced up to ``max_distance``; the sign matters only if bidirectional."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        relative_position = relative_position.abs()
    else:
        relative_position = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (
        torch.log(relative_position.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, relative_position, large)


class T5LayerNorm(nn.Module):
    """RMS norm: no mean subtraction, no bias."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps)).to(self.weight.dtype)


class T5Attention(nn.Module):
    def __init__(self, cfg: T5Config, has_relative_attention_bias: bool, bidirectional: bool):
        super().__init__()
        self.n_head, self.d_kv = cfg.num_heads, cfg.d_kv
        inner = cfg.num_heads * cfg.d_kv
        self.q, self.k, self.v = (nn.Linear(cfg.d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, cfg.d_model, bias=False)
        self.bidirectional = bidirectional
        self.cfg = cfg
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(cfg.relative_attention_num_buckets, cfg.num_heads)

    def compute_bias(self, q_len: int, k_len: int, device) -> torch.Tensor:
        """``[1, H, Q, K]`` for queries at the last ``q_len`` of ``k_len`` positions."""
        context = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        memory = torch.arange(k_len, device=device)[None, :]
        buckets = relative_position_bucket(memory - context, self.bidirectional, self.cfg.relative_attention_num_buckets,
                                           self.cfg.relative_attention_max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]

    def heads(self, lin, x):
        return lin(x).view(x.shape[0], -1, self.n_head, self.d_kv).transpose(1, 2)

    def forward(self, x, bias, mask, kv=None, past=None, kind="self", want: Want | None = None, record=None, keep=None):
        """``kv``: encoder states for cross-attention (or their cached ``(k, v)``); ``past``: this layer's self-attention cache."""
        q = self.heads(self.q, x)
        if isinstance(kv, tuple):
            k, v = kv
        else:
            src = x if kv is None else kv
            k, v = self.heads(self.k, src), self.heads(self.v, src)
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y, probs, scores = attend(q, k, v, scale=1.0, bias=bias, mask=mask, explicit=want is not None)
        if record is not None:
            record.add(kind, probs if want.attention else None, scores if want.scores else None, mask, (q, k, v) if want.qkv else None)
        if keep is not None:  # a knocked-out head adds nothing to the residual stream
            y = y * keep.to(y.dtype)
        y = y.transpose(1, 2).reshape(x.shape[0], -1, self.n_head * self.d_kv)
        return self.o(y), (k, v)


class T5LayerSelfAttention(nn.Module):
    def __init__(self, cfg: T5Config, has_bias: bool, bidirectional: bool):
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_bias, bidirectional)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.dropout = nn.Dropout(cfg.dropout)


class T5LayerCrossAttention(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.EncDecAttention = T5Attention(cfg, False, True)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.dropout = nn.Dropout(cfg.dropout)


class T5DenseReluDense(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.wo(self.dropout(F.relu(self.wi(x))))


class T5LayerFF(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseReluDense(cfg)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config, has_bias: bool, is_decoder: bool):
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(cfg, has_bias, not is_decoder)])
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(cfg))
        self.layer.append(T5LayerFF(cfg))

    def forward(self, x, bias, mask, enc=None, enc_bias=None, enc_mask=None, past=None, cross_kv=None, want=None, record=None,
                keep=(None, None)):
        """``keep``: the (self-attention, cross-attention) head multipliers of this block, or None each."""
        sa = self.layer[0]
        kind = "self" if enc is None and cross_kv is None else "causal"
        a, self_kv = sa.SelfAttention(sa.layer_norm(x), bias, mask, past=past, kind=kind, want=want, record=record, keep=keep[0])
        x = x + sa.dropout(a)
        new_cross = None
        if len(self.layer) == 3:
            ca = self.layer[1]
            a, new_cross = ca.EncDecAttention(ca.layer_norm(x), enc_bias, enc_mask, kv=cross_kv if cross_kv is not None else enc,
                                              kind="cross", want=want, record=record, keep=keep[1])
            x = x + ca.dropout(a)
        return self.layer[-1](x), self_kv, new_cross


class T5Stack(nn.Module):
    def __init__(self, cfg: T5Config, embed_tokens: nn.Embedding, is_decoder: bool):
        super().__init__()
        self.embed_tokens = embed_tokens
        n = cfg.num_decoder_layers if is_decoder else cfg.num_layers
        self.block = nn.ModuleList(T5Block(cfg, i == 0, is_decoder) for i in range(n))
        self.final_layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.dropout = nn.Dropout(cfg.dropout)


@dataclass
class T5Output:
    logits: torch.Tensor
    encoder_hidden: torch.Tensor
    cache: KVCache
    record: AttentionRecord | None


class T5ForConditionalGeneration(nn.Module):
    kind = "t5"
    config_class = T5Config

    def __init__(self, cfg: T5Config):
        super().__init__()
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = T5Stack(cfg, self.shared, is_decoder=False)
        self.decoder = T5Stack(cfg, self.shared, is_decoder=True)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.shared.weight  # tied; T5 v1.0 rescales by d_model ** -0.5 before it
        nn.init.normal_(self.shared.weight, std=1.0)
        for name, p in self.named_parameters():
            if p.dim() == 2 and "shared" not in name and "relative_attention_bias" not in name:
                # T5 has no 1/sqrt(d) in attention, so the query takes it at init instead (as Mesh TensorFlow
                # and transformers do); without it the first softmaxes saturate and attention never learns.
                extra = cfg.d_kv ** -0.5 if name.endswith((".q.weight",)) else 1.0
                nn.init.normal_(p, std=extra * p.shape[1] ** -0.5)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def unembed(self, h: torch.Tensor, normed: bool = False) -> torch.Tensor:
        """Logits ``[..., vocab]`` of a decoder residual ``h [..., d_model]`` through ``final_layer_norm``, the
        ``d_model ** -0.5`` rescale and the tied LM head, as the model's own output; ``normed``: after the norm already."""
        x = h if normed else self.decoder.final_layer_norm(h)
        return self.lm_head(x * self.config.d_model ** -0.5)

    def encode(self, input_ids, attention_mask=None, want: Want | None = None, record: AttentionRecord | None = None,
               head_mask: dict | None = None, inputs_embeds=None):
        """Encoder states ``[B, S, D]`` and the additive padding mask ``[B, 1, 1, S]`` for cross-attention.
        ``head_mask`` and ``inputs_embeds`` as in ``forward`` (its ``"self"`` entry; the source's embeddings)."""
        ids = check_ids(input_ids, self.config.vocab_size, self.config.max_input_length).to(self.shared.weight.device)
        keep = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else check_mask(attention_mask, tuple(ids.shape)).to(ids.device)
        enc_mask = additive_mask(keep[:, None, None, :])
        S = ids.shape[1]
        bias = self.encoder.block[0].layer[0].SelfAttention.compute_bias(S, S, ids.device)
        if record is not None:
            record.position_bias["self"] = bias.detach().float().cpu()
            record.scale["self"] = 1.0
        mask = enc_mask if (attention_mask is not None or want is not None) else None
        keeps = heads_kept(head_mask, "self", len(self.encoder.block), self.config.num_heads, ids.device)
        words = self.shared(ids) if inputs_embeds is None else check_embeds(inputs_embeds, (*ids.shape, self.config.d_model)).to(ids.device)
        x = self.encoder.dropout(words)
        hidden = [x]
        for block, keep in zip(self.encoder.block, keeps):
            x, _, _ = block(x, bias, mask, want=want, record=record, keep=(keep, None))
            hidden.append(x)
        x = self.encoder.dropout(self.encoder.final_layer_norm(x))
        if record is not None and want.hidden:
            record.hidden["encoder"] = [h.detach().float().cpu() for h in hidden[:-1]] + [x.detach().float().cpu()]
        return x, enc_mask

    def forward(self, input_ids=None, decoder_input_ids=None, attention_mask=None, decoder_attention_mask=None,
                want: Want | None = None, cache: KVCache | None = None, encoder_out=None, head_mask: dict | None = None,
                inputs_embeds=None) -> T5Output:
        """Encode ``input_ids [B, S]`` (or reuse ``encoder_out = (states, mask)``) and decode ``decoder_input_ids [B, T]``.

        ``cache`` from a previous call holds the decoder's self-attention ``(k, v)`` per layer and
        the cross-attention ``(k, v)`` of the encoder states, so decoding goes one token at a time.
        ``head_mask`` ``{kind: [layers, heads] or [B, layers, heads]}`` for ``self`` (encoder), ``causal`` and ``cross``
        scales each head's output (0 knocks it out); ``inputs_embeds [B, S, d_model]`` replaces the source's embeddings.
        """
        cfg = self.config
        if decoder_input_ids is None:
            raise LmvizError(f"T5 needs decoder_input_ids: the target so far, starting with decoder_start_token_id "
                             f"({cfg.decoder_start_token_id}).")
        if input_ids is None and encoder_out is None:
            raise LmvizError("T5 needs input_ids for its encoder (or encoder_out from encode()).")
        check_head_mask(head_mask, ("self", "causal", "cross"))
        record = AttentionRecord() if want is not None else None
        if encoder_out is None:
            encoder_out = self.encode(input_ids, attention_mask, want, record, head_mask, inputs_embeds)
        enc, enc_mask = encoder_out
        dec = check_ids(decoder_input_ids, cfg.vocab_size, None, "decoder input").to(enc.device)
        past = cache.causal if cache else None
        past_len = past[0][0].shape[2] if past else 0
        B, T = dec.shape
        if enc.shape[0] not in (1, B):
            raise LmvizError(f"The encoder read {enc.shape[0]} sequences but the decoder input has {B}: one target per source.")
        if past and (len(past) != len(self.decoder.block) or past[0][0].shape[0] != B):
            raise LmvizError(f"The cache is for a batch of {past[0][0].shape[0]} in {len(past)} layers, but the decoder input is a "
                             f"batch of {B} and this model has {len(self.decoder.block)} decoder layers: pass the cache of the same batch and model.")
        sa = self.decoder.block[0].layer[0].SelfAttention
        bias = sa.compute_bias(T, past_len + T, dec.device)
        keep = causal_keep(T, past_len + T, dec.device)[None, None]
        if decoder_attention_mask is not None:
            covers = f"the cached {past_len} and the {T} new decoder tokens" if past_len else "the decoder input"
            keep = keep & check_mask(decoder_attention_mask, (B, past_len + T), "decoder_attention_mask", covers).to(dec.device)[:, None, None, :]
        mask = additive_mask(keep)
        if record is not None:
            record.position_bias["causal"] = bias.detach().float().cpu()
            record.scale["causal"] = record.scale["cross"] = 1.0
        n = len(self.decoder.block)
        keeps = list(zip(heads_kept(head_mask, "causal", n, cfg.num_heads, dec.device),
                         heads_kept(head_mask, "cross", n, cfg.num_heads, dec.device)))
        x = self.decoder.dropout(self.shared(dec))
        hidden = [x]
        new_self, new_cross = [], []
        for i, block in enumerate(self.decoder.block):
            x, kv, ckv = block(x, bias, mask, enc=enc, enc_bias=None, enc_mask=enc_mask, past=past[i] if past else None,
                               cross_kv=cache.cross[i] if cache else None, want=want, record=record, keep=keeps[i])
            new_self.append(kv)
            new_cross.append(ckv)
            hidden.append(x)
        x = self.decoder.dropout(self.decoder.final_layer_norm(x))
        logits = self.unembed(x, normed=True)
        if record is not None:
            if want.hidden:
                record.hidden["decoder"] = [h.detach().float().cpu() for h in hidden[:-1]] + [x.detach().float().cpu()]
            record.logits = logits.detach().float().cpu()
        return T5Output(logits, enc, KVCache(new_self, new_cross), record)
