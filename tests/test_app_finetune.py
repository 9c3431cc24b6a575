"""The Fine-tuning page in AppTest: each model fine-tunes a few steps and draws its curves and results; Stop keeps the
curves; bad settings and edited links get a message or fall back; settings changed while it trains wait for the next run."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def page(params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page("app_pages/finetune.py")
    at.run()
    assert not at.exception, at.exception
    return at


def wait(at: AppTest, condition, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition(at.session_state["ft_job"]):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the fine-tuning job did not get there in time")
    at.run()
    assert not at.exception, at.exception


def shown(at) -> str:
    return " ".join(str(e.value) for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.success])


def figures(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


@pytest.mark.parametrize("kind", ["bert", "gpt2", "t5"])
def test_each_model_fine_tunes_a_few_steps_and_draws_its_curves_and_results(kind):
    at = page({"model": kind, "n": "32", "task": "genre"})
    at.button(key="ft_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    wait(at, lambda job: job.finished)
    assert "Trained 2 steps" in shown(at)
    assert [s.value for s in at.subheader] == ["Training", "On the held-out plays", "Try your own text", "What changed inside",
                                              "Take it with you"]
    curves = figures(at)[0]
    names = {t.get("name", "") for t in curves["data"]}
    assert any(n.startswith("majority label") for n in names) and "fine-tuned, held-out" in names
    if kind == "gpt2":
        assert {"L2: classification loss", "L1: language-model loss", "L = L2 + 0.5·L1"} <= names
    losses = [t for t in curves["data"] if t["xaxis"] == "x"]
    assert losses and all(len(t["y"]) == 2 for t in losses)
    assert at.session_state["ft_job"].result.outcome.confusion.sum() == 300


def test_stop_mid_epoch_keeps_the_curves_and_a_new_start_replaces_the_run():
    at = page({"model": "bert", "n": "2048", "epochs": "3", "task": "verse"})
    at.button(key="ft_start").click().run()
    wait(at, lambda job: job.result is not None and job.result.step >= 2)
    at.number_input(key="w_lr").set_value(0.001).run()  # changing a setting while it trains
    assert not at.exception and "applies to the next run" in shown(at)
    assert at.session_state["ft_job"].result.spec.lr == 5e-4
    at.button(key="ft_stop").click().run()
    wait(at, lambda job: job.finished)
    run = at.session_state["ft_job"].result
    assert run.status == "stopped" and 2 <= run.step < run.total_steps and len(run.loss) == run.step
    assert "Stopped at step" in shown(at) and figures(at)
    first = at.session_state["ft_job"]
    at.number_input(key="w_n").set_value(32).run()
    at.button(key="ft_start").click().run()
    wait(at, lambda job: job.finished)
    assert at.session_state["ft_job"] is not first and first.result is None  # the old weights were let go
    assert "Trained 6 steps (3 epochs of 32 speeches)" in shown(at)


@pytest.mark.parametrize("params, message", [({"lr": "0"}, "changes nothing"), ({"lr": "1000"}, "far past"),
                                              ({"n": "3"}, "too few")])
def test_bad_settings_get_a_message_and_start_nothing(params, message):
    at = page({"model": "t5", **params})
    at.button(key="ft_start").click().run()
    assert not at.exception
    assert message in " ".join(e.value for e in at.error)
    assert "ft_job" not in at.session_state


def test_an_edited_link_falls_back_to_what_exists():
    at = page({"model": "<b>x</b>", "task": "<script>", "mode": "zz", "lam": "nan", "epochs": "-4", "seed": "x"})
    assert not at.exception and not at.error
    assert at.selectbox(key="w_task").value == "verse" and at.radio(key="w_mode").value == "full"
    assert at.number_input(key="w_epochs").value == 1


def test_typed_text_after_training_gets_probabilities_and_empty_text_a_message():
    at = page({"model": "bert", "n": "32", "task": "genre"})
    at.button(key="ft_start").click().run()
    wait(at, lambda job: job.finished)
    at.text_area(key="w_text").set_value("").run()
    assert not at.exception and "Type a speech" in " ".join(e.value for e in at.error)
    at.text_area(key="w_text").set_value("O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name").run()
    assert not at.exception and not at.error
    assert any("probability" in json.dumps(f["layout"].get("xaxis", {})) for f in figures(at))


def test_a_job_beyond_the_limit_waits_in_line_and_the_page_shows_its_place():
    import threading

    from lmviz.app import jobs

    queue, gate = jobs.shared(), threading.Event()
    others = [queue.submit(f"another tab {i}", lambda job: gate.wait(60)) for i in range(queue.slots)]
    try:
        deadline = time.time() + 10
        while not all(o.state == jobs.RUNNING for o in others) and time.time() < deadline:
            time.sleep(0.05)
        at = page({"model": "bert", "n": "32", "task": "genre"})
        at.button(key="ft_start").click().run()
        assert at.session_state["ft_job"].place == 1
        assert "Waiting in line: number 1" in shown(at)
    finally:
        gate.set()
    wait(at, lambda job: job.finished)
    assert "Trained 2 steps" in shown(at) and all(o.finished for o in others)
