"""The one attention record every figure reads, and the attention both paths compute.

Shapes (``B`` batch, ``H`` heads, ``Q`` query positions, ``K`` key positions, ``D`` model width):

- ``probs[kind][layer]``: post-softmax attention, ``[B, H, Q, K]``, rows sum to 1.
- ``scores[kind][layer]``: pre-softmax scores before the mask, ``[B, H, Q, K]``: ``QKᵀ/√d`` for BERT
  and GPT-2, ``QKᵀ + position_bias`` for T5 (T5 has no ``1/√d``).
- ``masks[kind][layer]``: the additive mask that was applied, ``[B, 1, Q, K]`` (0 or a large negative).
- ``position_bias[kind]``: T5's relative position bias, ``[1, H, Q, K]`` (shared by every layer).
- ``qkv[kind][layer]``: ``(q, k, v)`` per head, each ``[B, H, T, d_head]``, for one head's arithmetic.
- ``hidden[stack][layer]``: hidden states ``[B, T, D]``; index 0 is the embedding output.
- ``logits``: ``[B, T, vocab]``.

Kinds: ``self`` (bidirectional: BERT, T5 encoder), ``causal`` (GPT-2, T5 decoder self-attention),
``cross`` (T5 decoder → encoder). Stacks: ``encoder``, ``decoder``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lmviz.errors import LmvizError

KINDS = ("self", "causal", "cross")
HIDDEN_BELOW = -1e30  # additive mask entries below this are the mask's "−∞" (the record stores the dtype's minimum)


@dataclass(frozen=True)
class Want:
    """What a forward pass should keep besides its logits."""

    attention: bool = True
    scores: bool = False
    hidden: bool = False
    qkv: bool = False


ALL = Want(attention=True, scores=True, hidden=True, qkv=True)


@dataclass
class AttentionRecord:
    probs: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    scores: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    masks: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    position_bias: dict[str, torch.Tensor] = field(default_factory=dict)
    qkv: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    hidden: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    scale: dict[str, float] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if k in self.probs]

    def n_layers(self, kind: str) -> int:
        return len(self.probs[kind])

    def n_heads(self, kind: str) -> int:
        return self.probs[kind][0].shape[1]

    def attention(self, kind: str, layer: int, batch: int = 0) -> torch.Tensor:
        """``[H, Q, K]`` for one layer of one kind, with a readable error for a bad index."""
        if kind not in self.probs:
            raise LmvizError(f"This model has no {kind} attention; it has {', '.join(self.kinds)}.")
        layers = self.probs[kind]
        if not 0 <= layer < len(layers):
            raise LmvizError(f"Layer {layer} does not exist; this model has layers 0–{len(layers) - 1}.")
        return layers[layer][batch]

    def stacked(self, kind: str, batch: int = 0) -> torch.Tensor:
        """``[L, H, Q, K]``: every layer of one kind."""
        return torch.stack([p[batch] for p in self.probs[kind]])

    def keep(self, kind: str, batch: int = 0) -> torch.Tensor:
        """``[Q, K]`` bool: which keys each query may see (True) and which the mask hid, read from the additive
        mask the forward applied (layer 0; every layer applies the same mask). The one answer every figure uses."""
        if kind not in self.masks:
            raise LmvizError("This run did not keep its masks; run it with want=Want(scores=True).")
        return self.masks[kind][0][batch, 0] > HIDDEN_BELOW

    def add(self, kind: str, probs, scores=None, mask=None, qkv=None) -> None:
        if probs is not None:
            self.probs.setdefault(kind, []).append(probs.detach().float().cpu())
        if scores is not None:
            self.scores.setdefault(kind, []).append(scores.detach().float().cpu())
            self.masks.setdefault(kind, []).append(mask.detach().float().cpu().expand(scores.shape[0], 1, *scores.shape[2:]).clone())
        if qkv is not None:
            self.qkv.setdefault(kind, []).append(tuple(t.detach().float().cpu() for t in qkv))

    def numpy(self) -> dict:
        """Everything the record kept, as numpy arrays under the attributes' names and shapes:
        ``probs``, ``scores``, ``masks``, ``hidden`` (``{key: [array per layer]}``), ``qkv``
        (``{kind: [(q, k, v) per layer]}``), ``position_bias`` (``{kind: array}``), ``logits``
        (an array, or None) and ``scale`` (``{kind: float}``)."""
        def arrays(d):
            return {k: [t.numpy() for t in v] for k, v in d.items()}

        return {
            "probs": arrays(self.probs), "scores": arrays(self.scores), "masks": arrays(self.masks),
            "hidden": arrays(self.hidden), "qkv": {k: [tuple(t.numpy() for t in qkv) for qkv in v] for k, v in self.qkv.items()},
            "position_bias": {k: v.numpy() for k, v in self.position_bias.items()},
            "logits": None if self.logits is None else self.logits.numpy(), "scale": dict(self.scale),
        }


@dataclass
class KVCache:
    """What a decoder keeps between steps, one format for every model: per layer the ``(k, v)`` of its causal
    self-attention, each ``[B, H, T, d_head]`` (T grows by one per step), and for an encoder-decoder the
    ``(k, v)`` of its cross-attention over the encoder states (computed once). ``cache[i]`` is layer ``i``'s
    self-attention ``(k, v)``."""

    causal: list[tuple[torch.Tensor, torch.Tensor]]
    cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.causal)

    def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.causal[layer]

    @property
    def positions(self) -> int:
        """Positions cached so far."""
        return self.causal[0][0].shape[2] if self.causal else 0

    @property
    def batch(self) -> int:
        return self.causal[0][0].shape[0] if self.causal else 0

    def shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """Per layer ``{"self": shape of K}`` (and ``"cross"``): what the page draws."""
        if self.cross is None:
            return [{"self": tuple(k.shape)} for k, _ in self.causal]
        return [{"self": tuple(s[0].shape), "cross": tuple(c[0].shape)} for s, c in zip(self.causal, self.cross)]

    def reorder(self, rows: torch.Tensor) -> "KVCache":
        """The cache of batch rows ``rows`` (beam search's survivors), in that order."""
        def pick(kvs):
            return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in kvs]

        return KVCache(pick(self.causal), None if self.cross is None else pick(self.cross))


def additive_mask(keep: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A bool ``keep`` mask (True = may attend) as the additive mask: 0 or the dtype's minimum."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def causal_keep(q_len: int, k_len: int, device=None) -> torch.Tensor:
    """``[Q, K]`` bool: query ``i`` (at absolute position ``k_len - q_len + i``) sees keys up to itself."""
    offset = k_len - q_len
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=offset)


def attend(q, k, v, *, scale: float, bias: torch.Tensor | None, mask: torch.Tensor | None, explicit: bool):
    """Scaled dot-product attention by either path; returns ``(out, probs, scores)``.

    ``bias`` (T5's position bias) and ``mask`` are additive ``[B|1, H|1, Q, K]``. The fused path
    (training) returns ``probs = scores = None``; the explicit path computes
    ``softmax(QKᵀ·scale + bias + mask)`` and keeps what it computed.
    """
    add = None
    if bias is not None and mask is not None:
        add = bias + mask
    else:
        add = bias if bias is not None else mask
    if not explicit:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if add is None else add.to(q.dtype), scale=scale)
        return out, None, None
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if bias is not None:
        scores = scores + bias
    masked = scores if mask is None else scores + mask
    probs = torch.softmax(masked, dim=-1)
    out = torch.matmul(probs.to(v.dtype), v)
    return out, probs, scores


def check_ids(ids, vocab_size: int, max_positions: int | None, name: str = "input") -> torch.Tensor:
    """Token ids as a ``[B, T]`` long tensor, or a readable error for what would give a wrong picture."""
    if isinstance(ids, (str, bytes)):
        raise LmvizError(f"The {name} is text; a model reads token ids: encode the text with the model's tokenizer first.")
    try:
        ids = torch.as_tensor(ids)
    except (TypeError, ValueError, RuntimeError) as err:
        raise LmvizError(f"The {name} must be token ids, [batch, seq] whole numbers with every row the same length "
                         f"(pad shorter rows and pass an attention mask); got {type(ids).__name__}: {str(err)[:80]}.") from err
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise LmvizError(f"Token ids must be integers; got {ids.dtype}.")
    ids = ids.long()
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise LmvizError(f"Token ids must be [batch, seq]; got shape {tuple(ids.shape)}.")
    if ids.shape[1] == 0:
        raise LmvizError(f"The {name} is empty: at least one token is needed.")
    if max_positions is not None and ids.shape[1] > max_positions:
        raise LmvizError(f"The {name} has {ids.shape[1]} tokens; this model reads at most {max_positions}.")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise LmvizError(f"Token id {int(ids.max() if ids.max() >= vocab_size else ids.min())} is outside the vocabulary (0–{vocab_size - 1}).")
    return ids


def check_mask(mask, shape: tuple[int, int], name: str = "attention_mask", covers: str = "the input") -> torch.Tensor:
    """A padding mask (1 = real token, 0 = padding) of exactly ``shape`` ``[B, K]``, as bool; else a readable error."""
    try:
        m = torch.as_tensor(mask)
    except (TypeError, ValueError, RuntimeError) as err:
        raise LmvizError(f"{name} must be a [batch, seq] array of 0s and 1s: {str(err)[:80]}.") from err
    if m.dim() == 1:
        m = m[None]
    if tuple(m.shape) != tuple(shape):
        raise LmvizError(f"{name} has shape {tuple(m.shape)}; it must be {tuple(shape)}: one 0 or 1 per sequence and position "
                         f"of {covers}.")
    if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
        raise LmvizError(f"{name} must hold only 1 (a real token) and 0 (padding).")
    return m.bool()


def check_sizes(cfg, positive: tuple[str, ...], divides: tuple[str, str] | None = None) -> None:
    """A config's sizes are positive whole numbers, its norm epsilon positive, its dropout a share, and
    the heads ``divides = (heads, width)`` split the width evenly; a ``LmvizError`` names the setting."""
    for name in positive:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise LmvizError(f"{name} must be a positive whole number; got {value!r}.")
    for name in ("layer_norm_eps", "layer_norm_epsilon"):
        value = getattr(cfg, name, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise LmvizError(f"{name} must be a positive number; got {value!r}.")
    dropout = getattr(cfg, "dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise LmvizError(f"dropout must be a number from 0 to below 1; got {dropout!r}.")
    if divides is not None:
        heads, width = divides
        if getattr(cfg, width) % getattr(cfg, heads):
            raise LmvizError(f"{heads} = {getattr(cfg, heads)} does not divide {width} = {getattr(cfg, width)}: "
                             f"every head needs the same share of the width.")


def heads_kept(head_mask: dict | None, kind: str, n_layers: int, n_heads: int, device) -> list[torch.Tensor | None]:
    """One multiplier per layer of ``kind`` for each head's output, ``[B|1, H, 1, 1]``, from ``head_mask``
    (``{kind: [L, H] or [B, L, H]}``: 1 keeps a head, 0 knocks it out, as ``transformers``' former ``head_mask``);
    None for a layer when ``kind`` has no mask. A batch of masks runs many knock-outs in one forward."""
    m = None if head_mask is None else head_mask.get(kind)
    if m is None:
        return [None] * n_layers
    m = torch.as_tensor(m, dtype=torch.float32, device=device)
    if m.dim() == 2:
        m = m[None]
    if m.dim() != 3 or tuple(m.shape[1:]) != (n_layers, n_heads):
        raise LmvizError(f"The {kind} head mask has shape {tuple(m.shape)}; it must be [layers, heads] = {(n_layers, n_heads)} "
                         f"(or a batch of them).")
    if not bool(torch.isfinite(m).all()):
        raise LmvizError(f"The {kind} head mask must hold finite numbers (1 keeps a head, 0 knocks it out).")
    return [m[:, i, :, None, None] for i in range(n_layers)]


def check_head_mask(head_mask: dict | None, kinds: tuple[str, ...]) -> None:
    """A head mask names only attention kinds this model has."""
    if head_mask is not None and set(head_mask) - set(kinds):
        raise LmvizError(f"This model has no {', '.join(sorted(set(head_mask) - set(kinds)))} attention to knock out; "
                         f"it has {', '.join(kinds)}.")


def check_embeds(embeds, shape: tuple[int, int, int]) -> torch.Tensor:
    """Token embeddings given in place of the ids' own: a finite float tensor of exactly ``shape`` ``[B, T, D]``."""
    e = torch.as_tensor(embeds)
    if tuple(e.shape) != tuple(shape) or not e.dtype.is_floating_point:
        raise LmvizError(f"inputs_embeds has shape {tuple(e.shape)} ({e.dtype}); it must be floats of shape {tuple(shape)}, "
                         f"one embedding per input token.")
    return e
