"""Fine-tuning a pretrained model into a classifier, and what it changed inside.

- BERT: the ``[CLS]`` vector through BERT's pooler (``tanh(W·h_CLS)``, as in the original paper) into a new linear
  layer; the whole model is trained, or only the classifier (``mode="probe"``: the encoder stays frozen).
- GPT-2: the last token's vector into a new linear layer ``score``, trained on ``L = L2 + λ·L1``: the classification
  loss plus λ times the language-model loss on the same text (Radford et al., 2018).
- T5: the label written as text by the decoder, after a task prefix (``genre: <speech>`` → ``comedy``), as its
  pretraining tasks are named; its probabilities are those of each label's whole text.

The shipped model is copied first and never written to. ``finetune`` runs on the calling thread; the page runs it in
a worker process (``lmviz.app.worker``) through ``lmviz.app.jobs``'s queue and reads the ``Run`` as it grows.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lmviz.analysis.finetune_models import CLASSIFIERS, MAX_TOKENS, Classifier, classifier_class
from lmviz.analysis.finetune_tasks import Baselines, Example, Task, baselines, pools, task, training_sample
from lmviz.errors import LmvizError
from lmviz.models.checkpoints import Loaded

MAX_EPOCHS = 20
MAX_LR = 1.0
EVAL_BATCH = 50


@dataclass(frozen=True)
class Spec:
    """What a fine-tune is asked to do; ``check`` says in words what is wrong with it."""

    task: str = "genre"
    examples: int = 1024
    epochs: int = 1
    lr: float | None = None  # None: the model's default (its classifier's default_lr)
    seed: int = 0
    mode: str = "full"  # BERT only: "full" trains everything, "probe" only the classifier on a frozen encoder
    lam: float = 0.5  # GPT-2's λ, the weight of the language-model loss
    batch_size: int = 16
    max_steps: int | None = None
    evals: int = 3  # held-out measurements along the way (and one at the end): each reads 300 speeches

    def learning_rate(self, kind: str) -> float:
        return self.lr if self.lr is not None else CLASSIFIERS[kind].default_lr.get(self.mode, CLASSIFIERS[kind].default_lr["full"])

    def check(self, kind: str) -> None:
        lr = self.learning_rate(kind)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise LmvizError(f"A learning rate of {lr!r} changes nothing: the weights move by the learning rate times the "
                             f"gradient. Pick one above 0 (about 1e-4 to 1e-3 for the whole model, 1e-3 to 1e-2 for a probe).")
        if lr > MAX_LR:
            raise LmvizError(f"A learning rate of {lr:g} throws the weights far past any minimum (the steps would be bigger "
                             f"than the weights themselves); the most this page allows is {MAX_LR:g}, and 1e-4 to 1e-3 works.")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or not 1 <= self.epochs <= MAX_EPOCHS:
            raise LmvizError(f"Epochs must be a whole number from 1 to {MAX_EPOCHS}; got {self.epochs!r}.")
        modes = CLASSIFIERS[kind].modes
        if self.mode not in modes:
            raise LmvizError(f"The mode is {str(self.mode)[:40]!r}; this model trains as {' or '.join(map(repr, modes))} "
                             f"('full': the whole model, 'probe': the classifier only).")
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not math.isfinite(self.lam) or not 0 <= self.lam <= 10:
            raise LmvizError(f"λ (the weight of the language-model loss) must be from 0 to 10; got {self.lam!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise LmvizError(f"The seed must be a whole number from 0 to {2**32 - 1}; got {self.seed!r}.")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 64:
            raise LmvizError(f"The batch size must be from 1 to 64; got {self.batch_size!r}.")
        task(self.task)


@dataclass
class Outcome:
    """The fine-tuned classifier on the held-out sample."""

    accuracy: float
    probs: np.ndarray  # [N, labels]
    truth: list[int]
    confusion: np.ndarray  # [true label, predicted label] counts

    def only_label(self) -> int | None:
        """The one label it gives every held-out speech, if it gives only one (it learned the labels' frequencies, not
        to read the speech); else None."""
        given = np.flatnonzero(self.confusion.sum(0))
        return int(given[0]) if len(given) == 1 else None

    def wrong(self, held: list[Example], labels: tuple[str, ...], n: int = 8) -> list[dict]:
        """The held-out speeches it got wrong, most confident first."""
        pred = self.probs.argmax(1)
        idx = [i for i in np.argsort(-self.probs.max(1)) if pred[i] != self.truth[i]][:n]
        return [{"speech": held[i].text, "play": held[i].play, "true": labels[self.truth[i]], "predicted": labels[pred[i]],
                 "probability": float(self.probs[i, pred[i]])} for i in idx]


@dataclass
class Run:
    """A fine-tune as it goes: the page draws it while the job fills it in."""

    kind: str
    spec: Spec
    task: Task
    total_steps: int
    baselines: Baselines
    held: list[Example]
    step: int = 0
    loss: list[float] = field(default_factory=list)  # the loss trained on, per step
    classification: list[float] = field(default_factory=list)  # GPT-2: L2, per step
    lm: list[float] = field(default_factory=list)  # GPT-2: L1, per step
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out accuracy)
    status: str = "training"  # training, done, stopped, diverged
    message: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall-clock, from the first step to the measured result
    cpu_seconds: float = 0.0  # CPU time of the thread that trained: the wall-clock time on a core of its own
    outcome: Outcome | None = None
    classifier: Classifier | None = None
    train: list[Example] | None = None  # the training draw, dropped when the run ends
    changes: dict | None = None  # ``changed_heads``, once measured

    @property
    def finished(self) -> bool:
        return self.status != "training"


def _batches(n: int, size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, size):
        yield order[i:i + size]


@torch.inference_mode()
def predict(clf: Classifier, texts: list[str]) -> np.ndarray:
    """``[N, labels]`` probabilities."""
    out = [clf.probabilities(clf.encode(texts[i:i + EVAL_BATCH])) for i in range(0, len(texts), EVAL_BATCH)]
    return torch.cat(out).float().numpy() if out else np.zeros((0, len(clf.labels)))


def outcome(clf: Classifier, held: list[Example]) -> Outcome:
    probs = predict(clf, [e.text for e in held])
    truth = [e.label for e in held]
    confusion = np.zeros((len(clf.labels), len(clf.labels)), dtype=int)
    for t, p in zip(truth, probs.argmax(1)):
        confusion[t, p] += 1
    return Outcome(float(np.mean(probs.argmax(1) == np.array(truth))), probs, truth, confusion)


def prepare(loaded: Loaded, spec: Spec) -> Run:
    """The run before its first step: the examples drawn, the baselines fitted, the classifier built on a copy."""
    cls = classifier_class(loaded)
    spec.check(loaded.kind)
    t = task(spec.task)
    train = training_sample(spec.task, spec.examples, spec.seed)
    held = list(pools(spec.task)[1])
    steps = spec.epochs * math.ceil(len(train) / spec.batch_size)
    if spec.max_steps is not None:
        steps = min(steps, max(1, int(spec.max_steps)))
    run = Run(loaded.kind, spec, t, steps, _baselines(spec.task, spec.examples, spec.seed), held)
    torch.manual_seed(spec.seed)
    clf = cls(loaded, t, copy.deepcopy(loaded.model))
    run.notes += clf.notes
    run.classifier, run.train = clf, train
    return run


_BASELINES: dict[tuple, Baselines] = {}


def _baselines(key: str, n: int, seed: int) -> Baselines:
    """The baselines of a draw of examples, fitted once per process (the same for every model)."""
    k = (key, n, seed)
    if k not in _BASELINES:
        if len(_BASELINES) > 32:
            _BASELINES.clear()
        t = task(key)
        _BASELINES[k] = baselines(training_sample(key, n, seed), list(pools(key)[1]), len(t.labels))
    return _BASELINES[k]


def finetune(loaded: Loaded, spec: Spec, on_step: Callable[[Run], None] | None = None,
             stop: Callable[[], bool] | None = None, run: Run | None = None) -> Run:
    """Fine-tune a copy of ``loaded``'s model for ``spec``; ``stop()`` is asked before every step (the Stop button, a
    closed tab) and the run keeps everything it has so far. A loss that stops being a number ends the run with a
    message. Returns the run with its held-out ``outcome``."""
    run = run or prepare(loaded, spec)
    clf, train = run.classifier, run.train
    t0, c0 = time.perf_counter(), time.thread_time()
    params = clf.trainable(spec.mode)
    lr = spec.learning_rate(loaded.kind)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, run.total_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (run.total_steps - s) / max(1, run.total_steps - warm))))
    evals = min(spec.evals, run.total_steps // 10)  # one reads 300 speeches, about as long as 6 steps: not in short runs
    marks = {round(run.total_steps * (i + 1) / (evals + 1)) for i in range(evals)} - {0, run.total_steps}
    rng = np.random.default_rng(spec.seed)
    texts, labels = [e.text for e in train], torch.tensor([e.label for e in train])
    while run.step < run.total_steps and run.status == "training":
        for idx in _batches(len(train), spec.batch_size, rng):
            if run.step >= run.total_steps:
                break
            if stop is not None and stop():
                run.status, run.message = "stopped", f"Stopped at step {run.step} of {run.total_steps}."
                break
            batch = clf.encode([texts[i] for i in idx])
            total, parts = clf.loss(batch, labels[idx], spec.lam, frozen=spec.mode == "probe")
            if not torch.isfinite(total):
                run.status = "diverged"
                run.message = (f"The loss stopped being a number at step {run.step + 1} (it overflowed): a learning rate "
                               f"of {lr:g} is too high. The weights as they were before that step are kept.")
                break
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            run.step += 1
            run.loss.append(float(total.detach()))
            if "classification" in parts:
                run.classification.append(parts["classification"])
                run.lm.append(parts["lm"])
            if run.step in marks:
                run.evals.append((run.step, outcome(clf, run.held).accuracy))
            if on_step is not None:
                on_step(run)
    if run.status == "training":
        run.status = "done"
        run.message = f"Trained {run.step} steps ({spec.epochs} epoch{'s' if spec.epochs > 1 else ''} of {len(train)} speeches)."
    opt.zero_grad(set_to_none=True)
    del opt, sched  # the optimizer's moments are twice the model's size; the session keeps only the weights
    clf.freeze()
    run.outcome = outcome(clf, run.held)
    if not run.evals or run.evals[-1][0] != run.step:
        run.evals.append((run.step, run.outcome.accuracy))
    run.seconds, run.cpu_seconds = time.perf_counter() - t0, time.thread_time() - c0
    run.train = None
    return run


def changed_heads(loaded: Loaded, clf: Classifier, held: list[Example], n: int = 24) -> dict:
    """Which heads fine-tuning changed most: mean |Δ attention| per head on ``n`` held-out speeches, over the rows
    the classifier reads from (BERT's ``[CLS]`` row, GPT-2's last token's, T5's decoder start's cross-attention).

    Returns ``delta [L, H]``, the most-changed ``layer`` and ``head``, and for the speech where that head changed most
    its ``tokens`` and that head's row ``before`` and ``after``, with ``kind`` naming the attention compared."""
    rows = [(e, clf.read_rows(loaded.model, e), clf.read_rows(clf.model, e)) for e in held[:n]]
    delta = np.mean([np.abs(a - b).mean(-1) for _, (_, b), (_, a) in rows], axis=0)  # [L, H]
    layer, head = (int(i) for i in np.unravel_index(delta.argmax(), delta.shape))
    e, (tokens, before), (_, after) = max(rows, key=lambda r: np.abs(r[2][1][layer, head] - r[1][1][layer, head]).sum())
    return {"delta": delta, "layer": layer, "head": head, "tokens": tokens, "before": before[layer, head],
            "after": after[layer, head], "speech": e.text, "kind": clf.compared, "row": clf.row_name}


def try_text(clf: Classifier, text: str) -> tuple[dict[str, float], list[str]]:
    """The classifier's probabilities for a typed text, and notes (empty text refused, long text cut)."""
    text = " ".join(str(text).split())
    if not text:
        raise LmvizError("Type a speech (a line or two) to see what the classifier makes of it.")
    notes = []
    n = clf.n_tokens(text)
    if n > MAX_TOKENS:
        notes.append(f"The text has {n} tokens; the classifier reads its first {MAX_TOKENS}, as in training.")
    probs = predict(clf, [text])[0]
    return {lab: float(p) for lab, p in zip(clf.labels, probs)}, notes


def download_zip(clf: Classifier, name: str) -> bytes:
    """The fine-tuned model as a zip of one folder ``name/`` (config.json, model.safetensors, tokenizer.json): unzip it
    into a folder and start the app with ``--models`` that folder, or load it with ``transformers``."""
    import io
    import tempfile
    import zipfile
    from pathlib import Path

    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        folder = clf.save(Path(tmp) / name)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # safetensors hardly compress
            for f in sorted(folder.iterdir()):
                z.write(f, f"{name}/{f.name}")
    return buf.getvalue()


def folder_name(kind: str, task_key: str, seed: int) -> str:
    return f"{kind}-{task_key}-seed{seed}"


def table(rows: list[Run]) -> str:
    """The runs as the README's markdown table: time, held-out accuracy, and the two baselines."""
    lines = ["| model | task | speeches × epochs | steps | CPU time, 1 thread (wall) | held-out accuracy | bag of words | "
             "majority label |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        b = r.baselines
        best = r.outcome.accuracy > max(b.bow_accuracy, b.majority_accuracy)
        acc = f"{100 * r.outcome.accuracy:.1f} %"
        lines.append(f"| {r.kind} | {r.task.title} | {r.spec.examples} × {r.spec.epochs} | {r.step} | {r.cpu_seconds:.1f} s ({r.seconds:.0f} s) | "
                     f"{'**' + acc + '**' if best else acc} | {100 * b.bow_accuracy:.1f} % | {100 * b.majority_accuracy:.1f} % |")
    return "\n".join(lines)
