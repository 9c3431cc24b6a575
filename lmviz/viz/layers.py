"""The Layers page's figures: the lens (layers × positions), a knock-out's change per position, the every-head grid,
attribution beside attention, and the loss curve with a snapshot's step marked."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.analysis.attribution import Attribution
from lmviz.analysis.knockout import Grid, Head, Knockout
from lmviz.analysis.lens import Lens
from lmviz.viz.attention import DIVERGING
from lmviz.viz.style import PALETTE, SEQUENTIAL, base_layout, escape, subplots, ticks

CELL_TEXT_MAX = 128  # more positions than this: the top token only on hover (the figure would be too tall to read)
NO_TARGET = "#D9D9D9"
ATTENTION_NAMES = {"self": "self-attention", "causal": "causal self-attention", "cross": "cross-attention"}


def _short(t: str, n: int = 8) -> str:
    return t if len(t) <= n else t[:n - 1] + "…"


def lens_figure(ln: Lens, title: str | None = None) -> go.Figure:
    """One row per predicting position (the token read there, first at the top), one column per layer from the
    embeddings to the model's output. Colour: the probability of the token that should come (grey where it is
    unknown); each cell's word: the top guess there; hover: the top five."""
    L, C = ln.prob.shape
    row = 28 if C <= 40 else 22 if C <= CELL_TEXT_MAX else 10
    height = max(300, 120 + row * C)
    hover = np.empty((C, L), dtype=object)
    for r in range(L):
        for c in range(C):
            five = "<br>".join(f"{escape(t)}  {p:.3f}" for t, p in ln.top[r][c])
            want = ln.target_tokens[c]
            truth = (f"should be <b>{escape(want)}</b>: p = {ln.prob[r, c]:.3f}, rank {int(ln.rank[r, c])}" if want is not None
                     else "the truth is not known here")
            hover[c, r] = f"{escape(ln.columns[c])} · {escape(ln.rows[r])}<br>{truth}<br>top five:<br>{five}"
    words = [[escape(_short(ln.top[r][c][0][0], 14)) for r in range(L)] for c in range(C)]
    prob = ln.prob.T
    unknown = np.where(np.isnan(prob), 1.0, np.nan)
    fig = go.Figure()
    if not np.isnan(unknown).all():
        fig.add_trace(go.Heatmap(z=unknown, x=list(range(L)), y=list(range(C)), colorscale=[[0, NO_TARGET], [1, NO_TARGET]],
                                 showscale=False, customdata=hover, text=words, texttemplate="%{text}" if C <= CELL_TEXT_MAX else None,
                                 hovertemplate="%{customdata}<extra></extra>", hoverongaps=False))
    fig.add_trace(go.Heatmap(
        z=prob, x=list(range(L)), y=list(range(C)), zmin=0, zmax=1, colorscale=SEQUENTIAL, customdata=hover,
        text=words, texttemplate="%{text}" if C <= CELL_TEXT_MAX else None, textfont=dict(size=14 if C <= 40 else 12),
        hovertemplate="%{customdata}<extra></extra>", hoverongaps=False, xgap=1,
        colorbar=dict(title=dict(text="p(the right<br>token)", side="top"), thickness=14, lenmode="pixels",
                      len=min(300, height - 140), y=1, yanchor="top")))
    yi, yt = ticks(ln.columns, CELL_TEXT_MAX)  # every row labelled while rows are tall enough for a word
    fig.update_yaxes(tickvals=yi, ticktext=yt, autorange="reversed")
    fig.update_xaxes(tickvals=list(range(L)), ticktext=ln.rows, side="top")
    return base_layout(fig, title, height=height)


def knockout_figure(ko: Knockout, columns: list[str], targets: list[str | None], title: str | None = None) -> go.Figure:
    """Per predicting position, the change in the target's loss (nats) with the heads knocked out: up (orange) = the
    model got worse without them, down (blue) = better."""
    d = ko.delta
    x = list(range(len(columns)))
    colours = [PALETTE[5] if v > 0 else PALETTE[0] for v in np.nan_to_num(d)]
    hover = [f"{escape(c)} → {escape(t) if t is not None else '(no target)'}<br>loss {b:.3f} → {k:.3f} nats"
             if t is not None else f"{escape(c)}: no target here" for c, t, b, k in zip(columns, targets, ko.base, ko.knocked)]
    fig = go.Figure(go.Bar(x=x, y=np.nan_to_num(d), marker_color=colours, customdata=hover,
                           hovertemplate="%{customdata}<br>change %{y:+.3f} nats<extra></extra>"))
    xi, xt = ticks(columns)
    fig.update_xaxes(tickvals=xi, ticktext=xt, tickangle=-60)
    fig.update_yaxes(title="change in loss (nats)", zeroline=True, zerolinewidth=2, zerolinecolor="#444")
    return base_layout(fig, title, height=380)


def grid_figure(grid: Grid, marked: list[Head] = (), title: str | None = None) -> go.Figure:
    """One layers × heads panel per attention kind: the change of the text's mean loss when that head alone is knocked
    out (orange: the model needs it; purple: it does better without). ``marked`` heads (the named ones) are circled."""
    n = len(grid.kinds)
    fig = subplots(rows=1, cols=n, subplot_titles=[ATTENTION_NAMES[k] for k in grid.kinds], horizontal_spacing=0.08)
    top = max(max(float(np.abs(grid.delta[k]).max()) for k in grid.kinds), 1e-6)
    for i, kind in enumerate(grid.kinds, start=1):
        z = grid.delta[kind]
        L, H = z.shape
        fig.add_trace(go.Heatmap(
            z=-z, x=list(range(H)), y=list(range(L)), zmin=-top, zmax=top, colorscale=DIVERGING, customdata=z,
            text=[[f"{v:+.2f}" for v in row] for row in z], texttemplate="%{text}", textfont=dict(size=14 if n == 1 else 11),
            hovertemplate="layer %{y}, head %{x}<br>mean loss %{customdata:+.3f} nats without it<extra></extra>",
            showscale=i == n, colorbar=dict(title=dict(text="change in mean loss (nats)", side="right"), thickness=14,
                                            tickvals=[-top, 0, top], ticktext=[f"+{top:.2f} worse", "0", f"−{top:.2f} better"])),
            row=1, col=i)
        circles = [(l, h) for k, l, h in marked if k == kind and 0 <= l < L and 0 <= h < H]
        if circles:
            fig.add_trace(go.Scatter(x=[h for _, h in circles], y=[l for l, _ in circles], mode="markers", hoverinfo="skip",
                                     marker=dict(symbol="circle-open", size=44, color="#000", line=dict(width=3)),
                                     showlegend=False), row=1, col=i)
        fig.update_xaxes(title="head", tickvals=list(range(H)), row=1, col=i)
        fig.update_yaxes(title="layer" if i == 1 else None, tickvals=list(range(L)), autorange="reversed", row=1, col=i)
    base_layout(fig, title, height=380)
    return fig.update_layout(margin=dict(t=70 if title else 40))  # room for the panels' titles


def attribution_figure(at: Attribution, layer: int, head: int | None, title: str | None = None) -> go.Figure:
    """Four rows over the input tokens, each scaled to its own largest magnitude: integrated gradients and gradient ×
    input (signed: orange raises the prediction, purple lowers it), the query's attention row and the rollout."""
    att = at.row(layer, head)
    which = f"{'cross-attention' if at.attention_kind == 'cross' else 'attention'} (layer {layer}, " \
            f"{'mean of heads' if head is None else f'head {head}'})"
    rows = [("integrated gradients", at.integrated), ("gradient × input", at.grad_input), (which, att), ("attention rollout", at.rollout)]
    z = np.array([v / max(float(np.abs(v).max()), 1e-12) for _, v in rows])
    raw = np.array([v for _, v in rows])
    tokens = at.tokens
    custom = np.array([[escape(f"{j}: {t}") for j, t in enumerate(tokens)]] * len(rows), dtype=object)
    few = len(tokens) <= 24
    fig = go.Figure(go.Heatmap(
        z=-z, x=list(range(len(tokens))), y=list(range(len(rows))), zmin=-1, zmax=1, colorscale=DIVERGING,
        customdata=np.dstack([custom, raw]), showscale=False, xgap=1, ygap=1,
        text=[[f"{v:.2g}" for v in row] for row in raw], texttemplate="%{text}" if few else None, textfont=dict(size=12),
        hovertemplate="%{customdata[0]}<br>%{customdata[1]:.4f}<extra></extra>"))
    xi, xt = ticks(tokens)
    fig.update_xaxes(tickvals=xi, ticktext=xt, tickangle=0 if len(tokens) <= 10 else -60)
    fig.update_yaxes(tickvals=list(range(len(rows))), ticktext=[escape(n) for n, _ in rows], autorange="reversed")
    return base_layout(fig, title, height=340)


def loss_curve(points: list[tuple[int, float]], marked: int | None, snapshot_steps: list[int], title: str | None = None) -> go.Figure:
    """The training loss against the step, the snapshots as ticks along it, and the chosen snapshot's step marked."""
    fig = go.Figure(go.Scatter(x=[s for s, _ in points], y=[v for _, v in points], mode="lines", line=dict(color=PALETTE[0]),
                               name="training loss", hovertemplate="step %{x}<br>loss %{y:.3f}<extra></extra>"))
    if points and snapshot_steps:
        ys = np.interp(snapshot_steps, [s for s, _ in points], [v for _, v in points])
        fig.add_trace(go.Scatter(x=snapshot_steps, y=ys, mode="markers", marker=dict(color=PALETTE[1], size=9), name="snapshots",
                                 hovertemplate="snapshot at step %{x}<extra></extra>"))
    if marked is not None:
        fig.add_vline(x=marked, line=dict(color=PALETTE[5], width=3), annotation_text=f"step {marked}",
                      annotation_position="bottom right")
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="loss (nats)")
    fig.update_layout(legend=dict(orientation="h", y=1.12, x=0))
    return base_layout(fig, title, height=300)
