import streamlit as st

from lmviz.app import ui, views
from lmviz.analysis.arithmetic import head_arithmetic
from lmviz.errors import LmvizError
from lmviz.analysis.masks import TWIN_OF, bert_padded_batch, gpt2_without_mask, twin_folder
from lmviz.app.ui import kind_of
from lmviz.viz.masks import (answer_weight_figure, experiment_figure, loss_figure, mask_effect_figure, mask_heatmap,
                             position_bias_figure)

DEFAULT = "Now is the winter of our discontent made glorious summer by this sun of York."
SHORT = "Good night, sweet prince."
SOURCE_NAMES = {"self": "encoder self-attention", "causal": "causal self-attention", "cross": "cross-attention"}
NOTHING_HIDDEN = {
    "self": "bidirectional attention lets every token see every other one, and a single text has no padding.",
    "causal": "this is the last position, which may see every token before it.",
    "cross": "cross-attention lets every decoder token see the whole input.",
    "padded": "both sentences have the same length, so neither is padded.",
}


@st.cache_data(max_entries=32, show_spinner="Running the model…")
def run_for(name: str, text: str, pair: str):
    return views.attention(ui.load_model(name), text, pair)


@st.cache_data(max_entries=16, show_spinner="Running the model…")
def padded_for(name: str, texts: tuple[str, ...]):
    return bert_padded_batch(ui.load_model(name), list(texts))


@st.cache_data(max_entries=16, show_spinner="Running the model with and without its mask…")
def experiment_for(name: str, text: str):
    return views.experiment(ui.load_model(name), text)


@st.cache_data(max_entries=16, show_spinner="Running the twin with and without its mask…")
def twin_experiment_for(text: str):
    folder = twin_folder()
    twin = None if folder is None else ui.load_folder(str(folder))
    return twin if twin is None or isinstance(twin, str) else gpt2_without_mask(twin, text)


def loss_metrics(exp) -> str:
    """The two losses side by side; returns them as "a → b nats" for the verdict."""
    c1, c2 = st.columns(2)
    c1.metric(f"{exp.metric}, {exp.own_name}", f"{exp.loss_own:.2f} nats")
    c2.metric(f"{exp.metric}, {exp.swapped_name}", f"{exp.loss_swapped:.2f} nats",
              delta=f"{exp.loss_swapped - exp.loss_own:+.2f}", delta_color="inverse")
    return f"{exp.loss_own:.2f} → {exp.loss_swapped:.2f} nats"


def show_twin(text: str) -> None:
    """The shipped GPT-2's twin, trained without the mask: the collapse the shipped model cannot show."""
    twin = twin_experiment_for(text)
    if twin is None:
        return
    st.subheader("Its twin, trained without the mask")
    if isinstance(twin, str):
        ui.error(LmvizError(f"The twin is unavailable: {twin}"))
        return
    st.write("This is the same GPT-2 trained on for 400 more steps (about 800,000 tokens) with **no** causal mask, so "
             "each token could always see the one it had to predict. It learned to copy it. The same two runs:")
    change = loss_metrics(twin)
    if twin.clear_change and twin.loss_change < 0:
        st.write(f"**It cheats:** with the answer in view the loss collapses ({change}); each token puts "
                 f"{twin.next_token_weight('swapped').mean():.1%} of its attention on the next token. Give it the mask "
                 "back and it is lost, worse than the model above: it never had to predict anything, only to copy. "
                 "That is why a decoder is trained, and run, with its causal mask.")
    else:
        st.write(f"On this text the twin does not gain much from the answer ({change}).")
    layer, head = twin.answer_head()
    st.write(f"Its head that looks at the answer most, layer {layer}, head {head}: without the mask, the bright line just "
             "above the diagonal is each token reading the next one.")
    for fig in views.experiment_figures(twin, layer, head):
        ui.plot(fig)


def layer_and_head(prefix: str, layers: int, heads: int) -> tuple[int, int]:
    c1, c2 = st.columns(2)
    with c1:
        layer = ui.choose_index(f"{prefix}layer", "layer", layers)
    with c2:
        head = ui.choose_index(f"{prefix}head", "head", heads)
    return layer, head


@st.fragment
def experiment_heads(exp):
    """One head under both masks; choosing another layer or head reruns only this part of the page."""
    layer, head = layer_and_head("x", *exp.own.shape[:2])
    ui.plot(experiment_figure(exp, layer, head))


st.title("Masks")
st.write("Before the softmax, every attention score gets a mask added: **0** where the query may look at the key, "
         "**−∞** where it may not. After the softmax, e^−∞ = 0, so hidden keys get exactly zero weight. Blue cells "
         "below may attend; grey cells are hidden. Every matrix is the mask the model really applied on your text.")

try:
    name, loaded = ui.pick_model()
    model_kind = kind_of(loaded)
    swap = model_kind.experiment  # "no mask": a decoder without its mask; "causal": an encoder under one; None
    padding = model_kind.role == "encoder"  # a batch of one encoder shows the padding mask
    text = ui.text_input("text", default=DEFAULT, upload=True)
    pair = ""
    if model_kind.reads_pair:
        pair = ui.text_input("pair", default="", label="Second sentence (optional: shows the segments)", height=68)
    run = run_for(name, text, pair)
    ui.show_notes(run.notes)

    st.header("The mask matrices")
    explain = {
        "self": "Bidirectional: every token may look at every token, before and after it." +
                (" With two sentences, the mask still lets A and B see each other; only the segment embeddings "
                 "(the orange lines mark the boundary) tell them apart." if model_kind.reads_pair and pair.strip() else ""),
        "causal": "Causal (lower-triangular): a token may look only at itself and the tokens before it, so the model "
                  "cannot peek at the word it has to predict.",
        "cross": "Cross-attention: every decoder token may look at every encoder token; it is not causal, because the "
                 "whole input is known before decoding starts.",
    }
    masks = views.mask_figures(run)
    for m, fig in masks:
        st.subheader(m.title)
        st.write(explain[m.kind])
        ui.plot(fig)
    ui.download_view("masks", [m for m, _ in masks], "masks.json", label="Download these masks (JSON)", text=text)

    if padding:
        st.subheader("Padding in a batch")
        st.write("Sentences in one batch must have the same length, so shorter ones are filled with [PAD]. The padding "
                 "mask hides those columns: no real token attends to padding (the [PAD] rows are computed but ignored).")
        padded = padded_for(name, (SHORT, text))
        for m in padded.matrices:
            ui.plot(mask_heatmap(m))
    if any(run.position_bias(k) is not None for k in run.record.kinds):
        st.subheader("T5's relative position bias")
        st.write("T5 has no position embeddings. Each head instead learns a bias that depends only on the distance between "
                 "query and key (in buckets), and adds it to the scores of every layer, next to the mask. Purple is positive, "
                 "orange negative; the key axis counts positions (hover a cell for its tokens). In the decoder "
                 "the bias is added above the diagonal too, but the causal mask then hides those cells, so they are grey: "
                 "there the bias never matters.")
        for kind, title in (("self", "encoder"), ("causal", "decoder")):
            if run.position_bias(kind) is not None:
                q, k = run.axes(kind)
                ui.plot(position_bias_figure(run.position_bias(kind), q, k, title=f"{title} position bias",
                                             mask=run.record.keep(kind).numpy()))

    st.header("What the mask does to the softmax")
    sources = {"padded": "the padded batch", "self": "your text alone"} if padding else \
        {k: SOURCE_NAMES[k] for k in run.record.kinds}
    choices = list(sources)
    source = ui.param("kind", "padded" if padding else "causal", choices=choices)
    if len(choices) > 1:
        source = st.radio("Attention", choices, index=choices.index(source), format_func=sources.get, horizontal=True,
                          key="w_kind")
        ui.set_params(kind=source)
    if source == "padded":
        row = padded.most_padded
        record, kind, batch = padded.record, "self", row
        queries = keys = padded.matrices[row].queries
        default_query = int(padded.matrices[row].keep[0].sum()) // 2  # a real token in the middle of the sentence
    else:
        record, kind, batch = run.record, source, 0
        queries, keys = run.axes(kind)
        default_query = len(queries) // 2
    query = ui.param("query", default_query, int)
    if query not in range(len(queries)):
        st.warning(f"There is no query position {query} here; showing position {default_query}.", icon="↩️")
        query = default_query
    query = st.select_slider("Query position", range(len(queries)), value=query, format_func=lambda i: f"{i}: {queries[i]}",
                             key="w_query")
    ui.set_params(query=query)
    layer, head = layer_and_head("", record.n_layers(kind), record.n_heads(kind))
    arith = head_arithmetic(record, kind, layer, head, query, batch=batch)
    hidden = int(arith.hidden.sum())
    where = f"Layer {layer}, head {head}, query **{query}: {ui.plain(queries[query])}**" + (
        f" in sentence {row + 1} of the padded batch above" if source == "padded" else "")
    if hidden:
        st.write(f"{where}. Panel 1: the raw scores. Panel 2: the mask added — {hidden} of {len(keys)} keys become −∞ "
                 f"(grey). Panel 3: after the softmax they are exactly {arith.record_probs[arith.hidden].max():g}, and the rest "
                 "sum to 1.")
    else:
        st.write(f"{where}. Here the mask hides **nothing**, so panels 1 and 2 are the same: {NOTHING_HIDDEN[source]} "
                 "Choose another attention above (or an earlier query, for causal attention) to see keys hidden.")
    ui.plot(mask_effect_figure(arith, keys))

    if swap:
        st.header("Remove the mask" if swap == "no mask" else "Give BERT a causal mask")
        if swap == "causal":  # one forward pass per hidden word: run it when asked, so a text edit stays quick
            wanted = st.toggle("Run the experiment (BERT guesses every word twice: about half a second)",
                               value=ui.param("exp", "0") == "1", key="w_exp")
            ui.set_params(exp="1" if wanted else None)
            if not wanted:
                st.stop()
        exp = experiment_for(name, text)
        if swap == "no mask":
            st.write("GPT-2 learns to predict each next token. Its causal mask stops it from looking at that token. "
                     "Here the same model runs on the same text twice — with its mask and with no mask at all — and the "
                     "next-token loss (lower is better) is measured both ways.")
        else:
            st.write("BERT fills in a hidden word from both sides. Here every word is hidden in turn and BERT guesses it, "
                     "once with its own bidirectional mask and once under a causal mask, so it can use only the words "
                     "before the hole. Fill-in loss: lower is better.")
        change = loss_metrics(exp)
        if swap == "no mask":
            if exp.clear_change and exp.loss_change < 0:  # only a real collapse is cheating, not any small drop
                verdict = f"It cheats: with the answer in view, the loss falls ({change})."
            else:
                verdict = (f"No cheating here: the loss {'rises' if exp.loss_change > 0 else 'changes little'} ({change}). "
                           "This model was trained **with** its causal mask, so it never saw the next token and never "
                           "learned to copy it: the answer is now in view, but the model does not know how to use the "
                           "future. A model trained without the mask would learn to copy the next token and its loss "
                           "would fall towards zero — which is why training needs the mask.")
        else:
            verdict = (f"Without the words after each hole, the loss rises ({change}): BERT relies on its right-hand "
                       "context." if exp.clear_change and exp.loss_change > 0 else
                       f"Here the words before each hole are nearly enough: the loss changes little ({change}).")
        st.write(f"{verdict} Attention above the diagonal (on later tokens): {exp.future_share('own'):.1%} of the weight "
                 f"{exp.own_name}, {exp.future_share('swapped'):.1%} {exp.swapped_name}.")
        if swap == "no mask":
            answer = exp.next_token_weight("swapped")
            st.write(f"Does it look at the answer? Below, for each token, the weight it puts on the **next** token (the "
                     f"one it must predict), averaged over all heads: exactly 0 with the mask; without it "
                     f"{answer.mean():.1%} on average, where attention spread evenly over all {len(exp.tokens)} tokens "
                     f"would give {1 / len(exp.tokens):.1%}.")
            ui.plot(answer_weight_figure(exp))
        ui.plot(loss_figure(exp))
        experiment_heads(exp)
        if name == TWIN_OF:  # the twin shares the shipped GPT-2's tokenizer
            show_twin(text)
except LmvizError as err:
    ui.error(err)
