"""``python -m lmviz bench pages``: how fast each page's own work is, measured on the shipped models.

The library work a page does after a text edit of 64 words (new text, warm models: the
calls the page makes through ``st.cache_data``), goal < 300 ms, and after a layer/head switch (a
heatmap and the arithmetic rebuilt from a cached record), goal < 200 ms. Both time the functions the pages
call (``lmviz.app.views``), so the benchmark cannot drift from the pages. A page whose library cannot be imported is
reported as skipped; any other error in a page's work is a bug and is raised. Each case runs once as a warm-up, then ``repeats`` times on a new text each time.
"""
from __future__ import annotations

import time
from typing import Callable

from lmviz.analysis import masks
from lmviz.analysis.compare import compare, view_data
from lmviz.analysis.generation import LiveRun
from lmviz.analysis.strategies import Strategy
from lmviz.app import views
from lmviz.bench_layers import bench_layers
from lmviz.bench_rows import PageRow, edited_text
from lmviz.models import checkpoints
from lmviz.models.device import pick_device
from lmviz.models.kinds import KINDS, device_of, shipped_kinds
from lmviz.viz import tokens as vt
from lmviz.viz.compare import stats_figure

PAGE_GOAL_MS = 300
SWITCH_GOAL_MS = 200
def _tokenization(models, text):
    exp = views.explanations({k: m.tokenizer for k, m in models.items()}, text, None)
    return vt.aligned_rows(text, exp, None), vt.token_counts(exp)


def _attention(loaded, text):
    """A new text on the Attention page: the run, and the tab that opens first (one head, the middle query's row)."""
    run = views.attention(loaded, text)
    kind = run.record.kinds[0]
    return run, views.one_head(run, kind, 0, 0, len(run.axes(kind)[0]) // 2)


def _head_figures(run, kind, layer, head, arithmetic: bool = True):
    """What a layer/head switch rebuilds from a cached run: the heatmap (and the head's arithmetic)."""
    query = len(run.axes(kind)[0]) - 1
    figs = [views.one_head(run, kind, layer, head, query)]
    return figs + list(views.arithmetic(run, kind, layer, head, query)[1]) if arithmetic else figs


def _masking(loaded, text):
    objective = next(o for o, model in views.OBJECTIVE_MODELS.items() if loaded.kind in model and o in views.TEXT_OBJECTIVES)
    return views.TEXT_OBJECTIVES[objective](loaded, text)


def _masks(loaded, text, twin=None):
    run = views.attention(loaded, text)
    figs = views.mask_figures(run)
    if KINDS[loaded.kind].experiment == "no mask":  # BERT's experiment (one forward per word) runs only when the page's toggle asks for it
        figs += views.experiment_figures(views.experiment(loaded, text), 0, 0)
    if twin is not None:  # the page runs the shipped GPT-2's twin (trained without the mask) under it
        t = masks.gpt2_without_mask(twin, text)
        figs += views.experiment_figures(t, *t.answer_head())
    return figs


def _generation(loaded, text):
    live = LiveRun()
    gen = live.advance(loaded, loaded.kind, text, Strategy(), 0, 20, {}, 20)
    return views.generation_step(live, len(gen.steps) - 1, gen.strategy)


def _compare(models, text):
    c = compare(models, text)
    return stats_figure(c.stats(None)), view_data(c, 0, None)


def page_cases(models: dict) -> dict[str, Callable[[str], object]]:
    """``{page (model): work(text)}``: the functions each page calls on a new text (``lmviz.app.views``)."""
    cases: dict[str, Callable[[str], object]] = {f"tokenization (explain: {', '.join(models)})": lambda text: _tokenization(models, text)}
    for name, loaded in models.items():
        kind = KINDS[loaded.kind]
        cases[f"attention ({name})"] = lambda text, m=loaded: _attention(m, text)
        cases[f"masking ({name})"] = lambda text, m=loaded: _masking(m, text)
        twin = masks.load_twin(device_of(loaded.model)) if name == masks.TWIN_OF else None
        cases[f"masks ({name})"] = lambda text, m=loaded, t=twin: _masks(m, text, t)
        if kind.writes:
            cases[f"generation ({name}, 20 greedy steps)"] = lambda text, m=loaded: _generation(m, text)
    cases[f"compare ({', '.join(models)})"] = lambda text: _compare(models, text)
    return cases


def bench_pages(models: dict | None = None, repeats: int = 5, words: int = 64) -> list[PageRow]:
    """Median time of each page's work on a new text (warm models), then of a layer/head switch."""
    if models is None:
        models = {k: checkpoints.load(checkpoints.shipped(k), pick_device()) for k in shipped_kinds()}
    rows: list[PageRow] = []
    for page, work in page_cases(models).items():
        try:
            work(edited_text(words, 0))  # warm-up: imports, first plotly figure
        except ImportError as err:  # a page whose library is not there: any other error is a bug, and is raised
            rows.append(PageRow(page, [], PAGE_GOAL_MS, f"skipped: {type(err).__name__}: {err}"[:120]))
            continue
        times = []
        for r in range(max(1, repeats)):
            text = edited_text(words, r + 1)
            t = time.perf_counter()
            work(text)
            times.append(time.perf_counter() - t)
        rows.append(PageRow(f"{page}: {words}-word text edit", times, PAGE_GOAL_MS))
    for kind, loaded in models.items():
        run = views.attention(loaded, edited_text(words, 0))
        rec = run.record
        att = rec.kinds[-1]
        picks = [(layer, head) for layer in range(rec.n_layers(att)) for head in range(rec.n_heads(att))]
        for what, arithmetic in (("heatmap", False), ("heatmap + arithmetic tab", True)):
            _head_figures(run, att, 0, 0, arithmetic)
            times = []
            for r in range(max(1, repeats)):
                layer, head = picks[(r + 1) % len(picks)]
                t = time.perf_counter()
                _head_figures(run, att, layer, head, arithmetic)
                times.append(time.perf_counter() - t)
            rows.append(PageRow(f"attention ({kind}, {att}): layer/head switch, {what}", times, SWITCH_GOAL_MS))
    return rows + bench_layers(models, repeats, words)


def pages_markdown(rows: list[PageRow]) -> str:
    lines = ["| page work | median ms | min ms | goal | met |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        if r.skipped:
            lines.append(f"| {r.page} | — | — | < {r.goal_ms:.0f} ms | {r.skipped} |")
        else:
            lines.append(f"| {r.page} | {r.median_ms:.0f} | {min(r.times) * 1e3:.0f} | < {r.goal_ms:.0f} ms | {'yes' if r.met else 'NO'} |")
    return "\n".join(lines)
