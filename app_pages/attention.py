import streamlit as st

from lmviz.analysis import prefixes
from lmviz.app import ui, views
from lmviz.viz.bertviz_offline import head_view_html, model_view_html, view_height
from lmviz.errors import LmvizError
from lmviz.app.ui import kind_of
from lmviz.pretrain.text2text import knows_prefixes
from lmviz.analysis.heads import named_heads
from lmviz.viz.evaluation import not_yet_learnt
from lmviz.viz.attention import clicked_head

PRESETS = {
    "Hamlet": "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune.",
    "Romeo": "But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.",
    "Macbeth": "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day.",
}
KIND_NAMES = {"self": "encoder self-attention", "causal": "decoder self-attention (causal)", "cross": "cross-attention (decoder → encoder)"}


@st.cache_data(max_entries=32, show_spinner="Running the model…")
def run_for(name: str, text: str, pair: str, target: str):
    return views.attention(ui.load_model(name), text, pair, target)


@st.cache_data(max_entries=4, show_spinner="Measuring the named heads…")
def named_for(name: str, evaluation: dict):
    return named_heads(ui.load_model(name), evaluation)


@st.cache_data(max_entries=8, show_spinner="Drawing bertviz…")
def bertviz_for(name: str, text: str, pair: str, target: str, view: str) -> tuple[str, int]:
    run = run_for(name, text, pair, target)
    return (head_view_html(run) if view == "head" else model_view_html(run)), view_height(run, view)


def open_clicked_head() -> None:
    """The grid's click callback (runs before the rerun): choose that layer and head and open the "One head" tab."""
    picked = clicked_head(ui.clicked("grid"))
    if picked is not None:
        st.session_state["w_layer"], st.session_state["w_head"] = picked
        st.session_state["tab"] = "One head"


st.title("Attention")
st.write("Every layer of a transformer has several **heads**; each head lets every token (a *query*) take a weighted "
         "average of the other tokens (the *keys*). The weights are what you see here — real numbers from a forward "
         "pass of the model on your text.")

try:
    name, loaded = ui.pick_model()
    model_kind = kind_of(loaded)

    evaluation = ui.evaluation()  # read once per change of the file, not on every rerun
    presets = named_for(name, evaluation) if name in ui.SHIPPED and isinstance(evaluation, dict) else []
    if presets:
        st.subheader("Named heads")
        st.caption("Heads that `python -m lmviz evaluate` picked out, each measured on the text it opens beside "
                   "chance: the score even attention (every visible key the same weight) would get. One click shows one.")
        for col, h in zip(st.columns(len(presets)), presets):
            label = f"{h.name}: layer {h.layer}, head {h.head}" + ("" if h.found else " (at chance)")
            said = (h.what if h.found else "Best candidate, at chance: not found in this model.") + \
                f" On its text: {h.measure} {h.score:.2f}, chance {h.chance:.2f}."
            if col.button(label, help=said, key=f"named_{h.name}"):
                st.session_state.update({"w_text": h.text, "w_layer": h.layer, "w_head": h.head, "w_pair": h.pair or "",
                                         "named": h.name})
        chosen = next((h for h in presets if h.name == st.session_state.get("named")), None)
        if chosen and (st.session_state.get("w_layer"), st.session_state.get("w_head")) != (chosen.layer, chosen.head):
            del st.session_state["named"]  # the user moved on: the box would describe another head
            chosen = None
        if chosen:
            figures = (f"On this text its {chosen.measure} is **{chosen.score:.2f}**; attention spread evenly over "
                       f"the keys each token may see would give {chosen.chance:.2f}.")
            if chosen.found:
                st.info(f"**{chosen.name}** (layer {chosen.layer}, head {chosen.head}) — {chosen.what} {figures}", icon="🔎")
            else:
                st.info(f"**{chosen.name}: best candidate, at chance — not found in this model.** {figures} Layer "
                        f"{chosen.layer}, head {chosen.head} is the one evaluate ranked first, and it does no better than "
                        f"no pattern at all. What such a head would do: {chosen.what}", icon="🔎")
    elif name in ui.SHIPPED and model_kind.head_probes:
        st.caption("Run `python -m lmviz evaluate` to find this model's named heads (previous-token, induction, [CLS]/[SEP] sinks).")
    if not_yet_learnt(evaluation, name):
        st.warning("This T5 has not yet learnt to read its encoder: on held-out text it does not yet guess hidden "
                   "pieces three times as often as always writing the most frequent one would (Home has the figures). So its **cross-attention** "
                   "is mostly noise; its encoder and decoder self-attention still show what the masks allow.", icon="⚠️")

    if model_kind.reads_target and knows_prefixes(loaded):  # a T5 trained text-to-text: a preset per task
        st.caption("This T5 was trained text-to-text: the input's first word names its task (" +
                   ", ".join(f"`{t}:`" for t in prefixes.ASKED) + "). Each preset is from a play it never trained on; "
                   "`punctuate:` shows cross-attention at its clearest, each word written looking at the word it copies.")
        tasks = prefixes.preset_texts()
        text = ui.text_input("text", tasks, default=tasks[prefixes.presets()["punctuate"].label], upload=True)
    else:
        text = ui.text_input("text", PRESETS, default=PRESETS["Hamlet"], upload=True)
    pair = target = ""
    if model_kind.reads_pair:
        pair = ui.text_input("pair", label="Second sentence (optional: BERT reads [CLS] A [SEP] B [SEP])", height=68)
    elif model_kind.reads_target:
        target = ui.text_input("target", label="Decoder text (leave empty to use the model's own output)", height=68)

    run = run_for(name, text, pair, target)
    ui.show_notes(run.notes)
    rec = run.record

    kinds = rec.kinds
    kind = kinds[0]
    if len(kinds) > 1:
        kind = ui.param("kind", kinds[0], choices=kinds)
        kind = st.radio("Attention", kinds, index=kinds.index(kind), format_func=KIND_NAMES.get, horizontal=True, key="w_kind")
        ui.set_params(kind=kind)
    queries, keys = run.axes(kind)
    keep = rec.keep(kind).numpy()
    long_text = views.long_text(run, kind)
    c1, c2, c3 = st.columns(3)
    with c1:
        layer = ui.choose_index("layer", "layer", rec.n_layers(kind))
    with c2:
        head = ui.choose_index("head", "head", rec.n_heads(kind))
    with c3:
        query = ui.choose_index("query", "query position", len(queries), lambda i: f"{i}: {queries[i]}",
                             default=len(queries) // 2)  # mid-sentence: a row with keys on both sides of the mask

    one, walk, every, viz = st.tabs(["One head", "One head's arithmetic", "Every head", "bertviz"], key="tab",
                                     bind="query-params")
    if one.open is not False:
        with one:
            st.write(f"**Layer {layer}, head {head}.** Each row is one query token; the colours along the row are how much "
                     "it attends to each key token, and they sum to 1. Hover over a cell for the tokens and the weight. "
                     "The outlined row is the query that the arithmetic tab walks through." +
                     (" Light grey cells are hidden by the causal mask: the query may not look there at all, which is "
                      "not the same as looking with weight 0." if not keep.all() else "") +
                     (" On a text this long most weights are tiny, so the colours top out at the 99th percentile of "
                      "the weights (the colourbar gives its value); the few larger ones share the brightest colour."
                      if long_text else "") +
                     (" In cross-attention each row is the decoder position that writes the *next* token: a head that "
                      "aligns looks, from the word it reads, at the input word it is about to write." if kind == "cross" else ""))
            ui.plot(views.one_head(run, kind, layer, head, query))

    if walk.open is not False:
        with walk:
            arith, (vectors, steps, weighted) = views.arithmetic(run, kind, layer, head, query)
            scale = (f"then divides by √d = √{arith.d_head}" if arith.scale != 1.0 else
                     "T5 does **not** divide by √d; it adds a learned relative position bias instead"
                     if arith.position_bias is not None else "T5 does **not** divide by √d (and cross-attention adds no position bias)")
            st.write(f"How query **{query}: {ui.plain(queries[query])}** (layer {layer}, head {head}) gets its weights. The model "
                     f"projects each token to a query vector q, a key vector k and a value vector v (d = {arith.d_head} "
                     f"numbers each). It takes the dot product of q with every k, {scale}, adds the mask (−∞ where the "
                     "query may not look), and applies the softmax.")
            st.caption("The query vector (top row) and every key vector; the two colours are positive and negative numbers.")
            ui.plot(vectors)
            ui.plot(steps)
            st.caption(f"The last panel is row {query} of the heatmap, the model's own numbers. Recomputed here from q and k "
                       f"(in float64), the same steps give that row to within {arith.max_difference:.1e}.")
            st.write("Finally each value vector is multiplied by its weight and they are added up: that sum is what this "
                     "head passes on for this token.")
            ui.plot(weighted)

    if every.open is not False:
        with every:
            st.write("The whole model: one small heatmap per layer (rows) and head (columns). Heads in the same layer "
                     "read the same input but learn different patterns. Click one to open it large (or choose a layer "
                     "and head above).")
            grid, means = views.every_head(run, kind)
            ui.plot(grid, key="grid", on_click=open_clicked_head)
            st.write("The average over the heads of each layer: what the layer as a whole mixes together.")
            ui.plot(means)

    if viz.open is not False:
        with viz:
            st.write("Jesse Vig's bertviz draws the same numbers as lines between tokens. **Head view**: pick a layer; "
                     "hover a token to see where it looks; double-click a coloured square to show one head. "
                     "**Model view**: every layer and head as thumbnails; click one to enlarge." +
                     (" For T5, the *Attention* menu switches between encoder, decoder and cross-attention."
                      if model_kind.reads_target else ""))
            view = ui.param("bertviz", "head", choices=["head", "model"])
            view = st.radio("bertviz view", ["head", "model"], index=["head", "model"].index(view), horizontal=True,
                            format_func={"head": "head view", "model": "model view"}.get, key="w_bertviz")
            ui.set_params(bertviz=view)
            html, height = bertviz_for(name, text, pair, target, view)
            st.iframe(html, height=height)
            st.download_button(f"Download the {view} view (one HTML file, works offline)", html,
                               file_name=f"bertviz_{view}_view.html", mime="text/html")
    ui.download_view("attention", views.attention_numbers(run, kind, layer, head),
                     f"attention_{kind}_layer{layer}_head{head}.json", text=text)
except LmvizError as err:
    ui.error(err)
