"""Coloured token strips: rows of token boxes, wrapped so that 128 tokens stay readable (the Masking page's MLM,
NSP and T5 rows)."""
from __future__ import annotations

from dataclasses import dataclass
from html import unescape

import plotly.graph_objects as go

from lmviz.viz.style import FONT, escape, layout
from lmviz.viz.tokens import ROW, Box, box_trace, legend_traces


@dataclass
class Cell:
    """One token in a strip: its label (already escaped), fill colour and hover (already escaped)."""

    text: str
    colour: str
    hover: str
    text_colour: str = "#111111"
    pattern: str = ""


SLOT_CHARS = 6.5  # label characters a one-slot box holds at full size (about 64 px a slot, 16 px monospace)


def _slots(label: str) -> float:
    """How many slots a box needs for ``label`` (escaped HTML) at full font size: at least one."""
    return max(1.0, (len(unescape(label)) + 1) / SLOT_CHARS)


def _wrap(widths: list[float], per_line: int) -> list[tuple[int, int, list[float]]]:
    """Positions ``[lo, hi)`` per line, filling up to ``per_line`` slots, and the x where each box starts (plus the
    end of the last)."""
    out, lo = [], 0
    while lo < len(widths):
        xs, hi = [0.0], lo
        while hi < len(widths) and (hi == lo or xs[-1] + widths[hi] <= per_line):
            xs.append(xs[-1] + widths[hi])
            hi += 1
        out.append((lo, hi, xs))
        lo = hi
    return out


def token_strip(rows: list[tuple[str, list[Cell]]], per_line: int = 14, height_per_row: int = 42,
                aligned: bool = True, legend: list[tuple[str, str]] = ()) -> go.Figure:
    """Rows of token boxes wrapped about every ``per_line`` tokens, so 128 tokens stay readable; ``rows`` = (name,
    cells). A box is one slot wide, wider where its label needs it (``question`` keeps its font size instead of
    shrinking). ``aligned``: row ``i`` token ``t`` sits above row ``i+1`` token ``t`` (the rows are views of one
    sequence, and share each position's width); otherwise each row is drawn whole, one after the other. ``legend``:
    (name, colour) entries for the colours the boxes use; none hides the legend."""
    n = max((len(cells) for _, cells in rows), default=0)
    lines: list[tuple[float, str, int, list[Cell], list[float]]] = []  # (y, row name, first position, cells, x0s)
    if aligned:
        widths = [max(_slots(cells[t].text) for _, cells in rows if t < len(cells)) for t in range(n)]
        for band, (lo, hi, xs) in enumerate(_wrap(widths, per_line) or [(0, 0, [0.0])]):
            for r, (name, cells) in enumerate(rows):
                lines.append((-(band * (len(rows) + 0.6) + r), name, lo, cells[lo:hi], xs))
    else:
        y = 0.0
        for name, cells in rows:
            for lo, hi, xs in _wrap([_slots(c.text) for c in cells], per_line) or [(0, 0, [0.0])]:
                lines.append((y, name, lo, cells[lo:hi], xs))
                y -= 1
            y -= 0.6
    data = []
    for name, _ in rows:
        boxes = [Box(x0 + 0.04, x1 - 0.04, y, c.text, c.colour, c.hover, c.text_colour, c.pattern)
                 for y, row, _, cells, xs in lines if row == name for c, x0, x1 in zip(cells, xs, xs[1:])]
        data += box_trace(boxes, escape(name))
    # where each wrapped line starts, so a student can count
    starts = [dict(x=0, y=y + ROW / 2 + 0.05, text=str(start), showarrow=False, xanchor="left", yanchor="bottom",
                   font=dict(size=12, color="#666666"))
              for y, row, start, cells, _ in lines if aligned and start and cells and row == rows[0][0]]
    bottom = min(y for y, *_ in lines)
    return go.Figure(data + legend_traces(list(legend)), layout(
        None, int((1.2 - bottom) * height_per_row + 60), annotations=starts, barmode="overlay", bargap=0,
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0), margin=dict(l=10, r=10, t=40, b=10),
        hoverlabel=dict(font_size=15, font_family=FONT["family"]), showlegend=None if legend else False,
        yaxis=dict(tickvals=[y for y, *_ in lines], ticktext=[escape(name) for _, name, *_ in lines], showgrid=False,
                   zeroline=False, range=[bottom - 0.6, 0.6], fixedrange=True),
        xaxis=dict(visible=False, range=[0, per_line], fixedrange=True)))
