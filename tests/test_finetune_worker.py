"""Fine-tuning in a worker process (lmviz.app.worker): the page's run is the same run as in the server's own thread,
it grows while the worker trains, a Stop or a closed tab stops it, a worker that dies gives a message, and a worker
serves the next job."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
import torch

from lmviz.analysis.finetune import Spec, finetune, predict
from lmviz.app import worker
from lmviz.app.jobs import DONE, FAILED, STOPPED, JobQueue
from lmviz.models import checkpoints
from test_finetune_jobs import wait_for

SPEC = Spec(task="verse", examples=320, epochs=1, lr=5e-4, max_steps=12, evals=1)


@pytest.fixture(scope="module")
def bert():
    torch.set_num_threads(1)
    return checkpoints.load(checkpoints.shipped("bert"), "cpu")


def in_worker(queue, owner, loaded, spec):
    return queue.submit(owner, lambda job: worker.finetune(job, loaded, spec))


def test_the_worker_trains_the_same_run_as_the_servers_own_thread(bert):
    here = finetune(bert, SPEC)
    job = in_worker(JobQueue(slots=1, poll_s=0.05), "a", bert, SPEC)
    assert wait_for(timeout=120, condition=lambda: job.finished)
    assert job.state == DONE, job.error
    run = job.result
    assert run.step == here.step == 12 and run.status == "done"
    np.testing.assert_allclose(run.loss, here.loss, rtol=1e-5)
    assert run.outcome.accuracy == here.outcome.accuracy and run.evals == here.evals
    texts = [e.text for e in run.held[:20]]
    np.testing.assert_allclose(predict(run.classifier, texts), predict(here.classifier, texts), atol=1e-5)  # the weights came back
    assert run.changes is not None and run.changes["delta"].shape == (4, 4)
    assert run.cpu_seconds > 0 and run.baselines.majority_accuracy == here.baselines.majority_accuracy


def test_a_stop_ends_the_run_in_the_worker_and_keeps_its_curves_and_the_next_job_reuses_the_worker(bert):
    q = JobQueue(slots=1, poll_s=0.05)
    long = Spec(task="verse", examples=4096, epochs=1, lr=5e-4, evals=0)
    job = in_worker(q, "a", bert, long)
    assert wait_for(timeout=120, condition=lambda: job.result is not None and job.result.step >= 3)  # the page sees it grow
    job.stop()
    assert wait_for(timeout=120, condition=lambda: job.finished)
    run = job.result
    assert job.state == STOPPED and run.status == "stopped" and 3 <= run.step < run.total_steps
    assert len(run.loss) == run.step and run.outcome is not None and run.changes is not None  # a Stop still compares heads
    idle = list(worker._IDLE)
    assert idle and idle[-1].alive
    again = in_worker(q, "a", bert, SPEC)
    assert wait_for(timeout=120, condition=lambda: again.finished) and again.state == DONE
    assert worker._IDLE[-1] is idle[-1]  # the same process served it, with the model it had loaded


def test_a_closed_tab_stops_its_job_without_comparing_heads(bert):
    open_tabs = {"a"}
    q = JobQueue(slots=1, poll_s=0.05, alive=lambda owner: owner in open_tabs)
    job = in_worker(q, "a", bert, Spec(task="verse", examples=4096, epochs=1, lr=5e-4, evals=0))
    assert wait_for(timeout=120, condition=lambda: job.result is not None and job.result.step >= 2)
    open_tabs.clear()
    t0 = time.time()
    assert wait_for(timeout=120, condition=lambda: job.finished)
    assert time.time() - t0 < 20  # at its next step, not after its 256 (a minute and more)
    assert job.result is None  # let go: nobody is there to see it


def test_a_worker_that_dies_mid_job_gives_a_message_and_the_next_job_gets_a_new_one(bert):
    q = JobQueue(slots=1, poll_s=0.05)
    job = in_worker(q, "a", bert, Spec(task="verse", examples=4096, epochs=1, lr=5e-4, evals=0))
    assert wait_for(timeout=120, condition=lambda: job.result is not None and job.result.step >= 2)
    pids = [p.pid for p in multiprocessing.active_children() if p.name == "lmviz-finetune"]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    assert wait_for(timeout=120, condition=lambda: job.finished)
    assert job.state == FAILED and "process" in job.error and "Traceback" not in job.error
    again = in_worker(q, "a", bert, SPEC)
    assert wait_for(timeout=120, condition=lambda: again.finished) and again.state == DONE, again.error
