"""Tokens as boxes: the three tokenizers aligned under the source text (``lmviz.viz.strips`` draws the coloured
token strips from the same boxes).

The figures are horizontal plotly bars (one trace per row kind), so hover shows the piece's id,
span and bytes, and the text inside each box shrinks to fit rather than overlap its neighbours.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import plotly.graph_objects as go

from lmviz.analysis.inference import label
from lmviz.models.kinds import KINDS
from lmviz.pretrain.tokenizers import Explanation
from lmviz.viz.style import FONT, MODEL_COLOURS, escape, layout

SPECIAL_GREY = "#BBBBBB"
UNKNOWN = "#000000"
MONO = "'DejaVu Sans Mono', 'Noto Sans Mono', monospace"
GAP = 7  # character slots between sequences, where template tokens ([CLS], [SEP], </s>) are drawn
MAX_SHOWN = 600  # characters drawn; longer texts are counted in full but drawn only this far
ROW = 0.8  # box thickness in row units
LIT = "#D55E00"  # Okabe–Ito vermillion: the clicked piece and its characters
CONTEXT = 14


def tint(hex_colour: str, amount: float) -> str:
    """``hex_colour`` mixed with white: 0 keeps it, 1 is white."""
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    mix = [round(c + (255 - c) * amount) for c in (r, g, b)]
    return "#" + "".join(f"{c:02X}" for c in mix)


@dataclass
class Box:
    x0: float
    x1: float
    y: float
    text: str
    colour: str
    hover: str
    text_colour: str = "#111111"
    pattern: str = ""
    custom: tuple = ()  # what a click on the box reports (``aligned_rows``: tokenizer and piece index)


def box_trace(boxes: list[Box], name: str = "") -> list[dict]:
    """All ``boxes`` as one horizontal bar trace (hover text is already escaped); none for no boxes."""
    if not boxes:
        return []
    return [dict(
        type="bar", orientation="h", base=[b.x0 for b in boxes], x=[b.x1 - b.x0 for b in boxes], y=[b.y for b in boxes],
        width=ROW, text=[b.text for b in boxes], textposition="inside", insidetextanchor="middle", constraintext="both",
        textangle=0, textfont=dict(color=[b.text_colour for b in boxes], family=MONO, size=16),
        hovertext=[b.hover for b in boxes], hovertemplate="%{hovertext}<extra></extra>", name=name, showlegend=False,
        cliponaxis=False, customdata=[list(b.custom) for b in boxes] if any(b.custom for b in boxes) else None,
        selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1)),  # a click must not dim the rest
        marker=dict(color=[b.colour for b in boxes], line=dict(color="white", width=1.5),
                    pattern=dict(shape=[b.pattern for b in boxes], fgcolor="#777777", size=8, solidity=0.15)),
    )]


def legend_traces(items: list[tuple[str, str]]) -> list[dict]:
    """Legend entries (name, colour) for the colours the boxes use."""
    return [dict(type="scatter", x=[None], y=[None], mode="markers", name=escape(name),
                 marker=dict(symbol="square", size=16, color=colour, line=dict(color="#666", width=1)))
            for name, colour in items]


# --- the aligned tokenizer rows ----------------------------------------------------------------------

def _byte_label(p) -> str:
    """A byte piece's label: its bytes in hex (``F0 9F``), readable where a replacement character would not be."""
    return " ".join(f"{b:02X}" for b in p.raw_bytes or b"")


def _weight(p) -> float:
    """Slots a piece asks for inside its group: its characters, or for a byte piece room for its hex label at full
    size (a label character is about 0.7 of a slot wide, plus the box's margins)."""
    return 0.75 * len(_byte_label(p)) + 0.5 if p.partial_char else max(0.5, p.end - p.start)


def _groups(exp: Explanation) -> list[list[int]]:
    """Runs of consecutive pieces that share characters (the bytes of one emoji, T5's ``▁``), as piece indices;
    template tokens, which have no characters, are left out."""
    groups: list[list[int]] = []
    end, seq = -1, -1
    for i, p in enumerate(exp.pieces):
        if p.special and p.start == p.end:
            continue
        if groups and p.sequence == seq and p.start < end:
            groups[-1].append(i)
            end = max(end, p.end, p.start + 1)
        else:
            groups.append([i])
            end, seq = max(p.end, p.start + 1), p.sequence  # a zero-width piece (T5's leading ▁) joins the next one
    return groups


def _slot_widths(explanations: dict[str, Explanation], seq_base: list[int], lengths: list[int], total: int) -> list[float]:
    """Each character slot's width: 1, or wider where byte-level BPE spells a character in several byte pieces,
    so that each byte gets a box a reader can read (the other rows stretch with it and stay aligned)."""
    widths = [1.0] * total
    for exp in explanations.values():
        for group in _groups(exp):
            pieces = [exp.pieces[j] for j in group]
            if not any(p.partial_char for p in pieces):
                continue
            seq = min(pieces[0].sequence, len(seq_base) - 1)
            lo, hi = min(p.start for p in pieces), max(max(p.end for p in pieces), min(p.start for p in pieces) + 1)
            need = sum(_weight(p) for p in pieces) / (hi - lo)
            for u in range(seq_base[seq] + lo, seq_base[seq] + min(hi, lengths[seq])):  # only characters that are drawn
                widths[u] = max(widths[u], need)
    return widths


def _layout_pieces(exp: Explanation, seq_base: list[int], gaps: list[int], at) -> list[tuple[float, float]]:
    """Each piece's ``[x0, x1)``: characters at their offsets (``at(u)``: where virtual slot ``u`` starts), template
    tokens in the gaps (``gaps``: where the gap before, between and after the sequences starts), and pieces that
    share characters splitting those characters between them."""
    pieces = exp.pieces
    n_seq = len(seq_base)
    spans: list[tuple[float, float] | None] = [None] * len(pieces)
    seen_content = [False] * n_seq
    cursors: dict[int, float] = {}
    for i, p in enumerate(pieces):
        if p.special and p.start == p.end:
            gap = gaps[0] if not seen_content[0] else gaps[1] if n_seq > 1 and not seen_content[1] else gaps[-1]
            width = min(GAP - 1, max(3, len(p.display) + 1))
            u0 = cursors.get(gap, gap + 0.5)
            spans[i] = (at(u0), at(u0 + width))
            cursors[gap] = u0 + width
        else:
            seen_content[min(p.sequence, n_seq - 1)] = True
    for group in _groups(exp):
        lo = min(pieces[j].start for j in group)
        hi = max(max(pieces[j].end for j in group), lo + 1)
        base = seq_base[min(pieces[group[0]].sequence, n_seq - 1)]
        x, right = at(base + lo), at(base + hi)
        weights = [_weight(pieces[j]) for j in group]
        for j, w in zip(group, weights):
            step = (right - at(base + lo)) * w / sum(weights)
            spans[j] = (x, x + step)
            x += step
    return spans  # type: ignore[return-value]


def _bands(chars: list[str], starts: list[float], width: int) -> list[tuple[int, int]]:
    """Cut the virtual row into lines at most ``width`` wide (``starts[u]``: where slot ``u`` starts, one more entry
    for the end; ``chars[u]``: "" in the gaps where template tokens sit). A line starts at a space where there is one
    (so a BPE or Unigram piece that starts with its space stays whole) or at a gap, and never inside a gap (which
    would cut a [SEP] in two)."""
    out, start, n = [], 0, len(chars)
    while start < n:
        end = start + 1
        while end < n and starts[end + 1] - starts[start] <= width:
            end += 1
        if end < n:
            half = starts[start] + width / 2
            soft = [i for i in range(start + 1, end + 1)
                    if starts[i] >= half and (chars[i].isspace() or (chars[i] == "" and chars[i - 1] != ""))]
            if soft:
                end = soft[-1]
            else:
                while end > start + 1 and chars[end] == "" and chars[end - 1] == "":
                    end -= 1
        out.append((start, end))
        start = end
    return out or [(0, 1)]


def _context(text: str, start: int, end: int) -> str:
    before, mid, after = text[max(0, start - CONTEXT):start], text[start:end], text[end:end + CONTEXT]
    clean = lambda s: escape(s.replace("\n", "↵").replace("\t", "⇥"))  # noqa: E731
    return f"…{clean(before)}<b><u>{clean(mid) or '∅'}</u></b>{clean(after)}…"


def _piece_hover(kind: str, i: int, p, source: str) -> str:
    name = f"byte{'s' if len(p.raw_bytes or b'') > 1 else ''} {_byte_label(p)}" if p.partial_char else escape(label(p.display))
    head = f"<b>{KINDS[kind].short}</b> piece {i}: <b>{name}</b> · id {p.id}"
    if p.special and p.start == p.end:
        return f"{head}<br>added by the template: no characters of the text"
    lines = [head, f"characters {p.start}–{p.end}: {_context(source, p.start, p.end)}"]
    if p.raw_bytes is not None:
        lines.append("bytes " + " ".join(f"{b:02X}" for b in p.raw_bytes)
                     + (" (part of one character)" if p.partial_char else ""))
    if p.unknown:
        lines.append("not in the vocabulary: the tokenizer gives up with its unknown token")
    if p.continues_word:
        lines.append("continues the word before it")
    return "<br>".join(lines)


def _visible(c: str) -> str:
    """A character for the text row: an invisible format character (a zero-width joiner, a bidi mark) by its
    initials (ZWJ, RLO), so its column is not blank and it cannot reorder the row."""
    if unicodedata.category(c) == "Cf":
        return "".join(w[0] for w in unicodedata.name(c, "FORMAT CHARACTER").split())
    return label(c)


def _owners(exp: Explanation, sequence: int, n: int) -> list[list[int]]:
    """For each character of one sequence, the pieces (indices) made from it."""
    out: list[list[int]] = [[] for _ in range(n)]
    for i, p in enumerate(exp.pieces):
        if min(p.sequence, 1) == sequence:
            for c in range(p.start, min(p.end, n)):
                out[c].append(i)
    return out


def _char_hover(c: str, off: int, seq: int, owners: dict[str, list[int]], explanations: dict[str, Explanation]) -> str:
    lines = [f"character {off} of {'B' if seq else 'the text'}: {escape(label(c))} (U+{ord(c):04X})"]
    for kind, idx in owners.items():
        pieces = explanations[kind].pieces
        names = ", ".join(_byte_label(pieces[i]) if pieces[i].partial_char else escape(label(pieces[i].display)) for i in idx)
        if names:
            lines.append(f"{KINDS[kind].short}: piece{'s' if len(idx) > 1 else ''} {idx[0]}{'–' + str(idx[-1]) if len(idx) > 1 else ''} "
                         f"<b>{names}</b>")
    return "<br>".join(lines)


def aligned_rows(text: str, explanations: dict[str, Explanation], pair: str | None = None, width: int = 56,
                 lit: tuple[str, int] | None = None) -> go.Figure:
    """The source text (and ``pair``) with one row of pieces per tokenizer under it, wrapped every ``width``
    character slots. Pieces sit under the characters they come from; a character that byte-level BPE spells in
    several bytes gets a wider slot, one readable box per byte. Hover a piece for its id, span (quoted from the
    source, underlined) and BPE bytes; hover a character for the piece each tokenizer made it part of.
    ``lit = (tokenizer, piece index)``: that piece is outlined and its characters in the text light up (each box
    reports ``[tokenizer, piece index]`` when clicked)."""
    text = text[:MAX_SHOWN]
    pair = pair[:MAX_SHOWN] if pair else None
    seq_base = [GAP, 2 * GAP + len(text)] if pair else [GAP]
    gaps = [0, GAP + len(text)] + ([seq_base[1] + len(pair)] if pair else [])
    total = gaps[-1] + GAP
    chars = [""] * total
    sources = [text, pair or ""]
    for s, base in enumerate(seq_base):
        for j, c in enumerate(sources[s]):
            chars[base + j] = c
    widths = _slot_widths(explanations, seq_base, [len(x) for x in sources], total)
    starts = [0.0]
    for w in widths:
        starts.append(starts[-1] + w)

    def at(u: float) -> float:  # where virtual slot position u lies on the stretched row
        k = min(int(u), total - 1)
        return starts[k] + (u - k) * widths[k]

    bands = _bands(chars, starts, width)
    kinds = list(explanations)
    rows = len(kinds) + 1
    y_of = lambda band, row: -(band * (rows + 0.7) + row)  # noqa: E731
    data, shapes = [], []
    owners = [{k: _owners(explanations[k], s, len(sources[s])) for k in kinds} for s in range(len(seq_base))]
    # the source characters, one per slot, in a monospace font
    xs, ys, ts, hs = [], [], [], []
    for b, (lo, hi) in enumerate(bands):
        for u in range(lo, hi):
            c = chars[u]
            if not c:
                continue
            s = 0 if u < seq_base[-1] or not pair else 1
            off = u - seq_base[s]
            xs.append(starts[u] + widths[u] / 2 - starts[lo])
            ys.append(y_of(b, 0))
            ts.append(escape("·" if c == " " else _visible(c)))
            hs.append(_char_hover(c, off, s, {k: owners[s][k][off] for k in kinds}, explanations))
    data.append(dict(type="scatter", x=xs, y=ys, text=ts, hovertext=hs, mode="text", showlegend=False,
                     textfont=dict(family=MONO, size=18, color="#111111"), hovertemplate="%{hovertext}<extra></extra>"))
    for r, kind in enumerate(kinds, start=1):
        exp = explanations[kind]
        spans = _layout_pieces(exp, seq_base, gaps, at)
        light, dark = tint(MODEL_COLOURS[kind], 0.72), tint(MODEL_COLOURS[kind], 0.45)
        boxes, k = [], 0
        for i, (p, (x0, x1)) in enumerate(zip(exp.pieces, spans)):
            if not (p.special and p.start == p.end) and p.start >= len(sources[min(p.sequence, 1)]):
                continue  # beyond the characters drawn
            if p.unknown:
                colour, ink = UNKNOWN, "#FFFFFF"
            elif p.special:
                colour, ink = SPECIAL_GREY, "#111111"
            else:
                colour, ink = (light, dark)[k % 2], "#111111"
                k += 1
            hover = _piece_hover(kind, i, p, sources[min(p.sequence, 1)])
            shown = _byte_label(p) if p.partial_char else escape(label(p.display))
            for b, (lo, hi) in enumerate(bands):
                a, z = max(x0, starts[lo]), min(x1, starts[hi])
                if z - a > 1e-6:
                    first = a == x0
                    # a box narrower than its label (about 1.6 characters fit per slot) drops WordPiece's ##
                    text = shown[2:] if shown.startswith("##") and len(shown) > 1.6 * (z - a) else shown
                    boxes.append(Box(a - starts[lo], z - starts[lo], y_of(b, r), text if first else "…", colour, hover, ink,
                                     "/" if p.partial_char else "", (kind, i)))
                    if lit == (kind, i):
                        shapes.append(dict(type="rect", x0=a - starts[lo], x1=z - starts[lo], y0=y_of(b, r) - ROW / 2,
                                           y1=y_of(b, r) + ROW / 2, line=dict(color=LIT, width=3), layer="above"))
            if lit == (kind, i) and p.end > p.start:  # its characters in the text
                u0, u1 = seq_base[min(p.sequence, 1)] + p.start, seq_base[min(p.sequence, 1)] + p.end
                for b, (lo, hi) in enumerate(bands):
                    a, z = max(u0, lo), min(u1, hi)
                    if z > a:
                        shapes.append(dict(type="rect", x0=starts[a] - starts[lo], x1=starts[z] - starts[lo],
                                           y0=y_of(b, 0) - ROW / 2, y1=y_of(b, 0) + ROW / 2, fillcolor=LIT, opacity=0.35,
                                           line=dict(width=0), layer="below"))
        data += box_trace(boxes, KINDS[kind].short)
    tickvals = [y_of(b, r) for b in range(len(bands)) for r in range(rows)]
    ticktext = [(["text"] + [KINDS[k].short for k in kinds])[r] for b in range(len(bands)) for r in range(rows)]
    data += legend_traces([("special token (template)", SPECIAL_GREY), ("unknown → [UNK] / <unk>", UNKNOWN)])
    return go.Figure(data, layout(
        None, int(len(bands) * rows * 40 + 70), shapes=shapes, barmode="overlay", bargap=0,
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0), margin=dict(l=70, r=10, t=40, b=10),
        hoverlabel=dict(font_size=15, font_family=FONT["family"]),
        yaxis=dict(tickvals=tickvals, ticktext=ticktext, showgrid=False, zeroline=False,
                   range=[y_of(len(bands) - 1, rows - 1) - 0.6, 0.6]),
        xaxis=dict(visible=False, range=[0, width])))


def clicked_piece(custom) -> tuple[str, int] | None:
    """(tokenizer, piece index) from the ``customdata`` of a clicked ``aligned_rows`` box (``ui.clicked``); None for
    anything a click on that figure does not make. The page still checks the index against the text it shows."""
    if isinstance(custom, list) and len(custom) == 2 and custom[0] in KINDS and isinstance(custom[1], int) and custom[1] >= 0:
        return custom[0], custom[1]
    return None


def token_counts(explanations: dict[str, Explanation], pair: str | None = None) -> list[dict]:
    """One row per tokenizer. ``tokens`` is every position the model reads; characters per token divides the text's
    characters (and ``pair``'s, when BERT reads one) by the tokens made from them, the template's left out."""
    rows = []
    for kind, exp in explanations.items():
        template = sum(p.special and p.start == p.end for p in exp.pieces)
        chars = len(exp.text) + (len(pair) if pair and any(p.sequence == 1 for p in exp.pieces) else 0)
        from_text = exp.n_tokens - template
        rows.append({"tokenizer": KINDS[kind].tokenizer, "tokens": exp.n_tokens, "added by the template": template,
                     "unknown": sum(p.unknown for p in exp.pieces), "characters": chars,
                     "characters per token": round(chars / from_text, 2) if from_text else 0.0})
    return rows


def unk_story(explanations: dict[str, Explanation]) -> list[str]:
    """Plain sentences on what each tokenizer did with characters it never saw in training."""
    out = []
    for kind, exp in explanations.items():
        unknown = [p for p in exp.pieces if p.unknown]
        if unknown:
            # each quote in a bidi isolate (U+2068 … U+2069), so Arabic or Hebrew cannot reorder the list around it
            lost = ", ".join(f"“\u2068{label(exp.text[p.start:p.end])}\u2069”" for p in unknown[:6]) + (" …" if len(unknown) > 6 else "")
            out.append(f"{KINDS[kind].tokenizer} has no piece for {lost}: it writes its unknown token, and the model never sees what was there.")
    partial = [p for p in explanations.get("gpt2", Explanation("gpt2", "", ())).pieces if p.partial_char]
    if partial:
        out.append(f"Byte-level BPE never gives up: characters it has not learned become their UTF-8 bytes "
                   f"({len(partial)} byte pieces here, hatched), so every text can be read back exactly.")
    return out
