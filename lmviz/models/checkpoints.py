"""Model folders: ``config.json`` + ``model.safetensors`` + ``tokenizer.json`` (+ ``train_log.json``).

No pickle anywhere: weights are safetensors, everything else JSON, so loading never runs code
from a file. ``config.json`` is a Hugging Face config (``transformers``' ``from_pretrained`` loads
our folders into ``BertForPreTraining``, ``GPT2LMHeadModel`` or ``T5ForConditionalGeneration``),
and the same loader reads folders that ``save_pretrained`` wrote, including bare ``BertModel`` and
``GPT2Model`` folders and a ``BertForMaskedLM`` (``Loaded.heads`` says which prediction heads came).
Checkpoints whose math our models do not compute (an untied LM head, T5 v1.1, GPT-2 variants) are
refused by name rather than loaded into a silently different model.
Writes go to a temporary name and are renamed, so no folder is ever left half-written.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from lmviz.errors import LmvizError
from lmviz.paths import ROOT

ASSETS = ROOT / "assets" / "models"
SHARD_BYTES = 16 * 1024 * 1024
MAX_PARAMETERS = 800_000_000  # GPT-2 large (774 M) loads; more would not fit a classroom server's memory in float32


def model_classes() -> dict[str, type]:
    from lmviz.models.bert import BertForPreTraining
    from lmviz.models.gpt2 import GPT2LMHeadModel
    from lmviz.models.roberta import RobertaForMaskedLM
    from lmviz.models.t5 import T5ForConditionalGeneration

    return {"bert": BertForPreTraining, "gpt2": GPT2LMHeadModel, "t5": T5ForConditionalGeneration, "roberta": RobertaForMaskedLM}


@dataclass
class Loaded:
    """A model ready for inference, with its tokenizer and what the folder said about it.

    ``heads``: the pretraining heads whose weights the folder held (``{"mlm", "nsp"}`` for a full BERT;
    GPT-2 and T5 always have their LM head, ``{"lm"}``).
    """

    kind: str
    model: torch.nn.Module
    tokenizer: object
    folder: Path
    heads: frozenset = frozenset({"lm"})
    train_log: dict | None = None
    extra: dict | None = None
    notes: tuple[str, ...] = ()  # what lmviz changed about the folder as it loaded it (a tokenizer's padding rule)

    @property
    def has_heads(self) -> bool:
        """Every pretraining head is there, so every prediction a page shows is the model's own."""
        return set(getattr(self.model, "optional_heads", ())) <= self.heads


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


def _weight_files(folder: Path) -> list[Path]:
    """``model.safetensors``, or its shards ``model-0000i-of-0000n.safetensors``."""
    files = [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else sorted(folder.glob("model-*-of-*.safetensors"))
    if not files:
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        if pickles:
            raise LmvizError(f"{folder.name} has only {pickles[0]}, a pickle file; lmviz loads safetensors only (pickle can run code).")
        raise LmvizError(f"model.safetensors is missing from {folder.name}.")
    return files


def _corrupt(folder: Path, f: Path, err: Exception) -> LmvizError:
    return LmvizError(f"{folder.name}/{f.name} is corrupt or truncated: {str(err)[:160]}")


def read_header(folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each tensor's ``(shape, dtype)`` from the safetensors headers, without reading the weights."""
    out = {}
    for f in _weight_files(folder):
        try:
            with safe_open(f, framework="pt") as st:
                for name in st.keys():
                    part = st.get_slice(name)
                    out[name] = (tuple(part.get_shape()), part.get_dtype())
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise _corrupt(folder, f, err) from err
    return out


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` (or of its shards)."""
    state = {}
    for f in _weight_files(folder):
        try:
            state.update(load_bytes(f.read_bytes()))  # one sequential read: copying out of an mmap faults page by page
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise _corrupt(folder, f, err) from err
    return state


def model_type(config: dict, folder: Path) -> str:
    kind = config.get("model_type")
    known = list(model_classes())
    if kind not in known:
        raise LmvizError(f"{folder.name}/config.json has model_type {kind!r}; lmviz knows {', '.join(known[:-1])} and {known[-1]}.")
    return kind


def load(folder: str | Path, device: torch.device | str | None = None, need_tokenizer: bool = True) -> Loaded:
    """Load one model folder (ours or ``save_pretrained``'s) for inference; ``LmvizError`` names any problem.

    The config is checked first, then the tensors' shapes in the safetensors header against a model
    built on the meta device (no memory), and only then are the weights read and the model built.
    """
    from lmviz.pretrain.tokenizers import load_tokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise LmvizError(f"Model folder {folder.name} does not exist.")
    config = read_json(folder / "config.json")
    kind = model_type(config, folder)
    cls = model_classes()[kind]
    try:
        cfg = cls.config_class.from_hf(config)
    except LmvizError as err:
        raise LmvizError(f"{folder.name}/config.json: {err}") from err
    except KeyError as err:
        raise LmvizError(f"{folder.name}/config.json lacks a setting the {kind} model needs: {err}.") from err
    except (TypeError, ValueError) as err:
        raise LmvizError(f"{folder.name}/config.json has a setting the {kind} model cannot use: {err}") from err
    header = read_header(folder)
    for name in ("n_layer", "num_hidden_layers", "num_layers", "num_decoder_layers"):  # each layer has tensors of its own
        if getattr(cfg, name, 0) > len(header):
            raise LmvizError(f"{folder.name}/config.json: {name} = {getattr(cfg, name)}, but model.safetensors holds only "
                             f"{len(header)} tensors.")
    with torch.device("meta"), _NoRandomInit():
        plan = _build(cls, cfg, folder)
    _check_size(plan, folder)
    heads = _check_tensors(plan, header, folder)
    state = _adapt(plan, read_weights(folder))
    _check_tied(plan, state, folder)
    model = _build(cls, cfg, folder)
    own = model.state_dict()
    model.load_state_dict({n: t for n, t in state.items() if n in own}, strict=False)
    notes: list[str] = []
    tokenizer = load_tokenizer(_tokenizer_path(folder), notes) if need_tokenizer else None
    if tokenizer is not None:
        _check_tokens(kind, tokenizer, folder)
    log = read_json(folder / "train_log.json") if (folder / "train_log.json").is_file() else None
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return Loaded(kind, model, tokenizer, folder, heads, log, config.get("lmviz") or _snapshot_extra(folder), tuple(notes))


def _check_size(plan: torch.nn.Module, folder: Path) -> None:
    """Refuse a model too large for the app while it is still shapes only (built on the meta device)."""
    n = sum(p.numel() for p in plan.parameters())
    if n > MAX_PARAMETERS:
        raise LmvizError(f"{folder.name}/config.json describes a model of {n / 1e6:,.0f} million parameters "
                         f"({n * 4 / 2**30:,.1f} GiB in float32); lmviz loads at most {MAX_PARAMETERS / 1e6:,.0f} million.")


def _check_tokens(kind: str, tokenizer, folder: Path) -> None:
    """The special tokens the kind's encode rule adds must be in the vocabulary (GPT-2's <|endoftext|>, RoBERTa's <s>)."""
    from lmviz.models.kinds import kind_of

    k = kind_of(kind)
    missing = [t for t in k.required_tokens if tokenizer.token_to_id(t) is None]
    if missing:
        raise LmvizError(f"{folder.name}/tokenizer.json has no {missing[0]}, which lmviz's {k.short} puts in every text "
                         "(as the model was trained); a tokenizer of another model?")


class _NoRandomInit(TorchFunctionMode):
    """Skips random initialisation while it is active (per thread): a model built under it on the meta device is
    shapes only. On meta tensors ``normal_`` would import ``torch._dynamo`` (3–4 s on the first load)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", "") == "torch.nn.init" or getattr(func, "__name__", "") in ("normal_", "uniform_"):
            return kwargs.get("tensor", args[0] if args else None)
        return func(*args, **kwargs)


def _build(cls, cfg, folder: Path) -> torch.nn.Module:
    try:
        return cls(cfg)
    except (RuntimeError, TypeError, ValueError) as err:  # sizes that pass the config's checks but not torch's
        raise LmvizError(f"{folder.name}/config.json describes a model lmviz cannot build: {str(err)[:160]}") from err


def _adapt(model: torch.nn.Module, state: dict) -> dict:
    """The folder's names as ours (a bare ``BertModel`` lacks the ``bert.`` prefix); values pass through untouched."""
    return model.adapt_state(dict(state)) if hasattr(model, "adapt_state") else state


def _check_tensors(model: torch.nn.Module, header: dict[str, tuple[tuple[int, ...], str]], folder: Path) -> frozenset:
    """Compare the file's tensors (names, shapes, dtypes) with ``model``'s; returns the heads the file holds."""
    header = _adapt(model, header)
    own = model.state_dict()
    tied = _tied_names(model)
    for name, (shape, dtype) in header.items():
        if name in own and tuple(own[name].shape) != shape:
            raise LmvizError(f"{folder.name}: tensor {name} has shape {shape} but config.json implies {tuple(own[name].shape)}.")
        if name in own and dtype not in ("F64", "F32", "F16", "BF16"):
            raise LmvizError(f"{folder.name}: tensor {name} holds {dtype} numbers; model weights are floating point.")
    # Older transformers saved some buffers; anything else left over means config.json describes a smaller model.
    extra = [n for n in header if n not in own and not n.endswith(("position_ids", ".attn.bias", ".attn.masked_bias"))
             and not n.startswith(CLASSIFIER_HEADS)]
    if extra:
        raise LmvizError(f"{folder.name}/model.safetensors holds {len(extra)} tensors that config.json does not describe, "
                         f"e.g. {extra[0]}; do the sizes in config.json match the weights?")
    optional = getattr(model, "optional_heads", {})
    missing = [n for n in own if n not in header and n not in tied]
    absent = {head for head, prefixes in optional.items() if any(n.startswith(prefixes) for n in missing)}
    needed = [n for n in missing if not any(n.startswith(p) for prefixes in optional.values() for p in prefixes)]
    if needed:
        raise LmvizError(f"{folder.name}/model.safetensors lacks {len(needed)} tensors the model needs, e.g. {needed[0]}.")
    return frozenset(set(optional) - absent) if optional else frozenset({"lm"})


CLASSIFIER_HEADS = ("classifier.", "score.")
"""A sequence classifier's head (``BertForSequenceClassification``'s ``classifier``, ``GPT2ForSequenceClassification``'s
``score``, as the Fine-tuning page downloads them): the pages read the model under it, so it loads and is left out."""


def _check_tied(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """A tensor our model ties to another (the LM head to the embedding) must not bring different numbers."""
    for name, first in _tied_names(model).items():
        if name in state and first in state and not torch.equal(state[name], state[first]):
            raise LmvizError(f"{folder.name}/model.safetensors has its own {name}, different from {first}; lmviz's "
                             f"{model.kind} ties them (one matrix for both), so this untied checkpoint cannot load as it is.")


def _tied_names(model: torch.nn.Module) -> dict[str, str]:
    """``{name: first name}`` for every parameter registered under a second name (ties)."""
    first, tied = {}, {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in first:
            tied[name] = first[id(t)]
        else:
            first[id(t)] = name
    return tied


def _tokenizer_path(folder: Path) -> Path:
    """A folder's own ``tokenizer.json``; a snapshot (``<model>/snapshots/<step>/``) uses its model's."""
    own = folder / "tokenizer.json"
    if not own.is_file() and folder.parent.name == SNAPSHOTS and (folder.parent.parent / "tokenizer.json").is_file():
        return folder.parent.parent / "tokenizer.json"
    return own


def _snapshot_extra(folder: Path) -> dict | None:
    """A snapshot's training settings are its model's (how it reads its input), at the snapshot's own step."""
    if folder.parent.name != SNAPSHOTS or not (folder / "snapshot.json").is_file():
        return None
    parent = folder.parent.parent / "config.json"
    extra = dict(read_json(parent).get("lmviz") or {}) if parent.is_file() else {}
    extra["steps_done"] = read_json(folder / "snapshot.json").get("step")
    extra.pop("steps_before", None)  # a snapshot's step already counts the earlier phases'
    return extra or None


SNAPSHOTS = "snapshots"
"""A model folder's subfolder of training snapshots: ``snapshots/<step, 6 digits>/`` with ``config.json``,
``model.safetensors`` (float16) and ``snapshot.json`` (``{"step", "fraction", "figures"}``); ``load`` reads one
like any model folder. A model trained in phases (``--init``) keeps every phase's snapshots, their steps counted from
the first phase; its ``config.json`` says how many steps came before its own phase (``lmviz.steps_before``)."""


def save_snapshot(model: torch.nn.Module, folder: str | Path, step: int, fraction: float, figures: dict) -> Path:
    """Keep a float16 copy of ``model`` at ``step`` (``fraction`` of the run) with its held-out ``figures``."""
    snap = Path(folder) / SNAPSHOTS / f"{step:06d}"
    snap.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf()
    config["torch_dtype"] = "float16"
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in _unique_state(model).items()}
    _write_atomic(snap / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    write_json(snap / "config.json", config)
    write_json(snap / "snapshot.json", {"step": int(step), "fraction": round(float(fraction), 4), "figures": figures})
    return snap


def snapshots(folder: str | Path) -> list[Path]:
    """A model folder's snapshots, by step (empty when it has none); one whose ``snapshot.json`` cannot be read or
    names no step is left out."""
    root = Path(folder) / SNAPSHOTS
    found = []
    for p in root.iterdir() if root.is_dir() else []:
        if not ((p / "snapshot.json").is_file() and (p / "model.safetensors").is_file()):
            continue  # half-written
        try:
            step = read_json(p / "snapshot.json").get("step")
        except LmvizError:
            continue  # one unreadable snapshot.json hides only its own snapshot
        if isinstance(step, int) and not isinstance(step, bool):
            found.append((step, p))
    return [p for _, p in sorted(found)]


def evaluation_path() -> Path:
    """Where ``python -m lmviz evaluate`` writes the shipped models' held-out figures (beside them; ``LMVIZ_ASSETS``
    moves it with them)."""
    return shipped("bert").parent / "evaluation.json"


def shipped(kind: str) -> Path:
    """The shipped model folder of ``kind``; ``LMVIZ_ASSETS=DIR`` points at a copy (tests, a lab's own set)."""
    root = os.environ.get("LMVIZ_ASSETS")
    return (Path(root) if root else ASSETS) / kind
