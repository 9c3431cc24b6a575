"""The three ways a pretrained model becomes a classifier, each around a copy of the model.

Every classifier reads at most ``MAX_TOKENS`` tokens of a speech, batches with padding on the right, and saves as the
folder ``transformers``' ``save_pretrained`` writes for it: ``BertForSequenceClassification`` (``bert.*`` +
``classifier``), ``GPT2ForSequenceClassification`` (``transformer.*`` + ``score``) or ``T5ForConditionalGeneration``.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from lmviz.analysis.inference import label
from lmviz.analysis.finetune_tasks import Task
from lmviz.models import checkpoints
from lmviz.models.record import Want
from lmviz.pretrain.tokenizers import GPT2_EOT, safe_text

MAX_TOKENS = 64
ATTENTION = Want(attention=True)


def _pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


class Classifier:
    """A copy of a pretrained model with what it needs to classify. ``compared``: the attention kind whose change is
    measured; ``row_name``: the query row the classifier reads from."""

    compared = "self"
    row_name = ""
    how = ""  # one paragraph for the page: what becomes the classifier and what it learns from
    modes: tuple[str, ...] = ("full",)  # "full": the whole model trains; "probe": only the new layer, on a frozen model
    default_lr: dict[str, float] = {"full": 1e-3}
    default_examples = 1024  # with one epoch, a default run fits in about 30 s of one CPU core
    mixes_lm = False  # trained on L2 + λ·L1 (GPT-2)

    def __init__(self, loaded, task: Task, model: nn.Module):
        self.kind, self.tokenizer, self.task, self.model = loaded.kind, loaded.tokenizer, task, model
        self.labels = task.labels
        self.notes: list[str] = []
        self.head: nn.Module | None = None
        self.seen: dict = {}  # what a forward hook caught in the last forward (BERT's pooled vector, GPT-2's last states)

    def ids(self, text: str) -> list[int]:
        raise NotImplementedError

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(safe_text(text)).ids)

    def encode(self, texts: list[str]) -> dict:
        ids, mask = _pad([self.ids(t) for t in texts], 0)
        return {"ids": ids, "mask": mask}

    def trainable(self, mode: str) -> list[nn.Parameter]:
        self.model.requires_grad_(mode == "full")
        if self.head is not None:
            self.head.requires_grad_(True)
        return [p for p in self._modules() if p.requires_grad]

    def _modules(self):
        seen = {}
        for m in (self.model, self.head):
            if m is not None:
                for p in m.parameters():
                    seen[id(p)] = p  # tied weights once
        return list(seen.values())

    lm_head: tuple[str, str] | None = None  # (parent, name) of the vocabulary-sized output layer, skipped when unused

    @contextmanager
    def _states_only(self):
        """The forward without its LM head (a vocabulary-wide matrix product: most of the cost here) while only the
        hidden states are read; the same module goes back afterwards (still tied to the embedding)."""
        parent, name = self.lm_head
        owner = self.model.get_submodule(parent) if parent else self.model
        head = getattr(owner, name)
        setattr(owner, name, nn.Identity())
        try:
            yield
        finally:
            setattr(owner, name, head)

    def freeze(self) -> None:
        for p in self._modules():
            p.requires_grad_(False)
        self.seen.clear()

    def state(self) -> dict[str, torch.Tensor]:
        """Every weight of the classifier, the model's and its new layer's: ``load_state`` rebuilds it elsewhere (the
        server rebuilds what a fine-tuning worker process trained)."""
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.head is not None:
            out.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        if self.head is not None:
            self.head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})

    def parameters_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self._modules())

    def read_rows(self, model: nn.Module, example) -> tuple[list[str], np.ndarray]:
        """Token labels and the attention rows ``[L, H, K]`` the classifier reads from, in ``model``."""
        raise NotImplementedError

    def _labels(self, ids: list[int]) -> list[str]:
        return [label(self.tokenizer.id_to_token(i) or "?") for i in ids]


class BertClassifier(Classifier):
    compared, row_name = "self", "[CLS]"
    how = ("BERT reads the speech; its **[CLS]** vector goes through BERT's pooler into a new linear layer with one output "
           "per label, and the cross-entropy of the right label is what it learns from.")
    modes = ("full", "probe")
    default_lr = {"full": 5e-4, "probe": 1e-2}
    lm_head = ("cls", "predictions")  # the MLM head: the classifier reads the pooler, never the word predictions

    def __init__(self, loaded, task, model):
        super().__init__(loaded, task, model)
        cfg = model.config
        self.head = nn.Linear(cfg.hidden_size, len(task.labels))
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        header = checkpoints.read_header(loaded.folder)
        self.fresh_pooler = not any(n.endswith("pooler.dense.weight") for n in header)
        if self.fresh_pooler:
            self.notes.append("This BERT has no pooler (the dense layer over [CLS] that the pretraining's next-sentence "
                              "head trained), so a fresh one is trained with the classifier.")
        self.sep = loaded.tokenizer.token_to_id("[SEP]")
        seen = self.seen
        model.bert.pooler.register_forward_hook(lambda m, i, o: seen.update(out=o))

    def ids(self, text):
        ids = self.tokenizer.encode(safe_text(text)).ids
        return ids if len(ids) <= MAX_TOKENS else ids[:MAX_TOKENS - 1] + [self.sep]

    def trainable(self, mode):
        params = super().trainable(mode)
        if self.fresh_pooler and mode == "probe":
            self.model.bert.pooler.requires_grad_(True)
            params = [p for p in self._modules() if p.requires_grad]
        return params

    def logits(self, batch):
        with self._states_only():
            self.model(batch["ids"], attention_mask=batch["mask"])
        return self.head(self.seen["out"])

    def probabilities(self, batch):
        return self.logits(batch).softmax(-1)

    def loss(self, batch, y, lam, frozen=False):
        if frozen and not self.fresh_pooler:
            with torch.no_grad(), self._states_only():
                self.model(batch["ids"], attention_mask=batch["mask"])
            return F.cross_entropy(self.head(self.seen["out"]), y), {}
        return F.cross_entropy(self.logits(batch), y), {}

    def read_rows(self, model, example):
        ids = self.ids(example.text)
        rec = model(torch.tensor([ids]), want=ATTENTION).record
        return self._labels(ids), rec.stacked("self")[:, :, 0].numpy()

    def save(self, folder: Path) -> Path:
        state = {n: t for n, t in checkpoints._unique_state(self.model).items() if n.startswith("bert.")}
        state.update({"classifier.weight": self.head.weight, "classifier.bias": self.head.bias})
        return _write(folder, state, self, "BertForSequenceClassification", {})


class GPT2Classifier(Classifier):
    compared, row_name = "causal", "last token"
    how = ("GPT-2 reads the speech left to right; the **last token's** vector (the only one that has seen every word) goes "
           "into a new linear layer. It learns from **L = L2 + λ·L1**: L2 is the classification loss, L1 its old next-token "
           "loss on the same speech, which keeps it a language model while it learns the task.")
    default_lr = {"full": 5e-4}
    default_examples = 512  # its 8,192-way LM head (for L1) makes a step about twice BERT's
    mixes_lm = True
    lm_head = ("", "lm_head")  # skipped when only the label is asked for (L1 needs it in training)

    def __init__(self, loaded, task, model):
        super().__init__(loaded, task, model)
        self.head = nn.Linear(model.config.n_embd, len(task.labels), bias=False)  # transformers' ``score`` has no bias
        nn.init.normal_(self.head.weight, std=0.02)
        self.eot = loaded.tokenizer.token_to_id(GPT2_EOT)
        seen = self.seen
        model.transformer.ln_f.register_forward_hook(lambda m, i, o: seen.update(out=o))

    def ids(self, text):
        return [self.eot] + self.tokenizer.encode(safe_text(text)).ids[:MAX_TOKENS - 1]

    def _forward(self, batch):
        out = self.model(batch["ids"], attention_mask=batch["mask"])
        last = batch["mask"].sum(1) - 1
        return self.head(self.seen["out"][torch.arange(len(last)), last]), out.logits

    def probabilities(self, batch):
        with self._states_only():
            return self._forward(batch)[0].softmax(-1)

    def loss(self, batch, y, lam, frozen=False):
        """``L2 + λ·L1``: cross-entropy of the label, plus λ times the next-token loss on the speech itself. With
        λ = 0 the loss is L2 alone (L1 is still measured, for its curve, but nothing learns from it)."""
        logits, lm_logits = self._forward(batch)
        l2 = F.cross_entropy(logits, y)
        targets = batch["ids"][:, 1:].masked_fill(batch["mask"][:, 1:] == 0, -100)
        l1 = F.cross_entropy(lm_logits[:, :-1].reshape(-1, lm_logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)
        total = l2 if lam == 0 else l2 + lam * l1
        return total, {"classification": float(l2.detach()), "lm": float(l1.detach())}

    def read_rows(self, model, example):
        ids = self.ids(example.text)
        rec = model(torch.tensor([ids]), want=ATTENTION).record
        return self._labels(ids), rec.stacked("causal")[:, :, -1].numpy()

    def save(self, folder: Path) -> Path:
        state = {n: t for n, t in checkpoints._unique_state(self.model).items() if n.startswith("transformer.")}
        state["score.weight"] = self.head.weight
        return _write(folder, state, self, "GPT2ForSequenceClassification", {"pad_token_id": self.eot})


class T5Classifier(Classifier):
    compared, row_name = "cross", "decoder start"
    how = ("T5 reads `prefix: speech` and its decoder **writes the label as text** (`comedy`, `verse`…), as in its "
           "pretraining; a label's probability is that of its whole text, compared with the other labels'.")
    default_lr = {"full": 1e-3}

    def __init__(self, loaded, task, model):
        super().__init__(loaded, task, model)
        tok = loaded.tokenizer
        self.eos, self.start = model.config.eos_token_id, model.config.decoder_start_token_id
        self.targets = [tok.encode(name).ids for name in task.labels]  # each ends with </s>

    def ids(self, text):
        ids = self.tokenizer.encode(safe_text(f"{self.task.prefix}: {text}")).ids
        return ids if len(ids) <= MAX_TOKENS else ids[:MAX_TOKENS - 1] + [self.eos]

    def _decode(self, batch, targets: list[list[int]], encoder_out=None):
        """Log-probability of each target ``[B]`` (summed over its tokens), teacher-forced."""
        tgt, keep = _pad(targets, 0)
        dec = torch.cat([torch.full((len(targets), 1), self.start), tgt[:, :-1]], 1)
        out = self.model(batch["ids"] if encoder_out is None else None, dec, attention_mask=batch["mask"],
                         encoder_out=encoder_out)
        logp = out.logits.float().log_softmax(-1).gather(-1, tgt[..., None])[..., 0]
        return (logp * keep).sum(1)

    def probabilities(self, batch):
        """Each label's text scored whole; the probabilities are those scores normalised over the labels."""
        enc = self.model.encode(batch["ids"], batch["mask"])
        B, n = len(batch["ids"]), len(self.labels)
        states, mask = enc[0].repeat_interleave(n, 0), enc[1].repeat_interleave(n, 0)
        scores = self._decode({"ids": None, "mask": None}, self.targets * B, (states, mask))
        return scores.view(B, n).softmax(-1)

    def loss(self, batch, y, lam, frozen=False):
        """The decoder's cross-entropy per label token, as in pretraining."""
        targets = [self.targets[i] for i in y.tolist()]
        n_tokens = sum(len(t) for t in targets)
        return -self._decode(batch, targets).sum() / n_tokens, {}

    def read_rows(self, model, example):
        ids = self.ids(example.text)
        target = self.targets[example.label]
        dec = torch.tensor([[self.start] + target[:-1]])
        rec = model(torch.tensor([ids]), dec, want=ATTENTION).record
        return self._labels(ids), rec.stacked("cross")[:, :, 0].numpy()

    def save(self, folder: Path) -> Path:
        return _write(folder, checkpoints._unique_state(self.model), self, "T5ForConditionalGeneration", {})


CLASSIFIERS = {"bert": BertClassifier, "gpt2": GPT2Classifier, "t5": T5Classifier}


def classifier_class(loaded) -> type[Classifier]:
    """How ``loaded``'s kind of model becomes a classifier."""
    from lmviz.errors import LmvizError

    if loaded.kind not in CLASSIFIERS:
        raise LmvizError(f"{loaded.kind} models cannot be fine-tuned here.")
    return CLASSIFIERS[loaded.kind]


def _write(folder: Path, state: dict, clf: Classifier, architecture: str, extra: dict) -> Path:
    """config.json + model.safetensors + tokenizer.json, as ``save_pretrained`` writes them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = clf.model.config.to_hf()
    config.update(extra, architectures=[architecture], torch_dtype="float32",
                  id2label={str(i): n for i, n in enumerate(clf.labels)}, label2id={n: i for i, n in enumerate(clf.labels)},
                  lmviz={"finetuned": {"task": clf.task.key, "labels": list(clf.labels), "prefix": clf.task.prefix}})
    tensors = {n: t.detach().cpu().contiguous().clone() for n, t in state.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    checkpoints.write_json(folder / "config.json", config)
    clf.tokenizer.save(str(folder / "tokenizer.json"))
    return folder
