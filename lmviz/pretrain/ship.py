"""Shipping a training phase: a run's model folder replaces a shipped one, keeping the shipped run's snapshots.

``python -m lmviz train KIND --init assets/models/KIND --out RUN …`` trains a phase from the shipped model; ``python -m
lmviz ship RUN`` then makes RUN the shipped model: its weights, config, log (which holds the earlier phases' logs) and
tokenizer, with the shipped folder's snapshots followed by the run's own, their steps counted after the earlier phases
(``lmviz.steps_before`` in config.json says how many), and pyproject.toml's data files listing every snapshot folder so
``pip install .`` installs them. The folder is built beside the shipped one and swapped in whole: an interrupted ship
leaves the shipped model as it was.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from lmviz.errors import LmvizError
from lmviz.models import checkpoints
from lmviz.models.checkpoints import SNAPSHOTS, read_json, write_json

COPIED = ("model.safetensors", "tokenizer.json", "train_log.json")


def ship(run: Path, to: Path, pyproject: Path | None = None) -> dict:
    """Make ``run`` the model folder ``to``; returns what was shipped (the steps before it, the snapshots' steps)."""
    run, to = Path(run), Path(to)
    new, old = checkpoints.load(run, "cpu"), checkpoints.load(to, "cpu")
    if new.kind != old.kind:
        raise LmvizError(f"{run} holds a {new.kind} model; {to.name} is a {old.kind}.")
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    if shapes(new.model) != shapes(old.model):
        raise LmvizError(f"{run} is a {new.kind} of another shape than {to.name}: ship a phase trained with --init {to}.")
    if (run / "tokenizer.json").read_bytes() != (to / "tokenizer.json").read_bytes():
        raise LmvizError(f"{run} has another tokenizer than {to.name}: a phase keeps its model's tokenizer.")
    was = old.extra or {}
    if not isinstance(was.get("steps_done"), int):
        raise LmvizError(f"{to.name}/config.json does not say how many steps its model trained (lmviz.steps_done).")
    before = int(was.get("steps_before", 0)) + was["steps_done"]
    stage = to.with_name(f".{to.name}.shipping")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        for name in COPIED:
            if (run / name).is_file():
                shutil.copy2(run / name, stage / name)
        config = read_json(run / "config.json")
        config["lmviz"] = {**(config.get("lmviz") or {}), "steps_before": before}
        write_json(stage / "config.json", config)
        steps = []
        for snap in checkpoints.snapshots(to):  # the earlier phases', already counted from the first
            shutil.copytree(snap, stage / SNAPSHOTS / snap.name)
            steps.append(read_json(snap / "snapshot.json")["step"])
        for snap in checkpoints.snapshots(run):
            info = read_json(snap / "snapshot.json")
            info["step"] += before
            dest = stage / SNAPSHOTS / f"{info['step']:06d}"
            shutil.copytree(snap, dest)
            write_json(dest / "snapshot.json", info)
            steps.append(info["step"])
        checkpoints.load(stage, "cpu")  # what ships loads
        gone = to.with_name(f".{to.name}.replaced")
        shutil.rmtree(gone, ignore_errors=True)
        to.rename(gone)
        stage.rename(to)
        shutil.rmtree(gone)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if pyproject is not None:
        list_snapshots(pyproject, to.parent)
    return {"steps_before": before, "snapshots": steps}


_SNAPSHOT_LINE = re.compile(r'^"share/lmviz/assets/models/[^"]+/snapshots/')


def list_snapshots(pyproject: Path, models: Path) -> None:
    """Rewrite pyproject.toml's data files so they list every snapshot folder under ``models`` (data files install
    each folder's files into one target folder, so each snapshot needs its own line)."""
    lines = [line for line in pyproject.read_text().splitlines() if not _SNAPSHOT_LINE.match(line)]
    start = lines.index("[tool.setuptools.data-files]")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip() or lines[i].startswith("[")), len(lines))
    root = models.parent.parent  # <project>/assets/models → <project>
    new = []
    for model in sorted(p for p in models.iterdir() if p.is_dir()):
        for snap in checkpoints.snapshots(model):
            rel = snap.relative_to(root).as_posix()
            new.append(f'"share/lmviz/{rel}" = ["{rel}/*.json", "{rel}/*.safetensors"]')
    pyproject.write_text("\n".join(lines[:end] + new + lines[end:]) + "\n")
