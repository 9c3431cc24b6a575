"""Training snapshots: float16 copies of a run's weights that load like any model folder."""
from __future__ import annotations

import shutil

import torch

from lmviz.models import checkpoints


def test_a_snapshot_loads_like_its_model_at_float16_precision(tmp_path):
    shutil.copytree(checkpoints.shipped("gpt2"), tmp_path / "gpt2", ignore=shutil.ignore_patterns("snapshots"))
    model = checkpoints.load(tmp_path / "gpt2").model
    snap = checkpoints.save_snapshot(model, tmp_path / "gpt2", 4250, 0.5, {"loss": 4.8})
    assert checkpoints.snapshots(tmp_path / "gpt2") == [snap]
    assert not (snap / "tokenizer.json").exists(), "a snapshot shares its model's tokenizer"
    loaded = checkpoints.load(snap)
    assert loaded.tokenizer.get_vocab_size() == 8192
    assert loaded.extra["steps_done"] == 4250, "a snapshot reports its own step"
    assert (snap / "model.safetensors").stat().st_size < 0.55 * (tmp_path / "gpt2" / "model.safetensors").stat().st_size
    ids = torch.tensor([loaded.tokenizer.encode("ROMEO:\nBut soft, what light").ids])
    with torch.no_grad():
        a, b = model(ids).logits, loaded.model(ids).logits
    assert (a - b).abs().max() < 0.05 and (a.argmax(-1) == b.argmax(-1)).all()


def test_a_folder_without_snapshots_has_none(tmp_path):
    assert checkpoints.snapshots(tmp_path) == []
    (tmp_path / "snapshots" / "000010").mkdir(parents=True)  # half-written: no snapshot.json, no weights
    assert checkpoints.snapshots(tmp_path) == []


def test_an_unreadable_snapshot_hides_only_itself(tmp_path):
    shutil.copytree(checkpoints.shipped("gpt2"), tmp_path / "gpt2", ignore=shutil.ignore_patterns("snapshots"))
    model = checkpoints.load(tmp_path / "gpt2").model
    good = [checkpoints.save_snapshot(model, tmp_path / "gpt2", s, s / 100, {}) for s in (30, 4)]
    broken = checkpoints.save_snapshot(model, tmp_path / "gpt2", 10, 0.1, {})
    (broken / "snapshot.json").write_text("{broken")
    odd = checkpoints.save_snapshot(model, tmp_path / "gpt2", 20, 0.2, {})
    (odd / "snapshot.json").write_text('{"step": "twenty"}')
    assert checkpoints.snapshots(tmp_path / "gpt2") == good[::-1]


def test_the_shipped_models_and_their_snapshots_fit_in_250_mb():
    """Issue #14: all of assets/ at most 250 MB (10^6 bytes), snapshots included."""
    total = sum(p.stat().st_size for p in checkpoints.ASSETS.parent.rglob("*") if p.is_file())
    assert total <= 250e6, f"assets/ holds {total / 1e6:.1f} MB"
