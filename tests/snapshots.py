"""Training snapshots made for tests, until the shipped models carry their own: a copy of a shipped model folder whose
snapshots lie on the straight line from a fresh random initialisation to the trained weights."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from lmviz.models import checkpoints

STEPS = (0, 1000, 2000, 3000, 4250)


def make_snapshots(root: Path, kind: str = "gpt2", steps: tuple[int, ...] = STEPS) -> Path:
    """``root/<kind>``: the shipped folder's files and one float16 snapshot per step (the last is the trained model)."""
    folder = root / kind
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_log.json"):
        shutil.copy(checkpoints.shipped(kind) / name, folder / name)
    trained = checkpoints.load(folder, "cpu", need_tokenizer=False).model
    torch.manual_seed(0)
    fresh = type(trained)(trained.config)
    end = trained.state_dict()
    for step in steps:
        t = step / steps[-1]
        model = type(trained)(trained.config)
        model.load_state_dict({k: (1 - t) * v + t * end[k] for k, v in fresh.state_dict().items()})
        checkpoints.save_snapshot(model, folder, step, t, {"loss": None})
    return folder
