"""One class per model kind: everything the pages and the library ask about BERT, GPT-2 or T5.

A page or a library function never tests a kind's name: it asks ``kind_of(loaded)`` (or ``KINDS[name]``)
for its display name and colour, its context limits, how text becomes ids, the forward that fills the
attention record, the decoding step and its KV cache, and which heads it has. A new kind (RoBERTa, say)
is one subclass here and one entry in ``KINDS``; no page changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lmviz.errors import LmvizError
from lmviz.models.record import KVCache, Want

GPT2_EOT = "<|endoftext|>"
T5_MAX_INPUT = 128  # tokens the app gives T5's encoder
T5_MAX_TARGET = 64  # tokens the app lets T5's decoder write


def device_of(model: torch.nn.Module) -> torch.device:
    """The device a model's weights are on (where its inputs must go)."""
    return next(model.parameters()).device


@dataclass(frozen=True)
class Kind:
    """What one kind of model is and how the app runs it. Subclasses fill the class attributes and override
    the methods whose rule differs; the shapes are ``[batch, positions]`` for ids throughout."""

    name: str = ""  # the checkpoint's ``kind`` ("bert", "gpt2", "t5"): the key of ``KINDS``
    short: str = ""  # "GPT-2"
    role: str = ""  # "decoder"
    colour: str = "#000000"  # one Okabe–Ito colour per kind, in every figure
    purpose: str = ""  # one sentence for the Home page
    tokenizer: str = ""  # "byte-level BPE (GPT-2)"
    attention: tuple[str, ...] = ()  # the record's attention kinds, in order: "self", "causal", "cross"
    stacks: tuple[str, ...] = ()  # "encoder", "decoder": where a run's tokens live
    reads_pair: bool = False  # reads a second sentence ([CLS] A [SEP] B [SEP])
    writes: bool = False  # decodes token by token (the Generation page)
    prefix: tuple[str, ...] = ()  # special tokens every text starts with, in training and in the app
    byte_level: bool = False  # its vocabulary is bytes (``Ġthe``): a label decodes them
    head_probes: tuple[str, ...] = ()  # evaluation.json's probes that name this kind's heads
    experiment: str | None = None  # the Masks page's swap: "no mask" (a decoder without its mask), "causal" (an encoder under one)
    output_head: str = ""  # what its head predicts, for the architecture diagram
    needs: tuple[str, ...] = ()  # special tokens its tokenizer must have beside ``prefix`` (RoBERTa's <s> and </s>)
    mask_token: str | None = None  # the token MLM hides words behind ("[MASK]"); None: not trained to fill masks
    no_nsp: str = ""  # why an encoder has no next-sentence head, for the Masking page ("" where it has one or is no encoder)
    shipped: bool = True  # the app ships a model of this kind (assets/models/<name>); others come only from --models

    @property
    def title(self) -> str:
        """"GPT-2 (decoder)": the name a selectbox shows."""
        return f"{self.short} ({self.role})"

    @property
    def heading(self) -> str:
        """"GPT-2 · decoder": the name a figure's title shows."""
        return f"{self.short} · {self.role}"

    @property
    def required_tokens(self) -> tuple[str, ...]:
        """Special tokens a folder's tokenizer must have for the encode rule to work."""
        return self.prefix + self.needs

    @property
    def causal(self) -> bool:
        """Whether a text is read left to right only (its first attention kind is causal)."""
        return self.attention[:1] == ("causal",)

    @property
    def reads_target(self) -> bool:
        """Whether its decoder reads a text of its own (an encoder-decoder's target) beside the input."""
        return len(self.stacks) > 1

    @property
    def text_stack(self) -> str:
        """The stack that reads the user's text (GPT-2's decoder; the encoder of the others)."""
        return self.stacks[0]

    def shape(self, config: dict) -> tuple[int, int, int, int, int, int]:
        """(layers, decoder layers or 0, heads, width, feed-forward width, positions) from a Hugging Face ``config.json``."""
        raise NotImplementedError

    # --- text in ----------------------------------------------------------------------------------

    def context(self, config, stack: str = "encoder") -> int:
        """Tokens one stack reads at most."""
        raise NotImplementedError

    def encode(self, tokenizer, text: str) -> list[int]:
        """The one encode rule, used by the app, training and evaluation alike: the kind's ``prefix`` tokens,
        then the text's ids (with the tokenizer's own template: BERT's [CLS]/[SEP], T5's </s>)."""
        return [tokenizer.token_to_id(t) for t in self.prefix] + tokenizer.encode(text).ids

    def truncate(self, pieces: list, limit: int, add_special: bool = True) -> list:
        """The pieces of a text too long for ``limit``: the first ones."""
        return pieces[:limit]

    # --- the forward --------------------------------------------------------------------------------

    def forward(self, model, ids: dict[str, list[int]], type_ids: list[int] | None = None, want: Want | None = None,
                causal: bool = False):
        """The model's output on one sequence per stack (``ids[stack]``), keeping the record ``want`` asks for.
        ``causal=True`` gives a bidirectional model a causal mask (ignored by models that are causal already)."""
        raise NotImplementedError

    # --- decoding ----------------------------------------------------------------------------------

    def decoder_start(self, config) -> list[int]:
        """The ids decoding starts from before any text (GPT-2 adds the prompt after them)."""
        raise LmvizError(f"{self.title} does not write text token by token; generation needs a decoder.")

    def decoder_limit(self, config) -> int:
        """Tokens the decoder may hold, its start and what it writes."""
        return self.context(config, "decoder")

    def encode_source(self, model, ids: list[int]):
        """The encoder's output for decoding (None for a decoder-only model)."""
        return None

    def step(self, model, ids: torch.Tensor, cache: KVCache | None, want: Want | None, source=None):
        """One decoding forward: the new ids ``[beams, T]`` with the cache of what came before (or the whole sequence
        with ``cache=None``). ``source`` is ``encode_source``'s output."""
        raise LmvizError(f"{self.title} does not write text token by token; generation needs a decoder.")


class Bert(Kind):
    """An encoder: reads a text (or a pair) whole, every token seeing every other; writes nothing."""

    def shape(self, config: dict) -> tuple[int, int, int, int, int, int]:
        return (config["num_hidden_layers"], 0, config["num_attention_heads"], config["hidden_size"],
                config["intermediate_size"], config["max_position_embeddings"])

    def context(self, config, stack: str = "encoder") -> int:
        return config.context

    def truncate(self, pieces: list, limit: int, add_special: bool = True) -> list:
        """A pair is cut from its longer side, and [CLS] and every [SEP] stay."""
        a = [p for p in pieces if p.sequence == 0 and not p.special]
        b = [p for p in pieces if p.sequence == 1 and not p.special]
        cls, seps = pieces[0], [p for p in pieces if p.special and p is not pieces[0]]
        room = limit - 1 - len(seps)
        while len(a) + len(b) > room:
            (a if len(a) >= len(b) else b).pop()
        return [cls, *a, seps[0], *b, *seps[1:]] if b or len(seps) > 1 else [cls, *a, *seps]

    def forward(self, model, ids, type_ids=None, want=None, causal=False):
        device = device_of(model)
        enc = torch.tensor([ids["encoder"]], device=device)
        types = torch.tensor([type_ids], device=device) if type_ids else torch.zeros_like(enc)
        return model(enc, types, want=want, causal=causal)


class Roberta(Bert):
    """BERT's encoder trained as RoBERTa: byte-level BPE, MLM only, one segment (its pair is ``<s> A </s></s> B </s>``)."""

    def shape(self, config: dict) -> tuple[int, int, int, int, int, int]:
        layers, dec, heads, width, ff, positions = super().shape(config)
        return layers, dec, heads, width, ff, positions - config.get("pad_token_id", 1) - 1


class Gpt2(Kind):
    """A decoder: reads left to right after ``<|endoftext|>`` and writes the next token."""

    def shape(self, config: dict) -> tuple[int, int, int, int, int, int]:
        return (config["n_layer"], 0, config["n_head"], config["n_embd"], config.get("n_inner") or 4 * config["n_embd"],
                config["n_positions"])

    def context(self, config, stack: str = "decoder") -> int:
        return config.n_positions

    def forward(self, model, ids, type_ids=None, want=None, causal=False):
        return model(torch.tensor([ids["decoder"]], device=device_of(model)), want=want)

    def decoder_start(self, config) -> list[int]:
        return []  # the prompt, after the prefix, is where GPT-2 starts

    def step(self, model, ids, cache, want, source=None):
        return model(ids, cache=cache, want=want)


class T5(Kind):
    """An encoder-decoder: the encoder reads the input once, the decoder writes while reading it (cross-attention)."""

    def shape(self, config: dict) -> tuple[int, int, int, int, int, int]:
        return (config["num_layers"], config.get("num_decoder_layers") or config["num_layers"], config["num_heads"],
                config["d_model"], config["d_ff"], config.get("n_positions", 512))

    def context(self, config, stack: str = "encoder") -> int:
        return T5_MAX_INPUT if stack == "encoder" else T5_MAX_TARGET

    def truncate(self, pieces: list, limit: int, add_special: bool = True) -> list:
        """The first pieces, and the closing </s> when the template added one."""
        return pieces[: limit - 1] + pieces[-1:] if add_special else pieces[:limit]

    def forward(self, model, ids, type_ids=None, want=None, causal=False):
        device = device_of(model)
        return model(torch.tensor([ids["encoder"]], device=device), torch.tensor([ids["decoder"]], device=device), want=want)

    def decoder_start(self, config) -> list[int]:
        return [config.decoder_start_token_id]

    def decoder_limit(self, config) -> int:
        return 1 + T5_MAX_TARGET

    def encode_source(self, model, ids: list[int]):
        with torch.inference_mode():
            return model.encode(torch.tensor([ids], device=device_of(model)))

    def step(self, model, ids, cache, want, source=None):
        enc, mask = source
        if cache is None and ids.shape[0] > 1:  # beams share one encoder output
            enc = enc.expand(ids.shape[0], -1, -1)
        return model(decoder_input_ids=ids, encoder_out=(enc, mask), cache=cache, want=want)


BERT = Bert(name="bert", short="BERT", role="encoder", colour="#0072B2", tokenizer="WordPiece (BERT)",
            attention=("self",), stacks=("encoder",), reads_pair=True, head_probes=("sink_heads",), experiment="causal",
            mask_token="[MASK]",
            output_head="MLM head: fill [MASK]<br>NSP head: B after A?",
            purpose="reads the whole text at once, every word seeing every other, to understand it: it fills in masked "
                    "words and judges whether sentence B follows sentence A.")
GPT2 = Gpt2(name="gpt2", short="GPT-2", role="decoder", colour="#D55E00", tokenizer="byte-level BPE (GPT-2)",
            attention=("causal",), stacks=("decoder",), writes=True, byte_level=True,
            prefix=(GPT2_EOT,),  # where every training document starts
            head_probes=("previous_token_head", "induction_head"), experiment="no mask", output_head="LM head:<br>the next token",
            purpose="reads left to right and predicts the next token, so it can write: each word sees only the words before it.")
T5_KIND = T5(name="t5", short="T5", role="encoder-decoder", colour="#009E73", tokenizer="Unigram (T5)",
             attention=("self", "causal", "cross"), stacks=("encoder", "decoder"), writes=True, output_head="LM head:<br>next token",
             purpose="turns one text into another: an encoder reads the input, a decoder writes the output while looking "
                     "back at the encoder. Here one model does three tasks, each named by a prefix: `fill:` the spans hidden behind "
                     "sentinels, `punctuate:` a line, and name the `genre:` of a speech.")
ROBERTA = Roberta(name="roberta", short="RoBERTa", role="encoder", colour="#CC79A7", tokenizer="byte-level BPE (RoBERTa)",
                  attention=("self",), stacks=("encoder",), byte_level=True, experiment="causal", needs=("<s>", "</s>"),
                  mask_token="<mask>", shipped=False, output_head="MLM head: fill &lt;mask&gt;",
                  no_nsp="RoBERTa has no next-sentence head: Liu et al. (2019) found that dropping NSP and training on "
                         "full sentences read as one text matched or improved BERT's results, so RoBERTa learns from "
                         "masked words only (with a new mask drawn every epoch).",
                  purpose="BERT's encoder trained longer on more text, with byte-level BPE, masked words only (no "
                          "next-sentence prediction) and a new mask every epoch.")
KINDS: dict[str, Kind] = {k.name: k for k in (BERT, GPT2, T5_KIND, ROBERTA)}  # a new kind: its class, its instance, one entry
"""Every kind by its checkpoint name, in the order pages list them."""


def kind_of(model) -> Kind:
    """The ``Kind`` of a loaded model (anything with a ``kind`` name) or of a kind's name."""
    name = model if isinstance(model, str) else getattr(model, "kind", None)
    try:
        return KINDS[name]
    except KeyError:
        raise LmvizError(f"Unknown model kind {name!r}; lmviz knows {', '.join(KINDS)}.") from None


def shipped_kinds() -> tuple[str, ...]:
    """The names of the kinds the app ships a model of, in the order pages list them."""
    return tuple(k.name for k in KINDS.values() if k.shipped)


def writers() -> tuple[str, ...]:
    """The names of the kinds that generate text (for a model picker)."""
    return tuple(k.name for k in KINDS.values() if k.writes)
