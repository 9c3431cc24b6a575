"""The Masking page's figures: what each pretraining objective does to a text, and what the model answers.

Each function takes a result from ``lmviz.pretrain.objectives`` (plain data, computed from a real forward pass)
and returns a plotly figure or table rows; token labels come already made safe by ``inference.label``
and are HTML-escaped here before plotly sees them.
"""
from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go

from lmviz.pretrain.masking import KEPT, MASKED, OUTCOME_NAMES, RANDOM, UNSELECTED
from lmviz.pretrain.objectives import MlmResult, NspResult, ShiftTable, T5Result
from lmviz.viz.style import MODEL_COLOURS, PALETTE, base_layout, escape, ticks
from lmviz.viz.strips import Cell, token_strip
from lmviz.viz.tokens import SPECIAL_GREY, tint

# unselected stays white; the three things that happen to a selected token get distinct Okabe–Ito colours
OUTCOME_COLOURS = {UNSELECTED: "#F2F2F2", MASKED: "#0072B2", RANDOM: "#E69F00", KEPT: "#009E73"}
OUTCOME_INK = {UNSELECTED: "#111111", MASKED: "#FFFFFF", RANDOM: "#111111", KEPT: "#FFFFFF"}
OUTCOME_PATTERN = {UNSELECTED: "", MASKED: "", RANDOM: "x", KEPT: "."}  # shape too, not colour alone
TYPED_COLOUR, TYPED_PATTERN = "#56B4E9", "/"  # a [MASK] the user typed: a hole BERT fills, but not one the draw made
SPECIAL_LABELS = {"[CLS]", "[SEP]", "[PAD]", "</s>", "<pad>", "<|endoftext|>"}
SENTINEL = re.compile(r"^<extra_id_(\d+)>$")


def _outcome_legend(typed: bool = False) -> list[tuple[str, str]]:
    return ([("not selected", OUTCOME_COLOURS[UNSELECTED]), ("selected → [MASK]", OUTCOME_COLOURS[MASKED]),
             ("selected → random token", OUTCOME_COLOURS[RANDOM]), ("selected, kept as it was", OUTCOME_COLOURS[KEPT]),
             ("special token", SPECIAL_GREY)] + ([("[MASK] you typed", TYPED_COLOUR)] if typed else []))


def _top_text(top: list[tuple[str, float]]) -> str:
    return "<br>".join(f"{escape(t)} {p:.1%}" for t, p in top)


def mlm_figure(result: MlmResult, per_line: int = 14) -> go.Figure:
    """Two aligned rows: the original pieces and what BERT read, each coloured by what the draw did to it.
    Hover on a selected position lists the model's top-5 there."""
    preds = {p.position: p for p in result.predictions}
    original, shown = [], []
    for i, (tok, seen, oc) in enumerate(zip(result.tokens, result.shown, result.outcome)):
        special = tok in SPECIAL_LABELS and oc == UNSELECTED
        typed = i in preds and preds[i].typed
        colour = SPECIAL_GREY if special else TYPED_COLOUR if typed else OUTCOME_COLOURS[oc]
        ink = "#111111" if special or typed else OUTCOME_INK[oc]
        pattern = "" if special else TYPED_PATTERN if typed else OUTCOME_PATTERN[oc]
        hover = f"position {i}: <b>{escape(tok)}</b><br>{escape(OUTCOME_NAMES[oc]) if oc else 'not selected'}"
        if i in preds:
            p = preds[i]
            hover += f"<br>the model read <b>{escape(seen)}</b><br>its top 5:<br>{_top_text(p.top)}"
            hover += "<br>you typed [MASK]: no true token to score" if p.typed else f"<br>P(true token) {p.true_prob:.1%} · loss {p.loss:.2f}"
        original.append(Cell(escape(tok), colour, hover, ink, pattern))
        shown.append(Cell(escape(seen), colour, hover, ink, pattern))
    fig = token_strip([("original", original), ("BERT reads", shown)], per_line,
                      legend=_outcome_legend(typed=any(p.typed for p in result.predictions)))
    return fig


def mlm_top5_figure(result: MlmResult) -> go.Figure:
    """One row per selected position: the model's five best guesses left to right, shaded by probability;
    the true token's cell is marked ✓."""
    preds = result.predictions
    z = np.array([[p for _, p in pr.top] for pr in preds]) if preds else np.zeros((0, 5))
    hit = lambda pr, tok: not pr.typed and tok == pr.truth  # noqa: E731
    text = [[("✓ " if hit(pr, tok) else "") + escape(tok) + f"<br>{p:.0%}" for tok, p in pr.top] for pr in preds]
    rows = [f"{pr.position}: you typed [MASK]" if pr.typed else f"{pr.position}: {escape(pr.truth)} → {escape(pr.shown)}" for pr in preds]
    hover = [[f"position {pr.position} ({'typed [MASK], no truth' if pr.typed else f'truth <b>{escape(pr.truth)}</b>'})<br>"
              f"guess {j + 1}: <b>{escape(tok)}</b> {p:.2%}" for j, (tok, p) in enumerate(pr.top)] for pr in preds]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"guess {j + 1}" for j in range(z.shape[1] if z.size else 5)], y=list(range(len(rows))), text=text,
        texttemplate="%{text}", textfont=dict(size=15), customdata=hover, hovertemplate="%{customdata}<extra></extra>",
        colorscale=[[0, "#F7FBFF"], [1, "#2171B5"]], zmin=0, zmax=1, colorbar=dict(title="probability", tickformat=".0%"),
        xgap=2, ygap=2))
    for r, pr in enumerate(preds):  # outline the true token where the model ranked it in its top 5
        for j, (tok, _) in enumerate(pr.top):
            if hit(pr, tok):
                fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=r - 0.5, y1=r + 0.5, line=dict(color="#D55E00", width=3))
    fig.update_yaxes(tickvals=list(range(len(rows))), ticktext=rows, autorange="reversed", title="true → BERT read", fixedrange=True)
    fig.update_xaxes(side="top", fixedrange=True)
    base_layout(fig, None, height=max(220, 52 * len(rows) + 90))
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10))
    return fig


def mlm_rows(result: MlmResult) -> list[dict]:
    """A table row per selected position."""
    return [{"position": p.position, "true token": "(none: you typed [MASK])" if p.typed else p.truth, "BERT read": p.shown,
             "what happened": "typed [MASK]" if p.typed else OUTCOME_NAMES[p.outcome],
             "top 5": " · ".join(f"{t} {q:.0%}" for t, q in p.top), "P(true)": None if p.typed else round(p.true_prob, 4),
             "true in top 5": "—" if p.typed else "yes" if p.in_top5 else "no",
             "loss (nats)": None if p.typed else round(p.loss, 3)} for p in result.predictions]


def nsp_figure(result: NspResult, per_line: int = 14) -> go.Figure:
    """``[CLS] A [SEP] B [SEP]`` with each token coloured by its ``token_type_id`` (segment A or B)."""
    colours = {0: tint(MODEL_COLOURS["bert"], 0.55), 1: tint(PALETTE[1], 0.45)}
    tokens, types = [], []
    for i, (tok, t) in enumerate(zip(result.tokens, result.type_ids)):
        special = tok in SPECIAL_LABELS
        hover = f"position {i}: <b>{escape(tok)}</b><br>token_type_id {t} (sentence {'AB'[t]})"
        tokens.append(Cell(escape(tok), SPECIAL_GREY if special else colours[t], hover, pattern="" if t == 0 else "/"))
        types.append(Cell(str(t), colours[t], hover))
    fig = token_strip([("tokens", tokens), ("token_type_ids", types)], per_line,
                      legend=[("sentence A (type 0)", colours[0]), ("sentence B (type 1)", colours[1]), ("special token", SPECIAL_GREY)])
    return fig


def _t5_cells(tokens: list[str], prefix: str) -> list[Cell]:
    cells = []
    for i, tok in enumerate(tokens):
        m = SENTINEL.match(tok)
        if m:
            k = int(m.group(1))
            colour = PALETTE[k % (len(PALETTE) - 2)]  # skip yellow and black, too weak / too dark for ink
            cells.append(Cell(f"⟨{k}⟩", colour, f"{prefix} {i}: sentinel <b>{escape(tok)}</b>", "#FFFFFF" if k % 6 in (0, 5) else "#111111"))
        elif tok in SPECIAL_LABELS:
            cells.append(Cell(escape(tok), SPECIAL_GREY, f"{prefix} {i}: <b>{escape(tok)}</b> (end of sequence)"))
        else:
            cells.append(Cell(escape(tok), tint(MODEL_COLOURS["t5"], 0.8), f"{prefix} {i}: <b>{escape(tok)}</b>"))
    return cells


def t5_figure(result: T5Result, per_line: int = 14) -> go.Figure:
    """Three strips: the corrupted input, the true target and the model's own output. Sentinel ``<extra_id_k>``
    is drawn ⟨k⟩ in the same colour in all three, so a student can follow each span."""
    fig = token_strip([("input", _t5_cells(result.input_tokens, "input position")),
                       ("target", _t5_cells(result.target_tokens, "target position")),
                       ("T5 wrote", _t5_cells(result.output_tokens, "output position"))], per_line, aligned=False)
    return fig


def t5_rows(result: T5Result) -> list[dict]:
    return [{"sentinel": f.sentinel, "hidden text": f.truth, "T5 wrote": f.model, "exact": "yes" if f.correct else "no"}
            for f in result.fills]


def shift_figure(table: ShiftTable) -> go.Figure:
    """GPT-2's shift-by-one: at each position, the probability the model gave to the true next token (bars)
    and to its own favourite (dots). Hover names input → target and the loss."""
    rows = table.rows
    x = list(range(len(rows)))
    labels = [f"{r.input} → {r.target}" for r in rows]
    hover = [f"position {r.position}: reads <b>{escape(r.input)}</b>, must predict <b>{escape(r.target)}</b><br>"
             f"P(target) {r.prob:.2%} · loss {r.loss:.2f} nats<br>its favourite: <b>{escape(r.guess)}</b> {r.guess_prob:.2%}"
             for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=[r.prob for r in rows], name="P(true next token)", marker_color=MODEL_COLOURS["gpt2"],
                         customdata=hover, hovertemplate="%{customdata}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[r.guess_prob for r in rows], mode="markers", name="P(model's favourite)",
                             marker=dict(symbol="diamond", size=9, color="#000000"), customdata=hover,
                             hovertemplate="%{customdata}<extra></extra>"))
    xi, xt = ticks(labels, max_ticks=32)
    fig.update_xaxes(tickvals=xi, ticktext=xt, tickangle=-50, title="position: token read → token to predict")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title="probability")
    base_layout(fig, None, height=430)
    fig.update_layout(legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0), margin=dict(l=10, r=10, t=40, b=10), bargap=0.15)
    return fig


def shift_rows(table: ShiftTable) -> list[dict]:
    return [{"position": r.position, "reads": r.input, "must predict": r.target, "P(target)": round(r.prob, 4),
             "loss (nats)": round(r.loss, 3), "model's favourite": r.guess, "P(favourite)": round(r.guess_prob, 4)}
            for r in table.rows]

