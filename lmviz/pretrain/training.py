"""Pretraining loops: BERT (MLM + NSP), GPT-2 (next token), T5 (span corruption).

Every batch is a pure function of ``(seed, step)``, so a resumed run draws exactly the batches
an uninterrupted one would have; masks are redrawn each time a sequence is seen (dynamic masking).
Resume state (weights, AdamW moments, step, tokens seen) lives in ``<out>/resume/`` as
safetensors + JSON, written atomically. Ctrl-C (or SIGTERM) saves and exits cleanly.
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lmviz.models import checkpoints
from lmviz.models.device import autocast as device_autocast
from lmviz.models.device import pick_device
from lmviz.errors import LmvizError
from lmviz.pretrain.tasks import TASKS, Task


@dataclass
class TrainConfig:
    kind: str
    steps: int
    batch_size: int
    lr: float
    warmup: int
    seq_len: int
    short_seq_len: int  # RoBERTa-style schedule: short sequences for the first ``short_frac`` of steps
    short_frac: float = 0.0
    seed: int = 0
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 250
    save_every: int = 250
    keep_best: bool = True  # the model folder holds the evaluation with the lowest held-out loss; resume/ holds the latest
    # (False: the folder holds the latest step, and the log's "best" row is the latest evaluation)
    # The token embedding's learning rate relative to the others. T5's starts at std 1 where its other weights start
    # near d^-1/2, and Adam's steps are the same size for both, so it learns about 14x slower relative to its scale
    # (T5's own optimizer, Adafactor, scales steps by each weight's size). 10 lowered a fresh T5's held-out loss at
    # step 1,000 from 5.08 to 4.81 nats on this CPU (batch 16, lr 1e-3).
    embed_lr_scale: float = 1.0
    # GPT-2 only: False trains without the causal mask, so every token sees the one it must predict. The Masks page's
    # "twin that learned to cheat" is the shipped GPT-2 trained on a little further this way.
    causal: bool = True
    # T5 only: the text-to-text curriculum (lmviz.pretrain.text2text). ``copy:`` alone for the first ``copy_steps``
    # steps (it teaches the decoder to read the encoder, which span corruption alone did not in 9,000 CPU steps),
    # then each example's task drawn with these weights.
    copy_steps: int = 0
    # BERT only: the NSP loss's weight beside MLM's (1 in the paper). The shipped BERT's second (CPU) phase raised it,
    # since its NSP lagged its MLM.
    nsp_weight: float = 1.0
    # BERT only: the share of NSP pairs whose speakers are all renamed to others of the training set. Its NSP learnt to
    # tell the training plays apart by their speakers' names (97 % on training pairs, 68.6 % on the test plays), where
    # a rule that reads "B's speaker spoke in A" alone scores 86 % on the test plays.
    rename_speakers: float = 0.0
    # GPT-2 only: this share of each batch's rows is a stretch of the plays followed by the same stretch again (its
    # length drawn per row), so predicting the second copy rewards attending to the token after the earlier occurrence
    # of the current one: an induction head, which natural text alone did not grow in the shipped model.
    repeat_frac: float = 0.0
    mixture: dict = field(default_factory=dict)
    # Snapshots for the training scrubber: float16 copies of the weights at these fractions of ``steps``.
    snapshots: tuple = (0.01, 0.05, 0.2, 0.5)
    autocast: str = "auto"  # "auto": bf16 autocast on CUDA and on CPUs with bf16 instructions; "off": float32
    # The training step's forward through torch.compile (evaluations stay eager). On this CPU (bf16, batch 32, one
    # thread) a step took 0.72x (T5) and 0.77x (GPT-2) the eager time after 134 s and 72 s of compiling: it pays for
    # itself after a few hundred steps (`python -m lmviz bench models`).
    compile: bool = False
    model: dict = field(default_factory=dict)

    def seq_len_at(self, step: int) -> int:
        return self.short_seq_len if step < self.short_frac * self.steps else self.seq_len


DEFAULTS: dict[str, TrainConfig] = {
    "gpt2": TrainConfig("gpt2", steps=13393, batch_size=64, lr=1.5e-3, warmup=500, seq_len=256, short_seq_len=128, short_frac=0.3,
                        weight_decay=0.1, save_every=1000,
                        model=dict(n_embd=256, n_layer=4, n_head=4, n_positions=256, dropout=0.1)),
    "bert": TrainConfig("bert", steps=12394, batch_size=128, lr=1e-3, warmup=1000, seq_len=128, short_seq_len=64, short_frac=0.5,
                        weight_decay=0.01, save_every=1000,
                        model=dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
                                   max_position_embeddings=128, dropout=0.1)),
    # T5 on this 2-core CPU: copy: warm-up, then the text-to-text mixture; the embedding at 10x the learning rate.
    "t5": TrainConfig("t5", steps=5000, batch_size=32, lr=1e-3, warmup=100, seq_len=128, short_seq_len=128, short_frac=0.0,
                      weight_decay=0.01, save_every=100, eval_every=250, embed_lr_scale=10.0, copy_steps=700,
                      mixture={"fill": 0.6, "punctuate": 0.3, "genre": 0.1},
                      model=dict(d_model=192, d_kv=48, d_ff=768, num_layers=4, num_decoder_layers=4, num_heads=4, dropout=0.0)),
}
"""The shipped runs' first (GPU) phase. ``steps`` is what ``--minutes`` fitted on the H100 that trained them;
T5 then had a second phase on the CPU (``--init``), see the README's Models section."""

CALIBRATE_AT = 100
"""With a time budget and no step budget, the steps are fitted to the budget after this many steps."""


class _Batches(torch.utils.data.Dataset):
    """``dataset[(step, seq_len)]`` is the batch of that step: a pure function, so workers may build it."""

    def __init__(self, task: Task):
        self.task = task

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, key):
        step, seq_len = key
        return self.task.batch(step, seq_len)


class _Schedule(torch.utils.data.Sampler):
    """The steps still to run, read lazily in the main process so a fitted step budget takes effect at once."""

    def __init__(self, cfg: TrainConfig, start: int):
        self.cfg, self.start = cfg, start

    def __iter__(self):
        step = self.start
        while step < self.cfg.steps:
            yield step, self.cfg.seq_len_at(step)
            step += 1


def batches(task: Task, cfg: TrainConfig, start: int, device: torch.device):
    """The batches from ``start`` on, built ahead by worker processes on a GPU machine (in process on the CPU)."""
    import os

    workers = 0 if device.type == "cpu" else min(4, max(1, (os.cpu_count() or 2) // 4))
    return iter(torch.utils.data.DataLoader(_Batches(task), batch_size=None, sampler=_Schedule(cfg, start), num_workers=workers,
                                            pin_memory=device.type == "cuda", prefetch_factor=8 if workers else None,
                                            persistent_workers=False))


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to 10 % of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices; with ``embed_lr_scale`` != 1 the token embedding (the largest
    ``nn.Embedding``, tied to the output layer) gets a group of its own whose learning rate is scaled."""
    embed = None
    if cfg.embed_lr_scale != 1.0:
        embed = max((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), key=lambda m: m.num_embeddings).weight
    decay = [p for p in model.parameters() if p.dim() >= 2 and p is not embed]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if embed is not None:
        groups.append({"params": [embed], "weight_decay": cfg.weight_decay, "lr_scale": cfg.embed_lr_scale})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def set_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    for g in opt.param_groups:
        g["lr"] = lr_at(cfg, step) * g.get("lr_scale", 1.0)


def _save_resume(folder: Path, model, opt, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = {id(p): n for n, p in model.named_parameters()}
    moments = {}
    for group in opt.param_groups:
        for p in group["params"]:
            s = opt.state.get(p)
            if s:
                n = names[id(p)]
                moments[f"{n}::exp_avg"] = s["exp_avg"].detach().cpu().contiguous()
                moments[f"{n}::exp_avg_sq"] = s["exp_avg_sq"].detach().cpu().contiguous()
                moments[f"{n}::step"] = torch.as_tensor(s["step"]).float().reshape(1).cpu()
    checkpoints._write_atomic(folder / "optimizer.safetensors", lambda tmp: save_file(moments, tmp))
    checkpoints._write_atomic(folder / "model.safetensors", lambda tmp: save_file(checkpoints._unique_state(model), tmp))
    checkpoints.write_json(folder / "state.json", state)


def _load_resume(folder: Path, model, opt) -> dict:
    state = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    moments = load_file(str(folder / "optimizer.safetensors"))
    params = dict(model.named_parameters())
    for key in {k.split("::")[0] for k in moments}:
        p = params[key]
        opt.state[p] = {"exp_avg": moments[f"{key}::exp_avg"].to(p.device), "exp_avg_sq": moments[f"{key}::exp_avg_sq"].to(p.device),
                        "step": torch.tensor(float(moments[f"{key}::step"][0]))}
    return state


SAME_RUN = ("kind", "model", "mixture", "copy_steps", "causal")
"""What a resumed run must share with the run that wrote its resume state (``steps`` may change: ``--steps N``)."""


def _check_same_run(out: Path, cfg: TrainConfig) -> None:
    """A resume state written by another architecture or task mixture is refused by name, before any weight is read."""
    try:
        before = json.loads((out / "train_log.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # a run stopped before its first log: the weights' shapes are still checked on loading
    differ = [k for k in SAME_RUN if k in before and before[k] != json.loads(json.dumps(asdict(cfg)[k]))]
    if differ:
        said = "; ".join(f"{k}: {before[k]!r} there, {asdict(cfg)[k]!r} now" for k in differ)
        raise LmvizError(f"{out}/resume holds another run ({said}). Resume it with the same settings, or train into "
                         f"another --out.")


def _init_weights(folder: Path, model: torch.nn.Module, kind: str) -> dict:
    """The weights of ``folder`` for a second phase of ``model``: another architecture, another shape or missing
    tensors are a clear error (``load_state_dict(strict=False)`` would quietly keep the random ones)."""
    config = folder / "config.json"
    if not config.is_file():
        raise LmvizError(f"--init {folder}: no config.json there; give a model folder (config.json + model.safetensors).")
    theirs = checkpoints.model_type(checkpoints.read_json(config), folder)
    if theirs != kind:
        raise LmvizError(f"--init {folder} holds a {theirs} model; training {kind} needs a {kind} folder.")
    weights = checkpoints.read_weights(folder)
    own = checkpoints._unique_state(model)
    missing = [k for k in own if k not in weights]
    shapes = [f"{k} {tuple(weights[k].shape)} there, {tuple(v.shape)} here" for k, v in own.items()
              if k in weights and weights[k].shape != v.shape]
    if shapes or missing:
        what = shapes[0] if shapes else f"{len(missing)} tensors missing, {missing[0]} first"
        raise LmvizError(f"--init {folder} is a {kind} of another shape than this run's ({what}).")
    return weights


def train(cfg: TrainConfig, out: Path, tokenizer_path: Path | None = None, time_budget: float | None = None,
          progress: bool = True, corpus=None, until: int | None = None, fit_steps: bool = False,
          init: Path | None = None) -> dict:
    """Train (or resume) one model into ``out``; returns the final log.

    Stops at ``cfg.steps``, after ``time_budget`` seconds, or at step ``until`` (one piece of a
    longer run); the next call resumes where it stopped. ``fit_steps`` (with a time budget, on a
    fresh run) measures the speed over the first ``CALIBRATE_AT`` steps and sets ``cfg.steps`` so
    that the learning-rate schedule ends with the budget; the fitted number is written to the
    config, so ``--steps N`` reproduces the run anywhere. ``init`` (a model folder of the same
    architecture) starts a fresh run from its weights instead of random ones: a second phase of
    training, whose first phase's log is kept under ``"init"``.
    """
    cfg = replace(cfg)
    from tqdm import tqdm

    from lmviz.pretrain.tokenizers import load_tokenizer

    if cfg.steps <= 0:
        raise LmvizError("The step budget must be at least 1.")
    if time_budget is not None and time_budget <= 0:
        raise LmvizError("The time budget must be positive.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_path or checkpoints.shipped(cfg.kind) / "tokenizer.json")
    device = pick_device()
    torch.manual_seed(cfg.seed)
    task: Task = TASKS[cfg.kind](tokenizer, cfg, corpus=corpus)
    model = task.build_model().to(device)
    opt = make_optimizer(model, cfg)
    resume = out / "resume"
    log = {"config": asdict(cfg), "device": device.type, "params": sum(p.numel() for p in model.parameters()), "evals": [], "train": [],
           "validation": [d.name for d in task.held_docs]}  # the documents every row of "evals" is measured on
    state = {"step": 0, "tokens": 0, "seconds": 0.0}
    if init is not None and not (resume / "state.json").is_file():
        init = Path(init)
        model.load_state_dict({k: v.to(device) for k, v in _init_weights(init, model, cfg.kind).items()}, strict=False)
        first = json.loads((init / "train_log.json").read_text()) if (init / "train_log.json").is_file() else None
        log["init"] = {"from": init.name, "log": first}
    if (resume / "state.json").is_file():
        _check_same_run(out, cfg)
        state = _load_resume(resume, model, opt)
        if (out / "train_log.json").is_file():
            log = json.loads((out / "train_log.json").read_text())
            log.setdefault("resumes", []).append({"step": state["step"], "steps": cfg.steps})
            log["config"] = asdict(cfg)
    forward = torch.compile(model) if cfg.compile else model  # the same parameters: the optimizer and saving use model
    autocast = device_autocast(device, cfg.autocast != "off")
    log["autocast"] = "bf16" if autocast.fast_dtype == torch.bfloat16 and autocast._enabled else "off"
    snap_steps = {max(1, round(f * cfg.steps)): f for f in cfg.snapshots if 0 < f < 1}
    start_wall, start_seconds = time.perf_counter(), state["seconds"]
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, dynamic_ncols=True, desc=f"train {cfg.kind}")
    step = state["step"]
    fit_steps = fit_steps and time_budget is not None and step == 0
    data = batches(task, cfg, step, device)
    best = min((e[task.best_key] for e in log["evals"] if task.best_key in e), default=math.inf)
    running = None
    window: list[list[float]] = []  # losses since the last log row
    log_every = max(1, min(50, cfg.steps // 20))

    def save_model() -> None:
        checkpoints.save(model, out, tokenizer, extra={"train": asdict(cfg), "steps_done": step})

    def evaluate_now() -> dict:
        model.eval()
        with torch.no_grad(), autocast:
            figures = task.evaluate(model, quick=True)
        log["evals"].append({"step": step, "seconds": round(start_seconds + time.perf_counter() - start_wall, 1),
                             "tokens": state["tokens"], "train_loss": round(running, 4), **figures})
        bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in figures.items()))
        return figures

    def checkpoint(final: bool) -> None:
        state.update(step=step, seconds=start_seconds + time.perf_counter() - start_wall)
        _save_resume(resume, model, opt, state)
        if not cfg.keep_best or not (out / "model.safetensors").is_file():
            save_model()
        checkpoints.write_json(out / "train_log.json", log)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    budget_spent = False
    try:
        while step < cfg.steps:
            if time_budget is not None and time.perf_counter() - start_wall > time_budget:
                budget_spent = True
                break
            if until is not None and step >= until:
                break
            if fit_steps and step == CALIBRATE_AT // 5:
                t_fit = time.perf_counter()
            if fit_steps and step == CALIBRATE_AT:
                rate = (CALIBRATE_AT - CALIBRATE_AT // 5) / (time.perf_counter() - t_fit)
                left = time_budget - (time.perf_counter() - start_wall)
                # Measured on short sequences; guess the long ones cost sqrt(longer) as much, keep 10 % for evaluations.
                slower = (cfg.seq_len / cfg.short_seq_len) ** 0.5 if cfg.short_frac > 0 else 1.0
                cfg.steps = max(step + 1, int(step + 0.9 * rate * left / (cfg.short_frac + (1 - cfg.short_frac) * slower)))
                log["config"] = asdict(cfg)
                log["fitted"] = {"steps_per_second": round(rate, 2), "steps": cfg.steps}
                bar.total = cfg.steps
                bar.write(f"{rate:.1f} steps/s: fitted the schedule to {cfg.steps} steps")
                snap_steps = {max(1, round(f * cfg.steps)): f for f in cfg.snapshots if 0 < f < 1}  # at the fitted fractions
                fit_steps = False
            model.train()
            batch = {k: v.to(device, non_blocking=True) for k, v in next(data).items()}
            set_lr(opt, cfg, step)
            with autocast:
                loss, parts = task.loss(forward, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            step += 1
            state["tokens"] += task.tokens_in(batch)
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            window.append([loss.item(), *parts.values()])
            elapsed = start_seconds + time.perf_counter() - start_wall
            if step % log_every == 0 or step == cfg.steps:
                means = [sum(col) / len(col) for col in zip(*window)]
                window.clear()
                log["train"].append({"step": step, "seconds": round(elapsed, 1), "tokens": state["tokens"], "loss": round(means[0], 4),
                                     **{k: round(v, 4) for k, v in zip(parts, means[1:])}})
            bar.set_postfix(loss=f"{running:.3f}", tok_s=f"{state['tokens'] / max(elapsed, 1e-9):.0f}")
            bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.steps or step in snap_steps:
                figures = evaluate_now()
                if step in snap_steps:
                    checkpoints.save_snapshot(model, out, step, step / cfg.steps, figures)
                if figures[task.best_key] < best or not cfg.keep_best:  # "best": the row of the model the folder keeps
                    best = min(best, figures[task.best_key])
                    log["best"] = log["evals"][-1]
                    if cfg.keep_best:
                        save_model()
            if step % cfg.save_every == 0:
                checkpoint(False)
    except KeyboardInterrupt:
        bar.write("Interrupted: saving so the next run resumes here.")
    finally:
        if not cfg.keep_best and running is not None and log["evals"][-1:] and log["evals"][-1]["step"] != step:
            evaluate_now()  # the folder keeps this step (a stop between evaluations): its row is the log's "best"
            log["best"] = log["evals"][-1]
        bar.close()
        checkpoint(True)
        shipped = log.get("best") if cfg.keep_best else (log["evals"][-1] if log["evals"] else None)
        if (step >= cfg.steps or budget_spent) and shipped and cfg.snapshots:
            kept = checkpoints.load(out, need_tokenizer=False).model  # the last snapshot is the shipped (kept) model
            checkpoints.save_snapshot(kept, out, shipped["step"], shipped["step"] / cfg.steps,
                                      {k: v for k, v in shipped.items() if k not in ("step", "seconds", "tokens")})
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return log
