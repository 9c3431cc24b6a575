"""The Generation and Compare pages as a user drives them (AppTest, real models, no browser)."""
import pytest
from streamlit.testing.v1 import AppTest

from lmviz.analysis.strategies import MIN_TEMPERATURE

APP = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "app.py")


def open_page(page: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.switch_page(f"app_pages/{page}.py")
    return at.run()


def texts(at) -> str:
    return " ".join(str(e.value) for kind in (at.info, at.success, at.error, at.warning, at.caption, at.markdown, at.subheader)
                    for e in kind)


def ok(at):
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_generation_next_token_and_scrub_back():
    at = open_page("generation", n=3)
    ok(at)
    assert at.query_params["n"] == "3" and at.query_params["step"] == "2"
    at.button[0].click().run()  # Next token
    ok(at)
    assert at.query_params["n"] == "4" and at.slider(key="w_step").value == 3
    at.slider(key="w_step").set_value(1).run()
    ok(at)
    assert at.query_params["step"] == "1" and at.subheader[0].value.startswith("Step 1")
    assert len(at.get("plotly_chart")) >= 4 and len(at.get("download_button")) == 2


@pytest.mark.parametrize("strategy, extra", [("greedy", {}), ("temperature", {"t": 0.7}), ("top_k", {"k": 5}),
                                             ("top_p", {"p": 0.8}), ("beam", {"beam": 2})])
def test_every_strategy_on_both_models(strategy, extra):
    for model in ("gpt2", "t5"):
        at = open_page("generation", model=model, strategy=strategy, n=4, seed=3, **extra)
        ok(at)
        assert at.selectbox(key="w_strategy").value == strategy
        assert at.query_params["strategy"] == strategy


def test_a_link_regenerates_the_same_text():
    first = open_page("generation", strategy="top_p", p=0.9, seed=11, n=6)
    again = open_page("generation", strategy="top_p", p=0.9, seed=11, n=6)
    ok(first)
    assert first.get("code")[0].value == again.get("code")[0].value


def test_branch_keeps_earlier_steps_and_goes_into_the_link():
    at = open_page("generation", strategy="temperature", t=1.0, seed=5, n=6, step=3)
    ok(at)
    before = [s.chosen.id for s in at.session_state["gen_run"].gen.steps]
    choice = at.selectbox(key="w_branch_token")
    choice.select_index(1).run()
    next(b for b in at.button if b.label.startswith("Branch at step 3")).click().run()
    ok(at)
    assert at.query_params["branch"].startswith("3:") and at.query_params["step"] == "3"
    after = [s.chosen.id for s in at.session_state["gen_run"].gen.steps]
    assert after[:3] == before[:3] and after[3] != before[3] and len(after) == 6
    assert "You chose" in texts(at)


@pytest.mark.parametrize("params, phrases", [
    (dict(strategy="top_p", t=-1, p=1.7, step=999, n=3, limit=500, seed=-4),
     ("Temperature -1.0 is not above 0", "top-p must lie in", "step limit must be", "Seed -4", "past the end")),
    (dict(strategy="top_k", k=10 ** 6, n=2), ("larger than the vocabulary",)),
    (dict(strategy="beam", beam=0, lp=99, n=2), ("Beam width 0", "Length penalty 99")),
    (dict(n=40, limit=20), ("40 steps were asked for, but the step limit is 20",)),
])
def test_bad_settings_are_clamped_and_stated(params, phrases):
    at = open_page("generation", **params)
    ok(at)
    shown = texts(at).replace("\\", "")
    for phrase in phrases:
        assert phrase in shown, phrase


def test_settings_the_strategy_does_not_use_raise_no_note():
    at = open_page("generation", strategy="greedy", t=0, k=0, p=7, beam=0, n=2)
    ok(at)
    notes = " ".join(e.value for e in at.info)
    assert "Greedy takes" in notes and not any(w in notes for w in ("Temperature", "top-k =", "top-p must", "Beam width"))
    at.selectbox(key="w_strategy").set_value("temperature").run()  # the clamped value is what the widget then holds
    ok(at)
    assert at.number_input(key="w_t").value == MIN_TEMPERATURE


def test_beam_search_says_branching_is_unavailable_and_drops_a_links_branch():
    at = open_page("generation", strategy="beam", beam=3, n=4, branch="2:5")
    ok(at)
    assert "Branching works with greedy and sampling" in texts(at) and "branch choice 2:5 is not used" in texts(at)
    assert "branch" not in at.query_params


def test_empty_prompt_starts_from_endoftext_and_t5_empty_input_says_so():
    at = open_page("generation", prompt="", n=2)
    ok(at)
    assert "starts from <|endoftext|>" in texts(at).replace("\\", "")
    at = open_page("generation", model="t5", input="   ", n=2)
    assert not at.exception and "empty" in at.error[0].value


def test_long_and_hostile_prompts():
    at = open_page("generation", prompt="word " * 1500, n=2)
    ok(at)
    assert "only the last" in texts(at)
    at = open_page("generation", n=2)
    at.text_area(key="w_prompt").set_value("ROMEO: " + "word " * 5000 + "THE END").run()  # past 20,000 characters
    ok(at)
    notes = [e.value for e in at.info]
    assert any("only the last 20,000" in n for n in notes) and any("only the last 235 prompt tokens" in n for n in notes)
    assert "THE END" in at.get("code")[0].value and not any("first" in n for n in notes)  # the end is what continues
    for text in ("<script>alert(1)</script>", "**bold** $x$ 👩‍👩‍👧 שלום [MASK] </s>"):
        at = open_page("generation", prompt=text, n=2)
        ok(at)
        assert text in at.get("code")[0].value


def test_start_over_then_first_step():
    at = open_page("generation", n=2)
    next(b for b in at.button if b.label.startswith("Start over")).click().run()
    ok(at)
    assert "No token yet" in texts(at) and at.query_params["n"] == "0"
    at.button[0].click().run()
    ok(at)
    assert at.query_params["n"] == "1"


def test_compare_shows_five_panels_and_the_stats():
    at = open_page("compare")
    ok(at)
    assert len(at.get("plotly_chart")) == 6 and len(at.get("download_button")) == 2
    at.selectbox(key="w_layer").set_value(2).run()
    at.selectbox(key="w_head").set_value(1).run()
    ok(at)
    assert at.query_params["layer"] == "2" and at.query_params["head"] == "1"


def test_compare_bad_input():
    at = open_page("compare", text="   ")
    assert not at.exception and "empty" in at.error[0].value
    at = open_page("compare", text="<img src=x onerror=alert(1)> **b** $x$", layer=99, head=42)
    ok(at)
    assert at.selectbox(key="w_layer").value == 3 and at.selectbox(key="w_head").value == "mean"
