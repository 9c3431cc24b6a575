"""Model folders: ``config.json`` + ``model.safetensors`` + ``tokenizer.json`` (+ ``train_log.json``).

No pickle anywhere: weights are safetensors, everything else JSON, so loading never runs code
from a file. ``config.json`` is a Hugging Face config (``transformers``' ``from_pretrained`` loads
our folders into ``BertForPreTraining``, ``GPT2LMHeadModel`` or ``T5ForConditionalGeneration``),
and the same loader reads folders that ``save_pretrained`` wrote, including a bare ``BertModel``.
Writes go to a temporary name and are renamed, so no folder is ever left half-written.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from lmviz.errors import LmvizError

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "models"
SHARD_BYTES = 16 * 1024 * 1024


def model_classes() -> dict[str, type]:
    from lmviz.models.bert import BertForPreTraining
    from lmviz.models.gpt2 import GPT2LMHeadModel
    from lmviz.models.t5 import T5ForConditionalGeneration

    return {"bert": BertForPreTraining, "gpt2": GPT2LMHeadModel, "t5": T5ForConditionalGeneration}


@dataclass
class Loaded:
    """A model ready for inference, with its tokenizer and what the folder said about it."""

    kind: str
    model: torch.nn.Module
    tokenizer: object
    folder: Path
    has_heads: bool = True
    train_log: dict | None = None
    extra: dict | None = None


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: dict) -> None:
    _write_atomic(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, ensure_ascii=False)))


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without tied duplicates (as ``save_pretrained`` drops them), first name kept."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().cpu().contiguous()
    return out


def save(model: torch.nn.Module, folder: str | Path, tokenizer=None, extra: dict | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (and ``tokenizer.json``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf()
    config["torch_dtype"] = "float32"
    if extra:
        config["lmviz"] = extra
    state = _unique_state(model)
    _write_atomic(folder / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    write_json(folder / "config.json", config)
    if tokenizer is not None:
        _write_atomic(folder / "tokenizer.json", lambda tmp: tokenizer.save(tmp))
    return folder


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise LmvizError(f"{path.name} is missing from {path.parent.name}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LmvizError(f"{path.parent.name}/{path.name} is not valid JSON: {err}.") from err
    if not isinstance(data, dict):
        raise LmvizError(f"{path.parent.name}/{path.name} should hold a JSON object.")
    return data


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors``, or its shards ``model-0000i-of-0000n.safetensors``."""
    files = [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else sorted(folder.glob("model-*-of-*.safetensors"))
    if not files:
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        if pickles:
            raise LmvizError(f"{folder.name} has only {pickles[0]}, a pickle file; lmviz loads safetensors only (pickle can run code).")
        raise LmvizError(f"model.safetensors is missing from {folder.name}.")
    state = {}
    for f in files:
        try:
            state.update(load_bytes(f.read_bytes()))  # one sequential read: copying out of an mmap faults page by page
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise LmvizError(f"{folder.name}/{f.name} is corrupt or truncated: {str(err)[:160]}") from err
    return state


def model_type(config: dict, folder: Path) -> str:
    kind = config.get("model_type")
    if kind not in ("bert", "gpt2", "t5"):
        raise LmvizError(f"{folder.name}/config.json has model_type {kind!r}; lmviz knows bert, gpt2 and t5.")
    return kind


def load(folder: str | Path, device: torch.device | str | None = None, need_tokenizer: bool = True) -> Loaded:
    """Load one model folder (ours or ``save_pretrained``'s) for inference; ``LmvizError`` names any problem."""
    from lmviz.tokenizers import load_tokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise LmvizError(f"Model folder {folder.name} does not exist.")
    config = read_json(folder / "config.json")
    kind = model_type(config, folder)
    cls = model_classes()[kind]
    try:
        cfg = cls.config_class.from_hf(config)
    except (KeyError, TypeError, ValueError) as err:
        raise LmvizError(f"{folder.name}/config.json lacks a setting the {kind} model needs: {err}.") from err
    state = read_weights(folder)
    model = cls(cfg)
    has_heads = _load_state(model, state, folder)
    tokenizer = load_tokenizer(folder / "tokenizer.json") if need_tokenizer else None
    log = read_json(folder / "train_log.json") if (folder / "train_log.json").is_file() else None
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return Loaded(kind, model, tokenizer, folder, has_heads, log, config.get("lmviz"))


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> bool:
    """Copy ``state`` into ``model``; returns whether the prediction heads were present."""
    state = model.adapt_state(dict(state)) if hasattr(model, "adapt_state") else state
    own = model.state_dict()
    tied = _tied_names(model)
    for name, t in state.items():
        if name in own and own[name].shape != t.shape:
            raise LmvizError(f"{folder.name}: tensor {name} has shape {tuple(t.shape)} but config.json implies {tuple(own[name].shape)}.")
    # Older transformers saved some buffers; anything else left over means config.json describes a smaller model.
    extra = [n for n in state if n not in own and not n.endswith(("position_ids", ".attn.bias", ".attn.masked_bias"))]
    if extra:
        raise LmvizError(f"{folder.name}/model.safetensors holds {len(extra)} tensors that config.json does not describe, "
                         f"e.g. {extra[0]}; do the sizes in config.json match the weights?")
    missing = [n for n in own if n not in state and n not in tied]
    heads = [n for n in missing if any(n.startswith(p) for p in getattr(model, "head_prefixes", ()))]
    if [n for n in missing if n not in heads]:
        raise LmvizError(f"{folder.name}/model.safetensors lacks {len(missing)} tensors the model needs, e.g. {missing[0]}.")
    model.load_state_dict({n: t for n, t in state.items() if n in own}, strict=False)
    return not heads


def _tied_names(model: torch.nn.Module) -> set[str]:
    first, tied = {}, set()
    for name, t in model.state_dict(keep_vars=True).items():
        key = t.data_ptr()
        if key in first:
            tied.add(name)
        else:
            first[key] = name
    return tied


def shipped(kind: str) -> Path:
    """The shipped model folder of ``kind``; ``LMVIZ_ASSETS=DIR`` points at a copy (tests, a lab's own set)."""
    root = os.environ.get("LMVIZ_ASSETS")
    return (Path(root) if root else ASSETS) / kind
