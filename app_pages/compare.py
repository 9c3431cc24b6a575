import streamlit as st

from lmviz.app import ui
from lmviz.analysis.compare import compare, reads_punctuate, view_data
from lmviz.errors import LmvizError
from lmviz.app.ui import shipped_kinds
from lmviz.pretrain.text2text import knows_prefixes
from lmviz.app.export import csv_text
from lmviz.viz.attention import attention_heatmap
from lmviz.viz.compare import stats_figure

PRESETS = {
    "Romeo": "But soft, what light through yonder window breaks?",
    "Hamlet": "To be, or not to be, that is the question.",
    "Macbeth": "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day.",
}


@st.cache_data(max_entries=16, show_spinner="Running the three models…")
def comparison_for(text: str, punctuate: bool = True):
    models, notes = {}, []
    for kind in shipped_kinds():
        try:
            models[kind] = ui.load_model(kind)
        except LmvizError as err:
            notes.append(str(err))
    comp = compare(models, text, punctuate)
    comp.notes[:0] = notes
    return comp


T5_READS = {"punctuate": "punctuate: the sentence lower-cased without punctuation → the sentence as written",
            "same": "the same sentence on both sides, as the other models read it"}


def t5_model():
    """The shipped T5, or None where it does not load (the page says why with the other notes)."""
    try:
        return ui.load_model("t5")
    except LmvizError:
        return None


st.title("Compare: encoder, decoder, encoder-decoder")
st.write("One sentence through all three models at once, each with its own tokenizer. **BERT** is an *encoder*, built "
         "for understanding: every token sees the whole sentence, left and right. **GPT-2** is a *decoder*, built for "
         "generation: a token sees only itself and what came before, because when it writes it cannot know the future. "
         "**T5** is both, for text-to-text: an encoder reads the input in full, a decoder writes the output causally, "
         "and the decoder reads the encoder through *cross-attention*.")

try:
    text = ui.text_input("text", PRESETS, default=PRESETS["Romeo"], label="Sentence", upload=True)
    t5 = t5_model()
    punctuate = t5 is not None and knows_prefixes(t5)
    if punctuate:  # a T5 trained text-to-text: its cross-attention is clearest on a punctuate: example
        reads = ui.param("t5", "punctuate", choices=list(T5_READS))
        reads = st.radio("T5 reads", list(T5_READS), index=list(T5_READS).index(reads), format_func=T5_READS.get,
                         horizontal=True, key="w_t5")
        ui.set_params(t5=reads)
        punctuate = reads == "punctuate"
    comp = comparison_for(text, punctuate)
    ui.show_notes(comp.notes)
    layers = max(v.layers for v in comp.views)
    heads = max(v.heads for v in comp.views)
    c1, c2 = st.columns(2)
    if "w_layer" not in st.session_state or st.session_state.w_layer not in range(layers):
        st.session_state.w_layer = min(max(ui.param("layer", 0, int), 0), layers - 1)
    head_options = ["mean", *range(heads)]
    if "w_head" not in st.session_state or st.session_state.w_head not in head_options:
        h = ui.param("head", "mean")
        st.session_state.w_head = int(h) if h.isdigit() and int(h) < heads else "mean"
    layer = c1.selectbox("Layer (shared by every model)", range(layers), key="w_layer")
    head_v = c2.selectbox("Head (shared)", head_options, key="w_head",
                          format_func=lambda h: "mean of the heads" if h == "mean" else f"head {h}")
    head = None if head_v == "mean" else int(head_v)
    ui.set_params(layer=layer, head=head_v)
    short = [v.name for v in comp.views if v.layers <= layer or (head is not None and v.heads <= head)]
    if short:
        st.info("Not every model has this layer or head; " + ", ".join(short) + " show their nearest one.", icon="ℹ️")

    matrices = {(v.model, v.kind): v.matrix(layer, head) for v in comp.views}
    zmax = max(float(m.max()) for m in matrices.values())
    st.subheader("Attention side by side, one colour scale")
    st.write("Rows are the tokens that look (queries), columns the tokens they look at (keys); brighter is more "
             f"attention, on the same scale (0 to {zmax:.2f}) in every panel. The bidirectional encoders fill the whole "
             "square; the causal decoders' upper triangle is light grey: the mask sets those scores to −∞ before the "
             "softmax, so a token gets exactly nothing from the future.")
    for row in (comp.views[i:i + 2] for i in range(0, len(comp.views), 2)):  # two panels a row, in the models' order
        cols = st.columns(2)
        for i, (col, v) in enumerate(zip(cols, row)):
            fig = attention_heatmap(matrices[v.model, v.kind], v.queries, v.keys, title=v.name, zmax=zmax, height=520, mask=v.keep,
                                    narrow=True)
            with col:
                fig.data[0].showscale = i == len(row) - 1  # one colourbar per row (the grey hidden layer has none)
                ui.plot(fig)
    if t5 is not None and punctuate and reads_punctuate(t5, text):
        st.caption("T5 reads your sentence as its `punctuate:` task: the encoder reads `punctuate:` and the sentence "
                   "lower-cased without punctuation, the decoder the sentence as written (teacher-forced after its start "
                   "token <pad>). Its cross-attention (rows: decoder tokens, columns: encoder tokens) is a full rectangle, "
                   "since the input is known before writing starts; a head that aligns draws a diagonal, each written word "
                   "looking at the word it copies.")
    else:
        st.caption("T5's decoder reads the same sentence here (teacher-forced after its start token <pad>), so its causal "
                   "triangle is over your words; its cross-attention (rows: decoder tokens, columns: encoder tokens) is a "
                   "full rectangle, since the input is known before writing starts.")

    st.subheader("The difference in numbers, layer by layer")
    st.write("**Entropy**: how spread out a token's attention is (0 = all on one token). **Mean distance**: how many "
             "positions away a token looks on average. **Share to special tokens**: attention parked on [CLS], [SEP], "
             "</s>, GPT-2's <|endoftext|> (which starts its input, as in training). **Share to itself**: attention a token keeps "
             "on itself. Cross-attention has no distance and no self, so it is left out of those two panels. "
             "Causal rows have fewer keys to spread over (the first token can only see itself), which lowers their entropy.")
    ui.plot(stats_figure(comp.stats(head)))

    d1, d2 = st.columns(2)
    with d1:
        ui.download_view("compare", view_data(comp, layer, head), f"compare_layer{layer}.json", text=text)
    d2.download_button("Download the statistics (CSV)", csv_text(comp.table(head)), file_name="compare_stats.csv",
                       mime="text/csv")
except LmvizError as err:
    ui.error(err)
