"""The Fine-tuning page's figures: curves as it trains, accuracy beside the baselines, the confusion matrix, and what
changed inside (mean |Δ attention| per head, one head's row before and after)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.viz.style import PALETTE, SEQUENTIAL, base_layout, escape, subplots, ticks

LOSS_COLOURS = {"loss": PALETTE[0], "classification": PALETTE[1], "lm": PALETTE[2]}
LOSS_NAMES = {"loss": "training loss", "classification": "L2: classification loss", "lm": "L1: language-model loss"}


def smooth(values: list[float], window: int = 8) -> np.ndarray:
    """A running mean over the last ``window`` steps (one batch's loss is noisy)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    n = np.minimum(np.arange(1, len(v) + 1), window)
    return (c[1:] - c[np.arange(1, len(v) + 1) - n]) / n


def curves_figure(loss: dict[str, list[float]], evals: list[tuple[int, float]], total_steps: int, majority: float,
                  bow: float, lam: float | None = None) -> go.Figure:
    """Left: the training loss per step (GPT-2: L = L2 + λ·L1 and both parts). Right: held-out accuracy as it was
    measured, with the two baselines as dashed lines."""
    fig = subplots(rows=1, cols=2, subplot_titles=("Training loss (running mean of 8 steps)", "Held-out accuracy"),
                   horizontal_spacing=0.1)
    for key, values in loss.items():
        if not values:
            continue
        name = LOSS_NAMES[key] if key != "loss" or lam is None else f"L = L2 + {lam:g}·L1"
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=smooth(values).tolist(), mode="lines", name=name,
                                 line=dict(color=LOSS_COLOURS[key], width=3 if key == "loss" else 2), legendgroup="loss"),
                      row=1, col=1)
    if evals:
        steps, acc = zip(*evals)
        fig.add_trace(go.Scatter(x=list(steps), y=[100 * a for a in acc], mode="lines+markers", name="fine-tuned, held-out",
                                 line=dict(color=PALETTE[5], width=3), marker=dict(size=9)), row=1, col=2)
    for value, name, dash in ((majority, "majority label", "dot"), (bow, "bag-of-words logistic regression", "dash")):
        fig.add_trace(go.Scatter(x=[0, max(1, total_steps)], y=[100 * value] * 2, mode="lines", name=f"{name} ({100 * value:.1f} %)",
                                 line=dict(color="#555555" if dash == "dot" else PALETTE[3], dash=dash, width=2)), row=1, col=2)
    fig.update_xaxes(title_text="step", range=[0, max(1, total_steps)])
    fig.update_yaxes(title_text="nats", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="% correct", row=1, col=2)
    base_layout(fig, height=400)
    fig.update_layout(legend=dict(orientation="h", y=-0.22, x=0), margin=dict(t=40, b=10))
    return fig


def accuracy_figure(accuracy: float, majority: float, bow: float, model_name: str) -> go.Figure:
    names = [escape(model_name) + ", fine-tuned", "bag-of-words logistic regression", "majority label"]
    values = [100 * accuracy, 100 * bow, 100 * majority]
    fig = go.Figure(go.Bar(y=names[::-1], x=values[::-1], orientation="h", marker_color=[PALETTE[5], PALETTE[3], "#888888"][::-1],
                           text=[f"{v:.1f} %" for v in values[::-1]], textposition="outside", cliponaxis=False))
    fig.update_xaxes(range=[0, 110], title_text="% of held-out speeches labelled correctly")
    return base_layout(fig, height=230)


def confusion_figure(confusion: np.ndarray, labels: tuple[str, ...]) -> go.Figure:
    """Rows: the true label; columns: the predicted one; each cell the number of held-out speeches."""
    labels = [escape(lab) for lab in labels]
    fig = go.Figure(go.Heatmap(z=confusion, x=labels, y=labels, colorscale=SEQUENTIAL, showscale=False,
                               text=confusion, texttemplate="%{text}", textfont=dict(size=20),
                               hovertemplate="true %{y}, predicted %{x}: %{z} speeches<extra></extra>"))
    fig.update_xaxes(title_text="predicted", side="top")
    fig.update_yaxes(title_text="true", autorange="reversed")
    return base_layout(fig, height=120 + 80 * len(labels))


def head_change_figure(delta: np.ndarray, layer: int, head: int, row_name: str) -> go.Figure:
    """Mean |Δ attention| per layer and head; the most-changed head outlined."""
    L, H = delta.shape
    fig = go.Figure(go.Heatmap(z=delta, x=[f"head {h}" for h in range(H)], y=[f"layer {i}" for i in range(L)],
                               colorscale=SEQUENTIAL, colorbar=dict(title="mean |Δ|"),
                               hovertemplate="%{y}, %{x}: mean |Δ attention| %{z:.4f}<extra></extra>"))
    fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5, line=dict(color="#E69F00", width=4))
    fig.update_yaxes(autorange="reversed")
    return base_layout(fig, f"How much each head's {row_name} row moved", height=120 + 60 * L)


def row_figure(tokens: list[str], before: np.ndarray, after: np.ndarray, title: str) -> go.Figure:
    """One head's attention row over the tokens, before and after fine-tuning."""
    x = list(range(len(tokens)))
    fig = go.Figure([go.Bar(x=x, y=before, name="before (pretrained)", marker_color="#999999"),
                     go.Bar(x=x, y=after, name="after fine-tuning", marker_color=PALETTE[5])])
    idx, text = ticks(tokens)
    fig.update_xaxes(tickmode="array", tickvals=idx, ticktext=text, tickangle=0 if len(tokens) < 16 else -60)
    fig.update_yaxes(title_text="attention")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.12, x=0))
    for trace in fig.data:
        trace.customdata = [escape(t) for t in tokens]
        trace.hovertemplate = "%{customdata}: %{y:.3f}<extra>" + trace.name + "</extra>"
    return base_layout(fig, title, height=360)


def probabilities_figure(probs: dict[str, float]) -> go.Figure:
    names = [escape(k) for k in probs]
    values = [100 * v for v in probs.values()]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=PALETTE[: len(names)],
                           text=[f"{v:.1f} %" for v in values], textposition="outside", cliponaxis=False))
    fig.update_xaxes(range=[0, 115], title_text="probability, %")
    fig.update_yaxes(autorange="reversed")
    return base_layout(fig, height=90 + 45 * len(names))
