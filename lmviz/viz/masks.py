"""Mask figures: the mask matrices, T5's position bias, the mask's effect on one softmax row, and the
swapped-mask experiment.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.analysis.arithmetic import HeadArithmetic
from lmviz.analysis.masks import MaskExperiment, MaskMatrix
from lmviz.viz.arithmetic import MASK_EFFECT, steps_figure
from lmviz.viz.attention import DIVERGING, hidden_cells, hover_grid, masked, token_axes, token_axis_settings
from lmviz.viz.style import PALETTE, base_layout, escape, layout, subplots, ticks

KEEP_COLOUR, HIDDEN_COLOUR = PALETTE[0], "#E8E8E8"


def mask_heatmap(m: MaskMatrix, height: int | None = None, titled: bool = True) -> go.Figure:
    """``m.keep`` as a two-colour query × key grid: blue = may attend, grey = hidden (−∞ added).

    ``titled=False`` leaves ``m.title`` off (for a page that already heads the figure with it)."""
    z = m.keep.astype(float)
    heatmap = dict(
        type="heatmap", z=z, zmin=0, zmax=1,
        colorscale=[[0, HIDDEN_COLOUR], [0.5, HIDDEN_COLOUR], [0.5, KEEP_COLOUR], [1, KEEP_COLOUR]],
        customdata=np.dstack([hover_grid(m.queries, m.keys), np.where(m.keep, "may attend (+0)", "hidden (+−∞)")]),
        hovertemplate="query %{customdata[1]}<br>key %{customdata[0]}<br>%{customdata[2]}<extra></extra>",
        xgap=1 if len(m.keys) <= 48 else 0, ygap=1 if len(m.queries) <= 48 else 0,
        colorbar=dict(tickvals=[0.25, 0.75], ticktext=["hidden", "may attend"], len=0.5),
    )
    xaxis, yaxis = token_axis_settings(m.queries, m.keys)
    shapes, notes = [], []
    if m.segments:  # the line between sentence A and sentence B, across and down
        b = m.segments.index(1) - 0.5
        line = dict(type="line", line=dict(color=PALETTE[5], width=3))
        shapes = [line | dict(x0=b, x1=b, xref="x", y0=0, y1=1, yref="y domain"),
                  line | dict(x0=0, x1=1, xref="x domain", y0=b, y1=b, yref="y")]
        notes = [dict(x=x, y=1.0, yref="paper", yanchor="bottom", text=name, showarrow=False, font=dict(color=PALETTE[5], size=15))
                 for x, name in ((b / 2, "sentence A"), ((b + len(m.keys)) / 2, "sentence B"))]
    side = max(360, min(760, 18 * max(len(m.queries), len(m.keys)) + 200))
    return go.Figure([heatmap], layout(m.title if titled else None, height or side, shapes=shapes, annotations=notes,
                                       xaxis=xaxis | dict(title="key (attended to)"), yaxis=yaxis | dict(title="query (attending)")))


def position_bias_figure(bias, queries: list[str], keys: list[str], title: str | None = None, mask=None) -> go.Figure:
    """T5's learned relative position bias ``[H, Q, K]``, one heatmap per head, added to every layer's scores.

    The panels are narrow, so the key axis shows positions (a few, upright); hover names every token.
    ``mask [Q, K]`` (bool, True = may attend) greys out the cells a mask hides: the bias is added there
    too, but the cell is −∞ after the mask, so its bias never matters.
    """
    b = masked(np.asarray(bias, dtype=float), mask)
    H = b.shape[0]
    top = float(np.nanmax(np.abs(b))) if b.size else 1.0
    fig = subplots(rows=1, cols=H, horizontal_spacing=0.02, column_titles=[f"head {h}" for h in range(H)],
                        shared_yaxes=True)
    hover = hover_grid(queries, keys)
    step = max(1, -(-len(keys) // 5))  # at most ~5 position ticks per narrow panel
    for h in range(H):
        fig.add_trace(go.Heatmap(z=b[h], zmin=-top, zmax=top, colorscale=DIVERGING, zmid=0, customdata=hover,
                                 showscale=h == 0, colorbar=dict(title="bias"), hoverongaps=False,
                                 hovertemplate=f"head {h}<br>query %{{customdata[1]}}<br>key %{{customdata[0]}}"
                                               "<br>bias %{z:.3f}<extra></extra>"), row=1, col=h + 1)
        grey = hidden_cells(mask, "hidden by the causal mask: this bias is never used", hover)
        if grey:
            fig.add_trace(grey, row=1, col=h + 1)
        fig.update_xaxes(tickvals=list(range(0, len(keys), step)), tickangle=0, title="key position", row=1, col=h + 1)
    yi, yt = ticks(queries)
    fig.update_yaxes(tickvals=yi, ticktext=yt, row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    return base_layout(fig, title, max(360, min(700, 10 * len(queries) + 220)))


def mask_effect_figure(a: HeadArithmetic, keys: list[str]) -> go.Figure:
    """One query's row before the mask, with it, and after the softmax (``steps_figure`` with ``MASK_EFFECT``)."""
    return steps_figure(a, keys, MASK_EFFECT)


def experiment_figure(e: MaskExperiment, layer: int, head: int) -> go.Figure:
    """One head's attention under the model's own mask and under the swapped one, side by side (same colour scale)."""
    hover = hover_grid(e.tokens, e.tokens)
    fig = subplots(rows=1, cols=2, horizontal_spacing=0.08, column_titles=[escape(e.own_name), escape(e.swapped_name)])
    for c, a in enumerate((e.own, e.swapped)):
        fig.add_trace(go.Heatmap(z=a[layer, head], zmin=0, zmax=1, colorscale="Viridis", customdata=hover, showscale=c == 1,
                                 colorbar=dict(title="weight"),
                                 hovertemplate="query %{customdata[1]}<br>key %{customdata[0]}<br>weight %{z:.3f}<extra></extra>"),
                      row=1, col=c + 1)
        token_axes(fig, e.tokens, e.tokens, row=1, col=c + 1, narrow=True)  # two panels side by side
    n = len(e.tokens)
    return base_layout(fig, f"layer {layer}, head {head}", max(420, min(760, 12 * n + 260)))


def loss_figure(e: MaskExperiment) -> go.Figure:
    """Per-token loss under both masks, with the means in the legend."""
    x = [f"{i}: {escape(t)}" for i, t in enumerate(e.tokens)]
    fig = go.Figure()
    for name, per, mean, colour in ((e.own_name, e.per_token_own, e.loss_own, PALETTE[0]),
                                    (e.swapped_name, e.per_token_swapped, e.loss_swapped, PALETTE[5])):
        fig.add_trace(go.Scatter(x=x, y=per, mode="lines+markers", name=f"{escape(name)} (mean {mean:.2f})",
                                 line=dict(color=colour, width=3), connectgaps=False,
                                 hovertemplate="token %{x}<br>loss %{y:.2f} nats<extra></extra>"))
    xi, _ = ticks(e.tokens)
    fig.update_xaxes(tickvals=[x[i] for i in xi], tickangle=-60)
    fig.update_yaxes(title=f"{e.metric} (nats)", rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    return base_layout(fig, None, 420)


def answer_weight_figure(e: MaskExperiment) -> go.Figure:
    """Per query ``i``, the weight on key ``i + 1`` (the next token: for GPT-2 the answer) under both masks, averaged
    over layers and heads, beside even attention over the whole text (``1 / T``)."""
    x = [f"{i}: {escape(t)} → {escape(n)}" for i, (t, n) in enumerate(zip(e.tokens, e.tokens[1:]))]
    fig = go.Figure()
    for name, which, colour in ((e.own_name, "own", PALETTE[0]), (e.swapped_name, "swapped", PALETTE[5])):
        y = e.next_token_weight(which)
        shown = f"{name} (0 everywhere)" if not np.any(y) else name  # a legend entry whose bars have no height says why
        fig.add_trace(go.Bar(x=x, y=y, name=escape(shown), marker_color=colour,
                             hovertemplate="query %{x}<br>weight on the next token %{y:.3f}<extra></extra>"))
    chance = 1 / len(e.tokens)
    fig.add_hline(y=chance, line=dict(color="black", dash="dash", width=2), annotation_text=f"even attention: {chance:.3f}",
                  annotation_position="top right", annotation_bgcolor="rgba(255,255,255,0.85)")
    xi, _ = ticks(x)
    fig.update_xaxes(tickvals=[x[i] for i in xi], tickangle=-60)
    fig.update_yaxes(title="weight on key i + 1 (mean of heads)", rangemode="tozero")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    return base_layout(fig, None, 420)
