"""What each model is trained on and scored by: batches, losses and held-out figures.

A batch is a pure function of ``(seed, step)``; held-out figures use fixed seeds on the validation
play while training (``lmviz.pretrain.corpus.VALIDATION``) and on the test plays (``HELD_OUT``) when reported, so every evaluation sees the same examples.
"""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from lmviz.pretrain import corpus as corpus_mod
from lmviz.models.kinds import device_of
from lmviz.pretrain import masking, text2text
from lmviz.pretrain.tokenizers import GPT2_EOT, SENTINELS

EVAL_SEED = 1234


def char_count(tokenizer, ids) -> int:
    """Characters ended by these byte-level tokens: one per UTF-8 lead byte, so counts add up exactly."""
    from lmviz.pretrain.tokenizers import token_bytes

    return sum(sum((b & 0xC0) != 0x80 for b in token_bytes(tokenizer.id_to_token(int(i)))) for i in ids)


class Task:
    best_key: str
    """The held-out figure (lower is better) that picks the checkpoint to keep."""

    def __init__(self, tokenizer, cfg, corpus: corpus_mod.Split | None = None, held: str = "validation"):
        """``held``: which documents ``evaluate`` reads: ``"validation"`` while training (checkpoint choice),
        ``"test"`` for the reported figures (``python -m lmviz evaluate``)."""
        self.tok, self.cfg = tokenizer, cfg
        split = corpus if corpus is not None else corpus_mod.split()
        self.train_docs = split.train
        self.held_docs = split.test if held == "test" else split.validation

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, step])

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)

    def speeches_ids(self, docs) -> list[list[list[int]]]:
        out = []
        for d in docs:
            encs = self.tok.encode_batch([str(s) for s in d.speeches], add_special_tokens=False)
            out.append([e.ids for e in encs if e.ids])
        return out

    def stream(self, docs, sep: list[int]) -> np.ndarray:
        ids = []
        for d in docs:
            ids += sep + self.tok.encode(d.text, add_special_tokens=False).ids
        return np.asarray(ids, dtype=np.int64)

    def tokens_in(self, batch) -> int:
        return int(batch["input_ids"].numel())


class GPT2Task(Task):
    best_key = "loss"

    @cached_property
    def eot(self) -> int:
        return self.tok.token_to_id(GPT2_EOT)

    @cached_property
    def train_stream(self) -> np.ndarray:
        return self.stream(self.train_docs, [self.eot])

    @cached_property
    def held_stream(self) -> np.ndarray:
        return self.stream(self.held_docs, [self.eot])

    def build_model(self):
        from lmviz.models.gpt2 import GPT2Config, GPT2LMHeadModel

        return GPT2LMHeadModel(GPT2Config(vocab_size=self.tok.get_vocab_size(), eos_token_id=self.eot, **self.cfg.model))

    def batch(self, step: int, seq_len: int) -> dict:
        rng = self.rng(step)
        starts = rng.integers(0, len(self.train_stream) - seq_len - 1, size=self.cfg.batch_size)
        windows = np.stack([self.train_stream[s : s + seq_len + 1] for s in starts])
        for row in range(round(self.cfg.repeat_frac * self.cfg.batch_size)):
            half = int(rng.integers(min(16, seq_len // 2), seq_len // 2 + 1))
            windows[row] = np.resize(windows[row, :half], seq_len + 1)  # the stretch, again and again
        return {"input_ids": torch.from_numpy(windows[:, :-1]), "labels": torch.from_numpy(windows[:, 1:])}

    def loss(self, model, batch):
        out = model(batch["input_ids"], labels=batch["labels"], causal=self.cfg.causal)
        return out.loss, {}

    def held_windows(self, quick: bool) -> list[np.ndarray]:
        L, s = self.cfg.seq_len, self.held_stream
        windows = [s[i : i + L + 1] for i in range(0, len(s) - 1, L)]
        return windows[:24] if quick else windows

    @torch.no_grad()
    def evaluate(self, model, quick: bool = False) -> dict:
        device = device_of(model)
        nats, n_tok, n_chr = 0.0, 0, 0
        for w in self.held_windows(quick):
            x = torch.from_numpy(w[None, :-1]).to(device)
            y = torch.from_numpy(w[None, 1:]).to(device)
            logits = model(x, causal=self.cfg.causal).logits.float()
            nats += F.cross_entropy(logits[0], y[0], reduction="sum").item()
            n_tok += y.numel()
            n_chr += char_count(self.tok, w[1:])
        heads = self.head_probes(model)
        return {"loss": nats / n_tok, "bits_per_char": nats / math.log(2) / n_chr,
                "previous_token": float(heads["previous"].max()), "induction": float(heads["induction"].max())}

    @torch.no_grad()
    def head_probes(self, model, windows: int = 8, half: int = 50) -> dict:
        """``[L, H]`` scores: mean attention to i-1 on ``windows`` held-out windows (``"previous"``), and, on 4
        sequences of ``half`` random tokens seen twice, mean attention from the second copy to the token after the
        earlier occurrence (``"induction"``). Logged along training, so the curve shows when each head forms."""
        from lmviz.models.record import Want

        device = device_of(model)
        T = model.config.n_positions
        half = min(half, T // 2)
        windows = max(1, min(windows, len(self.held_stream) // T))
        x = torch.from_numpy(np.stack([self.held_stream[i * T:(i + 1) * T] for i in range(windows)])).to(device)
        probs = torch.stack(model(x, want=Want(), causal=self.cfg.causal).record.probs["causal"]).float()  # [L, B, H, T, T]
        previous = probs.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 3))
        g = torch.Generator().manual_seed(EVAL_SEED)
        rand = torch.randint(100, self.tok.get_vocab_size(), (4, half), generator=g)
        p = torch.stack(model(torch.cat([rand, rand], dim=1).to(device), want=Want(), causal=self.cfg.causal).record.probs["causal"]).float()
        idx = torch.arange(half, 2 * half - 1)  # in the second copy, t attends to t - half + 1
        return {"previous": previous.cpu(), "induction": p[:, :, :, idx, idx - half + 1].mean(dim=(1, 3)).cpu(), "half": half}


class BertTask(Task):
    best_key = "mlm_loss"

    @cached_property
    def ids(self) -> dict:
        t = self.tok
        return {n: t.token_to_id(n) for n in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")}

    @cached_property
    def train_sentences(self):
        return self.speeches_ids(self.train_docs)

    @cached_property
    def held_sentences(self):
        return self.speeches_ids(self.held_docs)

    @cached_property
    def speakers(self) -> tuple[list[list[int]], list[list[list[int]]]]:
        """The training speakers' labels (``NAME:``) as ids, and each training speech as its speaker's placeholder
        (``-1 - index`` into those labels) followed by its words' ids: ``rename_speakers`` swaps labels per pair."""
        labels, index, docs = [], {}, []
        for d in self.train_docs:
            rows = []
            for s in d.speeches:
                body = self.tok.encode(s.text, add_special_tokens=False).ids
                if s.speaker and s.speaker not in index:
                    index[s.speaker] = len(labels)
                    labels.append(self.tok.encode(f"{s.speaker}:", add_special_tokens=False).ids)
                row = ([-1 - index[s.speaker]] if s.speaker else []) + body
                if row:
                    rows.append(row)
            docs.append(rows)
        return labels, docs

    def _renamed(self, pair, rng) -> tuple[list[int], list[int]]:
        """A and B with each speaker label spelled out: with probability ``rename_speakers`` every speaker of the pair
        becomes another of the training set's (one to one, the same in A and B), so NotNext cannot be told by names
        remembered from a play, only by whether B's speakers are A's."""
        labels, _ = self.speakers
        present = sorted({-1 - t for t in pair.a + pair.b if t < 0})
        to = dict(zip(present, rng.choice(len(labels), size=len(present), replace=False)
                      if rng.random() < self.cfg.rename_speakers else present))
        spell = lambda ids: [x for t in ids for x in (labels[to[-1 - t]] if t < 0 else (t,))]
        return spell(pair.a), spell(pair.b)

    def build_model(self):
        from lmviz.models.bert import BertConfig, BertForPreTraining

        return BertForPreTraining(BertConfig(vocab_size=self.tok.get_vocab_size(), pad_token_id=self.ids["[PAD]"], **self.cfg.model))

    def make_batch(self, sentences, rng, gen, n: int, seq_len: int, rename: bool = False) -> dict:
        """``rename``: ``sentences`` are ``speakers``' placeholders, spelled out per pair by ``_renamed``."""
        ids = torch.full((n, seq_len), self.ids["[PAD]"], dtype=torch.long)
        types = torch.zeros((n, seq_len), dtype=torch.long)
        nsp = torch.zeros(n, dtype=torch.long)
        for r in range(n):
            pair = masking.nsp_pair(sentences, rng, max_tokens=seq_len)
            a, b = self._renamed(pair, rng) if rename else (pair.a, pair.b)
            row, tt = masking.pair_ids(a, b, cls_id=self.ids["[CLS]"], sep_id=self.ids["[SEP]"], max_len=seq_len)
            ids[r, : len(row)], types[r, : len(tt)] = torch.tensor(row), torch.tensor(tt)
            nsp[r] = 0 if pair.is_next else 1  # transformers' convention: 0 = IsNext
        special = (ids == self.ids["[PAD]"]) | (ids == self.ids["[CLS]"]) | (ids == self.ids["[SEP]"])
        draw = masking.mlm_mask(ids, special, mask_id=self.ids["[MASK]"], vocab_size=self.tok.get_vocab_size(), generator=gen,
                                special_ids=self.ids.values())
        return {"input_ids": draw.input_ids, "token_type_ids": types, "attention_mask": (ids != self.ids["[PAD]"]).long(),
                "labels": draw.labels, "next_sentence_label": nsp}

    def batch(self, step: int, seq_len: int) -> dict:
        rename = bool(self.cfg.rename_speakers)
        return self.make_batch(self.speakers[1] if rename else self.train_sentences, self.rng(step), self.generator(step),
                               self.cfg.batch_size, seq_len, rename)

    def loss(self, model, batch):
        out = model(batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"])
        mlm = F.cross_entropy(out.logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=masking.IGNORE)
        nsp = F.cross_entropy(out.nsp_logits.float(), batch["next_sentence_label"])
        return mlm + getattr(self.cfg, "nsp_weight", 1.0) * nsp, {"mlm": mlm.item(), "nsp": nsp.item()}

    def tokens_in(self, batch) -> int:
        return int(batch["attention_mask"].sum())

    def held_batches(self, quick: bool):
        rng, gen = np.random.default_rng(EVAL_SEED), torch.Generator().manual_seed(EVAL_SEED)
        for _ in range(4 if quick else 32):
            yield self.make_batch(self.held_sentences, rng, gen, 32, self.cfg.seq_len)

    @torch.no_grad()
    def evaluate(self, model, quick: bool = False) -> dict:
        device = device_of(model)
        top1 = top5 = n = nsp_ok = n_pairs = masked_ok = n_masked = 0
        nats = 0.0
        for b in self.held_batches(quick):
            b = {k: v.to(device) for k, v in b.items()}
            out = model(b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])
            sel = b["labels"] != masking.IGNORE
            logits, gold = out.logits.float()[sel], b["labels"][sel]
            nats += F.cross_entropy(logits, gold, reduction="sum").item()
            best = logits.topk(5, dim=-1).indices
            top1 += (best[:, 0] == gold).sum().item()
            top5 += (best == gold[:, None]).any(-1).sum().item()
            n += gold.numel()
            shown_mask = b["input_ids"][sel] == self.ids["[MASK]"]  # the 80 % a student meets: the word is hidden
            masked_ok += (best[:, 0] == gold)[shown_mask].sum().item()
            n_masked += shown_mask.sum().item()
            nsp_ok += (out.nsp_logits.argmax(-1) == b["next_sentence_label"]).sum().item()
            n_pairs += len(b["next_sentence_label"])
        # mlm_top1 counts every selected position of the 80/10/10 draw (10 % of them show the answer itself);
        # mask_top1 only those the input shows as [MASK], as a student meets the task.
        return {"mlm_loss": nats / n, "mlm_top1": top1 / n, "mlm_top5": top5 / n, "mask_top1": masked_ok / max(1, n_masked),
                "nsp_acc": nsp_ok / n_pairs}


class T5Task(Task):
    """Text-to-text (``lmviz.pretrain.text2text``): ``copy:`` for the first ``cfg.copy_steps`` steps, then a mixture
    of the prefixed tasks in the proportions of ``cfg.mixture``."""

    best_key = "loss"

    @cached_property
    def special(self) -> dict:
        t = self.tok
        return {"pad": t.token_to_id("<pad>"), "eos": t.token_to_id("</s>"), "sentinels": [t.token_to_id(s) for s in SENTINELS]}

    @cached_property
    def train_examples(self) -> text2text.Examples:
        return text2text.Examples(self.tok, self.train_docs, self.cfg.seq_len)

    @cached_property
    def held_examples(self) -> text2text.Examples:
        return text2text.Examples(self.tok, self.held_docs, self.cfg.seq_len)

    @property
    def train_stream(self) -> np.ndarray:
        return self.train_examples.stream

    @property
    def held_stream(self) -> np.ndarray:
        return self.held_examples.stream

    def build_model(self):
        from lmviz.models.t5 import T5Config, T5ForConditionalGeneration

        return T5ForConditionalGeneration(T5Config(vocab_size=self.tok.get_vocab_size(), pad_token_id=self.special["pad"],
                                                   eos_token_id=self.special["eos"], decoder_start_token_id=self.special["pad"], **self.cfg.model))

    def collate(self, examples: list[text2text.Example]) -> dict:
        pad, n = self.special["pad"], len(examples)
        src_len = max(len(e.input_ids) for e in examples)
        tgt_len = max(len(e.target_ids) for e in examples)
        src = torch.full((n, src_len), pad, dtype=torch.long)
        tgt = torch.full((n, tgt_len), masking.IGNORE, dtype=torch.long)
        for r, e in enumerate(examples):
            src[r, : len(e.input_ids)] = torch.tensor(e.input_ids)
            tgt[r, : len(e.target_ids)] = torch.tensor(e.target_ids)
        dec_in = torch.full_like(tgt, pad)
        dec_in[:, 1:] = tgt[:, :-1].clamp(min=0)
        dec_in[:, 1:][tgt[:, :-1] == masking.IGNORE] = pad
        return {"input_ids": src, "attention_mask": (src != pad).long(), "decoder_input_ids": dec_in,
                "decoder_attention_mask": (torch.arange(tgt_len)[None] <= (tgt != masking.IGNORE).sum(1, keepdim=True) - 1).long(), "labels": tgt}

    def tasks_at(self, step: int) -> tuple[list[str], list[float]]:
        if step < self.cfg.copy_steps or not self.cfg.mixture:
            return [text2text.WARMUP], [1.0]
        names = sorted(self.cfg.mixture)
        weights = np.asarray([self.cfg.mixture[k] for k in names], dtype=float)
        return names, (weights / weights.sum()).tolist()

    def batch(self, step: int, seq_len: int) -> dict:
        rng = self.rng(step)
        names, weights = self.tasks_at(step)
        picks = rng.choice(len(names), size=self.cfg.batch_size, p=weights)
        return self.collate([self.train_examples.draw(names[int(k)], rng) for k in picks])

    def held_batches(self, task: str, quick: bool, n: int = 32):
        """Fixed held-out batches of one task (the same every evaluation)."""
        rng = np.random.default_rng([EVAL_SEED, text2text.TASKS.index(task)])
        for _ in range(4 if quick else (32 if task == "fill" else 12)):
            yield self.collate([self.held_examples.draw(task, rng) for _ in range(n)])

    def forward(self, model, b: dict):
        return model(b["input_ids"], b["decoder_input_ids"], attention_mask=b["attention_mask"],
                     decoder_attention_mask=b["decoder_attention_mask"])

    def loss(self, model, batch):
        out = self.forward(model, batch)
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=masking.IGNORE)
        return loss, {}

    def tokens_in(self, batch) -> int:
        return int(batch["attention_mask"].sum() + batch["decoder_attention_mask"].sum())

    @cached_property
    def genre_label_ids(self) -> list[list[int]]:
        return [self.tok.encode(g, add_special_tokens=False).ids + [self.special["eos"]] for g in text2text.GENRE_LABELS]

    def label_scores(self, model, b: dict) -> torch.Tensor:
        """``[batch, labels]``: the summed log-probability of each genre label written in full."""
        device = b["input_ids"].device
        scores = []
        for ids in self.genre_label_ids:
            e = [text2text.Example("genre", [], ids)] * len(b["input_ids"])
            lb = {k: v.to(device) for k, v in self.collate(e).items()}
            out = model(b["input_ids"], lb["decoder_input_ids"], attention_mask=b["attention_mask"])
            logp = out.logits.float().log_softmax(-1).gather(-1, lb["labels"][..., None])[..., 0]
            scores.append(logp.sum(-1))
        return torch.stack(scores, dim=-1)

    @torch.no_grad()
    def evaluate(self, model, quick: bool = False) -> dict:
        device = device_of(model)
        sentinels = torch.tensor(self.special["sentinels"] + [self.special["eos"]], device=device)
        figures = {}
        for task in text2text.TASKS:
            if task == "genre" and not self.held_examples.by_genre:
                continue
            nats = n = ok = n_content = hit = n_ex = 0
            for b in self.held_batches(task, quick):
                b = {k: v.to(device) for k, v in b.items()}
                out = self.forward(model, b)
                sel = b["labels"] != masking.IGNORE
                logits, gold = out.logits.float()[sel], b["labels"][sel]
                nats += F.cross_entropy(logits, gold, reduction="sum").item()
                n += gold.numel()
                content = ~torch.isin(gold, sentinels)
                ok += (logits.argmax(-1)[content] == gold[content]).sum().item()
                n_content += content.sum().item()
                if task == "genre":
                    truth = torch.tensor([self.genre_label_ids.index(row[row != masking.IGNORE].tolist())
                                          for row in b["labels"].cpu()], device=device)
                    hit += (self.label_scores(model, b).argmax(-1) == truth).sum().item()
                    n_ex += len(truth)
            figures[f"{task}_loss"] = nats / n
            figures[f"{task}_acc" if task != "fill" else "content_acc"] = (hit / n_ex) if task == "genre" else ok / n_content
        # The checkpoint is chosen on fill: and punctuate: alone: the validation play is one genre, so its genre:
        # loss would reward always answering that genre.
        figures["loss"] = (figures["fill_loss"] + figures["punctuate_loss"]) / 2
        return figures


TASKS = {"gpt2": GPT2Task, "bert": BertTask, "t5": T5Task}
