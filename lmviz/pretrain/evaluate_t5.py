"""T5's text-to-text figures beside their baselines: ``punctuate:`` (greedy lines, and the cross-attention head
that aligns each target word with its source word) and ``genre:`` (every speech of the test plays).

``punctuate:`` examples are every line group ``text2text.Examples.punctuate`` would draw from the test plays, with
a fixed seed. A word is ``text2text.words``' unit: input and target have the same words in the same order (the
target adds case and punctuation), so word *i* of the target is aligned with word *i* of the input.
"""
from __future__ import annotations

import difflib

import numpy as np
import torch

from lmviz.analysis.inference import greedy_t5
from lmviz.models.kinds import device_of
from lmviz.models.record import Want
from lmviz.pretrain import text2text
from lmviz.pretrain.tasks import EVAL_SEED


def _aligned_keys(tok, source: str, target: str, prefix_len: int) -> list[tuple[int, set[int]]] | None:
    """(target token index, the source token indices of its word) for every target token inside a word; None when
    the two texts do not have the same words (it does not happen for ``punctuate:`` examples, but be safe)."""
    src_words, tgt_words = text2text.words(source, prefix_len), text2text.words(target)
    if len(src_words) != len(tgt_words):
        return None
    src_off = tok.encode(source, add_special_tokens=False).offsets
    tgt_off = tok.encode(target, add_special_tokens=False).offsets
    out = []
    for j, (a, b) in enumerate(tgt_off):
        w = next((k for k, (s, e) in enumerate(tgt_words) if a < e and b > s), None)
        if w is None:
            continue  # punctuation: nothing in the source to align to
        s, e = src_words[w]
        keys = {i for i, (x, y) in enumerate(src_off) if x < e and y > s}
        if keys:
            out.append((j, keys))
    return out


def _matched(truth: list[str], guess: list[str]) -> int:
    """Words of ``truth`` that ``guess`` writes exactly (case and punctuation included), in order: a dropped or
    added word costs itself, not every word after it."""
    return sum(m.size for m in difflib.SequenceMatcher(None, truth, guess, autojunk=False).get_matching_blocks())


@torch.inference_mode()
def punctuate_figures(loaded, task, n: int) -> dict:
    """Greedy ``punctuate:`` on ``n`` test examples: word accuracy (target words written exactly, in order) and
    exact lines against copying the input unchanged; and each cross-attention head's share of target tokens whose strongest key lies in the aligned
    source word (teacher-forced)."""
    tok, model = loaded.tokenizer, loaded.model
    device = device_of(model)
    ex = task.held_examples
    rng = np.random.default_rng([EVAL_SEED, 7])
    word_ok = copy_ok = n_words = exact = copy_exact = 0
    hits = None
    n_aligned = 0
    samples = []
    for k in range(n):
        e = ex.punctuate(rng)
        target = tok.decode(e.target_ids[:-1])
        source = text2text.prefixed("punctuate", text2text.strip_punctuation(target))
        out = tok.decode(greedy_t5(loaded, e.input_ids, len(e.target_ids) + 8)[1:])
        tw, ow, cw = target.split(), out.split(), source.split()[1:]
        word_ok += _matched(tw, ow)
        copy_ok += _matched(tw, cw)
        n_words += len(tw)
        exact += out.strip() == target.strip()
        copy_exact += " ".join(cw) == target.strip()
        if k < 6:
            samples.append({"input": source, "model": out, "truth": target})
        pairs = _aligned_keys(tok, source, target, len("punctuate: "))
        if not pairs:
            continue
        src = torch.tensor([e.input_ids], device=device)
        tgt = torch.tensor([e.target_ids], device=device)
        dec_in = torch.cat([torch.full_like(tgt[:, :1], model.config.decoder_start_token_id), tgt[:, :-1]], 1)
        probs = torch.stack(model(src, dec_in, want=Want()).record.probs["cross"])[:, 0]  # [L, H, Tq, Tk]
        strongest = probs.argmax(-1).cpu()  # [L, H, Tq]
        got = torch.zeros(strongest.shape[:2])
        for j, keys in pairs:
            got += torch.isin(strongest[:, :, j], torch.tensor(sorted(keys))).float()
        hits = got if hits is None else hits + got
        n_aligned += len(pairs)
    share = (hits / max(1, n_aligned)) if hits is not None else torch.zeros(1, 1)
    layer, head = divmod(int(share.argmax()), share.shape[1])
    return {"examples": n, "word_acc": word_ok / n_words, "copy_word_acc": copy_ok / n_words,
            "exact": exact / n, "copy_exact": copy_exact / n,
            "alignment_head": [layer, head, float(share[layer, head])], "alignment_scores": share.tolist(),
            "aligned_tokens": n_aligned, "samples": samples}


@torch.inference_mode()
def genre_figures(loaded, task, quick: bool) -> dict:
    """``genre:`` on every speech of the test plays (every 8th when quick): accuracy of the most probable label
    against always answering the test set's most common genre."""
    device = device_of(loaded.model)
    ex = task.held_examples
    speeches = [(g, "\n".join(lines)) for g, lines in ex.speeches if g in text2text.GENRE_LABELS]
    if quick:
        speeches = speeches[::8]
    if not speeches:
        return {}
    truth = [g for g, _ in speeches]
    pred: list[str] = []
    for i in range(0, len(speeches), 32):
        chunk = [ex.genre_example(text, g) for g, text in speeches[i : i + 32]]
        b = {k: v.to(device) for k, v in task.collate(chunk).items()}
        pred += [text2text.GENRE_LABELS[int(k)] for k in task.label_scores(loaded.model, b).argmax(-1)]
    counts = {g: truth.count(g) for g in text2text.GENRE_LABELS}
    majority = max(counts, key=counts.get)
    confusion = {t: {p: sum(a == t and b == p for a, b in zip(truth, pred)) for p in text2text.GENRE_LABELS} for t in counts}
    return {"speeches": len(truth), "acc": sum(a == b for a, b in zip(truth, pred)) / len(truth),
            "majority": majority, "majority_acc": counts[majority] / len(truth), "confusion": confusion}
