"""Attention heatmaps: one head large, and the layers × heads grid."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lmviz.viz.style import SEQUENTIAL, base_layout, escape, ticks


def attention_heatmap(probs, queries: list[str], keys: list[str], title: str | None = None, zmax: float | None = None,
                      height: int | None = None) -> go.Figure:
    """``probs [Q, K]`` as a query × key heatmap; hover names the query token, key token and weight."""
    z = np.asarray(probs, dtype=float)
    q = [f"{i}: {escape(t)}" for i, t in enumerate(queries)]
    k = [f"{j}: {escape(t)}" for j, t in enumerate(keys)]
    custom = np.dstack(np.meshgrid(np.array(k, dtype=object), np.array(q, dtype=object)))
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(len(keys))), y=list(range(len(queries))), customdata=custom, colorscale=SEQUENTIAL,
        zmin=0, zmax=zmax if zmax is not None else max(float(z.max()) if z.size else 1.0, 1e-6),
        hovertemplate="query %{customdata[1]}<br>key %{customdata[0]}<br>weight %{z:.3f}<extra></extra>",
        colorbar=dict(title="weight"),
    ))
    xi, xt = ticks(keys)
    yi, yt = ticks(queries)
    fig.update_xaxes(tickvals=xi, ticktext=xt, tickangle=-60, title="key (attended to)", side="bottom")
    fig.update_yaxes(tickvals=yi, ticktext=yt, autorange="reversed", title="query (attending)", scaleanchor=None)
    side = max(380, min(900, 28 * max(len(queries), len(keys)) + 160))
    return base_layout(fig, title, height or side)


def head_grid(stacked, title: str | None = None, zmax: float | None = None) -> go.Figure:
    """``stacked [L, H, Q, K]`` as a layers × heads grid of small heatmaps (the model view)."""
    a = np.asarray(stacked, dtype=float)
    L, H = a.shape[:2]
    fig = make_subplots(rows=L, cols=H, horizontal_spacing=0.01, vertical_spacing=0.02,
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
