"""The Layers page's timings for ``python -m lmviz bench pages``: the work the page does on a new 64-word text (the
lens plus one knock-out), the every-head grid, and a move of the training slider to a step not seen yet (the
snapshots loaded and cached, as the page keeps them). Goals: 300 ms, 1.5 s, 300 ms (median)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from lmviz.analysis.forming import at_step, list_snapshots, memory_bytes
from lmviz.analysis.knockout import every_head, knockout, shape
from lmviz.analysis.lens import lens
from lmviz.analysis.targets import targets
from lmviz.bench_rows import PageRow, edited_text
from lmviz.models import checkpoints
from lmviz.models.kinds import KINDS

LENS_GOAL_MS, GRID_GOAL_MS, SLIDER_GOAL_MS = 300, 1500, 300


def _hide(loaded) -> list[int]:
    """BERT hides one word (the fifth token), as the page's default hides one."""
    return [] if KINDS[loaded.kind].writes else [5]


def _times(work, texts) -> list[float]:
    work(texts[0])  # warm-up
    out = []
    for text in texts[1:]:
        t = time.perf_counter()
        work(text)
        out.append(time.perf_counter() - t)
    return out


def bench_layers(models: dict, repeats: int = 5, words: int = 64) -> list[PageRow]:
    """One row per model for the lens + knock-out and for the grid, and one for the slider (GPT-2's snapshots; a
    float16 copy of the shipped GPT-2 saved as snapshots when it has none, which times the same work)."""
    texts = [edited_text(words, r) for r in range(repeats + 1)]
    rows = []
    for name, m in models.items():
        first = KINDS[m.kind].attention[0]

        def lens_and_knockout(text, m=m, first=first):
            tg = targets(m, text, _hide(m))
            return lens(m, tg), knockout(m, tg, [(first, shape(m)[0] - 1, 0)])

        rows.append(PageRow(f"layers ({name}): lens + one knock-out, {words}-word text", _times(lens_and_knockout, texts), LENS_GOAL_MS))
        rows.append(PageRow(f"layers ({name}): every-head grid, {words}-word text",
                            _times(lambda text, m=m: every_head(m, targets(m, text, _hide(m))), texts), GRID_GOAL_MS))
    if "gpt2" in models:
        rows.append(slider_row(models["gpt2"], repeats, texts[1]))
    return rows


def slider_row(loaded, repeats: int, text: str) -> PageRow:
    with tempfile.TemporaryDirectory() as tmp:
        snaps = list_snapshots(loaded.folder)
        note = ""
        if not snaps:
            (Path(tmp) / "tokenizer.json").write_bytes((Path(loaded.folder) / "tokenizer.json").read_bytes())  # snapshots use their model's
            for step in range(repeats + 1):
                checkpoints.save_snapshot(loaded.model, tmp, step, step / max(repeats, 1), {})
            snaps, note = list_snapshots(tmp), ", stand-in snapshots"
        device = next(loaded.model.parameters()).device
        models = [checkpoints.load(s.folder, device) for s in snaps]
        moves = [models[i % len(models)] for i in range(repeats + 1)]  # each move: the lens and the head at that step
        layers, heads = shape(loaded)
        layer, head = min(2, layers - 1), min(3, heads - 1)  # the shipped GPT-2's previous-token head: layer 2, head 3
        tg = targets(loaded, text)
        times = _times(lambda snapshot: at_step(snapshot, tg, layer, head), moves)
        mb = memory_bytes(models) / 2 ** 20
    return PageRow(f"layers (gpt2): training slider to a new step ({len(models)} snapshots cached, {mb:.0f} MB{note})",
                   times, SLIDER_GOAL_MS)
