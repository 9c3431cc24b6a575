"""Attention heatmaps: one head large, and the layers × heads grid."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.viz.style import MAX_TICKS, PALETTE, SEQUENTIAL, base_layout, escape, layout, subplots, ticks

DIVERGING = "PuOr"  # colour-blind-safe diverging scale for signed values (vectors, biases), centred on zero


def hover_grid(queries: list[str], keys: list[str]) -> np.ndarray:
    """``[Q, K, 2]`` hover labels: ``[..., 0]`` "j: key token", ``[..., 1]`` "i: query token" (escaped)."""
    q = np.array([f"{i}: {escape(t)}" for i, t in enumerate(queries)], dtype=object)
    k = np.array([f"{j}: {escape(t)}" for j, t in enumerate(keys)], dtype=object)
    return np.dstack(np.meshgrid(k, q))


NARROW_TICKS = 16  # key labels on a panel that shares its row with another


def token_axis_settings(queries: list[str], keys: list[str], narrow: bool = False,
                        height: int | None = None) -> tuple[dict, dict]:
    """(x axis, y axis): thinned token ticks on both axes, queries top to bottom. ``narrow`` (a panel that shares its
    row with others): fewer key labels, drawn upright so each takes only a line's height of width. ``height`` (the
    figure's, in pixels): no more query labels than fit at 13 px apart."""
    xi, xt = ticks(keys, NARROW_TICKS if narrow else MAX_TICKS)
    yi, yt = ticks(queries, MAX_TICKS if height is None else max(8, min(MAX_TICKS, (height - 220) // 13)))
    return (dict(tickvals=xi, ticktext=xt, tickangle=-90 if narrow else -60),
            dict(tickvals=yi, ticktext=yt, autorange="reversed"))


def token_axes(fig: go.Figure, queries: list[str], keys: list[str], row=None, col=None, narrow: bool = False) -> None:
    """``token_axis_settings`` on one panel of a built figure."""
    x, y = token_axis_settings(queries, keys, narrow)
    fig.update_xaxes(x, row=row, col=col)
    fig.update_yaxes(y, row=row, col=col)


HIDDEN_COLOUR = "#D9D9D9"  # cells a mask hides are light grey, so "hidden" never looks like weight 0
CAUSAL_HIDDEN = "hidden by the causal mask"


def masked(z: np.ndarray, mask) -> np.ndarray:
    """``z`` with the cells that ``mask`` (bool, True = may attend; broadcast over leading axes) hides set to NaN."""
    return z if mask is None else np.where(np.asarray(mask, dtype=bool), z, np.nan)


def hidden_cells(mask, hidden: str = CAUSAL_HIDDEN, custom=None) -> go.Heatmap | None:
    """A light grey layer over the cells ``mask [Q, K]`` hides (None when it hides nothing); hover says ``hidden``
    (with the tokens when ``custom`` is ``hover_grid``'s)."""
    if mask is None or np.asarray(mask, dtype=bool).all():
        return None
    where = "query %{customdata[1]}<br>key %{customdata[0]}<br>" if custom is not None else "query %{y} key %{x}<br>"
    return go.Heatmap(z=np.where(np.asarray(mask, dtype=bool), np.nan, 1.0), zmin=0, zmax=1, showscale=False,
                      colorscale=[[0, HIDDEN_COLOUR], [1, HIDDEN_COLOUR]], customdata=custom, hoverongaps=False,
                      hovertemplate=f"{where}{hidden}<extra></extra>")


def attention_heatmap(probs, queries: list[str], keys: list[str], title: str | None = None, zmax: float | None = None,
                      height: int | None = None, highlight: int | None = None, mask=None,
                      hidden: str = CAUSAL_HIDDEN, percentile: float | None = None, narrow: bool = False) -> go.Figure:
    """``probs [Q, K]`` as a query × key heatmap; hover names the query token, key token and weight.

    ``highlight`` outlines one query row (the one the arithmetic walks through). ``mask [Q, K]`` (bool,
    True = may attend) draws hidden cells light grey instead of the colour of weight 0; their hover says
    ``hidden`` (a grey layer, ``fig.data[1]``). ``percentile`` tops the colour scale at that percentile of the visible weights instead
    of ``zmax`` (on long texts a 0–1 scale leaves nearly every cell dark); the colourbar says so. ``narrow`` (a panel
    beside another): fewer, upright key labels, and the colourbar lies above the heatmap so it takes no width.
    """
    z = np.asarray(probs, dtype=float)
    shown = masked(z, mask)
    visible = shown[~np.isnan(shown)]
    label = "weight"
    if percentile is not None and visible.size:
        zmax = max(float(np.percentile(visible, percentile)), 1e-6)
        label = f"weight<br>(colours top<br>out at the<br>{percentile:g}th pct,<br>{zmax:.2f})"
    custom = hover_grid(queries, keys)
    x, y = list(range(len(keys))), list(range(len(queries)))
    data = [dict(
        type="heatmap", z=shown, x=x, y=y, customdata=custom, colorscale=SEQUENTIAL,
        zmin=0, zmax=zmax if zmax is not None else max(float(visible.max()) if visible.size else 1.0, 1e-6),
        hovertemplate="query %{customdata[1]}<br>key %{customdata[0]}<br>weight %{z:.3f}<extra></extra>",
        hoverongaps=False, colorbar=dict(orientation="h", x=1, xanchor="right", y=1.0, yanchor="bottom", len=0.55,
                                         thickness=12, title=dict(text=label, side="top")) if narrow else dict(title=label),
    )]
    grey = hidden_cells(mask, hidden, custom)
    if grey:
        data.append(grey.update(x=x, y=y))
    side = height or max(380, min(900, 28 * max(len(queries), len(keys)) + 160))
    xaxis, yaxis = token_axis_settings(queries, keys, narrow, side)
    shapes = [dict(type="rect", x0=-0.5, x1=len(keys) - 0.5, y0=highlight - 0.5, y1=highlight + 0.5,
                   line=dict(color=PALETTE[1], width=3))] if highlight is not None and 0 <= highlight < len(queries) else []
    settings = layout(title, side, xaxis=xaxis | dict(title="key (attended to)", side="bottom"),
                      yaxis=yaxis | dict(title="query (attending)"), shapes=shapes)
    if narrow:
        settings["margin"] = settings["margin"] | dict(t=max(settings["margin"]["t"], 90))
    return go.Figure(data, settings)


GRID_TARGET_PX = 120  # the click target's side: most of a small heatmap (about 150 px tall)


def head_grid(stacked, title: str | None = None, zmax: float | None = None, mask=None) -> go.Figure:
    """``stacked [L, H, Q, K]`` as a layers × heads grid of small heatmaps (the model view); ``mask [Q, K]``
    as in ``attention_heatmap`` (hidden cells light grey)."""
    a = masked(np.asarray(stacked, dtype=float), mask)
    L, H = a.shape[:2]
    fig = subplots(rows=L, cols=H, horizontal_spacing=0.01, vertical_spacing=0.02,
                        row_titles=[f"layer {l}" for l in range(L)], column_titles=[f"head {h}" for h in range(H)])
    top = zmax if zmax is not None else float(np.nanmax(a)) if a.size else 1.0
    for l in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=a[l, h], colorscale=SEQUENTIAL, zmin=0, zmax=top, showscale=(l == 0 and h == 0), hoverongaps=False,
                                     hovertemplate=f"layer {l} head {h}<br>query %{{y}} key %{{x}}<br>weight %{{z:.3f}}<extra></extra>"),
                          row=l + 1, col=h + 1)
            grey = hidden_cells(mask)
            if grey:
                fig.add_trace(grey, row=l + 1, col=h + 1)
            fig.add_trace(_click_target(l, h, *a.shape[2:]), row=l + 1, col=h + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_layout(hovermode="closest")
    return base_layout(fig, title, 170 * L + 60).update_layout(margin=dict(t=50 if title else 35))  # room for the column titles


def _click_target(layer: int, head: int, queries: int, keys: int) -> go.Scatter:
    """An invisible square over one small heatmap, so a click on it selects (layer, head): plotly selects scatter
    points, not heatmap cells. Its ``customdata`` is ``[layer, head]``."""
    hidden = dict(marker=dict(opacity=0))
    return go.Scatter(x=[(keys - 1) / 2], y=[(queries - 1) / 2], mode="markers", customdata=[[layer, head]],
                      marker=dict(symbol="square", size=GRID_TARGET_PX, opacity=0), selected=hidden, unselected=hidden,
                      showlegend=False, hovertemplate=f"layer {layer}, head {head}<br>click to open it large<extra></extra>")


def clicked_head(custom) -> tuple[int, int] | None:
    """(layer, head) from the ``customdata`` of a clicked ``head_grid`` point (``ui.clicked``); None for anything a
    click on the grid does not make (the page then keeps its choice)."""
    if isinstance(custom, list) and len(custom) == 2 and all(isinstance(c, int) and c >= 0 for c in custom):
        return custom[0], custom[1]
    return None


def layer_means(stacked, queries: list[str], keys: list[str], title: str | None = None, mask=None) -> go.Figure:
    """``stacked [L, H, Q, K]`` averaged over heads: one heatmap per layer, side by side (``mask`` as in
    ``attention_heatmap``)."""
    a = masked(np.asarray(stacked, dtype=float).mean(axis=1), mask)
    L = a.shape[0]
    fig = subplots(rows=1, cols=L, horizontal_spacing=0.02, column_titles=[f"layer {l}" for l in range(L)],
                        shared_yaxes=True)
    custom = hover_grid(queries, keys)
    for l in range(L):
        fig.add_trace(go.Heatmap(z=a[l], colorscale=SEQUENTIAL, zmin=0, zmax=float(np.nanmax(a)) if a.size else 1.0,
                                 customdata=custom, showscale=l == 0, colorbar=dict(title="mean"), hoverongaps=False,
                                 hovertemplate=f"layer {l} (mean of heads)<br>query %{{customdata[1]}}<br>"
                                               "key %{customdata[0]}<br>weight %{z:.3f}<extra></extra>"),
                      row=1, col=l + 1)
        grey = hidden_cells(mask, custom=custom)
        if grey:
            fig.add_trace(grey, row=1, col=l + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    return base_layout(fig, title, 300).update_layout(margin=dict(t=50 if title else 35))  # room for the column titles
