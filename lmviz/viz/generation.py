"""Figures of one decoding run: the candidates, what the strategy does to them, attention rows, the KV cache, beams."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.analysis.decoding import Generation, Step
from lmviz.analysis.strategies import STRATEGY_NAMES, Strategy
from lmviz.viz.attention import attention_heatmap
from lmviz.viz.masking import SENTINEL
from lmviz.viz.style import PALETTE, SEQUENTIAL, base_layout, escape, layout, ticks

MODEL_C, AFTER_C, CHOSEN_C, CUT_C = PALETTE[4], PALETTE[0], PALETTE[5], "#BBBBBB"


def _short(token: str) -> str:
    """A T5 sentinel as ⟨N⟩ (as the Masking page shows it), so a beam-tree label keeps its number."""
    m = SENTINEL.match(token)
    return f"⟨{m.group(1)}⟩" if m else token


def candidates_figure(step: Step, strategy: Strategy) -> go.Figure:
    """The most likely next tokens: the model's probability beside what the strategy draws from; the chosen one outlined."""
    cands = step.candidates
    y = [f"{c.rank}. {escape(c.token)}" + ("  ◀ chosen" if c.id == step.chosen.id else "") for c in cands]
    beam = strategy.name == "beam"
    after = "kept among the best beams" if beam else "after " + STRATEGY_NAMES[strategy.name]
    dropped = "not kept" if beam else "cut"
    data = [
        dict(type="bar", y=y, x=[c.prob for c in cands], orientation="h", name="the model's probability", marker_color=MODEL_C,
             hovertemplate="%{y}<br>model p = %{x:.4f}<extra></extra>"),
        # a cut candidate's bar has length 0, so it says "cut" in grey instead
        dict(type="bar", y=y, x=[c.final for c in cands], orientation="h", name=after,
             marker_color=[AFTER_C if c.kept else CUT_C for c in cands], text=["" if c.kept else dropped for c in cands],
             textposition="outside", textfont=dict(color="#777777", size=14), cliponaxis=False,
             hovertemplate=f"%{{y}}<br>{'kept in a beam, model p' if beam else 'after the strategy p'} = %{{x:.4f}}<extra></extra>"),
    ]
    # the chosen row outlined as one frame (an outline on the bars would also draw on the legend's swatches)
    shapes = [dict(type="rect", x0=0, x1=min(1.02, max(c.prob, c.final) + 0.02), y0=i - 0.48, y1=i + 0.48,
                   line=dict(color=CHOSEN_C, width=3)) for i, c in enumerate(cands) if c.id == step.chosen.id]
    top = max((max(c.prob, c.final) for c in cands), default=1.0)
    return go.Figure(data, layout(f"Step {step.index}: after «{step.query}», the next token", 90 + 34 * len(cands) + 80,
                                  shapes=shapes, barmode="group", legend=dict(orientation="h", y=-0.12), bargap=0.25,
                                  yaxis=dict(autorange="reversed", title=None),
                                  # small probabilities stay visible
                                  xaxis=dict(title="probability", range=[0, min(1.02, 1.2 * top + 0.01)])))


def strategy_figure(step: Step, strategy: Strategy) -> go.Figure:
    """Probabilities sorted from most to least likely over the whole vocabulary (log rank): the model's, the reshaped
    ones, the cumulative curve, and where greedy, top-k or top-p cut the tail (at ``kept + 0.5``); for beam search,
    the continuations of this beam that stayed among the best beams."""
    rank = np.array(step.curve_ranks)
    n = int(rank[-1])
    raw, temp = np.array(step.curve_raw), np.array(step.curve_tempered)
    data = [dict(type="scatter", x=rank, y=raw, name="the model (T = 1)", line=dict(color=MODEL_C, width=3),
                 hovertemplate="rank %{x}: p = %{y:.4f}<extra></extra>")]
    if strategy.name in ("temperature", "top_k", "top_p") and strategy.temperature != 1:
        data.append(dict(type="scatter", x=rank, y=temp, name=f"reshaped, T = {strategy.temperature:g}",
                         line=dict(color=AFTER_C, width=3, dash="dash"), hovertemplate="rank %{x}: p = %{y:.4f}<extra></extra>"))
    cumulative = dict(xaxis="x", yaxis="y2")  # on the right-hand axis
    data.append(dict(type="scatter", x=rank, y=step.curve_cumulative, name="cumulative", line=dict(color=PALETTE[2], width=2, dash="dot"),
                     hovertemplate="top %{x} tokens hold %{y:.3f}<extra></extra>", **cumulative))
    if strategy.name in ("top_k", "top_p", "greedy"):
        cut = step.kept + 0.5
        label = {"top_k": f"top-k: {step.kept} kept", "top_p": f"top-p: {step.kept} kept", "greedy": "greedy: rank 1 only"}
        top = float(max(raw.max(), temp.max()))
        data.append(dict(type="scatter", x=[cut, cut], y=[0, top], mode="lines", name=f"cut-off ({label[strategy.name]})",
                         line=dict(color=CHOSEN_C, width=2), hoverinfo="skip"))
    if strategy.name == "beam":
        kept = [c for c in step.candidates if c.kept]
        data.append(dict(type="scatter", x=[c.rank for c in kept], y=[c.prob for c in kept], mode="markers",
                         name="kept among the best beams", marker=dict(color=AFTER_C, size=10),
                         customdata=[escape(c.token) for c in kept],
                         hovertemplate="%{customdata} (rank %{x}) stays in a beam<extra></extra>"))
    if strategy.name == "top_p":
        data.append(dict(type="scatter", x=[1, n], y=[strategy.top_p] * 2, mode="lines", name=f"p = {strategy.top_p:g}",
                         line=dict(color=PALETTE[2], width=1.5, dash="dash"), hoverinfo="skip", **cumulative))
    data.append(dict(type="scatter", x=[step.chosen.rank], y=[step.chosen.prob], mode="markers", name="chosen",
                     marker=dict(color=CHOSEN_C, size=14, symbol="star"),
                     hovertemplate=f"chosen: {escape(step.chosen.token)} (rank %{{x}})<extra></extra>"))
    decades = [10 ** e for e in range(len(str(n)))]  # 1, 10, 100, … up to the vocabulary: no unlabeled 2s and 5s
    return go.Figure(data, layout(
        "What the strategy does to the distribution", 480, legend=dict(orientation="h", y=-0.3, yanchor="top"),
        xaxis=dict(anchor="y", domain=[0.0, 0.94], type="log", title="rank (1 = most likely), log scale", tickvals=decades,
                   ticktext=[f"{d:,}" for d in decades]),
        yaxis=dict(anchor="x", domain=[0.0, 1.0], title="probability", rangemode="tozero"),
        yaxis2=dict(anchor="x", overlaying="y", side="right", title="cumulative", range=[0, 1.05],
                    tickvals=[0, 0.25, 0.5, 0.75, 1], showgrid=False)))


def _row(step: Step, kind: str, layer: int, head: int | None) -> np.ndarray:
    rows = step.attention[kind][layer]
    return rows.mean(0) if head is None else rows[head]


def attention_row_figure(step: Step, keys: list[str], kind: str, layer: int, head: int | None) -> go.Figure:
    """The query's attention row over ``keys`` as bars (the new token's view of its context, or of the input)."""
    w = _row(step, kind, layer, head)
    x = list(range(len(keys)))
    hover = [f"{i}: {escape(k)}" for i, k in enumerate(keys)]
    xi, xt = ticks(keys)
    who = "mean of the heads" if head is None else f"head {head}"
    what = "cross-attention over the input" if kind == "cross" else "attention over the context"
    return go.Figure(
        [dict(type="bar", x=x, y=w, customdata=hover, marker_color=AFTER_C if kind == "causal" else PALETTE[2],
              hovertemplate="%{customdata}<br>weight %{y:.3f}<extra></extra>")],
        layout(f"«{step.query}» → {what} (layer {layer}, {who})", 360,
               xaxis=dict(tickvals=xi, ticktext=xt, tickangle=-60, title="input token" if kind == "cross" else "context token"),
               yaxis=dict(title="attention weight", rangemode="tozero")))


def attention_steps_figure(gen: Generation, upto: int, kind: str, layer: int, head: int | None) -> go.Figure:
    """Each step's query row stacked (rows: steps 0…``upto``): the decoder's attention as it wrote."""
    steps = gen.steps[: upto + 1]
    keys = gen.source if kind == "cross" else gen.context(upto)
    z = np.zeros((len(steps), len(keys)))
    for i, s in enumerate(steps):
        r = _row(s, kind, layer, head)
        z[i, : len(r)] = r
    queries = [f"step {s.index}: {s.query}" for s in steps]
    who = "mean of the heads" if head is None else f"head {head}"
    title = f"{'Cross-attention' if kind == 'cross' else 'Attention'} of every step so far (layer {layer}, {who})"
    return attention_heatmap(z, queries, keys, title=title, height=max(320, min(800, 30 * len(steps) + 220)))


def cache_figure(gen: Generation, upto: int) -> go.Figure:
    """Left: the KV cache's size after each step; right: each step's time with the cache beside a full recompute."""
    steps = gen.steps[: upto + 1]
    x = [s.index for s in steps]
    data = [dict(type="bar", x=x, y=[s.cache_positions() for s in steps], name="cached positions", marker_color=MODEL_C,
                 customdata=[_shape_text(s) for s in steps], xaxis="x", yaxis="y",
                 hovertemplate="step %{x}: %{y} positions<br>%{customdata}<extra></extra>")]
    for key, name, colour in (("ms_cached", "with the KV cache", AFTER_C), ("ms_recompute", "recompute everything", CHOSEN_C)):
        y = [getattr(s, key) for s in steps]
        if any(v is not None for v in y):
            data.append(dict(type="scatter", x=x, y=y, name=name, mode="lines+markers", line=dict(color=colour, width=3),
                             xaxis="x2", yaxis="y2", hovertemplate=f"{name}<br>step %{{x}}: %{{y:.1f}} ms<extra></extra>"))
    titles = [dict(text=t, x=x0, xref="paper", y=1.0, yref="paper", xanchor="center", yanchor="bottom", showarrow=False,
                   font=dict(size=16)) for t, x0 in (("KV cache: positions held per layer", 0.22), ("time of the step (ms)", 0.78))]
    return go.Figure(data, layout(None, 400, annotations=titles, legend=dict(orientation="h", y=-0.3),
                                  margin=dict(l=10, r=10, t=50, b=10),
                                  xaxis=dict(anchor="y", domain=[0.0, 0.44], title="step"),
                                  xaxis2=dict(anchor="y2", domain=[0.56, 1.0], title="step"),
                                  yaxis=dict(anchor="x", domain=[0.0, 1.0], rangemode="tozero"),
                                  yaxis2=dict(anchor="x2", domain=[0.0, 1.0], rangemode="tozero")))


def _shape_text(step: Step) -> str:
    first = step.cache[0]
    parts = [f"K and V each {list(first['self'])}"]
    if "cross" in first:
        parts.append(f"cross K and V each {list(first['cross'])}")
    return " · ".join(parts) + f" × {len(step.cache)} layers"


def beam_tree(gen: Generation) -> go.Figure:
    """The beams after each step as a tree: a node per kept token, an edge to the beam it extends,
    colour the summed log-probability, squares the beams that ended; the best beam drawn thick."""
    pos: list[list[float]] = []  # y of each node, per step
    best_ids = [s.chosen.id for s in gen.steps]
    ex, ey, bx, by = [], [], [], []
    nx, ny, text, score, hover, symbol = [], [], [], [], [], []
    for t, level in enumerate(gen.beams):
        prev_live = [i for i, b in enumerate(gen.beams[t - 1]) if not b.finished] if t else [0]
        ys = [float(i) for i in range(len(level))]
        pos.append(ys)
        for i, b in enumerate(level):
            py = pos[t - 1][prev_live[b.parent]] if t else (len(level) - 1) / 2
            on_best = b.ids == best_ids[: len(b.ids)]
            (bx if on_best else ex).extend([t - 1, t, None])
            (by if on_best else ey).extend([py, ys[i], None])
            nx.append(t)
            ny.append(ys[i])
            text.append(escape(_short(b.tokens[-1])[:12]))  # cut before escaping: never half an entity
            score.append(b.score)
            symbol.append("square" if b.finished else "circle")
            hover.append(f"step {t}: {escape(''.join(b.tokens))[-60:]}<br>Σ log p = {b.score:.3f}"
                         + ("<br>ended" if b.finished else ""))
    fig = go.Figure([
        go.Scatter(x=ex, y=ey, mode="lines", line=dict(color=CUT_C, width=1.5), hoverinfo="skip", showlegend=False),
        go.Scatter(x=bx, y=by, mode="lines", line=dict(color=CHOSEN_C, width=4), hoverinfo="skip", name="best beam"),
        go.Scatter(x=nx, y=ny, mode="markers+text", text=text, textposition="top center", textfont=dict(size=14),
                   marker=dict(size=16, color=score, colorscale=SEQUENTIAL, symbol=symbol, colorbar=dict(title="Σ log p"),
                               line=dict(width=1, color="#333")),
                   hovertext=hover, hoverinfo="text", showlegend=False),
    ])
    fig.update_xaxes(title="step", dtick=1, range=[-1.4, max(1, len(gen.beams)) - 0.4])
    fig.update_yaxes(title="beam", autorange="reversed", showticklabels=False)
    fig.update_layout(legend=dict(orientation="h", y=-0.18))
    width = max((len(level) for level in gen.beams), default=1)
    return base_layout(fig, "Beam search: the beams kept at each step", 200 + 60 * width)
