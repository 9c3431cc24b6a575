"""The Compare page's chart: per-layer attention statistics of the three models on one set of axes."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.analysis.compare import METRICS, series_name
from lmviz.models.kinds import KINDS
from lmviz.viz.style import MODEL_COLOURS, base_layout, subplots

DASH = {"self": "solid", "causal": "dash", "cross": "dot"}
SYMBOL = {"self": "circle", "causal": "triangle-up", "cross": "square"}


def stats_figure(stats: dict[str, dict[str, np.ndarray]]) -> go.Figure:
    """``{series name: {metric: [L]}}`` as four panels (entropy, distance, special share, self share), x = layer.

    Colour is the model (BERT, GPT-2, T5), the line style the kind of attention (solid bidirectional,
    dashed causal, dotted cross); NaN (cross-attention's distance and self share) leaves a gap."""
    fig = subplots(rows=2, cols=2, subplot_titles=list(METRICS.values()), horizontal_spacing=0.1, vertical_spacing=0.24)
    by_name = {series_name(k, a): (k, a) for k, kind in KINDS.items() for a in kind.attention}
    for name, metrics in stats.items():
        model, kind = by_name[name]
        for i, metric in enumerate(METRICS):
            y = np.asarray(metrics[metric], dtype=float)
            fig.add_trace(go.Scatter(
                x=list(range(len(y))), y=[None if np.isnan(v) else float(v) for v in y], name=name, legendgroup=name,
                showlegend=i == 0, mode="lines+markers", line=dict(color=MODEL_COLOURS[model], width=3, dash=DASH[kind]),
                marker=dict(size=10, symbol=SYMBOL[kind]),
                hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.3f}}<extra>{METRICS[metric]}</extra>"), i // 2 + 1, i % 2 + 1)
    fig.update_xaxes(title="layer", dtick=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(range=[0, 1.02], row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], row=2, col=2)
    fig.update_layout(legend=dict(orientation="h", y=-0.13))
    fig.update_annotations(font_size=16)
    base_layout(fig, None, 740)
    return fig.update_layout(margin=dict(t=50))
