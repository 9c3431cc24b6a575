"""``python -m lmviz bench {models,pages}``: how fast our models and pages are, measured in one run.

``models``: each of our three models against ``transformers``' own class loaded from the same
shipped folder (eager attention), on the same token ids, batch 1. Rows:

- forward with the attention record (ours ``want=Want()``; reference ``output_attentions=True``),
  128 tokens (T5: 128 encoder and 64 decoder tokens); goal ≤ 1.0;
- GPT-2 greedy decode of 64 tokens after a 192-token prompt: with our KV cache against our own
  recompute of the whole sequence at each step (goal ≥ 3× faster, i.e. a time ratio ≤ 0.33), and
  against ``generate`` with its cache (goal ≤ 1.0);
- a training step, forward + backward of the pretraining loss, dropout off in both (goal ≤ 1.0).

``pages``: the library work a page does after a text edit of 64 words (new text, warm models: the
calls the page makes through ``st.cache_data``), goal < 300 ms, and after a layer/head switch (a
heatmap and the arithmetic rebuilt from a cached record), goal < 200 ms. Both time the functions the pages
call (``lmviz.app.views``), so the benchmark cannot drift from the pages. A page whose library cannot be imported is
reported as skipped; any other error in a page's work is a bug and is raised.

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

from lmviz.analysis import masks
from lmviz.app import views
from lmviz.errors import LmvizError
from lmviz.models import checkpoints
from lmviz.models.device import pick_device
from lmviz.models.kinds import KINDS, device_of, kind_of
from lmviz.models.record import Want

SEQ_LEN = 128
T5_TARGET = 64
PROMPT_LEN = 192
NEW_TOKENS = 64
PAGE_GOAL_MS = 300
SWITCH_GOAL_MS = 200
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


def train_cases(kind: str, ours, hf, seq_len: int, target_len: int, device) -> dict[str, Callable]:
    """Forward + backward of the pretraining loss (MLM + NSP, next token, span targets)."""
    V = ours.config.vocab_size
    x = _ids(seq_len, V, device)
    labels = torch.full_like(x, -100)
    pick = _ids(seq_len, 100, device, seed=2) < 15
    labels[pick] = x[pick]

    def step(model, loss_fn):
        def run():
            model.zero_grad(set_to_none=True)
            loss_fn().backward()
        return run

    if KINDS[kind].reads_pair:  # MLM + NSP
        types = torch.zeros_like(x)
        nsp = torch.zeros(1, dtype=torch.long, device=device)

        def ours_loss():
            out = ours(x, types)
            return F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100) + F.cross_entropy(out.nsp_logits, nsp)

        return {"ours": step(ours, ours_loss),
                "ref": step(hf, lambda: hf(input_ids=x, token_type_ids=types, labels=labels, next_sentence_label=nsp).loss)}
    if not KINDS[kind].reads_target:  # the next token
        return {"ours": step(ours, lambda: ours(x[:, :-1], labels=x[:, 1:]).loss),
                "ref": step(hf, lambda: hf(input_ids=x, labels=x).loss)}
    tgt = _ids(target_len, V, device, seed=1)
    dec = torch.cat([torch.zeros_like(tgt[:, :1]), tgt[:, :-1]], dim=1)

    def t5_loss():
        return F.cross_entropy(ours(x, dec).logits.flatten(0, 1), tgt.flatten())

    return {"ours": step(ours, t5_loss), "ref": step(hf, lambda: hf(input_ids=x, decoder_input_ids=dec, labels=tgt).loss)}


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
                 prompt_len: int = PROMPT_LEN, new_tokens: int = NEW_TOKENS, device: torch.device | None = None) -> list[Row]:
    """Every row of the models table; ``folders`` defaults to the shipped checkpoints."""
    device = device or pick_device()
    sync = _sync(device)
    folders = folders or {k: checkpoints.shipped(k) for k in KINDS}
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
        t = interleave(train_cases(kind, ours, hf, seq_len, t5_target, device), repeats, sync)
        rows.append(Row(kind, f"training step (forward + backward), {shape}", t["ours"], ref, t["ref"], 1.0, "≤ 1.0"))
        del ours, hf
    return rows


# --- pages -----------------------------------------------------------------------------------------

PASSAGE = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and arrows of "
           "outrageous fortune, or to take arms against a sea of troubles and by opposing end them. To die, to sleep, no "
           "more; and by a sleep to say we end the heart-ache and the thousand natural shocks that flesh is heir to: "
           "'tis a consummation devoutly to be wish'd. To die, to sleep; to sleep, perchance to dream.")
EDITS = ["dream", "sleep", "night", "king", "love", "death", "crown", "heaven", "soul", "blood", "grief", "honour"]


def edited_text(n_words: int, edit: int) -> str:
    """``n_words`` words of Hamlet's soliloquy with the last word replaced: a new text for every ``edit``."""
    words = (PASSAGE.split() * (n_words // len(PASSAGE.split()) + 1))[:n_words]
    words[-1] = f"{EDITS[edit % len(EDITS)]}{edit // len(EDITS) or ''}."
    return " ".join(words)


def _tokenization(models, text):
    from lmviz.viz import tokens as vt

    exp = views.explanations({k: m.tokenizer for k, m in models.items()}, text, None)
    return vt.aligned_rows(text, exp, None), vt.token_counts(exp)


def _attention(loaded, text):
    run = views.attention(loaded, text)
    kind = run.record.kinds[0]
    return run, _head_figures(run, kind, 0, 0), views.every_head(run, kind)


def _head_figures(run, kind, layer, head, arithmetic: bool = True):
    """What a layer/head switch rebuilds from a cached run: the heatmap (and the head's arithmetic)."""
    query = len(run.axes(kind)[0]) - 1
    figs = [views.one_head(run, kind, layer, head, query)]
    return figs + list(views.arithmetic(run, kind, layer, head, query)[1]) if arithmetic else figs


def _masking(loaded, text):
    objective = next(o for o, model in views.OBJECTIVE_MODELS.items() if model == loaded.kind and o in views.TEXT_OBJECTIVES)
    return views.TEXT_OBJECTIVES[objective](loaded, text)


def _masks(loaded, text, twin=None):
    run = views.attention(loaded, text)
    figs = views.mask_figures(run)
    if KINDS[loaded.kind].experiment == "no mask":  # BERT's experiment (one forward per word) runs only when the page's toggle asks for it
        figs += views.experiment_figures(views.experiment(loaded, text), 0, 0)
    if twin is not None:  # the page runs the shipped GPT-2's twin (trained without the mask) under it
        t = masks.gpt2_without_mask(twin, text)
        figs += views.experiment_figures(t, *t.answer_head())
    return figs


def _generation(loaded, text):
    from lmviz.analysis.generation import LiveRun
    from lmviz.analysis.strategies import Strategy

    return views.generation(LiveRun(), loaded, loaded.kind, text, Strategy(), 0, 20, {}, 20)


def _compare(models, text):
    from lmviz.analysis.compare import view_data

    c = views.comparison(models, text)
    return views.comparison_figure(c, None), view_data(c, 0, None)


def page_cases(models: dict) -> dict[str, Callable[[str], object]]:
    """``{page (model): work(text)}``: the functions each page calls on a new text (``lmviz.app.views``)."""
    cases: dict[str, Callable[[str], object]] = {f"tokenization (explain: {', '.join(models)})": lambda text: _tokenization(models, text)}
    for name, loaded in models.items():
        kind = KINDS[loaded.kind]
        cases[f"attention ({name})"] = lambda text, m=loaded: _attention(m, text)
        cases[f"masking ({name})"] = lambda text, m=loaded: _masking(m, text)
        twin = masks.load_twin(device_of(loaded.model)) if name == masks.TWIN_OF else None
        cases[f"masks ({name})"] = lambda text, m=loaded, t=twin: _masks(m, text, t)
        if kind.writes:
            cases[f"generation ({name}, 20 greedy steps)"] = lambda text, m=loaded: _generation(m, text)
    cases[f"compare ({', '.join(models)})"] = lambda text: _compare(models, text)
    return cases


@dataclass
class PageRow:
    page: str
    times: list[float]
    goal_ms: float
    skipped: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1e3 if self.times else float("nan")

    @property
    def met(self) -> bool:
        return bool(self.times) and self.median_ms < self.goal_ms


def bench_pages(models: dict | None = None, repeats: int = 5, words: int = 64) -> list[PageRow]:
    """Median time of each page's work on a new text (warm models), then of a layer/head switch."""
    if models is None:
        models = {k: checkpoints.load(checkpoints.shipped(k), pick_device()) for k in KINDS}
    rows: list[PageRow] = []
    for page, work in page_cases(models).items():
        try:
            work(edited_text(words, 0))  # warm-up: imports, first plotly figure
        except ImportError as err:  # a page whose library is not there: any other error is a bug, and is raised
            rows.append(PageRow(page, [], PAGE_GOAL_MS, f"skipped: {type(err).__name__}: {err}"[:120]))
            continue
        times = []
        for r in range(max(1, repeats)):
            text = edited_text(words, r + 1)
            t = time.perf_counter()
            work(text)
            times.append(time.perf_counter() - t)
        rows.append(PageRow(f"{page}: {words}-word text edit", times, PAGE_GOAL_MS))
    for kind, loaded in models.items():
        run = views.attention(loaded, edited_text(words, 0))
        rec = run.record
        att = rec.kinds[-1]
        picks = [(layer, head) for layer in range(rec.n_layers(att)) for head in range(rec.n_heads(att))]
        for what, arithmetic in (("heatmap", False), ("heatmap + arithmetic tab", True)):
            _head_figures(run, att, 0, 0, arithmetic)
            times = []
            for r in range(max(1, repeats)):
                layer, head = picks[(r + 1) % len(picks)]
                t = time.perf_counter()
                _head_figures(run, att, layer, head, arithmetic)
                times.append(time.perf_counter() - t)
            rows.append(PageRow(f"attention ({kind}, {att}): layer/head switch, {what}", times, SWITCH_GOAL_MS))
    return rows


def pages_markdown(rows: list[PageRow]) -> str:
    lines = ["| page work | median ms | min ms | goal | met |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        if r.skipped:
            lines.append(f"| {r.page} | — | — | < {r.goal_ms:.0f} ms | {r.skipped} |")
        else:
            lines.append(f"| {r.page} | {r.median_ms:.0f} | {min(r.times) * 1e3:.0f} | < {r.goal_ms:.0f} ms | {'yes' if r.met else 'NO'} |")
    return "\n".join(lines)


# --- the command -----------------------------------------------------------------------------------

def run(what: str, repeats: int = 5) -> None:
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(1)
    import transformers

    head = (f"device {device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", {torch.get_num_threads()} torch thread")
            + f", torch {torch.__version__}, transformers {transformers.__version__}, {repeats} repeats")
    print(head)
    if what == "models":
        rows = bench_models(repeats=repeats, device=device)
        print(markdown(rows))
        for r in rows:
            if r.note:
                print(f"note ({r.model}, {r.what}): {r.note}")
    else:
        print(pages_markdown(bench_pages(repeats=repeats)))
