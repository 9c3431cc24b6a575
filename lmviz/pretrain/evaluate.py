"""``python -m lmviz evaluate``: held-out figures beside honest baselines, and the probes the pages point at.

Everything is measured on the held-out plays (``lmviz.pretrain.corpus.HELD_OUT``) with fixed seeds; ``--quick``
uses the slice that training evaluates on (the ``evals`` rows of ``train_log.json``), the full run
every held-out window (GPT-2) or 32 batches of 32 (BERT, T5). The result is printed as one table
and written to ``assets/models/evaluation.json``, which the Home and Attention pages read. Its keys
are stable::

    {"held_out": [play, ...],
     "gpt2": {"figures": {"loss": nats/token, "bits_per_char": float},
              "baselines": {"unigram": {"loss", "bits_per_char"}, "bigram": {"loss", "bits_per_char", "lambda"}},
              "probes": {"greedy": {prompt: continuation},
                         "previous_token_head": [layer, head, mean attention to i-1],
                         "induction_head": [layer, head, mean attention to the token after the earlier copy],
                         "previous_token_scores": [[per head] per layer], "induction_scores": [[...]],
                         "previous_token_chance", "induction_chance": what even attention over the keys scores}, ...},
     "bert": {"figures": {"mlm_loss", "mlm_top1", "mlm_top5", "nsp_acc"},
              "baselines": {"most_frequent_top1", "most_frequent_top5", "unigram_loss", "nsp_chance"},
              "probes": {"cloze": {sentence: [[token, probability] x5]},
                         "sink_heads": [[layer, head, share to [CLS]/[SEP]] x3], "special_share": [[per head] per layer],
                         "sink_chance": the share even attention gives them}, ...},
     "t5":   {"figures": {"loss": nats/target token, "content_acc": accuracy on non-sentinel targets},
              "baselines": {"most_frequent_acc", "unigram_loss"},
              "probes": {"restore": [{"input", "truth", "model"}]}, ...}}

and in each model's entry also ``quick`` (whether it used the quick slice), ``steps`` (the kept step), ``params``, ``train_seconds``, ``device``
and ``claimed`` (``train_log.json``'s ``best`` row, for comparison). Running only some models
(``evaluate_all(kinds=["t5"])``) keeps the other entries of an existing file.
"""
from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lmviz.models import checkpoints
from lmviz.pretrain.corpus import HELD_OUT
from lmviz.models.device import pick_device
from lmviz.analysis.heads import even_attention, previous_token_score, read_evaluation, sink_score
from lmviz.errors import LmvizError
from lmviz.models.kinds import device_of, kind_of
from lmviz.models.record import Want
from lmviz.pretrain import text2text
from lmviz.pretrain.tasks import EVAL_SEED, TASKS, char_count
from lmviz.pretrain.training import DEFAULTS

CLOZES = ["to be or not to [MASK] .", "what light through yonder [MASK] breaks ?", "my lord , i [MASK] not know .",
          "the king is [MASK] .", "good [MASK] , sweet prince ."]
PROMPTS = ["ROMEO:\nBut soft", "KING:\nMy lord,", "HAMLET:\nTo be, or not to be"]
T5_PROBES = ["The course of true love never did run smooth.", "All the world's a stage, and all the men and women merely players."]


def task_for(loaded: checkpoints.Loaded, held: str = "test"):
    """The task ``loaded`` was trained on, evaluating on the test plays (``held="validation"``: on the documents its
    training evaluated on, the validation play for runs since it was set apart, the test plays before)."""
    cfg = DEFAULTS[loaded.kind]
    if loaded.extra and "train" in loaded.extra:
        cfg = replace(cfg, **{k: v for k, v in loaded.extra["train"].items() if k in cfg.__dataclass_fields__})
    if held == "validation" and not (loaded.train_log or {}).get("validation"):
        held = "test"
    return TASKS[loaded.kind](loaded.tokenizer, cfg, held=held)


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


def bert_baselines(task, quick: bool) -> dict:
    """On the same masked positions as ``task.evaluate``: always guessing the most frequent training
    token (top-1) or the five most frequent (top-5), and the loss of the add-one unigram model."""
    counts = np.bincount(np.concatenate([np.asarray(s) for d in task.train_sentences for s in d]),
                         minlength=task.tok.get_vocab_size())
    top5 = torch.from_numpy(np.argsort(-counts, kind="stable")[:5].copy())
    log_uni = torch.from_numpy(np.log((counts + 1.0) / (counts.sum() + len(counts))))
    hit1 = hit5 = n = 0
    nats = 0.0
    for b in task.held_batches(quick=quick):
        gold = b["labels"][b["labels"] != -100]
        hit1 += int((gold == top5[0]).sum())
        hit5 += int(torch.isin(gold, top5).sum())
        nats -= float(log_uni[gold].sum())
        n += gold.numel()
    return {"most_frequent_top1": hit1 / n, "most_frequent_top5": hit5 / n, "unigram_loss": nats / n, "nsp_chance": 0.5}


def t5_baselines(task, quick: bool) -> dict:
    """On the same ``fill:`` targets as ``task.evaluate``: the most frequent training token as the guess for every
    non-sentinel target, and the loss of an add-one unigram model of training targets (sentinels included)."""
    V = task.tok.get_vocab_size()
    sentinels = torch.tensor(sorted(set(task.special["sentinels"]) | {task.special["eos"]}))
    top = most_frequent_token(task, set(sentinels.tolist()))
    train_rng = np.random.default_rng(EVAL_SEED + 1)
    counts = torch.zeros(V, dtype=torch.float64)
    for _ in range(32):
        labels = task.collate([task.train_examples.fill(train_rng) for _ in range(32)])["labels"]
        counts += torch.bincount(labels[labels != -100], minlength=V)
    log_uni = torch.log((counts + 1.0) / (counts.sum() + V))
    hit = n_content = n = 0
    nats = 0.0
    for b in task.held_batches("fill", quick):  # the batches task.evaluate reads
        gold = b["labels"][b["labels"] != -100]
        content = ~torch.isin(gold, sentinels)
        hit += int((gold[content] == top).sum())
        n_content += int(content.sum())
        nats -= float(log_uni[gold].sum())
        n += gold.numel()
    return {"most_frequent_acc": hit / n_content, "unigram_loss": nats / n}


# --- probes ------------------------------------------------------------------------------------

@torch.inference_mode()
def bert_cloze(loaded, sentence: str, k: int = 5) -> list[tuple[str, float]]:
    tok, model = loaded.tokenizer, loaded.model
    enc = tok.encode(sentence)
    pos = enc.tokens.index("[MASK]")
    logits = model(torch.tensor([enc.ids], device=device_of(model))).logits[0, pos].float()
    p = torch.softmax(logits, -1)
    top = p.topk(k)
    return [(tok.id_to_token(int(i)), float(v)) for v, i in zip(top.values, top.indices)]


@torch.inference_mode()
def gpt2_greedy(loaded, prompt: str, n: int = 20) -> str:
    tok, model = loaded.tokenizer, loaded.model
    device = device_of(model)
    ids = kind_of(loaded).encode(tok, prompt)  # <|endoftext|> first, as the app and training feed GPT-2
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
    from lmviz.analysis.inference import greedy_t5
    from lmviz.pretrain.masking import span_corrupt
    from lmviz.pretrain.tokenizers import SENTINELS

    tok = loaded.tokenizer
    ids = tok.encode(sentence, add_special_tokens=False).ids
    mid = len(ids) // 2
    sc = span_corrupt(ids, np.random.default_rng(0), sentinel_ids=[tok.token_to_id(s) for s in SENTINELS],
                      eos_id=tok.token_to_id("</s>"), spans=[(mid, min(len(ids), mid + 2))])
    source = text2text.prefix_ids(loaded, "fill") + list(sc.input_ids)
    out = greedy_t5(loaded, source, 8)
    return {"input": tok.decode(source, skip_special_tokens=False), "truth": tok.decode(ids[mid:mid + 2]),
            "model": tok.decode(out[1:], skip_special_tokens=False)}


@torch.inference_mode()
def gpt2_head_probes(loaded, task) -> dict:
    """Previous-token head (mean attention to i-1 on held-out text) and induction head (repeated random tokens)."""
    scores = task.head_probes(loaded.model)
    prev, induction, half = scores["previous"], scores["induction"], scores["half"]
    T = loaded.model.config.n_positions
    idx = np.arange(half, 2 * half - 1)
    pl, ph = divmod(int(prev.argmax()), prev.shape[1])
    il, ih = divmod(int(induction.argmax()), induction.shape[1])
    # chance: the same scores of even attention over the keys each query may see (heads.even_attention)
    causal = lambda n: even_attention(np.tril(np.ones((n, n), dtype=bool)))  # noqa: E731
    return {"previous_token_head": [pl, ph, float(prev[pl, ph])], "induction_head": [il, ih, float(induction[il, ih])],
            "previous_token_scores": prev.tolist(), "induction_scores": induction.tolist(),
            "previous_token_chance": previous_token_score(causal(T)),
            "induction_chance": float(causal(2 * half)[idx, idx - half + 1].mean())}


@torch.inference_mode()
def bert_sink_probes(loaded, task) -> dict:
    """Share of each head's attention that goes to [CLS] or [SEP], on held-out pairs."""
    model = loaded.model
    device = device_of(model)
    b = {k: v.to(device) for k, v in next(iter(task.held_batches(quick=True))).items()}  # 32 held-out pairs
    ids = b["input_ids"]
    rec = model(ids, b["token_type_ids"], b["attention_mask"], want=Want()).record
    special = (ids == task.ids["[CLS]"]) | (ids == task.ids["[SEP]"])
    real = b["attention_mask"].bool()
    shares = []
    for probs in rec.probs["self"]:  # [B, H, Q, K]
        to_special = (probs.to(device) * special[:, None, None, :]).sum(-1)  # [B, H, Q]
        shares.append(((to_special * real[:, None, :]).sum((0, 2)) / real.sum()).tolist())
    flat = sorted(((s, l, h) for l, row in enumerate(shares) for h, s in enumerate(row)), reverse=True)
    # chance: sink_score of even attention over each pair's real tokens, weighted by its real queries as above
    lengths = real.sum(-1).tolist()
    chance = sum(n * sink_score(even_attention(np.ones((n, n), dtype=bool)), special[i, :n].tolist())
                 for i, n in enumerate(lengths)) / sum(lengths)
    return {"sink_heads": [[l, h, s] for s, l, h in flat[:3]], "special_share": shares, "sink_chance": chance}


# --- the command -------------------------------------------------------------------------------

def evaluate_all(models_dir: Path | None = None, quick: bool = False, kinds: tuple[str, ...] = ("gpt2", "bert", "t5")) -> dict:
    """Evaluate the model folders ``<models_dir>/{gpt2,bert,t5}``, print the table, write ``evaluation.json``."""
    root = Path(models_dir) if models_dir else checkpoints.evaluation_path().parent
    if not root.is_dir():
        raise LmvizError(f"There is no models folder {root}.")
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(1)  # small models at small batches: one thread is as fast, and 4× faster on a busy machine
    out = root / "evaluation.json"
    old = read_evaluation(out) if len(kinds) < 3 else {}
    result: dict = {**old, "held_out": list(HELD_OUT)}
    for kind in kinds:
        try:
            loaded = checkpoints.load(root / kind, device)
        except LmvizError as err:  # report and go on with the others
            print(f"{kind}: unavailable ({err})")
            result.pop(kind, None)
            continue
        result[kind] = evaluate_one(loaded, quick)
    checkpoints.write_json(out, result)
    print_table(result)
    print(f"written to {out}")
    return result



def evaluate_one(loaded: checkpoints.Loaded, quick: bool = False) -> dict:
    """One model's entry of ``evaluation.json`` (see the module docstring)."""
    kind = loaded.kind
    task = task_for(loaded)
    log = loaded.train_log or {}
    figures = task.evaluate(loaded.model, quick=quick)
    for key in ("previous_token", "induction"):  # the probes below report these heads with their layer and chance
        figures.pop(key, None)
    entry: dict = {"figures": figures, "quick": quick, "steps": (loaded.extra or {}).get("steps_done"),
                   "params": sum(p.numel() for p in loaded.model.parameters()),
                   "train_seconds": log["evals"][-1]["seconds"] if log.get("evals") else None,
                   "device": log.get("device"), "claimed": log.get("best")}
    if kind == "gpt2":
        entry["baselines"] = ngram_baselines(task)
        entry["probes"] = {"greedy": {p: gpt2_greedy(loaded, p) for p in PROMPTS}, **gpt2_head_probes(loaded, task)}
    elif kind == "bert":
        entry["baselines"] = bert_baselines(task, quick)
        entry["probes"] = {"cloze": {s: bert_cloze(loaded, s) for s in CLOZES}, **bert_sink_probes(loaded, task)}
    else:
        entry["baselines"] = t5_baselines(task, quick)
        entry["probes"] = {"restore": [t5_restore(loaded, s) for s in T5_PROBES]}
        if text2text.knows_prefixes(loaded):
            from lmviz.pretrain.evaluate_t5 import genre_figures, punctuate_figures

            entry["punctuate"] = punctuate_figures(loaded, task, 48 if quick else 240)
            entry["genre"] = genre_figures(loaded, task, quick)
    return entry


def print_table(r: dict) -> None:
    quick = [k for k in ("gpt2", "bert", "t5") if r.get(k, {}).get("quick")]
    print(f"Held-out plays: {', '.join(r['held_out'])}" + (f" (quick slice for {', '.join(quick)})" if quick else ""))
    from lmviz.viz.evaluation import evaluation_rows  # the Home page's table: one list of figures, baselines and floors

    print("| model | figure | ours | baselines | floor (issue #14) |\n| --- | --- | --- | --- | --- |")
    mark = {"yes": " ✔", "no": " ✘"}
    for row in evaluation_rows(r):
        print(f"| {row['model']} | {html.unescape(row['figure'])} | {row['ours']:.3f} | {row['baselines']} | "
              f"{row['floor']}{mark.get(row['meets floor'], '')} |")
    if "bert" in r:
        for s, top in r["bert"]["probes"]["cloze"].items():
            print(f"BERT  {s!r}: " + ", ".join(f"{t} {p:.2f}" for t, p in top))
        print("BERT  heads most attending to [CLS]/[SEP] (layer, head, share): "
              + ", ".join(f"({l}, {h}, {v:.2f})" for l, h, v in r["bert"]["probes"]["sink_heads"])
              + f"; even attention would give {r['bert']['probes'].get('sink_chance', float('nan')):.2f}")
    if "gpt2" in r:
        for p, c in r["gpt2"]["probes"]["greedy"].items():
            print(f"GPT-2 {p!r} → {c!r}")
        l, h, v = r["gpt2"]["probes"]["previous_token_head"]
        probes = r["gpt2"]["probes"]
        print(f"GPT-2 previous-token head: layer {l}, head {h}, mean attention to i-1 {v:.3f} "
              f"(even attention: {probes.get('previous_token_chance', float('nan')):.3f})")
        l, h, v = probes["induction_head"]
        print(f"GPT-2 induction head: layer {l}, head {h}, mean attention to the token after the earlier copy {v:.3f} "
              f"(even attention: {probes.get('induction_chance', float('nan')):.3f})")
    if "t5" in r:
        for x in r["t5"].get("probes", {}).get("restore", []):
            print(f"T5    {x['input']!r} → {x['model']!r} (truth {x['truth']!r})")
