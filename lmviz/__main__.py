"""``python -m lmviz {tokenizers,train,evaluate,bench,finetune,app}`` (``lmviz …`` once installed with ``pip install .``)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from lmviz.errors import LmvizError


def _corpus(args):
    """``--corpus PATH``: a .txt file or a folder of them instead of the plays (None: the plays)."""
    from lmviz.pretrain.corpus import load_user_path

    return load_user_path(args.corpus) if args.corpus else None


def cmd_tokenizers(args) -> None:
    from lmviz.pretrain.tokenizers import DEFAULT_OUT, train_all

    report = train_all(Path(args.out) if args.out else DEFAULT_OUT, docs=_corpus(args))
    for kind, r in report.items():
        print(f"{kind:5s} vocab {r['vocab_size']:6d}  trained in {r['seconds']:.1f} s  → {r['path']}")


def _mixture(text: str) -> dict:
    """``"fill=0.4,punctuate=0.4,genre=0.2"`` → the task weights, every name a T5 task and every weight above 0."""
    from lmviz.pretrain import text2text

    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in text2text.TASKS:
            raise LmvizError(f"--mixture: unknown task {name!r}; T5's tasks are {', '.join(text2text.TASKS)}.")
        try:
            w = float(weight)
        except ValueError:
            raise LmvizError(f"--mixture: {name}'s weight must be a number, as in fill=0.6, not {weight!r}.") from None
        if not w > 0 or w != w or w == float("inf"):
            raise LmvizError(f"--mixture: {name}'s weight must be above 0 and finite, not {weight!r}.")
        out[name] = w
    if not out:
        raise LmvizError("--mixture names no task; write it as fill=0.6,punctuate=0.3,genre=0.1.")
    return out


def cmd_train(args) -> None:
    import torch

    from lmviz.models import checkpoints
    from lmviz.pretrain.corpus import split
    from lmviz.pretrain.training import DEFAULTS, train

    if args.corpus and not args.out:
        raise LmvizError("--corpus needs --out: a model trained on another corpus must not replace the shipped one.")
    cfg = DEFAULTS[args.model]
    overrides = {k: v for k, v in {"steps": args.steps, "seed": args.seed, "batch_size": args.batch_size, "lr": args.lr,
                                         "warmup": args.warmup, "short_frac": args.short_frac,
                                         "embed_lr_scale": args.embed_lr_scale, "seq_len": args.seq_len,
                                         "copy_steps": args.copy_steps, "eval_every": args.eval_every,
                                         "weight_decay": args.weight_decay, "nsp_weight": args.nsp_weight}.items() if v is not None}
    if args.nsp_weight is not None and args.model != "bert":
        raise LmvizError("--nsp-weight weighs BERT's next-sentence loss; gpt2 and t5 have none.")
    if args.dropout is not None:
        if not 0 <= args.dropout < 1:
            raise LmvizError(f"--dropout must be at least 0 and below 1, not {args.dropout}.")
        overrides["model"] = {**cfg.model, "dropout": args.dropout}
    if args.copy_steps is not None and args.model != "t5":
        raise LmvizError("--copy-steps is T5's warm-up; bert and gpt2 have none.")
    if args.mixture is not None:
        if args.model != "t5":
            raise LmvizError("--mixture weighs T5's text-to-text tasks; bert and gpt2 have none.")
        overrides["mixture"] = _mixture(args.mixture)
    for name, kind, what, of in (("repeat_frac", "gpt2", "repeats GPT-2's training windows; bert and t5 read no such windows",
                                  "each batch"),
                                 ("rename_speakers", "bert", "renames the speakers of BERT's sentence pairs; gpt2 and t5 "
                                  "read none", "the pairs")):
        share, flag = getattr(args, name), "--" + name.replace("_", "-")
        if share is not None:
            if args.model != kind:
                raise LmvizError(f"{flag} {what}.")
            if not 0 <= share <= 1:
                raise LmvizError(f"{flag} is a share of {of}, from 0 to 1, not {share}.")
            overrides[name] = share
    if args.fp32:
        overrides["autocast"] = "off"
    if args.keep_last:
        overrides["keep_best"] = False
    if args.compile:
        overrides["compile"] = True
    if args.no_causal_mask:
        if args.model != "gpt2":
            raise SystemExit("--no-causal-mask is for gpt2 only")
        overrides["causal"] = False
    cfg = replace(cfg, **overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else checkpoints.shipped(args.model)
    tokenizer = Path(args.tokenizer) if args.tokenizer else checkpoints.shipped(args.model) / "tokenizer.json"
    log = train(cfg, out, tokenizer, time_budget=args.minutes * 60 if args.minutes else None,
                fit_steps=bool(args.minutes) and args.steps is None, init=Path(args.init) if args.init else None,
                corpus=split(docs) if (docs := _corpus(args)) is not None else None)
    if log["evals"]:
        print(json.dumps(log["evals"][-1]))


def cmd_ship(args) -> None:
    from lmviz import paths
    from lmviz.models import checkpoints
    from lmviz.pretrain.ship import ship

    run = Path(args.run)
    to = Path(args.to) if args.to else checkpoints.shipped(checkpoints.load(run, "cpu").kind)
    own = to.resolve().parent == (paths.ROOT / "assets" / "models").resolve() and (paths.ROOT / "pyproject.toml").is_file()
    done = ship(run, to, pyproject=paths.ROOT / "pyproject.toml" if own else None)
    print(f"shipped {run} as {to}: {done['steps_before']} steps before this phase; snapshots at steps "
          f"{', '.join(map(str, done['snapshots']))}")


def cmd_evaluate(args) -> None:
    from lmviz.pretrain.evaluate import evaluate_all

    evaluate_all(Path(args.models) if args.models else None, quick=args.quick)


def cmd_bench(args) -> None:
    from lmviz import bench

    bench.run(args.what, repeats=args.repeats, compiled=not args.no_compile)


def cmd_finetune(args) -> None:
    import torch

    from lmviz.analysis.finetune import Spec, finetune, folder_name, table
    from lmviz.analysis.finetune_models import classifier_class
    from lmviz.analysis.finetune_tasks import TASKS
    from lmviz.models import checkpoints

    torch.set_num_threads(args.threads)
    kinds = ["bert", "gpt2", "t5"] if args.model == "all" else [args.model]
    keys = list(TASKS) if args.task == "all" else [args.task]
    runs = []
    for kind in kinds:
        loaded = checkpoints.load(Path(args.models) / kind if args.models else checkpoints.shipped(kind), "cpu")
        for key in keys:
            spec = Spec(task=key, examples=args.examples or classifier_class(loaded).default_examples, epochs=args.epochs, lr=args.lr, seed=args.seed, mode=args.mode,
                        lam=args.lam)
            report = lambda r: r.step % 10 == 0 and print(f"  {kind} {key} step {r.step}/{r.total_steps} loss {r.loss[-1]:.3f}",
                                                       file=sys.stderr)
            run = finetune(loaded, spec, on_step=report)
            print(f"{kind} {key}: {run.message} {run.cpu_seconds:.1f} s of CPU ({run.seconds:.1f} s wall); held-out accuracy {100 * run.outcome.accuracy:.1f} % "
                  f"(bag of words {100 * run.baselines.bow_accuracy:.1f} %, majority {100 * run.baselines.majority_accuracy:.1f} %)",
                  file=sys.stderr)
            if args.out:
                print(f"  saved to {run.classifier.save(Path(args.out) / folder_name(kind, key, args.seed))}", file=sys.stderr)
            runs.append(run)
    print(table(runs))


def cmd_app(args) -> None:
    """The Streamlit app with the shipped models, run from any folder (a clone's app.py, or the installed copy)."""
    import os

    from lmviz.paths import ROOT

    if not (ROOT / "app.py").is_file():
        raise LmvizError(f"The app's files are not at {ROOT}; install lmviz again (pip install .).")
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(args.port)]
    if args.models:
        cmd += ["--", "--models", str(Path(args.models).resolve())]  # resolved here: the app runs in ROOT
    os.chdir(ROOT)  # Streamlit reads .streamlit/config.toml from its working folder
    os.execv(sys.executable, cmd)  # this process becomes the server: Ctrl-C and kill reach Streamlit itself


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lmviz", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokenizers", help="train the three tokenizers on the training plays")
    t.add_argument("--corpus", help="a .txt file or a folder of them instead of the plays")
    t.add_argument("--out", help="output folder, one sub-folder per model (default: runs/tokenizers; never a folder "
                                 "beside a trained model, whose token ids a new tokenizer would change)")
    t.set_defaults(fn=cmd_tokenizers)
    tr = sub.add_parser("train", help="pretrain one model (resumes from <out>/resume if present)")
    tr.add_argument("model", choices=["bert", "gpt2", "t5"])
    tr.add_argument("--steps", type=int, help="step budget (default: the shipped run's)")
    tr.add_argument("--minutes", type=float,
                    help="stop after this many minutes (run again to resume); without --steps, a fresh run fits its schedule to them")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--threads", type=int, help="torch CPU threads")
    tr.add_argument("--copy-steps", type=int, help="t5: steps of the copy: warm-up before the task mixture")
    tr.add_argument("--eval-every", type=int, help="evaluate on the validation play every N steps")
    tr.add_argument("--fp32", action="store_true", help="train in float32 (default: bf16 autocast where the hardware has it)")
    tr.add_argument("--out", help="output folder (default: assets/models/<model>)")
    tr.add_argument("--corpus", help="a .txt file or a folder of them to train on instead of the plays (needs --out)")
    tr.add_argument("--tokenizer", help="tokenizer.json (default: the shipped one)")
    tr.add_argument("--init", help="start from this model folder's weights (a second phase of training)")
    tr.add_argument("--warmup", type=int)
    tr.add_argument("--short-frac", type=float, help="share of the steps run on short sequences")
    tr.add_argument("--seq-len", type=int, help="sequence length of the long phase")
    tr.add_argument("--no-causal-mask", action="store_true",
                    help="gpt2: train without the causal mask, so it learns to cheat (the Masks page's twin)")
    tr.add_argument("--embed-lr-scale", type=float,
                    help="the token embedding's learning rate relative to the rest (10 helps T5, whose embedding starts at std 1)")
    tr.add_argument("--mixture", help="t5: the tasks' weights after the warm-up, as fill=0.6,punctuate=0.3,genre=0.1")
    tr.add_argument("--repeat-frac", type=float,
                    help="gpt2: share of each batch whose window repeats a stretch of the plays, so a head that "
                         "copies from the earlier occurrence (an induction head) pays off")
    tr.add_argument("--dropout", type=float, help="the model's dropout (a run with --init may change it)")
    tr.add_argument("--weight-decay", type=float, help="AdamW weight decay on the weight matrices")
    tr.add_argument("--nsp-weight", type=float, help="bert: the next-sentence loss's weight beside MLM's (default 1)")
    tr.add_argument("--rename-speakers", type=float,
                    help="bert: share of sentence pairs whose speakers all become others of the training set, so NSP "
                         "must compare A's speakers with B's rather than recall which play a name is from")
    tr.add_argument("--compile", action="store_true",
                    help="the training step through torch.compile: minutes to compile, then about 0.75x the step time on a CPU")
    tr.add_argument("--keep-last", action="store_true",
                    help="the model folder holds the last step, not the best validation figure (for a second phase whose "
                         "first phase saw the validation play)")
    tr.set_defaults(fn=cmd_train)
    sh = sub.add_parser("ship", help="make a training phase's folder (train --init … --out RUN) the shipped model, "
                                     "keeping the shipped run's snapshots")
    sh.add_argument("run", help="the phase's model folder")
    sh.add_argument("--to", help="the model folder it replaces (default: the shipped one of its kind)")
    sh.set_defaults(fn=cmd_ship)
    ev = sub.add_parser("evaluate", help="held-out figures and probes for the shipped checkpoints")
    ev.add_argument("--models", help="folder of model folders (default: assets/models)")
    ev.add_argument("--quick", action="store_true", help="a smaller held-out slice")
    ev.set_defaults(fn=cmd_evaluate)
    b = sub.add_parser("bench", help="benchmarks: ratios against a reference in one run")
    b.add_argument("what", choices=["models", "pages"])
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--no-compile", action="store_true", help="models: skip the torch.compile rows (a minute or more each)")
    b.set_defaults(fn=cmd_bench)
    f = sub.add_parser("finetune", help="fine-tune a shipped model into a classifier on a task from the plays; prints "
                                       "time, held-out accuracy and the baselines as a table")
    f.add_argument("model", choices=["bert", "gpt2", "t5", "all"])
    f.add_argument("--task", default="verse", choices=["genre", "verse", "genre3", "all"])
    f.add_argument("--examples", type=int, help="training speeches (default: the model's, as the page has it)")
    f.add_argument("--epochs", type=int, default=1)
    f.add_argument("--lr", type=float, help="learning rate (default: the model's)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--mode", default="full", choices=["full", "probe"], help="bert: the whole model, or the classifier only")
    f.add_argument("--lam", type=float, default=0.5, help="gpt2: λ, the weight of the language-model loss")
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--models", help="folder with bert/, gpt2/, t5/ (default: the shipped models)")
    f.add_argument("--out", help="save each fine-tuned model under this folder (loads with --models and transformers)")
    f.set_defaults(fn=cmd_finetune)
    a = sub.add_parser("app", help="start the Streamlit app (the shipped models, and yours with --models)")
    a.add_argument("--models", help="a folder of your own model folders, offered beside the shipped ones")
    a.add_argument("--port", type=int, default=8501)
    a.set_defaults(fn=cmd_app)
    args = p.parse_args(argv)
    try:
        return args.fn(args) or 0
    except LmvizError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
