"""The Compare page's chart: per-layer attention statistics of the three models on one set of axes."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.analysis.compare import METRICS, series_name
from lmviz.models.kinds import KINDS
from lmviz.viz.style import MODEL_COLOURS, grid_axes, grid_layout, layout

DASH = {"self": "solid", "causal": "dash", "cross": "dot"}
SYMBOL = {"self": "circle", "causal": "triangle-up", "cross": "square"}


def stats_figure(stats: dict[str, dict[str, np.ndarray]]) -> go.Figure:
    """``{series name: {metric: [L]}}`` as four panels (entropy, distance, special share, self share), x = layer.

    Colour is the model (BERT, GPT-2, T5), the line style the kind of attention (solid bidirectional,
    dashed causal, dotted cross); NaN (cross-attention's distance and self share) leaves a gap."""
    settings = grid_layout(rows=2, cols=2, subplot_titles=list(METRICS.values()), horizontal_spacing=0.1, vertical_spacing=0.24)
    by_name = {series_name(k, a): (k, a) for k, kind in KINDS.items() for a in kind.attention}
    data = []
    for name, metrics in stats.items():
        model, kind = by_name[name]
        for i, metric in enumerate(METRICS):
            y = np.asarray(metrics[metric], dtype=float)
            data.append(dict(
                type="scatter", x=list(range(len(y))), y=[None if np.isnan(v) else float(v) for v in y], name=name,
                legendgroup=name, showlegend=i == 0, mode="lines+markers",
                line=dict(color=MODEL_COLOURS[model], width=3, dash=DASH[kind]), marker=dict(size=10, symbol=SYMBOL[kind]),
                hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.3f}}<extra>{METRICS[metric]}</extra>",
                **grid_axes(i // 2 + 1, i % 2 + 1, 2)))
    for axis in ("xaxis", "xaxis2", "xaxis3", "xaxis4"):
        settings[axis] |= dict(title="layer", dtick=1)
    for axis, shares in (("yaxis", False), ("yaxis2", False), ("yaxis3", True), ("yaxis4", True)):
        settings[axis] |= dict(rangemode="tozero") | (dict(range=[0, 1.02]) if shares else {})
    for note in settings["annotations"]:
        note["font"] = dict(size=16)
    return go.Figure(data, layout(None, 740, legend=dict(orientation="h", y=-0.13), margin=dict(l=10, r=10, t=50, b=10),
                                  **settings))
