"""Fine-tuning in a process of its own, so the other students' pages keep their speed while it trains.

A fine-tune run on a thread of the server holds the server's one GIL for every Python step of its training loop: on
two cores, three students fine-tuning made the other seventeen wait (p95 1.16 s, goal < 1 s). Here the loop runs in a
worker process at the lowest priority, on one thread, and the job's thread in the server only relays: the worker
reports each step's losses and the server fills in the ``Run`` the page draws; at the end the worker sends the
fine-tuned weights, the held-out outcome and the heads' changes, and the server rebuilds the classifier from them.

A worker serves one job at a time (the queue runs at most ``slots`` at once, so there are at most that many), keeps
the models and the tasks' examples it has loaded for the next job, and exits after ``IDLE_S`` seconds without one.
"""
from __future__ import annotations

import copy
import io
import multiprocessing as mp
import os
import threading

from lmviz.errors import LmvizError

IDLE_S = 600.0
POLL_S = 0.1  # how often the server's thread looks for the worker's reports and for a Stop
MAX_MODELS = 4  # loaded models a worker keeps


class Worker:
    """The server's end of one worker process."""

    def __init__(self):
        ctx = mp.get_context("spawn")  # a fresh interpreter: forking a threaded server (and its torch) is not safe
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, IDLE_S), name="lmviz-finetune", daemon=True)
        self.proc.start()
        child.close()

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def close(self) -> None:
        self.conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)


_IDLE: list[Worker] = []
_LOCK = threading.Lock()


def _take() -> Worker:
    with _LOCK:
        while _IDLE:
            w = _IDLE.pop()
            if w.alive:
                return w
            w.close()
    return Worker()


def _give_back(w: Worker) -> None:
    with _LOCK:
        _IDLE.append(w)


def finetune(job, loaded, spec):
    """``lmviz.analysis.finetune.finetune`` of ``loaded``'s model for ``spec``, run in a worker process for ``job``
    (``lmviz.app.jobs.Job``): ``job.result`` is the ``Run`` the page draws, growing as the worker reports; a Stop or a
    closed tab stops the worker at its next step. Returns the finished ``Run`` with its classifier."""
    import torch

    from lmviz.analysis.finetune import Run
    from lmviz.analysis.finetune_models import classifier_class
    from lmviz.analysis.finetune_tasks import task

    w, done = _take(), False
    run, asked = None, False
    try:
        w.conn.send(("run", str(loaded.folder), spec))
        while True:
            if not asked and job.should_stop():
                w.conn.send(("stop", job.wanted))  # an unwanted job's heads are not compared
                asked = True
            if not w.conn.poll(POLL_S):
                if not w.alive:
                    raise LmvizError("The fine-tuning process ended before its job did (out of memory?); start it again.")
                continue
            what, body = w.conn.recv()
            if what == "prepared":
                run = Run(loaded.kind, spec, task(spec.task), body["total_steps"], body["baselines"], body["held"],
                          notes=body["notes"])  # the held-out speeches come from the worker: the server reads no plays
                job.result = run
            elif what == "step":
                run.loss.append(body["loss"])
                run.classification += body["classification"]
                run.lm += body["lm"]
                run.evals = body["evals"]
                run.step = body["step"]
            elif what == "error":
                done = True
                raise LmvizError(body)
            elif what == "done":
                done = True
                clf = classifier_class(loaded)(loaded, run.task, copy.deepcopy(loaded.model))
                clf.load_state(torch.load(io.BytesIO(body.pop("weights")), weights_only=True))
                clf.freeze()
                for k, v in body.items():
                    setattr(run, k, v)
                run.classifier = clf
                return run
    except (EOFError, OSError) as err:
        raise LmvizError(f"The fine-tuning process stopped answering ({type(err).__name__}); start it again.") from err
    finally:
        if done and w.alive:
            _give_back(w)
        else:
            w.close()


# --- the worker process --------------------------------------------------------------------------------------------------

def serve(conn, idle_s: float) -> None:
    """The worker's loop: one ``("run", folder, spec)`` at a time, until ``idle_s`` without one or the server goes."""
    from lmviz.app.jobs import NICE

    try:
        os.nice(NICE)  # the students' pages get the cores first; a job takes what they leave
    except OSError:
        pass
    import torch

    from lmviz.models import checkpoints

    torch.set_num_threads(1)
    models: dict[str, object] = {}
    while True:
        try:
            if not conn.poll(idle_s):
                return
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "run":  # a Stop that came after its job had ended
            continue
        _, folder, spec = msg
        try:
            if folder not in models:
                if len(models) >= MAX_MODELS:
                    models.clear()
                models[folder] = checkpoints.load(folder, device="cpu")
            conn.send(("done", _run(conn, models[folder], spec)))
        except LmvizError as err:
            conn.send(("error", str(err)))
        except (EOFError, OSError):
            return
        except Exception as err:  # a bug in one job must not end the worker with a traceback the page cannot show
            conn.send(("error", f"The job failed: {type(err).__name__}: {str(err)[:300]}"))
        _trim()


def _trim() -> None:
    """Hand what the job freed (its optimizer, its activations) back to the system, as the app does after a rerun."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _run(conn, loaded, spec) -> dict:
    import torch

    from lmviz.analysis.finetune import changed_heads, finetune, prepare

    run = prepare(loaded, spec)
    conn.send(("prepared", {"total_steps": run.total_steps, "baselines": run.baselines, "notes": list(run.notes),
                            "held": run.held}))
    asked = {"stop": False, "wanted": True}

    def stop() -> bool:
        while conn.poll():
            what, wanted = conn.recv()
            if what == "stop":
                asked.update(stop=True, wanted=wanted)
        return asked["stop"]

    def on_step(r) -> None:
        conn.send(("step", {"step": r.step, "loss": r.loss[-1], "classification": r.classification[-1:], "lm": r.lm[-1:],
                            "evals": list(r.evals)}))

    finetune(loaded, spec, on_step=on_step, stop=stop, run=run)
    stop()
    buf = io.BytesIO()
    torch.save(run.classifier.state(), buf)
    return {"step": run.step, "loss": run.loss, "classification": run.classification, "lm": run.lm, "evals": run.evals,
            "status": run.status, "message": run.message, "notes": run.notes, "seconds": run.seconds,
            "cpu_seconds": run.cpu_seconds, "outcome": run.outcome, "weights": buf.getvalue(),
            "changes": changed_heads(loaded, run.classifier, run.held) if asked["wanted"] else None}
