"""Pretraining: a few dozen steps on a small slice learn, save → load is exact, and a resumed run continues exactly."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lmviz.models import checkpoints

from lmviz.pretrain import corpus, masking
from lmviz.pretrain.corpus import Document
from lmviz.errors import LmvizError
from lmviz.pretrain.tasks import TASKS
from lmviz.pretrain.training import DEFAULTS, TrainConfig, train

TINY_MODEL = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2, n_positions=64),
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
    "t5": dict(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2),
}


@pytest.fixture(scope="module")
def small_corpus():
    train_docs, test_docs, valid_docs = corpus.split()
    cut = lambda d, n: Document(d.name, d.speeches[:n], d.genre)  # noqa: E731
    return corpus.Split([cut(d, 150) for d in train_docs[:3]], [cut(d, 60) for d in test_docs], [cut(d, 60) for d in valid_docs])


def tiny(kind: str, steps: int = 40) -> TrainConfig:
    return replace(DEFAULTS[kind], steps=steps, batch_size=8, lr=3e-3, warmup=5, seq_len=64, short_seq_len=32, short_frac=0.25,
                   eval_every=steps, save_every=10, model=TINY_MODEL[kind])


@pytest.mark.parametrize("kind", ["gpt2", "bert", "t5"])
def test_a_few_dozen_steps_lower_the_loss_and_save_load_is_exact(kind, small_corpus, tmp_path):
    torch.set_num_threads(1)
    log = train(tiny(kind), tmp_path, checkpoints.shipped(kind) / "tokenizer.json", progress=False, corpus=small_corpus)
    losses = [row["loss"] for row in log["train"]]
    assert losses[-1] < losses[0] - 0.3, losses
    assert json.loads((tmp_path / "train_log.json").read_text())["evals"], "held-out figures are logged as training goes"
    loaded = checkpoints.load(tmp_path)
    task = TASKS[kind](loaded.tokenizer, tiny(kind), corpus=small_corpus)
    batch = task.batch(0, 32)
    model = task.build_model()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=False)
    model.eval()
    with torch.no_grad():
        a, _ = task.loss(loaded.model, batch)
        b, _ = task.loss(model, batch)
    assert torch.equal(a, b)


def test_a_resumed_run_continues_exactly_where_it_stopped(small_corpus, tmp_path):
    torch.set_num_threads(1)
    tok = checkpoints.shipped("gpt2") / "tokenizer.json"
    cfg = tiny("gpt2", 20)
    train(cfg, tmp_path / "straight", tok, progress=False, corpus=small_corpus)
    train(cfg, tmp_path / "pieces", tok, progress=False, corpus=small_corpus, until=9)  # an interrupted first piece
    assert json.loads((tmp_path / "pieces" / "resume" / "state.json").read_text())["step"] == 9
    train(cfg, tmp_path / "pieces", tok, progress=False, corpus=small_corpus)
    a = checkpoints.read_weights(tmp_path / "straight")
    b = checkpoints.read_weights(tmp_path / "pieces")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_a_budget_of_zero_is_a_clear_error(tmp_path):
    with pytest.raises(LmvizError, match="at least 1"):
        train(replace(DEFAULTS["gpt2"], steps=0), tmp_path)
    with pytest.raises(LmvizError, match="time budget"):
        train(DEFAULTS["gpt2"], tmp_path, time_budget=0)


def test_a_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(LmvizError, match="missing"):
        train(DEFAULTS["gpt2"], tmp_path, tmp_path / "nope.json")


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_the_token_embedding_can_learn_at_its_own_rate(scale):
    from lmviz.models.t5 import T5Config, T5ForConditionalGeneration
    from lmviz.pretrain.training import lr_at, make_optimizer, set_lr

    model = T5ForConditionalGeneration(T5Config(vocab_size=64, **TINY_MODEL["t5"]))
    cfg = replace(tiny("t5"), embed_lr_scale=scale)
    opt = make_optimizer(model, cfg)
    set_lr(opt, cfg, cfg.warmup + 3)
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len(list(model.parameters())) and len({id(p) for p in grouped}) == len(grouped)
    (embed_group,) = [g for g in opt.param_groups if any(p is model.shared.weight for p in g["params"])]
    assert embed_group["lr"] == pytest.approx(scale * lr_at(cfg, cfg.warmup + 3))
    assert embed_group["weight_decay"] == cfg.weight_decay
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(cfg, cfg.warmup + 3))


def test_the_no_mask_twin_trains_and_is_evaluated_without_the_causal_mask(small_corpus):
    """--no-causal-mask: the loss optimised and the held-out loss both come from forwards that see the future."""
    torch.set_num_threads(1)
    loaded = checkpoints.load(checkpoints.shipped("gpt2"))
    cfg = replace(DEFAULTS["gpt2"], batch_size=4, seq_len=64)
    task, twin_task = (TASKS["gpt2"](loaded.tokenizer, c, corpus=small_corpus) for c in (cfg, replace(cfg, causal=False)))
    model, batch = loaded.model, task.batch(0, 64)
    with torch.no_grad():
        loss, _ = twin_task.loss(model, batch)
        seeing = model(batch["input_ids"], labels=batch["labels"], causal=False).loss
        masked, _ = task.loss(model, batch)
        future = batch["input_ids"].clone()
        future[:, -1] = (future[:, -1] + 1) % model.config.vocab_size  # change only the last token
        earlier = model(future, causal=False).logits[:, 0]
        assert not torch.allclose(earlier, model(batch["input_ids"], causal=False).logits[:, 0]), "the first token sees the last"
    assert torch.equal(loss, seeing) and abs(loss - masked) > 0.1
    assert twin_task.evaluate(model, quick=True)["loss"] > task.evaluate(model, quick=True)["loss"] + 0.1, \
        "the shipped GPT-2, trained with its mask, is worse without it on held-out text"


def test_the_command_line_trains_on_your_own_text(tmp_path):
    """`python -m lmviz train gpt2 --corpus DIR --out OUT`: the user's files through the same interface as the plays;
    the last file is held out and evaluated."""
    from lmviz.__main__ import main

    texts = tmp_path / "texts"
    texts.mkdir()
    speech = "\n\n".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and sings." for i in range(60))
    for name in ("a", "b"):
        (texts / f"{name}.txt").write_text(speech, encoding="utf-8")
    assert main(["train", "gpt2", "--corpus", str(texts)]) == 2, "without --out it would replace the shipped model"
    assert main(["train", "gpt2", "--corpus", str(texts), "--out", str(tmp_path / "out"), "--steps", "3", "--batch-size", "2",
                 "--seq-len", "32", "--short-frac", "0", "--warmup", "1", "--threads", "1"]) == 0
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["evals"] and log["evals"][-1]["loss"] > 0
    assert checkpoints.load(tmp_path / "out").kind == "gpt2"


def test_a_second_phase_refuses_a_folder_of_another_architecture_or_shape(small_corpus, tmp_path):
    """--init used to load with strict=False: a BERT folder given to a GPT-2 run trained from random weights, silently."""
    torch.set_num_threads(1)
    tok = checkpoints.shipped("gpt2") / "tokenizer.json"
    with pytest.raises(LmvizError, match="holds a bert model; training gpt2 needs a gpt2 folder"):
        train(tiny("gpt2", 2), tmp_path / "a", tok, progress=False, corpus=small_corpus, init=checkpoints.shipped("bert"))
    with pytest.raises(LmvizError, match="another shape"):  # the shipped GPT-2 into the tiny shape
        train(tiny("gpt2", 2), tmp_path / "b", tok, progress=False, corpus=small_corpus, init=checkpoints.shipped("gpt2"))
    with pytest.raises(LmvizError, match="no config.json"):
        train(tiny("gpt2", 2), tmp_path / "c", tok, progress=False, corpus=small_corpus, init=tmp_path)
    for out in ("a", "b"):
        assert not (tmp_path / out / "model.safetensors").exists(), "nothing is written before the weights are checked"


def test_a_resume_state_of_another_run_is_refused_by_name(small_corpus, tmp_path):
    torch.set_num_threads(1)
    tok = checkpoints.shipped("t5") / "tokenizer.json"
    cfg = replace(tiny("t5", 6), copy_steps=2, mixture={"fill": 0.5, "punctuate": 0.5})
    train(cfg, tmp_path, tok, progress=False, corpus=small_corpus, until=3)
    before = (tmp_path / "resume" / "model.safetensors").read_bytes()
    with pytest.raises(LmvizError, match="mixture.*Resume it with the same settings"):
        train(replace(cfg, mixture={"fill": 1.0}), tmp_path, tok, progress=False, corpus=small_corpus)
    assert (tmp_path / "resume" / "model.safetensors").read_bytes() == before
    log = train(replace(cfg, steps=8), tmp_path, tok, progress=False, corpus=small_corpus)  # a longer budget is the same run
    assert log["train"][-1]["step"] == 8


def test_gpt2_logs_its_head_scores_as_it_trains_and_a_second_phase_keeps_the_last_step(small_corpus, tmp_path):
    """The issue: log the induction score along training, so the curve shows whether and when a head forms. --keep-last:
    a second phase whose first saw the validation play ships its last step, not the validation's favourite."""
    torch.set_num_threads(1)
    tok = checkpoints.shipped("gpt2") / "tokenizer.json"
    cfg = replace(tiny("gpt2", 12), eval_every=4, keep_best=False, snapshots=(0.5,))
    log = train(cfg, tmp_path, tok, progress=False, corpus=small_corpus)
    for row in log["evals"]:
        assert 0 < row["previous_token"] <= 1 and 0 < row["induction"] <= 1
    assert [int(s.name) for s in checkpoints.snapshots(tmp_path)] == [6, 12]
    last = checkpoints.read_weights(tmp_path)
    resumed = checkpoints.read_weights(tmp_path / "resume")
    assert all(torch.equal(last[k], resumed[k]) for k in last), "the model folder holds the last step"
    assert log["best"]["step"] == 12 == checkpoints.load(tmp_path).extra["steps_done"], "and the log's best row is its figures"


def test_a_keep_last_run_stopped_between_evaluations_logs_the_step_its_folder_keeps(small_corpus, tmp_path):
    """A --keep-last run that stops between evaluations (its time budget spent, or Ctrl-C) saved that step while the
    log's "best" row was the evaluation before it (GPT-2's second CPU phase: 1,674 against 1,600). It evaluates once more."""
    torch.set_num_threads(1)
    tok = checkpoints.shipped("gpt2") / "tokenizer.json"
    cfg = replace(tiny("gpt2", 12), eval_every=4, keep_best=False, snapshots=(0.25,))
    log = train(cfg, tmp_path, tok, progress=False, corpus=small_corpus, until=6)
    assert log["best"]["step"] == 6 == log["evals"][-1]["step"] == checkpoints.load(tmp_path).extra["steps_done"]
    assert [int(s.name) for s in checkpoints.snapshots(tmp_path)] == [3], "a stop that is not the end makes no final snapshot"
    log = train(cfg, tmp_path, tok, progress=False, corpus=small_corpus, time_budget=1e-6)  # spent before a step
    assert log["best"]["step"] == 6 and [e["step"] for e in log["evals"]].count(6) == 1, "nothing ran: nothing added"
    assert [int(s.name) for s in checkpoints.snapshots(tmp_path)] == [3, 6], "a spent budget ends the run: its kept model"


def test_bert_weighs_its_next_sentence_loss(small_corpus):
    torch.set_num_threads(1)
    loaded = checkpoints.load(checkpoints.shipped("bert"))
    tasks = [TASKS["bert"](loaded.tokenizer, replace(DEFAULTS["bert"], batch_size=4, nsp_weight=w), corpus=small_corpus) for w in (1.0, 3.0)]
    batch = tasks[0].batch(0, 64)
    with torch.no_grad():
        (one, parts), (three, _) = (t.loss(loaded.model, batch) for t in tasks)
    assert three.item() == pytest.approx(one.item() + 2 * parts["nsp"], rel=1e-5)


def test_a_compiled_run_learns_and_saves_the_same_weights_as_it_trains(small_corpus, tmp_path):
    """--compile: the step's forward through torch.compile; what is saved and resumed is the model's own parameters."""
    torch.set_num_threads(1)
    log = train(replace(tiny("gpt2", 12), compile=True, snapshots=()), tmp_path, checkpoints.shipped("gpt2") / "tokenizer.json",
                progress=False, corpus=small_corpus)
    assert log["config"]["compile"] and log["train"][-1]["loss"] < log["train"][0]["loss"] - 0.3
    assert not any(k.startswith("_orig_mod") for k in checkpoints.read_weights(tmp_path / "resume"))
    assert checkpoints.load(tmp_path).kind == "gpt2"


def test_gpt2_repeated_windows_repeat_a_stretch_of_the_plays(small_corpus):
    """--repeat-frac: that share of a batch's rows is a stretch of real text seen again, the rest untouched."""
    from lmviz.pretrain.tasks import GPT2Task

    tok = checkpoints.load(checkpoints.shipped("gpt2")).tokenizer
    plain = GPT2Task(tok, replace(DEFAULTS["gpt2"], batch_size=8), corpus=small_corpus).batch(5, 64)
    mixed = GPT2Task(tok, replace(DEFAULTS["gpt2"], batch_size=8, repeat_frac=0.25), corpus=small_corpus).batch(5, 64)
    assert torch.equal(plain["input_ids"][2:], mixed["input_ids"][2:]) and torch.equal(plain["labels"][2:], mixed["labels"][2:])
    for row in range(2):
        x, y = mixed["input_ids"][row], mixed["labels"][row]
        assert torch.equal(x[1:], y[:-1]), "labels stay the next token"
        period = next(p for p in range(16, 33) if torch.equal(x[p:], x[:-p]))
        assert torch.equal(x[:period], plain["input_ids"][row, :period]), "the stretch is the plays' own text"


def test_bert_renamed_speakers_are_others_of_the_training_set_the_same_in_a_and_b(small_corpus):
    """--rename-speakers: each speaker of a pair becomes another of the training set's, one to one and the same in A
    and B; the words stay as they were. At 0 every speaker keeps its name."""
    from lmviz.pretrain.tasks import BertTask

    tok = checkpoints.load(checkpoints.shipped("bert")).tokenizer

    def names_used(task, rng):
        """Walk the spelled-out pair beside its placeholders: {speaker: the label written for it}."""
        labels, docs = task.speakers
        pair = masking.nsp_pair(docs, rng, max_tokens=128)
        to = {}
        for spelled, placed in zip(task._renamed(pair, rng), (pair.a, pair.b)):
            i = 0
            for t in placed:
                if t >= 0:
                    assert spelled[i] == t, "a word changed"
                    i += 1
                    continue
                n = next(k for k, lab in enumerate(labels) if spelled[i:i + len(lab)] == lab)
                assert to.setdefault(-1 - t, n) == n, "one speaker got two names"
                i += len(labels[n])
            assert i == len(spelled)
        assert len(set(to.values())) == len(to), "two speakers got one name"
        return to

    rng = np.random.default_rng(0)
    renamed = BertTask(tok, replace(DEFAULTS["bert"], rename_speakers=1.0), corpus=small_corpus)
    kept = BertTask(tok, replace(DEFAULTS["bert"], rename_speakers=0.0), corpus=small_corpus)
    assert all(tok.decode(ids).endswith(":") for ids in renamed.speakers[0])
    moved = [names_used(renamed, rng) for _ in range(30)]
    assert sum(any(k != v for k, v in to.items()) for to in moved) >= 25
    assert all(k == v for _ in range(30) for k, v in names_used(kept, rng).items())


@pytest.mark.parametrize("args, message", [
    (["t5", "--mixture", "fill=0.5,summarise=0.5"], "unknown task 'summarise'"),
    (["t5", "--mixture", "fill=0"], "above 0"),
    (["t5", "--mixture", "fill=lots"], "must be a number"),
    (["gpt2", "--mixture", "fill=1"], "T5's text-to-text tasks"),
    (["t5", "--repeat-frac", "0.2"], "GPT-2's training windows"),
    (["gpt2", "--repeat-frac", "1.5"], "from 0 to 1"),
    (["gpt2", "--rename-speakers", "0.5"], "BERT's sentence pairs"),
    (["bert", "--rename-speakers", "2"], "from 0 to 1"),
])
def test_the_command_line_refuses_a_bad_mixture_or_repeat_share_by_name(args, message, capsys, tmp_path):
    from lmviz.__main__ import main

    assert main(["train", *args[:1], "--out", str(tmp_path / "out"), *args[1:]]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
