"""Home: the three models side by side — blocks, sizes, training curves, evaluation, the device."""

import streamlit as st

from lmviz.app import ui
from lmviz.errors import LmvizError
from lmviz.app.ui import KINDS, shipped_kinds
from lmviz.viz import home
from lmviz.viz.evaluation import evaluation_rows

LINKS = {"bert": [("app_pages/tokenization.py", "WordPiece tokens"), ("app_pages/masking.py", "masked words and NSP"),
                  ("app_pages/attention.py", "bidirectional attention")],
         "gpt2": [("app_pages/masking.py", "next-token targets"), ("app_pages/generation.py", "writing, token by token"),
                  ("app_pages/masks.py", "the causal mask")],
         "t5": [("app_pages/masking.py", "span corruption"), ("app_pages/attention.py", "cross-attention"),
                ("app_pages/generation.py", "decoding with the encoder")]}


def _loaded(kind: str):
    try:
        return ui.load_model(kind)
    except LmvizError as err:
        return err


@st.cache_data(max_entries=8, show_spinner=False)
def _sizes(kind: str) -> home.Sizes:
    return home.sizes_of(ui.load_model(kind))


@st.cache_data(max_entries=8, show_spinner=False)
def _diagram(kind: str):
    return home.architecture_diagram(_sizes(kind))


@st.cache_data(max_entries=8, show_spinner=False)
def _curves(kind: str):
    return home.training_curves(kind, ui.load_model(kind).train_log)


st.title("Three small language models, inside out")
st.markdown("lmviz shows what happens inside three Transformer language models that this project pretrained from "
            "scratch on Shakespeare's plays: an **encoder** (BERT), a **decoder** (GPT-2) and an **encoder-decoder** (T5). "
            "They are tiny next to the originals, but they are built from the same blocks, trained on the same objectives, "
            "and every number in this app comes from running them.")

models = {kind: _loaded(kind) for kind in shipped_kinds()}
ok = [k for k in shipped_kinds() if not isinstance(models[k], LmvizError)]

st.header("The three architectures")
st.markdown("Read each diagram from the bottom up: tokens become vectors (embeddings), pass through a stack of identical "
            "layers (attention, then a feed-forward network), and a head turns the last vectors into predictions. "
            "The small grid is the attention mask: a filled cell means that query may look at that key.")
cols = st.columns(len(models))
for col, kind in zip(cols, models):
    with col:
        if isinstance(models[kind], LmvizError):
            ui.error(models[kind])
            continue
        ui.plot(_diagram(kind), key=f"arch_{kind}")
        st.markdown(f"**{KINDS[kind].short}** {KINDS[kind].purpose}")
        for page, label in LINKS.get(kind, []):
            st.page_link(page, label=f"See {label}", icon="➡️")
if ok:
    st.dataframe(home.sizes_table([_sizes(k) for k in ok]), hide_index=True, width="stretch")

st.header("How small is small?")
st.markdown("Parameter counts on a **log scale**: every grid line is ten times the one before. Ours (solid) beside the "
            "published models of each family (hatched): GPT-3 has about 30 000 times as many parameters as our GPT-2.")
if ok:
    ui.plot(home.size_chart({k: _sizes(k).params for k in ok}), key="sizes")

st.header("Training")
st.markdown("Loss is the cross-entropy of the true token, −ln p, in nats: lower is better. The **training** curve is measured "
            "on the batches the model learns from; the **held-out** curve on plays it never saw, so a gap between them "
            "means memorising rather than learning. Dotted lines are an earlier training phase, when there was one.")
if ok:
    tabs = st.tabs([KINDS[k].heading for k in ok])
    for tab, kind in zip(tabs, ok):
        with tab:
            st.caption(home.training_summary(models[kind].train_log))
            ui.plot(_curves(kind), key=f"curves_{kind}")
    ui.download_view("home", {k: {"sizes": _sizes(k), "train_log": models[k].train_log} for k in ok}, "home.json",
                     label="Download the sizes and training curves (JSON)")

st.header("Evaluation")
data = ui.evaluation()
if isinstance(data, str):
    ui.error(LmvizError(data))
elif data is None:
    st.info("There is no evaluation yet. Run `python -m lmviz evaluate` to measure the models on the held-out plays "
            "and write assets/models/evaluation.json; this table then fills in.", icon="ℹ️")
else:
    rows = evaluation_rows(data)
    held = data.get("held_out") if isinstance(data, dict) else None
    st.markdown("Each figure measured on the held-out plays"
                + (f" ({', '.join(map(str, held))})" if isinstance(held, list) else "")
                + ", beside a baseline that needs no neural network: if a model does not beat its baseline, it has not learnt. "
                "**Floor** is the quality this project set itself for the figure. BERT's top-1 is given twice: at "
                "`[MASK]` positions only (the word is hidden, as a student meets the task) and over the whole 80/10/10 "
                "draw, whose 10 % of unchanged words have their answer in the input.")
    if rows:
        mark = {"yes": " ✔", "no": " ✘"}
        shown = [{**{k: v for k, v in row.items() if k != "meets floor"}, "floor": row["floor"] + mark.get(row["meets floor"], "")}
                 for row in rows]  # the floor and whether ours meets it, in one column
        st.dataframe(shown, hide_index=True, width="stretch", height="content",
                     column_config={c: st.column_config.Column(width="small") for c in ("model", "ours", "better", "beats baselines")})
        for row in rows:
            if row["beats baselines"] == "no":
                st.caption(f"{row['model']}'s {row['figure']} does not beat its baseline: on this figure the model "
                           "has not learnt more than the baseline knows.")
        short = [f"{row['model']}'s {row['figure']} ({row['ours']:.3f}, floor {row['floor']})" for row in rows
                 if row.get("meets floor") == "no"]
        if short:
            st.caption("Below the floor: " + "; ".join(short) + ".")
    else:
        st.info("evaluation.json holds no figures this page understands; run `python -m lmviz evaluate` again.", icon="ℹ️")

st.header("Where it runs")
st.markdown(home.device_text(ui.device_line(), {k: models[k].train_log for k in ok}))
