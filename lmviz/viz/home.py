"""The Home page's figures: the three architectures, our sizes beside the originals, training curves, evaluation.

Every number comes from a checkpoint: ``sizes_of`` reads the loaded model's config and counts its
parameters, ``training_curves`` reads its ``train_log.json``, ``evaluation_rows`` reads the
``evaluation.json`` that ``python -m lmviz evaluate`` writes (defensively: a missing or renamed
figure drops its row, it never breaks the page).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lmviz.analysis.forming import phase_logs
from lmviz.models.kinds import KINDS
from lmviz.viz.evaluation import number
from lmviz.viz.style import MODEL_COLOURS, PALETTE, base_layout, escape
from lmviz.viz.tokens import tint

# Published parameter counts (Devlin et al. 2019; Radford et al. 2019; Brown et al. 2020; Raffel et al. 2020).
ORIGINALS: list[tuple[str, str, float]] = [
    ("bert", "BERT-base", 110e6), ("bert", "BERT-large", 340e6),
    ("gpt2", "GPT-2 small", 117e6), ("gpt2", "GPT-2 medium", 345e6), ("gpt2", "GPT-2 large", 762e6),
    ("gpt2", "GPT-2 XL", 1.5e9), ("gpt2", "GPT-3", 175e9),
    ("t5", "T5-small", 60e6), ("t5", "T5-base", 220e6), ("t5", "T5-large", 770e6), ("t5", "T5-3B", 3e9),
    ("t5", "T5-11B", 11e9),
]


def human(n: float) -> str:
    """A parameter count as people say it: 2.67 M, 1.5 B."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{n:.0f}"


# --- sizes -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    """One model's shape, as the checkpoint says."""

    kind: str
    layers: int  # T5: encoder layers
    decoder_layers: int  # T5 only; 0 otherwise
    heads: int
    hidden: int
    ffn: int
    context: int  # tokens the model reads at most (T5: what lmviz gives its encoder)
    vocab: int
    params: int

    @property
    def layer_text(self) -> str:
        return f"{self.layers} + {self.decoder_layers}" if self.decoder_layers else str(self.layers)


def sizes_from_config(kind: str, config: dict, params: int, context: int | None = None) -> Sizes:
    """``Sizes`` from a Hugging Face ``config.json`` dict (``model.config.to_hf()``) and a parameter count."""
    layers, decoder_layers, heads, hidden, ffn, positions = KINDS[kind].shape(config)
    return Sizes(kind, layers, decoder_layers, heads, hidden, ffn, context or positions, config["vocab_size"], params)


def sizes_of(loaded) -> Sizes:
    """The loaded model's ``Sizes``: its config and its real parameter count (tied weights counted once)."""
    from lmviz.analysis.inference import context_limit

    params = sum(p.numel() for p in loaded.model.parameters())
    return sizes_from_config(loaded.kind, loaded.model.config.to_hf(), params, context_limit(loaded))


def sizes_table(sizes: list[Sizes]) -> list[dict]:
    """One row per model for a table under the diagrams."""
    return [{"model": KINDS[s.kind].heading, "layers": s.layer_text, "heads": s.heads, "hidden size": s.hidden,
             "feed-forward": s.ffn, "context (tokens)": s.context, "vocabulary": f"{s.vocab:,}",
             "parameters": f"{s.params:,} ({human(s.params)})"} for s in sizes]


# --- architecture diagrams ----------------------------------------------------------------------------

W = 10.0  # the drawing's width in its own units


def _box(fig: go.Figure, x0, y0, x1, y1, text: str, colour: str, size: int = 15, fill: float = 0.75, bold: bool = False) -> None:
    fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color=colour, width=2),
                  fillcolor=tint(colour, fill), layer="below")
    if text:
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=f"<b>{text}</b>" if bold else text, showarrow=False,
                           font=dict(size=size, color="#111111"), align="center")


def _arrow(fig: go.Figure, x0, y0, x1, y1, colour: str = "#444444") -> None:
    fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="", showarrow=True,
                       arrowhead=2, arrowsize=1.3, arrowwidth=2, arrowcolor=colour)


def _mask_glyph(fig: go.Figure, x0: float, y0: float, size: float, causal: bool, colour: str, n: int = 5) -> None:
    """A tiny attention mask: filled cells may be attended to (all of them, or the lower triangle)."""
    c = size / n
    for q in range(n):
        for k in range(n):
            on = k <= q or not causal
            fig.add_shape(type="rect", x0=x0 + k * c, x1=x0 + (k + 1) * c, y0=y0 + (n - 1 - q) * c, y1=y0 + (n - q) * c,
                          line=dict(color="white", width=1), fillcolor=colour if on else "#E8E8E8")


def _stack(fig: go.Figure, x0: float, x1: float, y0: float, sublayers: list[str], count: int, colour: str,
           title: str | None = None) -> float:
    """A Transformer stack: one outlined block holding its sub-layers (bottom first), repeated ``count`` times
    (``× count`` to its right, or after ``title`` above it); returns its top."""
    h = 1.05
    top = y0 + 0.35 + h * len(sublayers) + (0.7 if title else 0.2)
    # two shadow outlines say "this block repeats"
    for d in (0.24, 0.12):
        fig.add_shape(type="rect", x0=x0 + d, y0=y0 + d, x1=x1 + d, y1=top + d, line=dict(color=colour, width=1.5),
                      fillcolor="white", layer="below")
    fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=top, line=dict(color=colour, width=2.5), fillcolor=tint(colour, 0.93),
                  layer="below")
    y = y0 + 0.3
    for name in sublayers:
        _box(fig, x0 + 0.25, y, x1 - 0.25, y + h - 0.2, name, colour, size=14, fill=0.7)
        y += h
    if title:
        fig.add_annotation(x=x0 + 0.25, y=top - 0.08, text=f"<b>{title} × {count}</b>", showarrow=False, xanchor="left",
                           yanchor="top", font=dict(size=16, color=colour))
    else:
        fig.add_annotation(x=x1 + 0.35, y=(y0 + top) / 2, text=f"<b>× {count}</b>", showarrow=False, xanchor="left",
                           font=dict(size=18, color=colour))
    return top


def architecture_diagram(s: Sizes) -> go.Figure:
    """One model's blocks, bottom (tokens in) to top (prediction out), labelled with its real sizes."""
    kind = KINDS[s.kind]
    colour = kind.colour
    fig = go.Figure()
    heads = f"{s.heads} heads"
    if len(kind.stacks) == 1:
        x0, x1 = 1.8, 7.8
        mid = (x0 + x1) / 2
        pos = "token + segment<br>+ position" if kind.reads_pair else "token + position"
        _box(fig, x0, 0.2, x1, 1.2, f"tokens in (≤ {s.context})", "#666666", fill=0.85)
        _arrow(fig, mid, 1.2, mid, 1.65)
        _box(fig, x0, 1.65, x1, 3.0, f"{pos}<br>embeddings {s.vocab:,}×{s.hidden}", colour, size=14)
        _arrow(fig, mid, 3.0, mid, 3.45)
        attn = f"masked self-attn.<br>{heads}, past only" if kind.causal else f"self-attention<br>{heads}, sees all"
        top = _stack(fig, x0, x1, 3.45, [attn, f"feed-forward<br>{s.hidden}→{s.ffn}→{s.hidden}"], s.layers, colour)
        _mask_glyph(fig, 0.3, (3.45 + top) / 2 - 0.45, 1.3, causal=kind.causal, colour=colour)
        fig.add_annotation(x=0.95, y=(3.45 + top) / 2 - 0.55, text="mask", showarrow=False, yanchor="top",
                           font=dict(size=14, color="#444"))
        _arrow(fig, mid, top + 0.25, mid, top + 0.75)
        _box(fig, x0, top + 0.75, x1, top + 2.15, kind.output_head, colour, size=14, fill=0.6)
        ymax = top + 2.35
    else:
        ex0, ex1, dx0, dx1 = 0.1, 4.3, 5.5, 9.7
        _box(fig, ex0, 0.2, ex1, 1.2, f"input ≤ {s.context}", "#666666", fill=0.85, size=14)
        _box(fig, dx0, 0.2, dx1, 1.2, "output so far", "#666666", fill=0.85, size=14)
        for a, b in ((ex0, ex1), (dx0, dx1)):
            _arrow(fig, (a + b) / 2, 1.2, (a + b) / 2, 1.65)
        _box(fig, ex0, 1.65, dx1, 3.0, f"shared embeddings {s.vocab:,}×{s.hidden}<br>relative position bias",
             colour, size=14)
        for a, b in ((ex0, ex1), (dx0, dx1)):
            _arrow(fig, (a + b) / 2, 3.0, (a + b) / 2, 3.45)
        etop = _stack(fig, ex0, ex1 - 0.3, 3.45, ["self-<br>attention", "feed-<br>forward"], s.layers, colour, "encoder")
        dtop = _stack(fig, dx0, dx1 - 0.3, 3.45, ["masked self-<br>attention", "cross-<br>attention", "feed-<br>forward"],
                      s.decoder_layers, colour, "decoder")
        # the encoder's output feeds every decoder layer's cross-attention
        cross_y = 3.45 + 0.3 + 1.05 + 0.425
        out_x, turn = ex1 - 0.9, (ex1 + dx0) / 2
        fig.add_shape(type="path", path=f"M {out_x} {etop + 0.24} L {out_x} {etop + 1.1} L {turn} {etop + 1.1} L {turn} {cross_y}",
                      line=dict(color="#444444", width=2.5))
        _arrow(fig, turn, cross_y, dx0 + 0.25, cross_y)
        dmid = (dx0 + dx1 - 0.3) / 2
        _arrow(fig, dmid, dtop + 0.25, dmid, dtop + 0.75)
        _box(fig, dx0, dtop + 0.75, dx1, dtop + 2.15, kind.output_head, colour, size=14, fill=0.6)
        ymax = dtop + 2.35
    n_layers = f"{s.layers}+{s.decoder_layers} layers" if s.decoder_layers else f"{s.layers} layers"
    title = (f"<b>{kind.heading}</b><br><span style='font-size:15px'>{n_layers} · {s.heads} heads · d {s.hidden}<br>"
             f"{human(s.params)} parameters</span>")
    fig.update_yaxes(range=[0, ymax], visible=False, fixedrange=True)
    fig.update_xaxes(range=[0, W], visible=False, fixedrange=True)
    base_layout(fig, None, height=int(ymax * 46 + 90))
    fig.update_layout(title=dict(text=title, x=0.5, xanchor="center", y=0.97, yanchor="top", yref="container", automargin=True, font=dict(size=18, color=colour)),
                      margin=dict(l=5, r=5, t=105, b=5), showlegend=False, plot_bgcolor="white")
    return fig


# --- our sizes beside the originals -----------------------------------------------------------------

def size_chart(ours: dict[str, int]) -> go.Figure:
    """Parameter counts on a log scale: ours (``{kind: params}``) beside the published models of each family."""
    rows = []
    for kind in KINDS:
        if kind in ours:
            rows.append((kind, f"our {KINDS[kind].short}", float(ours[kind]), True))
        rows += [(k, name, n, False) for k, name, n in ORIGINALS if k == kind]
    names = [escape(r[1]) for r in rows]
    fig = go.Figure(go.Bar(
        orientation="h", y=names, x=[r[2] for r in rows], text=[human(r[2]) for r in rows], textposition="outside",
        marker=dict(color=[MODEL_COLOURS[r[0]] if r[3] else tint(MODEL_COLOURS[r[0]], 0.55) for r in rows],
                    pattern=dict(shape=["" if r[3] else "/" for r in rows], fgcolor="white", size=8, solidity=0.2)),
        hovertemplate="%{y}: %{x:,.0f} parameters<extra></extra>", cliponaxis=False,
    ))
    top = max(r[2] for r in rows)
    fig.update_xaxes(type="log", title="parameters (log scale: each grid line is 10× more)",
                     range=[math.log10(min(r[2] for r in rows)) - 0.5, math.log10(top) + 0.9],
                     tickvals=[10 ** e for e in range(6, 13)], ticktext=["1 M", "10 M", "100 M", "1 B", "10 B", "100 B", "1 T"])
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=15))
    base_layout(fig, None, height=34 * len(rows) + 90)
    fig.update_layout(margin=dict(l=10, r=30, t=10, b=10), showlegend=False, bargap=0.25)
    return fig


# --- training curves ---------------------------------------------------------------------------------

HELD_OUT_LOSS = ("mlm_loss", "loss")  # the held-out loss in an eval entry, first present wins
FIGURE_NAMES = {"mlm_top1": "MLM top-1 accuracy", "mlm_top5": "MLM top-5 accuracy", "nsp_acc": "NSP accuracy",
                "content_acc": "span-token accuracy", "bits_per_char": "bits per character", "loss": "held-out loss",
                "mlm_loss": "held-out MLM loss"}


@dataclass
class Phase:
    name: str
    train: list[dict]
    evals: list[dict]
    offset: int  # tokens seen before this phase began


def phases(log: dict) -> list[Phase]:
    """The log's training phases in order: the ``init`` runs the model started from (a second phase's log holds its
    first phase's, which may hold another), then this one; each drawn after the tokens of those before it."""
    chain = phase_logs(log)
    out: list[Phase] = []
    offset = 0
    for i, part in enumerate(reversed(chain)):
        if i < len(chain) - 1 and not (part.get("train") or part.get("evals")):
            continue  # an earlier phase with nothing to draw
        last = i == len(chain) - 1
        name = f"phase {len(out) + 1} ({part.get('device', '?')})" if out or not last else f"training ({part.get('device', '?')})"
        out.append(Phase(name, _entries(part.get("train")), _entries(part.get("evals")), offset))
        offset += max((e["tokens"] for e in out[-1].train + out[-1].evals), default=0)
    return out


def _entries(rows) -> list[dict]:
    """Entries that have a token count, sorted by it (anything malformed is skipped)."""
    if not isinstance(rows, list):
        return []
    good = [r for r in rows if isinstance(r, dict) and isinstance(r.get("tokens"), (int, float))]
    return sorted(good, key=lambda r: r["tokens"])


def _held_loss_key(evals: list[dict]) -> str | None:
    return next((k for k in HELD_OUT_LOSS if any(isinstance(e.get(k), (int, float)) for e in evals)), None)


def training_curves(kind: str, log: dict | None) -> go.Figure:
    """Left: training and held-out loss (nats per predicted token) against tokens seen.
    Right: the other held-out figures (accuracies, bits per character). Phases are drawn one after the other."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("loss (nats per predicted token)", "held-out figures"))
    colour = MODEL_COLOURS[kind]
    parts = phases(log or {})
    metric_colours: dict[str, str] = {}
    seen_legend: set[str] = set()
    for n, ph in enumerate(parts):
        dash = "dot" if n < len(parts) - 1 else "solid"
        suffix = f" · {ph.name}" if len(parts) > 1 else ""
        if ph.train:
            ys = [r.get("loss") for r in ph.train]
            fig.add_trace(go.Scatter(x=[r["tokens"] + ph.offset for r in ph.train], y=ys, mode="lines",
                                     name=f"training loss{suffix}", line=dict(color=tint(colour, 0.35), width=2, dash=dash),
                                     hovertemplate="%{x:.3s} tokens<br>training loss %{y:.3f}<extra></extra>"), 1, 1)
        key = _held_loss_key(ph.evals)
        if key:
            rows = [e for e in ph.evals if isinstance(e.get(key), (int, float))]
            fig.add_trace(go.Scatter(x=[e["tokens"] + ph.offset for e in rows], y=[e[key] for e in rows], mode="lines+markers",
                                     name=f"held-out loss{suffix}", line=dict(color=colour, width=3, dash=dash),
                                     marker=dict(size=7), hovertemplate="%{x:.3s} tokens<br>held-out loss %{y:.3f}<extra></extra>"), 1, 1)
        others = sorted({k for e in ph.evals for k, v in e.items() if isinstance(v, (int, float))} -
                        {"step", "seconds", "tokens", "train_loss", *HELD_OUT_LOSS})
        for k in others:
            metric_colours.setdefault(k, PALETTE[(len(metric_colours) + 1) % len(PALETTE)])
            rows = [e for e in ph.evals if isinstance(e.get(k), (int, float))]
            name = FIGURE_NAMES.get(k, k.replace("_", " "))
            fig.add_trace(go.Scatter(x=[e["tokens"] + ph.offset for e in rows], y=[e[k] for e in rows], mode="lines+markers",
                                     name=escape(name), legendgroup=k, showlegend=k not in seen_legend,
                                     line=dict(color=metric_colours[k], width=2.5, dash=dash), marker=dict(size=6),
                                     hovertemplate=f"%{{x:.3s}} tokens<br>{escape(name)} %{{y:.3f}}<extra></extra>"), 1, 2)
            seen_legend.add(k)
        if n and ph.offset:
            for col in (1, 2):
                fig.add_vline(x=ph.offset, line=dict(color="#666666", dash="dash", width=1.5), row=1, col=col)
            fig.add_annotation(x=ph.offset, y=1, yref="y domain", text=f" {escape(ph.name)} starts", showarrow=False,
                               xanchor="left", yanchor="top", font=dict(size=13, color="#444"), row=1, col=1)
    best = log.get("best") if isinstance(log, dict) else None
    if isinstance(best, dict) and number(best.get("tokens")) is not None and parts[-1].evals:
        x = best["tokens"] + parts[-1].offset
        for col in (1, 2):
            fig.add_vline(x=x, line=dict(color="#333333", dash="dash", width=2), row=1, col=col)
        end = max(e["tokens"] for e in parts[-1].evals + parts[-1].train) + parts[-1].offset
        right = x > 0.7 * end  # near the end the label goes left of the line, inside the plot
        fig.add_annotation(x=x, y=1, yref="y domain", text=f"kept: step {best.get('step', '?')}", showarrow=False,
                           xanchor="right" if right else "left", xshift=-4 if right else 4, yanchor="top",
                           font=dict(size=14, color="#333"), row=1, col=1)
    if not any(ph.train or ph.evals for ph in parts):
        fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=16),
                           text="This checkpoint has no train_log.json, so there is no curve to draw.")
    fig.update_xaxes(title="tokens seen", tickformat=".3~s")
    fig.update_yaxes(rangemode="tozero", row=1, col=2)  # small accuracies are drawn from zero, not magnified
    base_layout(fig, None, height=400)
    fig.update_layout(legend=dict(orientation="h", y=-0.25, x=0, font=dict(size=14)), margin=dict(l=10, r=10, t=40, b=10))
    fig.update_annotations(font_size=15, selector=dict(text="loss (nats per predicted token)"))
    fig.update_annotations(font_size=15, selector=dict(text="held-out figures"))
    return fig


def training_summary(log: dict | None) -> str:
    """One line: steps, tokens, time and device of the (last phase of the) run."""
    if not isinstance(log, dict):
        return "No training log."
    parts = phases(log)
    last = (parts[-1].train or parts[-1].evals or [{}])[-1]
    total = last.get("tokens", 0) + parts[-1].offset
    secs = sum(((p.train or p.evals or [{}])[-1].get("seconds") or 0) for p in parts)
    devices = " then ".join(p.name.split("(")[-1].rstrip(")") for p in parts)
    best = log.get("best")
    kept = (f" The shipped weights are from step {best['step']} (dashed line), where the held-out loss was lowest."
            if isinstance(best, dict) and best.get("step") is not None and best.get("step") != last.get("step") else "")
    return (f"{last.get('step', '?')} steps{' in the last phase' if len(parts) > 1 else ''}, {human(total)} tokens seen "
            f"in all, {secs / 60:.1f} minutes of training on {devices}.{kept}")


DEVICE_NAMES = {"cuda": "a GPU (CUDA)", "cpu": "the CPU", "mps": "Apple's GPU (MPS)"}


def device_text(device_line: str, logs: dict[str, dict | None]) -> str:
    """Where this app runs, and where each model was trained."""
    trained = {KINDS[k].short: DEVICE_NAMES.get(v["device"], str(v["device"]))
               for k, v in logs.items() if isinstance(v, dict) and v.get("device")}
    if len(set(trained.values())) == 1 and len(trained) > 1:
        where = f"All {({2: 'two', 3: 'three'}).get(len(trained), len(trained))} were trained on {next(iter(trained.values()))}."
    else:
        where = "Trained: " + ", ".join(f"{m} on {d}" for m, d in trained.items()) + "." if trained else ""
    return f"This app runs the models on **{device_line}**." + (f" {where}" if where else "")

