"""``python -m lmviz bench``: a smoke test of every measurement on tiny models (no timing asserts)."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from lmviz import bench, bench_pages
from lmviz.pretrain.corpus import Split

from lmviz.models import checkpoints
from lmviz.pretrain.tasks import TASKS
from lmviz.pretrain.tokenizers import load_tokenizer
from lmviz.pretrain.training import DEFAULTS

TINY = {"bert": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=128),
        "gpt2": dict(n_embd=16, n_layer=1, n_head=2, n_positions=256),
        "t5": dict(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2)}


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """Random tiny models with the shipped tokenizers, saved as model folders."""
    root = tmp_path_factory.mktemp("tiny")
    folders = {}
    for kind, shape in TINY.items():
        tok = load_tokenizer(checkpoints.shipped(kind) / "tokenizer.json")
        task = TASKS[kind](tok, replace(DEFAULTS[kind], model=shape), corpus=Split([], [], []))
        folders[kind] = checkpoints.save(task.build_model(), root / kind, tokenizer=tok)
    return folders


def test_models_bench_gives_every_row_against_transformers(tiny_folders):
    from lmviz.models.device import cpu_has_bf16

    rows = bench.bench_models(tiny_folders, repeats=1, seq_len=16, t5_target=8, prompt_len=8, new_tokens=4, training_batch=2)
    bf16 = [("training step", "bf16")] if cpu_has_bf16() else []  # the precision row, where the CPU computes bf16
    assert [(r.model, r.what.split(",")[0]) for r in rows] == [
        ("bert", "forward + attention record"), ("bert", "training step (forward + backward)"), *[("bert", w) for w, _ in bf16],
        ("gpt2", "forward + attention record"), ("gpt2", "greedy decode 4 after 8"), ("gpt2", "greedy decode 4 after 8"),
        ("gpt2", "training step (forward + backward)"), *[("gpt2", w) for w, _ in bf16],
        ("t5", "forward + attention record"), ("t5", "training step (forward + backward)"), *[("t5", w) for w, _ in bf16]]
    assert all("bf16 autocast" in r.what and r.reference == "ours, float32" for r in rows if r.what.startswith("training step, batch"))
    for r in rows:
        assert len(r.ours) == len(r.ref) == 1 and math.isfinite(r.ratio) and r.ratio > 0
        assert r.note == "", r.note  # our cached greedy decode and transformers' generate agree
    table = bench.markdown(rows)
    assert table.count("\n") == len(rows) + 1 and "| ratio ours/ref (median, min) |" in table


def test_cached_and_recomputed_greedy_decodes_agree(tiny_folders):
    import torch

    model = checkpoints.load(tiny_folders["gpt2"], need_tokenizer=False).model
    prompt = torch.randint(5, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert bench.greedy_cached(model, prompt, 6) == bench.greedy_recompute(model, prompt, 6)


def test_pages_bench_times_each_page_and_switch(tiny_folders):
    models = {"gpt2": checkpoints.load(tiny_folders["gpt2"])}  # one model keeps it quick; every page still runs
    rows = bench_pages.bench_pages(models, repeats=1, words=8)
    pages = [r.page.rsplit(": ", 1)[0] for r in rows]
    assert pages == ["tokenization (explain: gpt2)", "attention (gpt2)", "masking (gpt2)", "masks (gpt2)",
                     "generation (gpt2, 20 greedy steps)", "compare (gpt2)", "attention (gpt2, causal)", "attention (gpt2, causal)",
                     "layers (gpt2)", "layers (gpt2)", "layers (gpt2)"]  # lens + knock-out, the grid, the training slider
    for r in rows:
        assert not r.skipped, r.skipped
        assert len(r.times) == 1 and r.times[0] > 0
    assert bench_pages.pages_markdown(rows).count("\n") == len(rows) + 1


def test_a_missing_page_library_is_reported_not_fatal(monkeypatch):
    def missing(text):
        raise ImportError("No module named 'lmviz.analysis.compare'")

    monkeypatch.setattr(bench_pages, "page_cases", lambda models: {"compare (3 models)": missing})
    rows = bench_pages.bench_pages({}, repeats=1, words=8)
    assert [(r.page, r.skipped.split(":")[0]) for r in rows] == [("compare (3 models)", "skipped")]
    assert "skipped" in bench_pages.pages_markdown(rows)


def test_edited_texts_have_the_asked_words_and_differ():
    texts = [bench_pages.edited_text(64, i) for i in range(30)]
    assert all(len(t.split()) == 64 for t in texts)
    assert len(set(texts)) == 30


def test_a_bug_in_a_page_is_raised_not_skipped(monkeypatch):
    def broken(text):
        raise TypeError("attention_heatmap() got an unexpected keyword argument 'zmax'")

    monkeypatch.setattr(bench_pages, "page_cases", lambda models: {"attention (gpt2)": broken})
    with pytest.raises(TypeError, match="unexpected keyword"):
        bench_pages.bench_pages({}, repeats=1, words=8)


def test_the_compile_row_says_what_compiling_cost_and_when_it_pays(tiny_folders):
    """`bench models` times a bf16 training step through torch.compile against the same step eager (tiny GPT-2 here)."""
    torch.set_num_threads(1)
    kind, ours, hf = bench.load_pair(tiny_folders["gpt2"], torch.device("cpu"), train=True)
    row = bench.compile_row(kind, ours, hf, 16, 8, torch.device("cpu"), 2, 2, lambda: None)
    assert row.what == "training step, batch 2: bf16 + torch.compile" and row.reference == "ours, bf16 eager"
    assert len(row.ours) == len(row.ref) == 2 and math.isfinite(row.ratio)
    assert row.note.startswith("first call (compiling) ") and ("pays for itself after" in row.note or "never pays" in row.note)
