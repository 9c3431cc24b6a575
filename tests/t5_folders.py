"""Two T5 folders for the task-prefix tests: one that knows prefixes, one that does not, whatever is shipped today.

The one that knows prefixes is the real text-to-text T5: the shipped one once it is, else the run in ``runs/t5``
(its four files, copied: the run rewrites them while it trains). Where neither exists (a fresh clone before the
text-to-text T5 ships), the shipped T5 with a training mixture in its config stands in: the pages' behaviour is
the same, only its answers are worse. The one that does not is the shipped T5 with the mixture taken out of its
config: a T5 from elsewhere, as the pages met it before prefixes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from lmviz.models import checkpoints

RUN = Path(__file__).resolve().parent.parent / "runs" / "t5"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "train_log.json")


def _mixture(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "config.json").read_text())["lmviz"]["train"].get("mixture")
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    return dst


def _set_mixture(folder: Path, mixture: dict | None) -> None:
    config = json.loads((folder / "config.json").read_text())
    train = config.setdefault("lmviz", {}).setdefault("train", {})
    if mixture is None:
        train.pop("mixture", None)
    else:
        train["mixture"] = mixture
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def prefixed_t5(dst: Path) -> tuple[Path, str]:
    """A T5 folder at ``dst`` that knows the task prefixes, and where it came from."""
    shipped = checkpoints.shipped("t5")
    if _mixture(shipped):
        return _copy(shipped, dst), "shipped"
    if _mixture(RUN) and (RUN / "model.safetensors").is_file():
        return _copy(RUN, dst), "runs/t5"
    _copy(shipped, dst)
    _set_mixture(dst, {"fill": 0.6, "punctuate": 0.3, "genre": 0.1})
    return dst, "shipped T5 with a mixture in its config"


def plain_t5(dst: Path) -> Path:
    """The shipped T5 at ``dst`` without a training mixture: a T5 that was not trained with prefixes."""
    _copy(checkpoints.shipped("t5"), dst)
    _set_mixture(dst, None)
    return dst


def assets_with(dst: Path, t5: Path) -> Path:
    """A copy of the shipped assets (BERT and GPT-2 linked, ``evaluation.json`` left out) whose T5 is ``t5``."""
    dst.mkdir(parents=True, exist_ok=True)
    for kind in ("bert", "gpt2"):
        (dst / kind).symlink_to(checkpoints.shipped(kind).resolve(), target_is_directory=True)
    (dst / "t5").symlink_to(t5.resolve(), target_is_directory=True)
    return dst
