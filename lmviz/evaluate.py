"""``python -m lmviz evaluate``: held-out figures beside honest baselines, and the probes the pages point at.

Everything is measured on the held-out plays (``lmviz.corpus.HELD_OUT``). The result is printed as
one table and written to ``assets/models/evaluation.json`` for the Home and Attention pages.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lmviz import checkpoints
from lmviz.corpus import HELD_OUT
from lmviz.device import pick_device
from lmviz.models.record import Want
from lmviz.tasks import EVAL_SEED, TASKS, char_count
from lmviz.training import DEFAULTS

CLOZES = ["to be or not to [MASK] .", "what light through yonder [MASK] breaks ?", "my lord , i [MASK] not know .",
          "the king is [MASK] .", "good [MASK] , sweet prince ."]
PROMPTS = ["ROMEO:\nBut soft", "KING:\nMy lord,", "HAMLET:\nTo be, or not to be"]
T5_PROBES = ["The course of true love never did run smooth.", "All the world's a stage, and all the men and women merely players."]


def task_for(loaded: checkpoints.Loaded):
    cfg = DEFAULTS[loaded.kind]
    if loaded.extra and "train" in loaded.extra:
        cfg = replace(cfg, **{k: v for k, v in loaded.extra["train"].items() if k in cfg.__dataclass_fields__})
    return TASKS[loaded.kind](loaded.tokenizer, cfg)


# --- baselines ---------------------------------------------------------------------------------

def ngram_baselines(task) -> dict:
    """Unigram and interpolated bigram (add-one unigram, λ tuned on the last 5 % of training tokens)."""
    V = task.tok.get_vocab_size()
    train = task.train_stream
    cut = int(len(train) * 0.95)
    fit, tune = train[:cut], train[cut:]
    uni = (np.bincount(fit, minlength=V) + 1.0) / (len(fit) + V)
    pairs = Counter(zip(fit[:-1].tolist(), fit[1:].tolist()))
    ctx = np.bincount(fit[:-1], minlength=V).astype(float)

    def nats(stream, lam):
        total = 0.0
        for a, b in zip(stream[:-1].tolist(), stream[1:].tolist()):
            big = pairs.get((a, b), 0) / ctx[a] if ctx[a] else 0.0
            total -= math.log(lam * big + (1 - lam) * uni[b])
        return total

    lam = min((0.3, 0.5, 0.7, 0.8, 0.9), key=lambda l: nats(tune[:50_000], l))
    held = task.held_stream
    n_chr = char_count(task.tok, held[1:])
    uni_nats = -np.log(uni[held[1:]]).sum()
    big_nats = nats(held, lam)
    n = len(held) - 1
    return {"unigram": {"loss": uni_nats / n, "bits_per_char": uni_nats / math.log(2) / n_chr},
            "bigram": {"loss": big_nats / n, "bits_per_char": big_nats / math.log(2) / n_chr, "lambda": lam}}


def most_frequent_token(task, exclude: set[int]) -> int:
    counts = np.bincount(task.train_stream)
    for t in np.argsort(-counts):
        if int(t) not in exclude:
            return int(t)
    return 0


def bert_frequent_guess(task) -> float:
    """MLM top-1 of always guessing the most frequent training token, on the same masked positions."""
    stream = np.concatenate([np.asarray(s) for d in task.train_sentences for s in d])
    top = int(np.bincount(stream).argmax())
    hit = n = 0
    for b in task.held_batches(quick=False):
        gold = b["labels"][b["labels"] != -100]
        hit += int((gold == top).sum())
        n += gold.numel()
    return hit / n


def t5_frequent_guess(task) -> float:
    rng = np.random.default_rng(EVAL_SEED)
    sentinels = set(task.special["sentinels"]) | {task.special["eos"]}
    top = most_frequent_token(task, sentinels)
    hit = n = 0
    for _ in range(32):
        b = task.make_batch(task.held_stream, rng, 32, task.cfg.seq_len)
        gold = b["labels"][b["labels"] != -100]
        content = ~torch.isin(gold, torch.tensor(sorted(sentinels)))
        hit += int((gold[content] == top).sum())
        n += int(content.sum())
    return hit / n


# --- probes ------------------------------------------------------------------------------------

@torch.inference_mode()
def bert_cloze(loaded, sentence: str, k: int = 5) -> list[tuple[str, float]]:
    tok, model = loaded.tokenizer, loaded.model
    enc = tok.encode(sentence)
    pos = enc.tokens.index("[MASK]")
    logits = model(torch.tensor([enc.ids], device=next(model.parameters()).device)).logits[0, pos].float()
    p = torch.softmax(logits, -1)
    top = p.topk(k)
    return [(tok.id_to_token(int(i)), float(v)) for v, i in zip(top.values, top.indices)]


@torch.inference_mode()
def gpt2_greedy(loaded, prompt: str, n: int = 20) -> str:
    tok, model = loaded.tokenizer, loaded.model
    device = next(model.parameters()).device
    ids = tok.encode(prompt).ids
    out = model(torch.tensor([ids], device=device))
    new = []
    for _ in range(n):
        nxt = int(out.logits[0, -1].argmax())
        new.append(nxt)
        out = model(torch.tensor([[nxt]], device=device), cache=out.cache)
    return tok.decode(new)


@torch.inference_mode()
def t5_restore(loaded, sentence: str) -> dict:
    """Hide one span in the middle of ``sentence`` and let T5 restore it (greedy)."""
    from lmviz.inference import greedy_t5
    from lmviz.masking import span_corrupt
    from lmviz.tokenizers import SENTINELS

    tok = loaded.tokenizer
    ids = tok.encode(sentence, add_special_tokens=False).ids
    mid = len(ids) // 2
    sc = span_corrupt(ids, np.random.default_rng(0), sentinel_ids=[tok.token_to_id(s) for s in SENTINELS],
                      eos_id=tok.token_to_id("</s>"), spans=[(mid, min(len(ids), mid + 2))])
    out = greedy_t5(loaded, sc.input_ids, 8)
    return {"input": tok.decode(sc.input_ids, skip_special_tokens=False), "truth": tok.decode(ids[mid:mid + 2]),
            "model": tok.decode(out[1:], skip_special_tokens=False)}


@torch.inference_mode()
def gpt2_head_probes(loaded, task) -> dict:
    """Previous-token head (mean attention to i-1 on held-out text) and induction head (repeated random tokens)."""
    model = loaded.model
    device = next(model.parameters()).device
    window = torch.from_numpy(task.held_stream[:128][None]).to(device)
    probs = torch.stack(model(window, want=Want()).record.probs["causal"])[:, 0]  # [L, H, T, T]
    prev = probs.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # [L, H]
    g = torch.Generator().manual_seed(EVAL_SEED)
    half = 50
    rand = torch.randint(100, loaded.tokenizer.get_vocab_size(), (4, half), generator=g)
    seq = torch.cat([rand, rand], dim=1).to(device)
    p = torch.stack(model(seq, want=Want()).record.probs["causal"])  # [L, B, H, T, T]
    # in the second copy, position t should attend to the token after t's first occurrence: t - half + 1
    idx = torch.arange(half, 2 * half - 1)
    induction = p[:, :, :, idx, idx - half + 1].mean(dim=(1, 3))  # [L, H]
    pl, ph = divmod(int(prev.argmax()), prev.shape[1])
    il, ih = divmod(int(induction.argmax()), induction.shape[1])
    return {"previous_token_head": [pl, ph, float(prev[pl, ph])], "induction_head": [il, ih, float(induction[il, ih])],
            "previous_token_scores": prev.tolist(), "induction_scores": induction.tolist()}


@torch.inference_mode()
def bert_sink_probes(loaded, task) -> dict:
    """Share of each head's attention that goes to [CLS] or [SEP], on held-out pairs."""
    model = loaded.model
    device = next(model.parameters()).device
    b = next(iter(task.held_batches(quick=True)))
    ids = b["input_ids"][:8].to(device)
    rec = model(ids, b["token_type_ids"][:8].to(device), b["attention_mask"][:8].to(device), want=Want()).record
    special = (ids == task.ids["[CLS]"]) | (ids == task.ids["[SEP]"])
    real = b["attention_mask"][:8].bool().to(device)
    shares = []
    for probs in rec.probs["self"]:  # [B, H, Q, K]
        to_special = (probs.to(device) * special[:, None, None, :]).sum(-1)  # [B, H, Q]
        shares.append(((to_special * real[:, None, :]).sum((0, 2)) / real.sum()).tolist())
    flat = sorted(((s, l, h) for l, row in enumerate(shares) for h, s in enumerate(row)), reverse=True)
    return {"sink_heads": [[l, h, s] for s, l, h in flat[:3]], "special_share": shares}


# --- the command -------------------------------------------------------------------------------

def evaluate_all(models_dir: Path | None = None, quick: bool = False) -> dict:
    root = Path(models_dir) if models_dir else checkpoints.ASSETS
    result: dict = {"held_out": list(HELD_OUT)}
    for kind in ("gpt2", "bert", "t5"):
        folder = root / kind
        try:
            loaded = checkpoints.load(folder, pick_device())
        except Exception as err:  # report and go on with the others
            print(f"{kind}: unavailable ({err})")
            continue
        task = task_for(loaded)
        figures = task.evaluate(loaded.model, quick=quick)
        entry: dict = {"figures": figures, "steps": (loaded.extra or {}).get("steps_done"),
                       "params": sum(p.numel() for p in loaded.model.parameters())}
        if loaded.train_log:
            entry["train_seconds"] = loaded.train_log["evals"][-1]["seconds"] if loaded.train_log.get("evals") else None
            entry["device"] = loaded.train_log.get("device")
        if kind == "gpt2":
            entry["baselines"] = ngram_baselines(task)
            entry["probes"] = {"greedy": {p: gpt2_greedy(loaded, p) for p in PROMPTS}, **gpt2_head_probes(loaded, task)}
        elif kind == "bert":
            entry["baselines"] = {"most_frequent_top1": bert_frequent_guess(task), "nsp_chance": 0.5}
            entry["probes"] = {"cloze": {s: bert_cloze(loaded, s) for s in CLOZES}, **bert_sink_probes(loaded, task)}
        else:
            entry["baselines"] = {"most_frequent_acc": t5_frequent_guess(task)}
            entry["probes"] = {"restore": [t5_restore(loaded, s) for s in T5_PROBES]}
        result[kind] = entry
    checkpoints.write_json(root / "evaluation.json", result)
    print_table(result)
    return result


def print_table(r: dict) -> None:
    rows = []
    if "gpt2" in r:
        g, b = r["gpt2"]["figures"], r["gpt2"]["baselines"]
        rows += [("GPT-2", "loss (nats/token)", g["loss"], f"unigram {b['unigram']['loss']:.3f} · bigram {b['bigram']['loss']:.3f}"),
                 ("GPT-2", "bits per character", g["bits_per_char"], f"unigram {b['unigram']['bits_per_char']:.3f} · bigram {b['bigram']['bits_per_char']:.3f}")]
    if "bert" in r:
        f, b = r["bert"]["figures"], r["bert"]["baselines"]
        rows += [("BERT", "MLM top-1", f["mlm_top1"], f"most-frequent token {b['most_frequent_top1']:.3f}"),
                 ("BERT", "MLM top-5", f["mlm_top5"], ""),
                 ("BERT", "NSP accuracy", f["nsp_acc"], "chance 0.500")]
    if "t5" in r:
        f, b = r["t5"]["figures"], r["t5"]["baselines"]
        rows += [("T5", "span loss (nats/target token)", f["loss"], ""),
                 ("T5", "non-sentinel target accuracy", f["content_acc"], f"most-frequent token {b['most_frequent_acc']:.3f}")]
    print(f"Held-out plays: {', '.join(r['held_out'])}")
    print(f"{'model':6s} {'figure':32s} {'ours':>8s}   baseline")
    for m, name, v, base in rows:
        print(f"{m:6s} {name:32s} {v:8.3f}   {base}")
    if "bert" in r:
        for s, top in r["bert"]["probes"]["cloze"].items():
            print(f"BERT  {s!r}: " + ", ".join(f"{t} {p:.2f}" for t, p in top))
        print(f"BERT  heads most attending to [CLS]/[SEP] (layer, head, share): {r['bert']['probes']['sink_heads']}")
    if "gpt2" in r:
        for p, c in r["gpt2"]["probes"]["greedy"].items():
            print(f"GPT-2 {p!r} → {c!r}")
        print(f"GPT-2 previous-token head (layer, head, mean attention to i-1): {r['gpt2']['probes']['previous_token_head']}")
        print(f"GPT-2 induction head (layer, head, score): {r['gpt2']['probes']['induction_head']}")
    if "t5" in r:
        for x in r["t5"]["probes"]["restore"]:
            print(f"T5    {x['input']!r} → {x['model']!r} (truth {x['truth']!r})")
