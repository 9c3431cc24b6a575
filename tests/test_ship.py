"""Shipping a training phase (``python -m lmviz ship RUN``): the run becomes the model folder, the shipped run's snapshots
stay and the run's follow them counted after the earlier phases, pyproject.toml installs every snapshot, and a run that
does not belong there is refused with the shipped folder untouched."""
from __future__ import annotations

import hashlib
import shutil
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lmviz.analysis.forming import loss_points
from lmviz.errors import LmvizError
from lmviz.models import checkpoints
from lmviz.pretrain import corpus
from lmviz.pretrain.corpus import Document
from lmviz.pretrain.ship import ship
from lmviz.pretrain.training import DEFAULTS, train

ROOT = Path(__file__).resolve().parent.parent


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with the shipped BERT and GPT-2 (GPT-2's snapshots too) and a phase of BERT trained from its folder."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("project")
    models = root / "assets" / "models"
    for kind in ("bert", "gpt2"):
        shutil.copytree(checkpoints.shipped(kind), models / kind)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    docs = corpus.split()
    cut = lambda d, n: Document(d.name, d.speeches[:n], d.genre)  # noqa: E731
    small = corpus.Split([cut(d, 120) for d in docs.train[:2]], [cut(d, 40) for d in docs.test], [cut(d, 40) for d in docs.validation])
    cfg = replace(DEFAULTS["bert"], steps=6, batch_size=4, warmup=1, seq_len=64, short_frac=0, eval_every=6, save_every=6,
                  keep_best=False, snapshots=(0.5,))
    train(cfg, root / "run", models / "bert" / "tokenizer.json", progress=False, corpus=small, init=models / "bert")
    return root


def test_a_phase_ships_with_its_snapshots_counted_after_the_earlier_phases(project):
    models, run = project / "assets" / "models", project / "run"
    was = checkpoints.load(models / "bert").extra
    kept = was.get("steps_before", 0) + was["steps_done"]  # every step the shipped model took, over all its phases
    earlier = [checkpoints.load(s).extra["steps_done"] for s in checkpoints.snapshots(models / "bert")]
    done = ship(run, models / "bert", pyproject=project / "pyproject.toml")
    assert done == {"steps_before": kept, "snapshots": earlier + [kept + 3, kept + 6]}
    shipped = checkpoints.load(models / "bert")
    assert shipped.extra["steps_before"] == kept and shipped.extra["steps_done"] == 6
    assert (models / "bert" / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    assert not (models / "bert" / "resume").exists() and not list(models.glob(".*"))
    snaps = checkpoints.snapshots(models / "bert")
    assert [checkpoints.load(s).extra["steps_done"] for s in snaps] == earlier + [kept + 3, kept + 6]
    points = loss_points(shipped.train_log, kept)  # the Layers curve: the earlier phases up to the steps they kept, then this
    assert points[-1][0] == kept + 6 and [s for s, _ in points] == sorted(s for s, _ in points)
    files = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert f"share/lmviz/assets/models/bert/snapshots/{kept + 6:06d}" in files
    assert all(f"share/lmviz/{s.relative_to(project).as_posix()}" in files for s in checkpoints.snapshots(models / "gpt2"))
    assert files["share/lmviz/assets/models/bert"] == ["assets/models/bert/*.json", "assets/models/bert/*.safetensors"]


def test_a_run_of_another_kind_or_tokenizer_is_refused_and_the_shipped_folder_is_untouched(project, tmp_path):
    models = project / "assets" / "models"
    before = digest(models / "gpt2")
    with pytest.raises(LmvizError, match="bert model; gpt2 is a gpt2"):
        ship(project / "run", models / "gpt2")
    odd = tmp_path / "odd"
    shutil.copytree(project / "run", odd)
    (odd / "tokenizer.json").write_text((odd / "tokenizer.json").read_text().replace('"[UNK]"', '"[UNKNOWN]"', 1))
    with pytest.raises(LmvizError, match="another tokenizer"):
        ship(odd, models / "bert")
    assert digest(models / "gpt2") == before and not list(models.glob(".*"))
