"""BERT: a post-LN encoder with bidirectional self-attention, MLM and NSP heads (Devlin et al., 2019).

Parameter names are those of ``transformers.BertForPreTraining``; weights load both ways as they are.
A folder without some heads loads too: a bare ``BertModel`` (with or without its pooler) for attention
only, a ``BertForMaskedLM`` for attention and masked words; ``optional_heads`` names what each head needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmviz.errors import LmvizError
from lmviz.models.record import (AttentionRecord, Want, additive_mask, attend, causal_keep, check_embeds, check_head_mask, check_ids,
                                 check_mask, check_sizes, heads_kept)


@dataclass
class BertConfig:
    vocab_size: int = 4096
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 128
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.0
    pad_token_id: int = 0
    positions_after_padding: bool = False  # RoBERTa: position ids count from pad_token_id + 1, and a pad sits at pad_token_id

    @property
    def context(self) -> int:
        """Tokens one text may have (RoBERTa's first pad_token_id + 1 position embeddings are never a token's)."""
        return self.max_position_embeddings - (self.pad_token_id + 1 if self.positions_after_padding else 0)

    def __post_init__(self):
        check_sizes(self, ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                           "max_position_embeddings", "type_vocab_size"),
                    divides=("num_attention_heads", "hidden_size"))

    def to_hf(self) -> dict:
        return {
            "model_type": "bert", "architectures": ["BertForPreTraining"], "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings, "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps, "hidden_act": "gelu", "hidden_dropout_prob": self.dropout,
            "attention_probs_dropout_prob": self.dropout, "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute", "tie_word_embeddings": True,
        }

    @classmethod
    def from_hf(cls, d: dict) -> "BertConfig":
        if d.get("hidden_act", "gelu") != "gelu" or d.get("position_embedding_type", "absolute") != "absolute":
            raise LmvizError(f"hidden_act is {d.get('hidden_act')!r} and position_embedding_type "
                             f"{d.get('position_embedding_type')!r}; lmviz's BERT computes 'gelu' with 'absolute' positions only.")
        keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id")
        return cls(**{k: d[k] for k in keys if k in d and d[k] is not None})


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pad = cfg.pad_token_id if cfg.positions_after_padding else None

    def forward(self, ids, token_type_ids, inputs_embeds=None):
        pos = torch.arange(ids.shape[1], device=ids.device)
        if self.pad is not None:  # RoBERTa (transformers' create_position_ids_from_input_ids)
            real = (ids != self.pad).long()
            pos = real.cumsum(1) * real + self.pad
        words = self.word_embeddings(ids) if inputs_embeds is None else inputs_embeds
        x = words + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.n_head, self.d_head = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, mask, want: Want | None, record: AttentionRecord | None, keep=None):
        B, T, C = x.shape
        q, k, v = (lin(x).view(B, T, self.n_head, self.d_head).transpose(1, 2) for lin in (self.query, self.key, self.value))
        y, probs, scores = attend(q, k, v, scale=1.0 / math.sqrt(self.d_head), bias=None, mask=mask, explicit=want is not None)
        if record is not None:
            record.add("self", probs if want.attention else None, scores if want.scores else None, mask, (q, k, v) if want.qkv else None)
        if keep is not None:  # a knocked-out head adds nothing (transformers' former head_mask zeroed its probabilities)
            y = y * keep.to(y.dtype)
        return y.transpose(1, 2).reshape(B, T, C)


class BertSelfOutput(nn.Module):
    """Dense, dropout, then the residual and LayerNorm: BERT is post-LN."""

    def __init__(self, cfg: BertConfig, d_in: int):
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg, cfg.hidden_size)

    def forward(self, x, mask, want, record, keep=None):
        return self.output(self.self(x, mask, want, record, keep), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size)  # transformers' BertOutput: same boxes

    def forward(self, x, mask, want, record, keep=None):
        x = self.attention(x, mask, want, record, keep)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))


class BertModel(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h):
        return self.LayerNorm(F.gelu(self.dense(h)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.bias = self.decoder.bias  # transformers keeps the output bias under both names

    def forward(self, h):
        return self.decoder(self.transform(h))


class BertPreTrainingHeads(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(cfg)
        self.seq_relationship = nn.Linear(cfg.hidden_size, 2)


@dataclass
class BertOutput:
    logits: torch.Tensor  # MLM logits [B, T, vocab]
    nsp_logits: torch.Tensor | None  # [B, 2]: index 0 = IsNext, 1 = NotNext (transformers' convention); None without NSP (RoBERTa)
    record: AttentionRecord | None


class BertForPreTraining(nn.Module):
    kind = "bert"
    config_class = BertConfig
    # The pretraining heads a folder may lack, by the tensors each needs (MLM: masked words; NSP: IsNext, from the pooler).
    optional_heads = {"mlm": ("cls.predictions.",), "nsp": ("bert.pooler.", "cls.seq_relationship.")}

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg)
        self.cls = BertPreTrainingHeads(cfg)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied MLM output
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def unembed(self, h: torch.Tensor, normed: bool = True) -> torch.Tensor:
        """MLM logits ``[..., vocab]`` of any layer's output ``h [..., hidden]`` (post-LN: every layer's is normed)."""
        return self.cls.predictions(h)

    def adapt_state(self, state: dict) -> dict:
        """Accept a bare ``BertModel`` folder (no ``bert.`` prefix) and the output bias under either name."""
        if not any(k.startswith("bert.") for k in state):
            state = {f"bert.{k}": v for k, v in state.items()}
        if "cls.predictions.bias" in state and "cls.predictions.decoder.bias" not in state:
            state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
        return state

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, want: Want | None = None, causal: bool = False,
                head_mask: dict | None = None, inputs_embeds=None) -> BertOutput:
        """``input_ids``, ``token_type_ids``, ``attention_mask``: ``[B, T]``. ``causal=True`` runs BERT
        under a causal mask instead of its own bidirectional one (the Masks page's experiment).
        ``head_mask`` ``{"self": [layers, heads] or [B, layers, heads]}`` scales each head's output (0 knocks it out);
        ``inputs_embeds [B, T, hidden]`` replaces the word embeddings of ``input_ids`` (before position, type and LayerNorm)."""
        cfg = self.config
        ids = check_ids(input_ids, cfg.vocab_size, cfg.context).to(self.bert.embeddings.word_embeddings.weight.device)
        types = torch.zeros_like(ids) if token_type_ids is None else check_ids(token_type_ids, cfg.type_vocab_size, None, "token types").to(ids.device)
        if types.shape != ids.shape:
            raise LmvizError("token_type_ids must have the same shape as input_ids.")
        keep = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device=ids.device)[None, None]
        if causal:
            keep = causal_keep(ids.shape[1], ids.shape[1], ids.device)[None, None]
        if attention_mask is not None:
            keep = keep & check_mask(attention_mask, tuple(ids.shape)).to(ids.device)[:, None, None, :]
        mask = None if attention_mask is None and not causal and want is None else additive_mask(keep)
        record = AttentionRecord() if want is not None else None
        if record is not None:
            record.scale["self"] = 1.0 / math.sqrt(cfg.hidden_size // cfg.num_attention_heads)
        check_head_mask(head_mask, ("self",))
        keeps = heads_kept(head_mask, "self", cfg.num_hidden_layers, cfg.num_attention_heads, ids.device)
        words = None if inputs_embeds is None else check_embeds(inputs_embeds, (*ids.shape, cfg.hidden_size)).to(ids.device)
        x = self.bert.embeddings(ids, types, words)
        hidden = [x]
        for layer, keep in zip(self.bert.encoder.layer, keeps):
            x = layer(x, mask, want, record, keep)
            hidden.append(x)
        logits = self.cls.predictions(x)
        nsp = None if self.cls.seq_relationship is None else self.cls.seq_relationship(self.bert.pooler(x))
        if record is not None:
            if want.hidden:
                record.hidden["encoder"] = [h.detach().float().cpu() for h in hidden]
            record.logits = logits.detach().float().cpu()
        return BertOutput(logits, nsp, record)
