"""The queue that heavy work a page starts goes through, shared by every browser session of the server.

At most ``slots`` jobs run at once (each on a worker thread of its own; a fine-tune's thread only relays what its worker
process does, ``lmviz.app.worker``); the rest wait in line and can say their place.
Each job belongs to a session (its owner): a session has one job at a time (a new one replaces the old), a job whose
session has gone (its tab closed) is stopped at its next step or dropped from the line, and a finished job's result (a
fine-tuned model's weights) is let go when its session goes, so a classroom's memory stays bounded by
``slots`` running jobs plus one result per open tab.

Plain threads, tested without Streamlit; ``streamlit_owner`` and ``streamlit_alive`` connect it to the app's sessions.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from collections import deque
from typing import Callable

from lmviz.errors import LmvizError

NICE = int(os.environ.get("LMVIZ_JOB_NICE", 19))  # the most a job can yield (its thread, and a fine-tune's worker process)
WAITING, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "waiting", "running", "done", "stopped", "failed", "cancelled"


class Job:
    """One piece of work: ``work(job)`` runs on a worker thread, asks ``job.should_stop()`` between its steps, and
    returns the result (kept when it was stopped: what it had done so far)."""

    def __init__(self, owner: str, work: Callable[["Job"], object], label: str, queue: "JobQueue"):
        self.id = uuid.uuid4().hex[:10]
        self.owner, self.work, self.label, self._queue = owner, work, label, queue
        self.state = WAITING
        self.result: object = None
        self.error = ""
        self.submitted, self.started, self.ended = time.monotonic(), None, None
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the job to stop at its next step (or leave the line, if it is waiting)."""
        self._stop.set()
        self._queue._drop_waiting(self)

    def should_stop(self) -> bool:
        return self._stop.is_set() or not self.wanted

    @property
    def wanted(self) -> bool:
        """Its session is still there to see the result (a Stop button stops a wanted job; a closed tab an unwanted one)."""
        return bool(self._queue.alive(self.owner))  # a plain bool: it crosses to a worker process (AppTest's runtime is a mock)

    @property
    def finished(self) -> bool:
        return self.state in (DONE, STOPPED, FAILED, CANCELLED)

    @property
    def place(self) -> int | None:
        """1 for the next job to start, 2 for the one after it…; None once it has started."""
        return self._queue.place(self)

    def release(self) -> None:
        """Let go of the result (the weights), so its memory returns."""
        self.result = None


class JobQueue:
    def __init__(self, slots: int = 1, max_waiting: int = 40, alive: Callable[[str], bool] | None = None,
                 poll_s: float = 2.0):
        self.slots, self.max_waiting, self.poll_s = slots, max_waiting, poll_s
        self.alive = alive or (lambda owner: True)
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: set[Job] = set()
        self._kept: dict[str, Job] = {}  # each owner's latest job, finished or not: its result lives until the owner goes
        self._workers: list[threading.Thread] = []

    # --- what a page calls -------------------------------------------------------------------------------------------

    def submit(self, owner: str, work: Callable[[Job], object], label: str = "") -> Job:
        """Queue ``work`` for ``owner``, stopping and letting go of the owner's previous job."""
        with self._cond:
            self._reap()
            if len(self._waiting) >= self.max_waiting:
                raise LmvizError(f"{len(self._waiting)} jobs are already waiting; try again when the line is shorter.")
            old = self._kept.get(owner)
            job = Job(owner, work, label, self)
            self._kept[owner] = job
            self._waiting.append(job)
            self._start_workers()
            self._cond.notify_all()
        if old is not None:
            old.stop()
            old.release()
        return job

    def place(self, job: Job) -> int | None:
        with self._cond:
            return next((i + 1 for i, j in enumerate(self._waiting) if j is job), None)

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"running": len(self._running), "waiting": len(self._waiting), "kept": len(self._kept)}

    def forget(self, owner: str) -> None:
        """The owner is done with its job (a new model or task on its page): stop it and let its result go."""
        with self._cond:
            job = self._kept.pop(owner, None)
        if job is not None:
            job.stop()
            job.release()

    def reap(self) -> None:
        with self._cond:
            self._reap()

    # --- inside ------------------------------------------------------------------------------------------------------

    def _drop_waiting(self, job: Job) -> None:
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                job.state, job.ended = CANCELLED, time.monotonic()

    def _reap(self) -> None:
        """Jobs of sessions that have gone: out of the line, stopped if running (the worker sees it), results let go."""
        for owner in [o for o in self._kept if not self.alive(o)]:
            job = self._kept.pop(owner)
            job._stop.set()
            if job in self._waiting:
                self._waiting.remove(job)
                job.state = CANCELLED
            job.release()

    def _start_workers(self) -> None:
        self._workers = [t for t in self._workers if t.is_alive()]
        while len(self._workers) < self.slots:
            t = threading.Thread(target=self._work, name=f"lmviz-job-{len(self._workers)}", daemon=True)
            self._workers.append(t)
            t.start()

    def _next(self) -> Job | None:
        with self._cond:
            while not self._waiting:
                self._reap()
                if not self._cond.wait(self.poll_s) and not self._waiting and not self._running and not self._kept:
                    return None  # idle: the thread ends, and a later submit starts another
            job = self._waiting.popleft()
            job.state, job.started = RUNNING, time.monotonic()
            self._running.add(job)
            return job

    def _work(self) -> None:
        _lower_priority()
        while (job := self._next()) is not None:
            try:
                result = job.work(job)
                job.state = STOPPED if job._stop.is_set() else DONE
                gone = not self.alive(job.owner) or self._kept.get(job.owner) is not job
                job.result = None if gone else result
            except LmvizError as err:
                job.state, job.error = FAILED, str(err)
            except Exception as err:  # a bug in the work must not take the worker (and every later job) with it
                job.state, job.error = FAILED, f"The job failed: {type(err).__name__}: {str(err)[:300]}"
            finally:
                job.ended = time.monotonic()
                with self._cond:
                    self._running.discard(job)
                    self._reap()


def _lower_priority() -> None:
    """This thread runs at nice ``NICE`` (Linux gives each thread its own), so the sessions' reruns get the cores first and a
    job takes what they leave."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the usual priority
        pass


def default_slots() -> int:
    """Jobs that run at once: one per two cores (a job's thread takes a core, and the other sessions' reruns need one)."""
    return max(1, (os.cpu_count() or 2) // 2)


_SHARED: list[JobQueue] = []
_SHARED_LOCK = threading.Lock()


def shared() -> JobQueue:
    """The server's one queue, shared by every browser session (created on first use)."""
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED.append(JobQueue(slots=default_slots(), alive=streamlit_alive))
        return _SHARED[0]


# --- Streamlit's sessions ---------------------------------------------------------------------------------------------

def streamlit_owner() -> str:
    """The browser session running this script (its tab)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def streamlit_alive(owner: str) -> bool:
    """Whether that tab is still connected; always True where there is no server (AppTest)."""
    from streamlit.runtime import Runtime

    return not Runtime.exists() or Runtime.instance().is_active_session(owner)
