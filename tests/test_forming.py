"""Heads forming during training, read from a run's snapshots: each loads with its model's tokenizer, the last one is
the trained model, and the previous-token head rises above chance along the way."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from snapshots import STEPS, make_snapshots
from lmviz.analysis.forming import forming, forming_data, list_snapshots, loss_points, memory_bytes
from lmviz.analysis.heads import TEXTS
from lmviz.analysis.lens import lens
from lmviz.analysis.targets import targets
from lmviz.models import checkpoints


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = make_snapshots(tmp_path_factory.mktemp("assets"))
    snaps = list_snapshots(folder)
    return folder, snaps, [checkpoints.load(s.folder, "cpu") for s in snaps]


def test_snapshots_are_listed_by_step_and_load_with_their_models_tokenizer(run):
    folder, snaps, models = run
    assert [s.step for s in snaps] == list(STEPS) and snaps[-1].fraction == 1.0
    assert all(m.tokenizer is not None and m.kind == "gpt2" for m in models)


def test_the_last_snapshot_is_the_trained_model_in_float16(run):
    folder, snaps, models = run
    shipped = checkpoints.load(folder, "cpu")
    tg = targets(shipped, TEXTS["previous"])
    a, b = lens(shipped, tg), lens(models[-1], tg)
    assert np.allclose(a.prob, b.prob, atol=2e-3, equal_nan=True)
    assert [c[0][0] for c in a.top[-1]] == [c[0][0] for c in b.top[-1]]


def test_the_previous_token_head_forms_over_the_snapshots(run):
    folder, snaps, models = run
    f = forming(models, [s.step for s in snaps], targets(models[-1], TEXTS["previous"]))
    layer, head = f.best_head()
    assert f.scores[-1, layer, head] >= 2 * f.chance > f.scores[0, layer, head]  # random weights attend evenly
    assert f.formed_at(layer, head) in STEPS[1:]
    data = forming_data(f, layer, head, STEPS[-1])
    assert len(data["previous_token_score"]) == len(STEPS) and json.dumps(data)


def test_the_cached_snapshots_memory_is_counted_once_per_tensor(run):
    _, _, models = run
    one = sum(p.numel() * 4 for p in models[0].model.parameters())  # float32 in memory; tied weights once
    assert memory_bytes(models) == pytest.approx(len(models) * one, rel=0.01)
    assert memory_bytes(models[:1] * 3) == memory_bytes(models[:1])


def test_the_loss_curve_is_read_defensively():
    assert loss_points({"train": [{"step": 50, "loss": 8.0}, {"step": "x"}, {"loss": float("nan"), "step": 9}, 7]}) == [(50, 8.0)]
    assert loss_points(None) == [] and loss_points({"train": "no"}) == []


def test_the_loss_curve_counts_steps_as_the_snapshots_do_across_phases():
    """T5 shipped in three phases: its snapshots count steps from the first (config.json's steps_before), so its loss
    curve must too: each earlier phase up to the step it kept, then the next after it."""
    one = {"train": [{"step": 10, "loss": 5.0}, {"step": 20, "loss": 4.0}], "best": {"step": 20}}
    two = {"train": [{"step": 5, "loss": 3.0}, {"step": 30, "loss": 2.5}], "best": {"step": 30}, "init": {"log": one}}
    three = {"train": [{"step": 4, "loss": 2.0}], "init": {"log": two}}
    assert loss_points(three, steps_before=50) == [(10, 5.0), (20, 4.0), (25, 3.0), (50, 2.5), (54, 2.0)]
    assert loss_points(three, steps_before=30) == [(5, 3.0), (30, 2.5), (34, 2.0)], "a count that starts at phase two"
    assert loss_points(three) == [(4, 2.0)]


def test_a_model_without_snapshots_has_none(tmp_path):
    assert list_snapshots(tmp_path) == []
    (tmp_path / "snapshots" / "000100").mkdir(parents=True)
    (tmp_path / "snapshots" / "000100" / "snapshot.json").write_text("{broken")
    (tmp_path / "snapshots" / "000100" / "model.safetensors").write_bytes(b"")
    assert list_snapshots(tmp_path) == []


def test_the_layers_benchmark_times_the_pages_work_and_names_the_snapshots_memory():
    from lmviz.bench_layers import bench_layers

    gpt2 = checkpoints.load(checkpoints.shipped("gpt2"), "cpu")
    rows = bench_layers({"gpt2": gpt2}, repeats=1, words=16)
    assert [r.goal_ms for r in rows] == [300, 1500, 300] and all(len(r.times) == 1 for r in rows)
    assert "MB" in rows[-1].page and "training slider" in rows[-1].page


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_the_shipped_snapshot_at_the_kept_step_is_the_shipped_model(kind):
    """The snapshot taken at the step the shipped model was kept at (else the last one) predicts as the shipped model,
    to float16's precision."""
    shipped = checkpoints.load(checkpoints.shipped(kind), "cpu")
    snaps = list_snapshots(shipped.folder)
    if not snaps:
        pytest.skip(f"the shipped {kind} has no snapshots yet")
    extra = shipped.extra or {}
    kept = extra.get("steps_before", 0) + extra.get("steps_done", 0)  # snapshots count steps from the first phase
    snap = next((s for s in snaps if s.step == kept), snaps[-1])
    tg = targets(shipped, TEXTS["previous"], hide=[3] if kind == "bert" else None, target="<extra_id_0> the <extra_id_1>")
    a, b = lens(shipped, tg), lens(checkpoints.load(snap.folder, "cpu"), tg)
    assert np.allclose(a.prob, b.prob, atol=5e-3, equal_nan=True)
