"""What each page computes when its text changes: one function per page section, text (and settings) in, the
results and figures the page draws out.

A page calls these through its own ``st.cache_data`` wrapper and adds only widgets and layout; ``python -m lmviz
bench pages`` times these same functions, so the benchmark measures the pages' own work and cannot drift from it.
No Streamlit here: everything is tested and timed without it.
"""
from __future__ import annotations

from lmviz.analysis import masks
from lmviz.analysis.arithmetic import head_arithmetic
from lmviz.analysis.generation import LiveRun
from lmviz.analysis.inference import FIGURES, AttentionRun, attention_run
from lmviz.analysis.strategies import Strategy
from lmviz.models.checkpoints import Loaded
from lmviz.models.kinds import KINDS
from lmviz.pretrain import objectives
from lmviz.pretrain.tokenizers import explain
from lmviz.viz import generation as vg
from lmviz.viz import masking as vm
from lmviz.viz import masks as vmk
from lmviz.viz.arithmetic import steps_figure, vectors_figure, weighted_sum_figure
from lmviz.viz.attention import attention_heatmap, head_grid, layer_means

LONG = 48  # tokens: past this, one head's colours top out at the 99th percentile instead of 1


# --- Tokenization -------------------------------------------------------------------------------

def explanations(tokenizers: dict, text: str, pair: str | None) -> dict:
    """``{kind: Explanation}`` of ``text`` (and ``pair``, for a kind that reads pairs) by each kind's tokenizer."""
    return {kind: explain(kind, tok, text, pair if KINDS[kind].reads_pair else None) for kind, tok in tokenizers.items()}


# --- Attention ----------------------------------------------------------------------------------

def attention(loaded: Loaded, text: str, pair: str = "", target: str = "") -> AttentionRun:
    """The run every attention figure reads (no hidden states)."""
    return attention_run(loaded, text, pair or None, target or None, want=FIGURES)


def long_text(run: AttentionRun, kind: str) -> bool:
    """Whether the text is long enough that one head's colours top out at the 99th percentile."""
    queries, keys = run.axes(kind)
    return max(len(queries), len(keys)) > LONG


def one_head(run: AttentionRun, kind: str, layer: int, head: int, query: int):
    """The One head tab: one head's heatmap, ``query``'s row outlined, hidden cells grey."""
    queries, keys = run.axes(kind)
    return attention_heatmap(run.head(kind, layer, head), queries, keys, zmax=1.0, highlight=query,
                             mask=run.record.keep(kind).numpy(), percentile=99 if long_text(run, kind) else None)


def attention_numbers(run: AttentionRun, kind: str, layer: int, head: int) -> dict:
    """The numbers behind the Attention page's view: the tokens, one head's weights (rows: queries) and every head's."""
    queries, keys = run.axes(kind)
    return {"model_kind": run.kind, "attention": kind, "layer": layer, "head": head, "queries": queries, "keys": keys,
            "weights": run.head(kind, layer, head), "every_head": run.heads(kind), "notes": run.notes}


def arithmetic(run: AttentionRun, kind: str, layer: int, head: int, query: int):
    """The arithmetic tab: the head's numbers for ``query`` and its three figures (vectors, steps, weighted sum)."""
    queries, keys = run.axes(kind)
    arith = head_arithmetic(run.record, kind, layer, head, query)
    return arith, (vectors_figure(arith, keys, queries[query]), steps_figure(arith, keys), weighted_sum_figure(arith, keys))


def every_head(run: AttentionRun, kind: str):
    """The Every head tab: the grid of every layer and head, and each layer's mean."""
    queries, keys = run.axes(kind)
    stacked, keep = run.heads(kind), run.record.keep(kind).numpy()
    return head_grid(stacked, zmax=1.0, mask=keep), layer_means(stacked, queries, keys, mask=keep)


# --- Masking ------------------------------------------------------------------------------------

def mlm(loaded: Loaded, text: str, seed: int = 0, rate: float = 0.15, split: tuple[float, float] = (0.8, 0.1),
        chosen: tuple[int, ...] | None = None):
    """BERT's masked-word draw and guesses: the result, its token strip and the top-5 chart."""
    result = objectives.mlm_predict(loaded, text, seed, rate, split, chosen)
    return result, vm.mlm_figure(result), vm.mlm_top5_figure(result)


def nsp(loaded: Loaded, a: str, b: str):
    result = objectives.nsp_predict(loaded, a, b)
    return result, vm.nsp_figure(result)


def span_fill(loaded: Loaded, text: str, seed: int = 0, noise: float = 0.15, mean_span: float = 3.0):
    """T5's span corruption and what it writes in each hole."""
    result = objectives.t5_reconstruct(loaded, text, seed, noise, mean_span)
    return result, vm.t5_figure(result)


def shift(loaded: Loaded, text: str):
    """GPT-2's next-token targets: each position's probability of the true next token."""
    table = objectives.gpt2_shift_table(loaded, text)
    return table, vm.shift_figure(table)


OBJECTIVE_MODELS = {  # the Masking page's objective → the kinds trained on it (MLM: every kind with a mask token)
    "mlm": tuple(k for k, kind in KINDS.items() if kind.mask_token), "nsp": tuple(k for k, kind in KINDS.items() if kind.reads_pair),
    "t5": ("t5",), "gpt2": ("gpt2",)}
TEXT_OBJECTIVES = {"mlm": mlm, "t5": span_fill, "gpt2": shift}  # the sections that read the page's text


# --- Masks --------------------------------------------------------------------------------------

def mask_figures(run: AttentionRun):
    """Every mask matrix of a run and its heatmap."""
    return [(m, vmk.mask_heatmap(m, titled=False)) for m in masks.mask_matrices(run)]


def experiment(loaded: Loaded, text: str):
    """The model under its own mask and the swapped one (None for a kind with no such experiment)."""
    return masks.mask_experiment(loaded, text) if KINDS[loaded.kind].experiment else None


def experiment_figures(exp, layer: int, head: int):
    """The experiment's figures: one head under both masks, the weight on the answer, the losses."""
    return vmk.experiment_figure(exp, layer, head), vmk.answer_weight_figure(exp), vmk.loss_figure(exp)


# --- Generation ---------------------------------------------------------------------------------

def generation_step(live: LiveRun, step: int, strategy: Strategy):
    """Step ``step`` of the live run (``LiveRun.advance`` made it), timed against a recompute by the run's own decoder,
    and the figures drawn for it: its candidates, the strategy's curve, and the cache over every step so far."""
    shown = live.step(step)
    return shown, (vg.candidates_figure(shown, strategy), vg.strategy_figure(shown, strategy),
                   vg.cache_figure(live.gen, len(live.gen.steps) - 1))


