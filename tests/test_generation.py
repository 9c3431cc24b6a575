"""Decoding one step at a time: every strategy does what its name says, on synthetic logits and the shipped models."""
import math

import numpy as np
import pytest
import torch

from lmviz.models import checkpoints
from lmviz.errors import LmvizError
from lmviz.app.export import csv_text
from lmviz.bench import step_timing
from lmviz.analysis.decoding import measure_step
from lmviz.analysis.generation import (MAX_STEPS, branch, clamp_step, format_forced, generate, parse_forced, step_table,
                              view_data)
from lmviz.analysis.strategies import MIN_TEMPERATURE, Strategy, pick, shape, step_rng

PROMPT = "ROMEO: But soft, what light through yonder window"
T5_INPUT = "To be or not to <extra_id_0>, that is the <extra_id_1>."


@pytest.fixture(scope="module")
def gpt2(models):
    return models["gpt2"]


@pytest.fixture(scope="module")
def t5(models):
    return models["t5"]


def logits_of(rng, n=50):
    return rng.normal(0, 2, n)


def recomputed_logprobs(loaded, ids):
    """log softmax of every position, from one uncached forward over ``ids``."""
    with torch.inference_mode():
        return torch.log_softmax(loaded.model(torch.tensor([ids])).logits[0].float(), -1)


def gpt2_ids(loaded, gen):
    tok = loaded.tokenizer
    return [tok.token_to_id("<|endoftext|>")] + tok.encode(PROMPT).ids + [s.chosen.id for s in gen.steps]


# --- the strategies on synthetic logits ------------------------------------------------------------

def test_greedy_takes_the_argmax():
    rng = np.random.default_rng(0)
    for _ in range(20):
        z = logits_of(rng)
        s = shape(z, Strategy("greedy"))
        assert pick(s, step_rng(0, 0))[0] == int(np.argmax(z))
        assert s.kept == 1 and s.final[np.argmax(z)] == 1.0


def test_top_k_never_picks_outside_the_k_best():
    rng = np.random.default_rng(1)
    for seed in range(200):
        z = logits_of(rng)
        k = 1 + seed % 7
        s = shape(z, Strategy("top_k", top_k=k, temperature=2.0))
        chosen, _ = pick(s, step_rng(seed, 0))
        assert chosen in set(np.argsort(-z)[:k].tolist())
        assert np.count_nonzero(s.final) == k and math.isclose(s.final.sum(), 1.0)


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    rng = np.random.default_rng(2)
    for p in (0.05, 0.3, 0.5, 0.9, 0.99, 1.0):
        z = logits_of(rng)
        s = shape(z, Strategy("top_p", top_p=p, temperature=1.0))
        mass = np.sort(s.tempered)[::-1].cumsum()
        assert mass[s.kept - 1] >= p - 1e-9 or s.kept == z.size
        assert s.kept == 1 or mass[s.kept - 2] < p
        for seed in range(30):
            assert s.final[pick(s, step_rng(seed, 3))[0]] > 0


def test_top_p_with_exact_half_keeps_both_tokens():
    s = shape(np.log([0.5, 0.3, 0.2]), Strategy("top_p", top_p=0.6))
    assert s.kept == 2 and np.allclose(s.final, [0.625, 0.375, 0])


def test_temperature_towards_zero_approaches_greedy():
    z = np.random.default_rng(3).normal(0, 1, 200)
    top = [shape(z, Strategy("temperature", temperature=t)).final[np.argmax(z)] for t in (2.0, 1.0, 0.3, 0.05, 0.01)]
    assert all(a < b for a, b in zip(top, top[1:]))
    assert top[-1] > 0.99


def test_temperature_above_one_flattens_the_distribution():
    z = np.random.default_rng(4).normal(0, 1, 100)
    entropy = lambda p: -(p * np.log(p)).sum()  # noqa: E731
    assert entropy(shape(z, Strategy("temperature", temperature=2.0)).final) > entropy(shape(z, Strategy("temperature")).final)


@pytest.mark.parametrize("name, given, field, expected", [
    ("temperature", dict(temperature=0), "temperature", MIN_TEMPERATURE),
    ("top_k", dict(temperature=-3), "temperature", MIN_TEMPERATURE),
    ("top_p", dict(temperature=float("nan")), "temperature", MIN_TEMPERATURE), ("top_p", dict(top_p=0), "top_p", 0.01),
    ("top_p", dict(top_p=1.5), "top_p", 1.0), ("top_p", dict(top_p=-0.2), "top_p", 0.01),
    ("top_k", dict(top_k=10 ** 6), "top_k", 8192), ("top_k", dict(top_k=0), "top_k", 1),
    ("beam", dict(beam_width=0), "beam_width", 1), ("beam", dict(beam_width=99), "beam_width", 8),
    ("beam", dict(length_penalty=9), "length_penalty", 1.0),
])
def test_out_of_range_settings_are_clamped_with_a_note(name, given, field, expected):
    s, notes = Strategy(name, **given).checked(8192)
    assert getattr(s, field) == expected and len(notes) == 1


def test_settings_a_strategy_does_not_use_are_clamped_without_a_note():
    s, notes = Strategy("greedy", temperature=0, top_k=0, top_p=3, beam_width=0).checked(8192)
    assert notes == [] and (s.temperature, s.top_k, s.top_p, s.beam_width) == (MIN_TEMPERATURE, 1, 1.0, 1)
    assert Strategy("beam", temperature=-1, top_p=0).checked(8192)[1] == []
    assert Strategy("top_k", top_p=0, beam_width=99).checked(8192)[1] == []


def test_settings_in_range_pass_without_notes():
    assert Strategy("top_k", temperature=0.7, top_k=40, top_p=0.5).checked(8192)[1] == []


def test_unknown_strategy_is_an_lmviz_error():
    with pytest.raises(LmvizError):
        Strategy("nucleus-ish").checked(10)


# --- GPT-2 ------------------------------------------------------------------------------------------

def test_greedy_run_equals_the_argmax_of_a_recompute(gpt2):
    gen = generate(gpt2, PROMPT, Strategy("greedy"), 8, measure=False)
    ids = gpt2_ids(gpt2, gen)
    logp = recomputed_logprobs(gpt2, ids)
    start = len(ids) - len(gen.steps) - 1
    assert [s.chosen.id for s in gen.steps] == [int(logp[start + t].argmax()) for t in range(len(gen.steps))]


def test_cached_and_uncached_generation_give_the_same_tokens(gpt2):
    for strategy in (Strategy("greedy"), Strategy("top_p", top_p=0.9, temperature=1.2)):
        a = generate(gpt2, PROMPT, strategy, 10, seed=7, measure=False)
        b = generate(gpt2, PROMPT, strategy, 10, seed=7, use_cache=False)
        assert [s.chosen.id for s in a.steps] == [s.chosen.id for s in b.steps]
        assert np.allclose(a.steps[-1].attention["causal"], b.steps[-1].attention["causal"], atol=1e-5)
        assert b.steps[-1].ms_cached is None and b.steps[-1].ms_recompute > 0


def test_a_seeded_run_is_reproducible(gpt2):
    s = Strategy("temperature", temperature=1.5)
    a, b = (generate(gpt2, PROMPT, s, 10, seed=42, measure=False) for _ in range(2))
    assert a.text == b.text and [x.draw for x in a.steps] == [x.draw for x in b.steps]
    others = {generate(gpt2, PROMPT, s, 10, seed=seed, measure=False).text for seed in range(4)}
    assert len(others) > 1


def test_top_k_run_never_picks_outside_the_k_best(gpt2):
    gen = generate(gpt2, PROMPT, Strategy("top_k", top_k=3, temperature=2.0), 10, seed=1, measure=False)
    assert all(s.chosen.rank <= 3 and s.kept == 3 for s in gen.steps)


def test_a_branch_keeps_the_steps_before_it(gpt2):
    s = Strategy("top_p", top_p=0.95)
    gen = generate(gpt2, PROMPT, s, 10, seed=3, measure=False)
    k = 4
    other = next(c for c in gen.steps[k].candidates if c.id != gen.steps[k].chosen.id)
    b = branch(gpt2, gen, PROMPT, k, other.id)
    assert [x.chosen.id for x in b.steps[:k]] == [x.chosen.id for x in gen.steps[:k]]
    assert b.steps[k].chosen.id == other.id and b.steps[k].forced and "You chose" in b.steps[k].reason
    assert b.forced == {k: other.id} and len(b.steps) == len(gen.steps)


def test_beam_width_one_is_greedy(gpt2):
    greedy = generate(gpt2, PROMPT, Strategy("greedy"), 8, measure=False)
    beam = generate(gpt2, PROMPT, Strategy("beam", beam_width=1), 8, measure=False)
    assert [s.chosen.id for s in beam.steps] == [s.chosen.id for s in greedy.steps]


def test_beam_scores_are_summed_log_probabilities_at_every_level(gpt2):
    ending = "New joy wait on you! Here our play has ending."  # a play's last line: one beam ends at once
    gen = generate(gpt2, ending, Strategy("beam", beam_width=3), 6, measure=False)
    assert any(b.finished for b in gen.beams[0]) and len(gen.beams) == 6  # it ended early; the others went on
    start = [gpt2.tokenizer.token_to_id("<|endoftext|>")] + gpt2.tokenizer.encode(ending).ids
    for t, level in enumerate(gen.beams):
        assert sum(not b.finished for b in level) == 3
        for beam in level:
            assert len(beam.ids) == t + 1
            logp = recomputed_logprobs(gpt2, start + beam.ids)
            summed = sum(float(logp[len(start) - 1 + i, tok]) for i, tok in enumerate(beam.ids))
            assert beam.score == pytest.approx(summed, abs=1e-3)


def test_beam_search_score_beats_greedy(gpt2):
    greedy = generate(gpt2, PROMPT, Strategy("greedy"), 6, measure=False)
    beam = generate(gpt2, PROMPT, Strategy("beam", beam_width=4, length_penalty=0.0), 6, measure=False)
    assert sum(s.logprob for s in beam.steps) >= sum(s.logprob for s in greedy.steps) - 1e-6


def test_each_step_records_what_the_page_draws(gpt2):
    gen = generate(gpt2, PROMPT, Strategy("top_k", top_k=5), 5, seed=0)
    for t, s in enumerate(gen.steps):
        rows = s.attention["causal"]
        assert rows.shape[:2] == (4, 4) and rows.shape[2] == s.position + 1 == len(gen.context(t))
        assert np.allclose(rows.sum(-1), 1, atol=1e-4)
        assert s.cache[0]["self"][2] == s.position + 1 and s.cache_positions() == s.position + 1
        assert s.ms_cached > 0 and s.ms_recompute is None and len(s.inputs) == 1 and len(s.inputs[0]) == s.position + 1
        assert t == 0 or s.inputs[0][-1] == gen.steps[t - 1].chosen.id
        assert s.candidates[0].rank == 1 and sum(c.final for c in s.candidates) == pytest.approx(1.0, abs=1e-6)
        assert s.query == gen.tokens[s.position]
    assert gen.stop_reason == "the step limit (5 steps)"
    for t in (0, 3):  # the page times the step it shows: cached forward and a recompute, best of 3 each
        s = measure_step(gen, t)
        assert s.ms_cached > 0 and s.ms_recompute > 0 and s.timed_repeats == 4
        assert measure_step(gen, t).ms_recompute == s.ms_recompute  # once per step
    assert gen.steps[1].ms_recompute is None
    full = generate(gpt2, PROMPT, Strategy("top_k", top_k=5), 5, seed=0, measure=True)
    assert all(s.ms_recompute > 0 and s.timed_repeats == 3 for s in full.steps)
    data = view_data(gen, 2, 1, None)
    assert len(data["attention"]["causal"]) == len(data["attention_keys"]["causal"])
    assert step_table(gen, 2)[0]["rank"] == 1


def test_empty_prompt_starts_from_endoftext_and_says_so(gpt2):
    gen = generate(gpt2, "   ", Strategy("greedy"), 3, measure=False)
    assert gen.prompt == ["<|endoftext|>"] and any("empty" in n for n in gen.notes)


def test_a_long_prompt_keeps_its_last_tokens_and_says_so(gpt2):
    words = " ".join(f"word{i}" for i in range(2000))
    gen = generate(gpt2, words, Strategy("greedy"), 10, measure=False)
    assert len(gen.prompt) + 10 <= gpt2.model.config.n_positions
    assert "word1999" in "".join(gen.prompt).replace("␣", " ")
    assert any("only the last" in n for n in gen.notes)


def test_steps_past_the_limit_are_clamped_and_stated(gpt2):
    from lmviz.analysis.generation import Decoding

    d = Decoding(gpt2, "Hi", Strategy("greedy"), max_steps=10 ** 6, measure=False)
    assert d.max_steps == MAX_STEPS and any(str(MAX_STEPS) in n for n in d.gen.notes)


def test_an_old_links_step_past_the_end_is_clamped(gpt2):
    gen = generate(gpt2, PROMPT, Strategy("greedy"), 3, measure=False)
    assert clamp_step(gen, 99)[0] == 2 and "past the end" in clamp_step(gen, 99)[1]
    assert clamp_step(gen, 1) == (1, None) and clamp_step(gen, -4)[0] == 0


def test_a_branch_choice_outside_the_vocabulary_is_dropped_and_stated(gpt2):
    gen = generate(gpt2, PROMPT, Strategy("greedy"), 3, forced={1: 10 ** 7, 2: 5}, measure=False)
    assert gen.forced == {2: 5} and gen.steps[2].chosen.id == 5 and any("ignored" in n for n in gen.notes)


def test_branch_choices_survive_a_link():
    assert parse_forced("4:812,7:93") == ({4: 812, 7: 93}, None)
    assert format_forced({7: 93, 4: 812}) == "4:812,7:93" and format_forced({}) is None
    forced, note = parse_forced("4:812,<script>,-1:3")
    assert forced == {4: 812} and "ignored" in note


def test_an_encoder_cannot_generate():
    with pytest.raises(LmvizError, match="decoder"):
        generate(checkpoints.load(checkpoints.shipped("bert")), "hi", Strategy("greedy"), 2)


def test_hostile_text_is_just_text(gpt2):
    for text in ("<script>alert(1)</script>", "👩‍👩‍👧 שלום **bold** $x$", "<|endoftext|> [MASK] </s>", "x" * 500):
        gen = generate(gpt2, text, Strategy("greedy"), 2, measure=False)
        assert len(gen.steps) == 2


def test_step_timing_measures_both_paths(gpt2):
    t = step_timing(gpt2, context=64, repeats=2)
    assert t["context"] == 64 and t["ms_cached"] > 0 and t["ms_recompute"] > 0
    with pytest.raises(LmvizError):
        step_timing(checkpoints.load(checkpoints.shipped("t5")))


# --- T5 ---------------------------------------------------------------------------------------------

def test_t5_decodes_with_cross_attention_over_the_input(t5):
    gen = generate(t5, T5_INPUT, Strategy("greedy"), 6)
    assert gen.prompt == ["<pad>"] and gen.source[-1] == "</s>"
    s = gen.steps[-1]
    assert s.attention["cross"].shape == (4, 4, len(gen.source))
    assert np.allclose(s.attention["cross"].sum(-1), 1, atol=1e-4)
    assert s.cache[0]["cross"][2] == len(gen.source) and s.cache[0]["self"][2] == len(gen.steps)


def test_t5_cached_uncached_and_beam_one_agree(t5):
    a = generate(t5, T5_INPUT, Strategy("greedy"), 8, measure=False)
    b = generate(t5, T5_INPUT, Strategy("greedy"), 8, use_cache=False)
    c = generate(t5, T5_INPUT, Strategy("beam", beam_width=1), 8, measure=False)
    assert [s.chosen.id for s in a.steps] == [s.chosen.id for s in b.steps] == [s.chosen.id for s in c.steps]


def test_t5_beam_search_draws_a_tree(t5):
    gen = generate(t5, T5_INPUT, Strategy("beam", beam_width=3), 5, measure=False)
    assert all(1 <= sum(not b.finished for b in level) <= 3 for level in gen.beams[:-1])
    assert all(b.parent >= 0 for level in gen.beams for b in level)
    assert gen.steps and gen.stop_reason
    s = measure_step(gen, len(gen.steps) - 1)  # the live beams' batched forward, timed
    assert s.ms_cached > 0 and s.ms_recompute > 0 and s.inputs and all(len(r) == s.position + 1 for r in s.inputs)


def test_t5_empty_input_is_an_lmviz_error(t5):
    with pytest.raises(LmvizError, match="empty"):
        generate(t5, "  ", Strategy("greedy"), 3)


# --- the figures ------------------------------------------------------------------------------------

def test_figures_of_a_run(gpt2, t5):
    import plotly.graph_objects as go

    from lmviz.viz.generation import (attention_row_figure, attention_steps_figure, beam_tree, cache_figure,
                                      candidates_figure, strategy_figure)

    for strategy in (Strategy("top_p", top_p=0.8, temperature=0.7), Strategy("top_k", top_k=4), Strategy("greedy")):
        gen = generate(gpt2, "<b>**x**</b>", strategy, 4, seed=2)
        s = gen.steps[2]
        bars = candidates_figure(s, strategy)
        assert len(bars.data) == 2
        assert any("◀ chosen" in y for y in bars.data[0].y)
        curve = strategy_figure(s, strategy)
        assert isinstance(curve, go.Figure) and any(t.name == "chosen" for t in curve.data)
        row = attention_row_figure(s, gen.context(2), "causal", 1, None)
        assert len(row.data[0].y) == len(gen.context(2))
        steps = attention_steps_figure(gen, 3, "causal", 0, 2)
        assert np.asarray(steps.data[0].z).shape == (4, len(gen.context(3)))
        cache = cache_figure(gen, 3)
        assert list(cache.data[0].y) == [x.cache_positions() for x in gen.steps]
    beam = generate(t5, T5_INPUT, Strategy("beam", beam_width=3), 4)
    tree = beam_tree(beam)
    assert sum(len(level) for level in beam.beams) == len(tree.data[2].x)
    labels = list(tree.data[2].text)
    assert not any("&lt;extra_id" in t or t.endswith("&") for t in labels), labels  # sentinels keep their number
    bars = candidates_figure(beam.steps[0], beam.strategy)
    top = max(max(c.prob, c.final) for c in beam.steps[0].candidates)
    assert bars.layout.xaxis.range[1] <= min(1.02, 1.2 * top + 0.01) + 1e-9  # small probabilities fill the chart
    assert attention_row_figure(beam.steps[0], beam.source, "cross", 0, 1).data[0].y.shape == (len(beam.source),)


def test_csv_export_of_a_step(gpt2):
    gen = generate(gpt2, PROMPT, Strategy("greedy"), 2, measure=False)
    text = csv_text(step_table(gen, 1))
    assert text.splitlines()[0] == "step,rank,token,id,prob,after_temperature,after_strategy,chosen"
    assert len(text.splitlines()) == len(gen.steps[1].candidates) + 1


@pytest.mark.parametrize("strategy", [Strategy("top_p", top_p=0.95, temperature=1.3), Strategy("top_k", top_k=500)])
def test_the_cut_off_is_drawn_where_the_strategy_cuts_even_past_200_tokens(gpt2, strategy):
    from lmviz.viz.generation import strategy_figure

    gen = generate(gpt2, PROMPT, strategy, 3, seed=0)
    step = next(s for s in gen.steps if s.kept > 200)
    fig = strategy_figure(step, strategy)
    cut = next(t for t in fig.data if t.name.startswith("cut-off"))
    assert list(cut.x) == [step.kept + 0.5] * 2
    cum = next(t for t in fig.data if t.name == "cumulative")
    assert cum.x[-1] == gpt2.model.config.vocab_size and cum.y[-1] == pytest.approx(1.0)  # the curve covers every token
    if strategy.name == "top_p":  # the cut sits where the cumulative curve first reaches p
        assert np.interp(step.kept + 0.5, cum.x, cum.y) >= strategy.top_p
        assert np.interp(step.kept - 1, cum.x, cum.y) < strategy.top_p


def test_beam_steps_show_the_continuations_that_stayed_in_the_beams(gpt2):
    from lmviz.viz.generation import candidates_figure, strategy_figure

    strategy = Strategy("beam", beam_width=3)
    gen = generate(gpt2, "ROMEO:\nBut soft, what light through yonder window breaks?", strategy, 12, measure=False)
    assert any(s.chosen.rank > 1 for s in gen.steps)  # the best beam took a runner-up somewhere
    for t, step in enumerate(gen.steps):
        kept = {c.id for c in step.candidates if c.kept}
        assert step.chosen.id in kept and kept <= {b.ids[-1] for b in gen.beams[t]} and len(kept) == step.kept
        bars = candidates_figure(step, strategy)
        chosen_row = next(i for i, y in enumerate(bars.data[1].y) if "◀ chosen" in y)
        assert bars.data[1].text[chosen_row] == "" and bars.data[1].x[chosen_row] == pytest.approx(step.chosen.prob)
        curve = strategy_figure(step, strategy)
        assert not any(tr.name.startswith("cut-off") for tr in curve.data)
        assert len(next(tr for tr in curve.data if tr.name == "kept among the best beams").x) == len(kept)


def test_json_export_of_a_beam_run_holds_the_tree_and_its_scores(t5, gpt2):
    import json

    gen = generate(t5, T5_INPUT, Strategy("beam", beam_width=3, length_penalty=0.5), 4, measure=False)
    data = json.loads(json.dumps(view_data(gen, 1, 0, None)))
    assert [[b["score"] for b in level] for level in data["beams"]] == [[b.score for b in level] for level in gen.beams]
    ends = data["beams"][len(gen.steps) - 1]
    assert [b["tokens"] for b in ends if b["on_best"]] == [[s.chosen.token for s in gen.steps]]
    last = data["beams"][-1][0]
    assert last["ranked"] == pytest.approx(last["score"] / len(last["ids"]) ** 0.5)
    assert "beams" not in view_data(generate(gpt2, PROMPT, Strategy("greedy"), 2, measure=False), 1, 0, None)
