"""Attention heatmaps: one head large, and the layers × heads grid."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.viz.style import PALETTE, SEQUENTIAL, base_layout, escape, subplots, ticks

DIVERGING = "PuOr"  # colour-blind-safe diverging scale for signed values (vectors, biases), centred on zero


def hover_grid(queries: list[str], keys: list[str]) -> np.ndarray:
    """``[Q, K, 2]`` hover labels: ``[..., 0]`` "j: key token", ``[..., 1]`` "i: query token" (escaped)."""
    q = np.array([f"{i}: {escape(t)}" for i, t in enumerate(queries)], dtype=object)
    k = np.array([f"{j}: {escape(t)}" for j, t in enumerate(keys)], dtype=object)
    return np.dstack(np.meshgrid(k, q))


def token_axes(fig: go.Figure, queries: list[str], keys: list[str], row=None, col=None) -> None:
    """Thinned token ticks on both axes, queries top to bottom."""
    xi, xt = ticks(keys)
    yi, yt = ticks(queries)
    fig.update_xaxes(tickvals=xi, ticktext=xt, tickangle=-60, row=row, col=col)
    fig.update_yaxes(tickvals=yi, ticktext=yt, autorange="reversed", row=row, col=col)


def attention_heatmap(probs, queries: list[str], keys: list[str], title: str | None = None, zmax: float | None = None,
                      height: int | None = None, highlight: int | None = None) -> go.Figure:
    """``probs [Q, K]`` as a query × key heatmap; hover names the query token, key token and weight.

    ``highlight`` outlines one query row (the one the arithmetic walks through).
    """
    z = np.asarray(probs, dtype=float)
    custom = hover_grid(queries, keys)
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(len(keys))), y=list(range(len(queries))), customdata=custom, colorscale=SEQUENTIAL,
        zmin=0, zmax=zmax if zmax is not None else max(float(z.max()) if z.size else 1.0, 1e-6),
        hovertemplate="query %{customdata[1]}<br>key %{customdata[0]}<br>weight %{z:.3f}<extra></extra>",
        colorbar=dict(title="weight"),
    ))
    token_axes(fig, queries, keys)
    fig.update_xaxes(title="key (attended to)", side="bottom")
    fig.update_yaxes(title="query (attending)")
    if highlight is not None and 0 <= highlight < len(queries):
        fig.add_shape(type="rect", x0=-0.5, x1=len(keys) - 0.5, y0=highlight - 0.5, y1=highlight + 0.5,
                      line=dict(color=PALETTE[1], width=3))
    side = max(380, min(900, 28 * max(len(queries), len(keys)) + 160))
    return base_layout(fig, title, height or side)


def head_grid(stacked, title: str | None = None, zmax: float | None = None) -> go.Figure:
    """``stacked [L, H, Q, K]`` as a layers × heads grid of small heatmaps (the model view)."""
    a = np.asarray(stacked, dtype=float)
    L, H = a.shape[:2]
    fig = subplots(rows=L, cols=H, horizontal_spacing=0.01, vertical_spacing=0.02,
                        row_titles=[f"layer {l}" for l in range(L)], column_titles=[f"head {h}" for h in range(H)])
    top = zmax if zmax is not None else float(a.max()) if a.size else 1.0
    for l in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=a[l, h], colorscale=SEQUENTIAL, zmin=0, zmax=top, showscale=(l == 0 and h == 0),
                                     hovertemplate=f"layer {l} head {h}<br>query %{{y}} key %{{x}}<br>weight %{{z:.3f}}<extra></extra>"),
                          row=l + 1, col=h + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    return base_layout(fig, title, 170 * L + 60)


def layer_means(stacked, queries: list[str], keys: list[str], title: str | None = None) -> go.Figure:
    """``stacked [L, H, Q, K]`` averaged over heads: one heatmap per layer, side by side."""
    a = np.asarray(stacked, dtype=float).mean(axis=1)
    L = a.shape[0]
    fig = subplots(rows=1, cols=L, horizontal_spacing=0.02, column_titles=[f"layer {l}" for l in range(L)],
                        shared_yaxes=True)
    custom = hover_grid(queries, keys)
    for l in range(L):
        fig.add_trace(go.Heatmap(z=a[l], colorscale=SEQUENTIAL, zmin=0, zmax=float(a.max()) if a.size else 1.0,
                                 customdata=custom, showscale=l == 0, colorbar=dict(title="mean"),
                                 hovertemplate=f"layer {l} (mean of heads)<br>query %{{customdata[1]}}<br>"
                                               "key %{customdata[0]}<br>weight %{z:.3f}<extra></extra>"),
                      row=1, col=l + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    return base_layout(fig, title, 300)
