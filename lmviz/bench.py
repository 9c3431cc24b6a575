"""``python -m lmviz bench {models,pages}``: how fast our models and pages are, measured in one run.

``models``: each of our three models against ``transformers``' own class loaded from the same
shipped folder (eager attention), on the same token ids, batch 1. Rows:

- forward with the attention record (ours ``want=Want()``; reference ``output_attentions=True``),
  128 tokens (T5: 128 encoder and 64 decoder tokens); goal ≤ 1.0;
- GPT-2 greedy decode of 64 tokens after a 192-token prompt: with our KV cache against our own
  recompute of the whole sequence at each step (goal ≥ 3× faster, i.e. a time ratio ≤ 0.33), and
  against ``generate`` with its cache (goal ≤ 1.0);
- a training step, forward + backward of the pretraining loss, dropout off in both (goal ≤ 1.0);
- where the hardware computes bfloat16 (CUDA, or a CPU with AVX-512 BF16 / AMX), a training step at the training
  batch (32) under bf16 autocast against the same step in float32: training uses autocast when it is faster.

``pages``: how fast each page's own work is (``lmviz.bench_pages``).

Every case is interleaved with its reference in the same loop (order alternating each repeat),
after one warm-up call; the table gives min and median milliseconds and the time ratio ours/ref.
On a CPU torch runs one thread, so other processes on a small shared machine disturb it least.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from lmviz.bench_pages import bench_pages, pages_markdown
from lmviz.errors import LmvizError
from lmviz.models import checkpoints
from lmviz.models.device import autocast as device_autocast
from lmviz.models.device import cpu_has_bf16, pick_device
from lmviz.models.kinds import KINDS, device_of, kind_of, shipped_kinds
from lmviz.models.record import Want

SEQ_LEN = 128
T5_TARGET = 64
PROMPT_LEN = 192
NEW_TOKENS = 64
HF_CLASSES = {"bert": "BertForPreTraining", "gpt2": "GPT2LMHeadModel", "t5": "T5ForConditionalGeneration"}
HF_NO_DROPOUT = {"bert": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
                 "gpt2": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
                 "t5": {"dropout_rate": 0.0}}


# --- timing ----------------------------------------------------------------------------------------

def _sync(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def interleave(cases: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each case: one warm-up call each, then ``repeats`` rounds, order reversed every other round."""
    names = list(cases)
    for n in names:
        cases[n]()
    sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(max(1, repeats)):
        for n in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            cases[n]()
            sync()
            times[n].append(time.perf_counter() - t)
    return times


@dataclass
class Row:
    """One measured comparison: ``ours`` and ``ref`` are seconds per call over the repeats."""

    model: str
    what: str
    ours: list[float]
    reference: str
    ref: list[float]
    goal: float  # the time ratio ours/ref must be at most this
    goal_text: str
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.ref)

    @property
    def ratio_min(self) -> float:
        return min(self.ours) / min(self.ref)

    @property
    def met(self) -> bool:
        return self.ratio <= self.goal


def _ms(ts: list[float]) -> str:
    return f"{min(ts) * 1e3:.1f} / {statistics.median(ts) * 1e3:.1f}"


def markdown(rows: list[Row]) -> str:
    lines = ["| model | measurement | ours ms (min / median) | reference | ref ms (min / median) | ratio ours/ref (median, min) | goal | met |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.model} | {r.what} | {_ms(r.ours)} | {r.reference} | {_ms(r.ref)} | {r.ratio:.2f} ({r.ratio_min:.2f}) | "
                     f"{r.goal_text} | {'yes' if r.met else 'NO'} |")
    return "\n".join(lines)


@torch.inference_mode()
def step_timing(loaded: checkpoints.Loaded, context: int = 256, repeats: int = 20) -> dict:
    """Median milliseconds of one GPT-2 step at ``context`` tokens: the newest token with the KV cache
    of the ``context - 1`` before it, against a recompute of all ``context`` tokens without a cache."""
    if kind_of(loaded).stacks != ("decoder",):
        raise LmvizError("step_timing measures GPT-2.")
    model = loaded.model
    context = max(2, min(int(context), model.config.n_positions))
    device = device_of(model)
    ids = torch.randint(0, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0)).to(device)
    cache = model(ids[:, :-1]).cache
    t = interleave({"cached": lambda: model(ids[:, -1:], cache=cache), "recompute": lambda: model(ids)}, repeats, _sync(device))
    cached, full = (statistics.median(t[k]) * 1000 for k in ("cached", "recompute"))
    return {"context": context, "repeats": repeats, "device": str(device), "threads": torch.get_num_threads(),
            "ms_cached": cached, "ms_recompute": full, "speedup": full / cached}


# --- models ----------------------------------------------------------------------------------------

def load_pair(folder: Path, device: torch.device, train: bool = False):
    """Our model and ``transformers``' from the same folder, float32, in eval (or train) mode, dropout off."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    ours = checkpoints.load(folder, device, need_tokenizer=False)
    kind = ours.kind
    hf = getattr(transformers, HF_CLASSES[kind]).from_pretrained(str(folder), attn_implementation="eager",
                                                                 dtype=torch.float32, **HF_NO_DROPOUT[kind]).to(device)
    model = ours.model
    if train:
        model.train().requires_grad_(True)
        hf.train().requires_grad_(True)
    else:
        hf.eval()
    return kind, model, hf


def _ids(n: int, vocab: int, device, seed: int = 0, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (batch, n), generator=g).to(device)


def forward_cases(kind: str, ours, hf, seq_len: int, target_len: int, device) -> dict[str, Callable]:
    """Inference forwards that keep every attention probability, ours and the reference's."""
    V = ours.config.vocab_size
    x = _ids(seq_len, V, device)
    if KINDS[kind].reads_pair:
        types = torch.zeros_like(x)
        types[:, seq_len // 2:] = 1
        return {"ours": lambda: ours(x, types, want=Want()), "ref": lambda: hf(input_ids=x, token_type_ids=types, output_attentions=True)}
    if not KINDS[kind].reads_target:
        return {"ours": lambda: ours(x, want=Want()), "ref": lambda: hf(input_ids=x, output_attentions=True)}
    y = _ids(target_len, V, device, seed=1)
    return {"ours": lambda: ours(x, y, want=Want()), "ref": lambda: hf(input_ids=x, decoder_input_ids=y, output_attentions=True)}


def train_cases(kind: str, ours, hf, seq_len: int, target_len: int, device, batch: int = 1) -> dict[str, Callable]:
    """Forward + backward of the pretraining loss (MLM + NSP, next token, span targets): ours and the reference's,
    and ours under bf16 autocast (``"ours_bf16"``, the forward autocast, the backward as autograd runs it)."""
    cases = _train_losses(kind, ours, hf, seq_len, target_len, device, batch)

    def step(model, loss_fn):
        def run():
            model.zero_grad(set_to_none=True)
            loss_fn().backward()
        return run

    def amp(loss_fn):
        def run():
            with device_autocast(device):
                loss = loss_fn()
            return loss.float()
        return run

    return {"ours": step(ours, cases["ours"]), "ours_bf16": step(ours, amp(cases["ours"])), "ref": step(hf, cases["ref"])}


def _train_losses(kind: str, ours, hf, seq_len: int, target_len: int, device, batch: int) -> dict[str, Callable]:
    V = ours.config.vocab_size
    x = _ids(seq_len, V, device, batch=batch)
    labels = torch.full_like(x, -100)
    pick = _ids(seq_len, 100, device, seed=2, batch=batch) < 15
    labels[pick] = x[pick]
    if KINDS[kind].reads_pair:  # MLM + NSP
        types = torch.zeros_like(x)
        nsp = torch.zeros(batch, dtype=torch.long, device=device)

        def ours_loss():
            out = ours(x, types)
            return F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100) + F.cross_entropy(out.nsp_logits, nsp)

        return {"ours": ours_loss, "ref": lambda: hf(input_ids=x, token_type_ids=types, labels=labels, next_sentence_label=nsp).loss}
    if not KINDS[kind].reads_target:  # the next token
        return {"ours": lambda: ours(x[:, :-1], labels=x[:, 1:]).loss, "ref": lambda: hf(input_ids=x, labels=x).loss}
    tgt = _ids(target_len, V, device, seed=1, batch=batch)
    dec = torch.cat([torch.zeros_like(tgt[:, :1]), tgt[:, :-1]], dim=1)

    def t5_loss():
        return F.cross_entropy(ours(x, dec).logits.flatten(0, 1), tgt.flatten())

    return {"ours": t5_loss, "ref": lambda: hf(input_ids=x, decoder_input_ids=dec, labels=tgt).loss}


def greedy_cached(model, prompt: torch.Tensor, new: int) -> list[int]:
    out = model(prompt)
    ids = []
    for _ in range(new):
        nxt = out.logits[:, -1:].argmax(-1)
        ids.append(int(nxt))
        out = model(nxt, cache=out.cache)
    return ids


def greedy_recompute(model, prompt: torch.Tensor, new: int) -> list[int]:
    seq = prompt
    for _ in range(new):
        nxt = model(seq).logits[:, -1:].argmax(-1)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[0, prompt.shape[1]:].tolist()


def hf_generate(hf, prompt: torch.Tensor, new: int) -> list[int]:
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                      use_cache=True, eos_token_id=None, pad_token_id=0)
    return out[0, prompt.shape[1]:].tolist()


@torch.inference_mode()
def _timed_inference(cases, repeats, sync):
    return interleave(cases, repeats, sync)


def bench_models(folders: dict[str, Path] | None = None, repeats: int = 5, seq_len: int = SEQ_LEN, t5_target: int = T5_TARGET,
                 prompt_len: int = PROMPT_LEN, new_tokens: int = NEW_TOKENS, device: torch.device | None = None,
                 training_batch: int = 32, compiled: bool = False) -> list[Row]:
    """Every row of the models table; ``folders`` defaults to the shipped checkpoints. ``compiled`` adds a
    ``torch.compile`` training-step row (a minute or more of compiling per model, so the command's, not the tests')."""
    device = device or pick_device()
    sync = _sync(device)
    folders = folders or {k: checkpoints.shipped(k) for k in shipped_kinds()}
    ref = "transformers eager"
    rows: list[Row] = []
    for kind, folder in folders.items():
        kind, ours, hf = load_pair(Path(folder), device)
        t = _timed_inference(forward_cases(kind, ours, hf, seq_len, t5_target, device), repeats, sync)
        shape = f"{seq_len} → {t5_target} tokens" if KINDS[kind].reads_target else f"{seq_len} tokens"
        rows.append(Row(kind, f"forward + attention record, {shape}", t["ours"], f"{ref}, output_attentions", t["ref"], 1.0, "≤ 1.0"))
        if KINDS[kind].stacks == ("decoder",):  # a decoder-only model: greedy decoding against a recompute and generate
            prompt = _ids(prompt_len, ours.config.vocab_size, device, seed=3)
            same = greedy_cached(ours, prompt, new_tokens) == hf_generate(hf, prompt, new_tokens)
            cases = {"cached": lambda: greedy_cached(ours, prompt, new_tokens),
                     "recompute": lambda: greedy_recompute(ours, prompt, new_tokens),
                     "hf": lambda: hf_generate(hf, prompt, new_tokens)}
            t = _timed_inference(cases, repeats, sync)
            what = f"greedy decode {new_tokens} after {prompt_len}"
            rows.append(Row(kind, f"{what}, KV cache", t["cached"], "ours, recompute every step", t["recompute"], 1 / 3, "≤ 0.33 (≥ 3× faster)"))
            rows.append(Row(kind, f"{what}, KV cache", t["cached"], f"{ref}, generate with cache", t["hf"], 1.0, "≤ 1.0",
                            "" if same else "the two greedy outputs differ"))
        del ours, hf
        kind, ours, hf = load_pair(Path(folder), device, train=True)
        cases = train_cases(kind, ours, hf, seq_len, t5_target, device)
        t = interleave({k: cases[k] for k in ("ours", "ref")}, repeats, sync)
        rows.append(Row(kind, f"training step (forward + backward), {shape}", t["ours"], ref, t["ref"], 1.0, "≤ 1.0"))
        if training_batch and (device.type == "cuda" or cpu_has_bf16()):
            cases = train_cases(kind, ours, hf, seq_len, t5_target, device, batch=training_batch)
            t = interleave({k: cases[k] for k in ("ours", "ours_bf16")}, repeats, sync)
            rows.append(Row(kind, f"training step, batch {training_batch}: bf16 autocast", t["ours_bf16"], "ours, float32", t["ours"],
                            1.0, "≤ 1.0 (train with the faster)"))
            if compiled:
                rows.append(compile_row(kind, ours, hf, seq_len, t5_target, device, training_batch, repeats, sync))
        del ours, hf
    return rows


def compile_row(kind: str, ours, hf, seq_len: int, target_len: int, device, batch: int, repeats: int, sync) -> Row:
    """bf16 training step through ``torch.compile`` against the same step eager; the note says what compiling cost
    and after how many steps it pays for itself (never, when the compiled step is not faster)."""
    eager = train_cases(kind, ours, hf, seq_len, target_len, device, batch=batch)["ours_bf16"]
    fast = train_cases(kind, torch.compile(ours), hf, seq_len, target_len, device, batch=batch)["ours_bf16"]
    t0 = time.perf_counter()
    fast()  # the compile, inside the first call
    sync()
    first = time.perf_counter() - t0
    t = interleave({"compiled": fast, "eager": eager}, repeats, sync)
    saved = statistics.median(t["eager"]) - statistics.median(t["compiled"])
    pays = f"pays for itself after {first / saved:.0f} steps" if saved > 0 else "never pays for itself"
    return Row(kind, f"training step, batch {batch}: bf16 + torch.compile", t["compiled"], "ours, bf16 eager", t["eager"], 1.0,
               "≤ 1.0, and paid back within a run", f"first call (compiling) {first:.0f} s: {pays}")


# --- the command -----------------------------------------------------------------------------------

def run(what: str, repeats: int = 5, compiled: bool = True) -> None:
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(1)
    import transformers

    head = (f"device {device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", {torch.get_num_threads()} torch thread")
            + f", torch {torch.__version__}, transformers {transformers.__version__}, {repeats} repeats")
    print(head)
    if what == "models":
        rows = bench_models(repeats=repeats, device=device, compiled=compiled)
        print(markdown(rows))
        for r in rows:
            if r.note:
                print(f"note ({r.model}, {r.what}): {r.note}")
    else:
        print(pages_markdown(bench_pages(repeats=repeats)))
