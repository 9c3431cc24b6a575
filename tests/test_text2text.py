"""T5 as text-to-text: the prefixed tasks' examples, and that a fresh T5 of the shipped shape can learn at all."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from lmviz.errors import LmvizError
from lmviz.models import checkpoints
from lmviz.pretrain import corpus, text2text
from lmviz.pretrain.tasks import TASKS
from lmviz.pretrain.tokenizers import load_tokenizer
from lmviz.pretrain.training import DEFAULTS, make_optimizer, set_lr


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(checkpoints.shipped("t5") / "tokenizer.json")


@pytest.fixture(scope="module")
def examples(tok):
    return text2text.Examples(tok, corpus.split().train, 128)


def test_punctuate_reads_lower_case_words_without_punctuation():
    assert text2text.strip_punctuation("O Romeo, Romeo! wherefore art thou Romeo?") == "o romeo romeo wherefore art thou romeo"
    assert text2text.strip_punctuation("'Tis true: o'er the hills -- 'away'!") == "tis true o'er the hills away"
    assert text2text.strip_punctuation("...!?") == ""


def test_a_prefix_is_a_known_task_name_and_nothing_else():
    assert text2text.split_prefix("punctuate: to be or not") == ("punctuate", "to be or not")
    assert text2text.split_prefix("Genre: Now is the winter") == ("genre", "Now is the winter")
    assert text2text.split_prefix("ROMEO: But soft") == (None, "ROMEO: But soft")
    assert text2text.split_prefix("no colon here") == (None, "no colon here")
    with pytest.raises(LmvizError, match="Unknown task prefix 'translate'.*fill:, punctuate:, genre:"):
        text2text.prefixed("translate", "hello")


def test_each_task_draws_what_its_prefix_promises(tok, examples):
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = examples.punctuate(rng)
        source = tok.decode(p.input_ids)
        target = tok.decode(p.target_ids)
        assert source.startswith("punctuate: ") and len(p.target_ids) <= text2text.PUNCT_TARGET + 1
        assert text2text.strip_punctuation(target) == source.removeprefix("punctuate: "), "the target is the input, punctuated"
        assert p.input_ids[-1] == p.target_ids[-1] == examples.eos
        g = examples.genre(rng)
        assert tok.decode(g.target_ids) in text2text.GENRE_LABELS and tok.decode(g.input_ids).startswith("genre: ")
        c = examples.copy(rng)
        assert c.target_ids == c.input_ids[len(examples.prefix["copy"]):]
        f = examples.fill(rng)
        assert tok.decode(f.input_ids).startswith("fill: ") and len(f.input_ids) <= 128
        assert any(t in f.input_ids for t in examples.sentinels)


def test_genres_are_drawn_evenly_so_the_majority_is_no_free_answer(tok, examples):
    rng = np.random.default_rng(1)
    counts = {g: 0 for g in text2text.GENRE_LABELS}
    for _ in range(900):
        counts[tok.decode(examples.genre(rng).target_ids)] += 1
    assert all(250 <= n <= 350 for n in counts.values()), counts


def test_a_users_text_has_no_genre_and_says_so(tok):
    docs = [corpus.user_document("One line of mine.\n\nAnother line here.")]
    ex = text2text.Examples(tok, docs, 128)
    with pytest.raises(LmvizError, match="genre: needs plays"):
        ex.genre(np.random.default_rng(0))
    assert tok.decode(ex.punctuate(np.random.default_rng(0)).target_ids) in ("One line of mine.", "Another line here.")


def test_the_curriculum_copies_first_then_mixes_the_tasks(tok):
    cfg = DEFAULTS["t5"]
    task = TASKS["t5"](tok, cfg)
    assert task.tasks_at(0) == (["copy"], [1.0]) and task.tasks_at(cfg.copy_steps - 1) == (["copy"], [1.0])
    names, weights = task.tasks_at(cfg.copy_steps)
    assert set(names) == set(text2text.TASKS) and abs(sum(weights) - 1) < 1e-9
    first = tok.decode(task.batch(cfg.copy_steps, cfg.seq_len)["input_ids"][0].tolist())
    assert first.split(":")[0] in text2text.TASKS


def test_a_fresh_t5_of_the_shipped_shape_learns_to_copy_on_the_cpu(tok):
    """The trainability check: if a change to the model, its initialisation or the optimiser recipe stops T5 from
    learning to read its encoder, this fails (the shipped T5 once sat on a plateau for 10,000 steps)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = replace(DEFAULTS["t5"], steps=1200, warmup=50, lr=1e-3)
    task = TASKS["t5"](tok, cfg, corpus=corpus.Split([], [], []))
    model = task.build_model()
    opt = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(0)
    V, n, eos = tok.get_vocab_size(), 16, task.special["eos"]

    def batch(size):
        rows = torch.randint(200, V, (size, n), generator=g).tolist()
        return task.collate([text2text.Example("copy", r + [eos], r + [eos]) for r in rows])

    test = batch(64)
    start, acc, step = time.perf_counter(), 0.0, 0
    while step < cfg.steps and acc < 0.9:
        model.train()
        b = batch(32)
        set_lr(opt, cfg, step)
        loss, _ = task.loss(model, b)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            model.eval()
            with torch.no_grad():
                pred = task.forward(model, test).logits.argmax(-1)
            acc = (pred[:, :n] == test["labels"][:, :n]).float().mean().item()
    print(f"T5 copy: token accuracy {acc:.3f} after {step} steps, {time.perf_counter() - start:.0f} s")
    assert acc >= 0.9, f"a fresh T5 copied only {acc:.1%} of 16 random tokens after {step} steps"
