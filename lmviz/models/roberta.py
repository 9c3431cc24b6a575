"""RoBERTa: BERT's encoder trained differently (Liu et al., 2019), loaded from ``transformers``' ``RobertaForMaskedLM``.

The math is BERT's (``lmviz.models.bert``) with one switch: position ids count from ``pad_token_id + 1``, and a pad
token sits at position ``pad_token_id`` (``BertConfig.positions_after_padding``). What differs is the training: byte-level
BPE instead of WordPiece, MLM only (no next-sentence head, no pooler), masks drawn afresh every epoch, one segment
(``type_vocab_size`` 1). Its parameter names (``roberta.``, ``lm_head.``) are read as BERT's on loading.
"""
from __future__ import annotations

from dataclasses import dataclass

from lmviz.errors import LmvizError
from lmviz.models.bert import BertConfig, BertForPreTraining

_NAMES = (("roberta.", "bert."), ("lm_head.dense.", "cls.predictions.transform.dense."),
          ("lm_head.layer_norm.", "cls.predictions.transform.LayerNorm."), ("lm_head.decoder.", "cls.predictions.decoder."),
          ("lm_head.bias", "cls.predictions.bias"))


@dataclass
class RobertaConfig(BertConfig):
    pad_token_id: int = 1
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    positions_after_padding: bool = True

    def to_hf(self) -> dict:
        return {**super().to_hf(), "model_type": "roberta", "architectures": ["RobertaForMaskedLM"]}

    @classmethod
    def from_hf(cls, d: dict) -> "RobertaConfig":
        if d.get("is_decoder") or d.get("add_cross_attention"):
            raise LmvizError("This RoBERTa is a decoder (is_decoder or add_cross_attention); lmviz's RoBERTa is the encoder.")
        base = BertConfig.from_hf(d)
        return cls(**{**base.__dict__, "positions_after_padding": True})


class RobertaForMaskedLM(BertForPreTraining):
    """BERT's encoder and MLM head; no pooler, no next-sentence head."""

    kind = "roberta"
    config_class = RobertaConfig
    optional_heads = {"mlm": ("cls.predictions.",)}

    def __init__(self, cfg: RobertaConfig):
        super().__init__(cfg)
        self.bert.pooler = None
        self.cls.seq_relationship = None

    def adapt_state(self, state: dict) -> dict:
        """``transformers``' RoBERTa names as BERT's; a ``RobertaModel``'s pooler is left out (no objective reads it)."""
        out = {}
        for name, value in state.items():
            for theirs, ours in _NAMES:
                if name.startswith(theirs):
                    name = ours + name[len(theirs):]
                    break
            if not name.startswith("bert.pooler."):
                out[name] = value
        return super().adapt_state(out)
