"""One head's arithmetic as figures: the vectors, each step of the scores, and the weighted sum of values.

Every number comes from ``lmviz.analysis.arithmetic.head_arithmetic`` (the real q, k, v of a forward pass).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.analysis.arithmetic import HeadArithmetic
from lmviz.viz.attention import DIVERGING
from lmviz.viz.style import PALETTE, base_layout, escape, grid_axes, grid_layout, layout, ticks


def _keys(keys: list[str]) -> list[str]:
    return [f"{j}: {escape(t)}" for j, t in enumerate(keys)]


def _heat(z, y, zmax, name):
    return go.Heatmap(z=z, y=y, x=list(range(z.shape[1])), colorscale=DIVERGING, zmid=0, zmin=-zmax, zmax=zmax,
                      colorbar=dict(title="value"), hovertemplate=f"%{{y}}<br>{name} dim %{{x}}: %{{z:.3f}}<extra></extra>")


def vectors_figure(a: HeadArithmetic, keys: list[str], query: str) -> go.Figure:
    """The query vector ``q_i`` above the key vectors ``k_j`` (``[d]`` and ``[K, d]``), one row each."""
    z = np.vstack([a.q[None], a.keys])
    y = [f"q  ({a.query}: {escape(query)})"] + [f"k {k}" for k in _keys(keys)]
    top = float(np.abs(z).max()) or 1.0
    fig = go.Figure(_heat(z, y, top, "vector"))
    fig.add_hline(y=0.5, line=dict(color="black", width=3))
    idx, _ = ticks(y)
    fig.update_yaxes(autorange="reversed", tickvals=[y[i] for i in idx])
    fig.update_xaxes(title=f"dimension (d = {a.d_head})")
    return base_layout(fig, None, max(260, min(700, 16 * len(y) + 120)))


def second_step(a: HeadArithmetic) -> str:
    """What happens between the dot products and the mask for this head."""
    if a.position_bias is not None:
        return "+ relative position bias (T5: no ÷√d)"
    if a.scale == 1.0:
        return "unchanged (T5: no ÷√d, and cross-attention has no position bias)"
    return f"× 1/√d = × {a.scale:.4f}"


WALKTHROUGH = ("dots", "scaled", "masked", "probs")
MASK_EFFECT = ("scores", "masked", "probs")


def steps_figure(a: HeadArithmetic, keys: list[str], steps: tuple[str, ...] = WALKTHROUGH) -> go.Figure:
    """The query's row through ``steps``, one bar chart each, numbered in order.

    ``dots`` q·k; ``scaled`` ×1/√d (T5: + its position bias instead); ``scores`` the record's
    pre-mask scores; ``masked`` + the mask (hidden keys drawn as grey −∞ stubs); ``probs`` the softmax: the record's
    own row (the heatmap's), which ``a.probs``, recomputed from the steps above, checks.
    """
    x = _keys(keys)
    hidden = a.hidden
    masked = np.where(hidden, np.nan, a.masked)
    t5 = a.position_bias is not None
    catalogue = {
        "dots": ("q · k  (dot products)", a.dots, PALETTE[0]),
        "scaled": (second_step(a), a.scores, PALETTE[4]),
        "scores": ("scores before the mask", a.scores, PALETTE[0]),
        "masked": ("+ mask (grey: −∞, hidden)", masked, PALETTE[1]),
        "probs": ("softmax: the weights (one row of the heatmap)", a.record_probs, PALETTE[2]),  # the model's own row
    }
    rows = [catalogue[s] for s in steps]
    settings = grid_layout(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                           subplot_titles=[f"{i}. {r[0]}" for i, r in enumerate(rows, start=1)])
    data = [dict(type="bar", x=x, y=y, marker_color=colour, name=name, hovertemplate="key %{x}<br>%{y:.4f}<extra></extra>",
                 **grid_axes(r, 1, 1)) for r, (name, y, colour) in enumerate(rows, start=1)]
    if "masked" in steps and hidden.any():
        finite = masked[~np.isnan(masked)]
        floor = min(float(finite.min()) if finite.size else 0.0, 0.0) - 1.0
        data.append(dict(type="bar", x=x, y=np.where(hidden, floor, np.nan), marker_color="#9A9A9A", name="−∞",
                         hovertemplate="key %{x}<br>−∞ (hidden)<extra></extra>", **grid_axes(steps.index("masked") + 1, 1, 1)))
    if t5 and "scaled" in steps:
        data.append(dict(type="scatter", x=x, y=a.position_bias, mode="markers", marker=dict(color=PALETTE[5], size=8, symbol="diamond"),
                         name="bias", hovertemplate="key %{x}<br>bias %{y:.3f}<extra></extra>", **grid_axes(steps.index("scaled") + 1, 1, 1)))
    xi, _ = ticks(keys)
    last = grid_axes(len(rows), 1, 1)["xaxis"].replace("x", "xaxis")
    settings[last] |= dict(tickvals=[x[i] for i in xi], tickangle=-60)
    return go.Figure(data, layout(None, 180 * len(rows) + 120, showlegend=False, barmode="overlay", bargap=0.15,
                                  margin=dict(l=10, r=10, t=40, b=10), **settings))  # room for the first panel's title


def weighted_sum_figure(a: HeadArithmetic, keys: list[str]) -> go.Figure:
    """``weight_j · v_j`` for every key, and their sum: the head's output for this query (``[d]``)."""
    weighted = a.probs[:, None] * a.values
    z = np.vstack([weighted, a.output[None]])
    y = [f"{p:.3f} × v {k}" for p, k in zip(a.probs, _keys(keys))] + ["Σ = output"]
    top = float(np.abs(z).max()) or 1.0
    fig = go.Figure(_heat(z, y, top, "value"))
    fig.add_hline(y=len(keys) - 0.5, line=dict(color="black", width=3))
    idx, _ = ticks(y)
    fig.update_yaxes(autorange="reversed", tickvals=sorted({y[i] for i in idx} | {y[-1]}, key=y.index))
    fig.update_xaxes(title=f"dimension (d = {a.d_head})")
    return base_layout(fig, None, max(260, min(700, 16 * len(y) + 120)))
