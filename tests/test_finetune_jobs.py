"""The shared queue that fine-tuning jobs wait in: a bounded number run, the rest see their place, a closed tab stops its
job, and a finished session's results are let go."""
from __future__ import annotations

import threading
import time

import pytest

from lmviz.app.jobs import CANCELLED, DONE, FAILED, STOPPED, JobQueue
from lmviz.errors import LmvizError


def wait_for(condition, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def stepper(steps: int, gate: threading.Event | None = None, record: list | None = None):
    """Work of ``steps`` steps that keeps what it did, and stops when asked."""
    def work(job):
        done = []
        for i in range(steps):
            if gate is not None:
                gate.wait(5)
            if job.should_stop():
                break
            done.append(i)
            if record is not None:
                record.append(i)
            time.sleep(0.01)
        return done
    return work


def test_jobs_beyond_the_limit_wait_in_line_and_know_their_place():
    q = JobQueue(slots=1, poll_s=0.05)
    gate = threading.Event()
    first = q.submit("a", stepper(3, gate))
    assert wait_for(lambda: first.state == "running")
    second, third = q.submit("b", stepper(1)), q.submit("c", stepper(1))
    assert (first.place, second.place, third.place) == (None, 1, 2)
    assert q.counts()["running"] == 1
    gate.set()
    assert wait_for(lambda: third.state == DONE)
    assert first.result == [0, 1, 2] and second.result == [0] and third.place is None


def test_a_stopped_job_keeps_what_it_did():
    q = JobQueue(slots=1, poll_s=0.05)
    seen = []
    job = q.submit("a", stepper(10_000, record=seen))
    assert wait_for(lambda: len(seen) >= 3)
    job.stop()
    assert wait_for(lambda: job.finished)
    assert job.state == STOPPED and 3 <= len(job.result) < 10_000


def test_a_closed_tab_stops_its_running_job_drops_its_waiting_one_and_lets_results_go():
    open_tabs = {"a", "b", "c"}
    q = JobQueue(slots=1, alive=lambda owner: owner in open_tabs, poll_s=0.05)
    seen = []
    running = q.submit("a", stepper(10_000, record=seen))
    waiting = q.submit("b", stepper(1))
    done_for_c = q.submit("c", stepper(1))
    assert wait_for(lambda: len(seen) >= 2)
    open_tabs -= {"a", "b"}  # two tabs close
    assert wait_for(lambda: running.finished and waiting.finished)
    assert waiting.state == CANCELLED and running.result is None  # stopped, and its weights not kept for nobody
    assert wait_for(lambda: done_for_c.state == DONE) and done_for_c.result == [0]
    open_tabs.clear()
    assert wait_for(lambda: q.counts()["kept"] == 0)
    assert done_for_c.result is None


def test_a_new_job_replaces_the_sessions_previous_one():
    q = JobQueue(slots=1, poll_s=0.05)
    seen = []
    old = q.submit("a", stepper(10_000, record=seen))
    assert wait_for(lambda: len(seen) >= 1)
    new = q.submit("a", stepper(1))
    assert wait_for(lambda: new.state == DONE)
    assert old.state == STOPPED and old.result is None and q.counts()["kept"] == 1


def test_a_full_line_and_a_failing_job_get_a_message_and_the_queue_keeps_working():
    q = JobQueue(slots=1, max_waiting=1, poll_s=0.05)
    gate = threading.Event()
    q.submit("a", stepper(1, gate))
    assert wait_for(lambda: q.counts()["running"] == 1)
    q.submit("b", stepper(1))
    with pytest.raises(LmvizError, match="waiting"):
        q.submit("c", stepper(1))
    gate.set()
    assert wait_for(lambda: q.counts()["waiting"] == 0 and q.counts()["running"] == 0)

    def broken(job):
        raise LmvizError("too few examples")

    bad = q.submit("d", broken)
    assert wait_for(lambda: bad.finished) and bad.state == FAILED and "too few" in bad.error
    after = q.submit("e", stepper(1))
    assert wait_for(lambda: after.state == DONE)
