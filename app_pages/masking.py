"""Masking: what each model is trained to predict — BERT's MLM and NSP, T5's span corruption, GPT-2's next token."""
import streamlit as st

from lmviz.pretrain import objectives

from lmviz.app import ui, views
from lmviz.errors import LmvizError
from lmviz.app.ui import kind_of
from lmviz.viz.evaluation import not_yet_learnt
from lmviz.viz import masking as vm

OBJECTIVES = {"mlm": "BERT · masked words (MLM)", "nsp": "BERT · next sentence (NSP)",
              "t5": "T5 · span corruption", "gpt2": "GPT-2 · next token"}
PRESETS = {
    "Hamlet": "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and "
              "arrows of outrageous fortune, or to take arms against a sea of troubles.",
    "Romeo": "But, soft! what light through yonder window breaks? It is the east, and Juliet is the sun.",
    "Macbeth": "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day.",
    "Twelfth Night": "If music be the food of love, play on; give me excess of it.",
}
DEFAULT = PRESETS["Hamlet"]
MAX_SEED = 999_999
PAIR_MODES = {"true": "the true next speech", "random": "a speech from another play", "own": "my own two sentences"}


@st.cache_data(max_entries=64, show_spinner=False)
def _words(name: str, text: str) -> list[str]:
    return objectives.bert_words(ui.load_model(name), text)


@st.cache_data(max_entries=64, show_spinner="BERT is guessing…")
def _mlm(name: str, text: str, seed: int, rate: float, split: tuple[float, float], chosen: tuple[int, ...] | None):
    return views.mlm(ui.load_model(name), text, seed, rate, split, chosen)


@st.cache_data(max_entries=32, show_spinner="Reading a held-out play…")
def _nsp_sample(seed: int, true_next: bool) -> tuple[str, str]:
    return objectives.nsp_sample(seed, true_next)


@st.cache_data(max_entries=64, show_spinner=False)
def _nsp(name: str, a: str, b: str):
    return views.nsp(ui.load_model(name), a, b)


@st.cache_data(max_entries=64, show_spinner="T5 is filling in the spans…")
def _t5(name: str, text: str, seed: int, noise: float, mean_span: float):
    return views.span_fill(ui.load_model(name), text, seed, noise, mean_span)


@st.cache_data(max_entries=64, show_spinner=False)
def _shift(name: str, text: str):
    return views.shift(ui.load_model(name), text)


def seed_control(disabled: bool = False) -> int:
    """A seed in the URL, and a re-roll button that draws again (dynamic masking: a new draw every time)."""
    if "w_seed" not in st.session_state:
        asked = ui.param("seed", 0, int)
        st.session_state["w_seed"] = min(max(asked, 0), MAX_SEED)
        if asked != st.session_state["w_seed"]:
            st.info(f"The link's seed {asked:,} is outside 0–{MAX_SEED:,}, so the seed is {st.session_state['w_seed']:,}.", icon="ℹ️")

    def reroll() -> None:
        st.session_state["w_seed"] = (st.session_state["w_seed"] + 1) % (MAX_SEED + 1)

    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    seed = c1.number_input("Seed (the same seed gives the same draw)", 0, MAX_SEED, key="w_seed", step=1, disabled=disabled)
    c2.button("🎲 Re-roll", on_click=reroll, key="reroll", disabled=disabled,
              help="A new random draw: BERT and T5 see a new one every epoch.")
    ui.set_params(seed=int(seed))
    return int(seed)


def chosen_words(words: list[str], text: str) -> list[int]:
    """The words the student picked to mask, kept in the URL. A new text drops the choice: its word numbers would
    point at other words."""
    if st.session_state.get("_words_for", text) != text:
        st.session_state["w_words"] = []
    elif "w_words" not in st.session_state:
        st.session_state["w_words"] = [int(w) for w in ui.param("words", "").split(",")
                                       if w.isascii() and w.isdigit() and int(w) < len(words)]
    st.session_state["_words_for"] = text
    chosen = st.multiselect("Choose the words to mask yourself (leave empty for BERT's random draw)", range(len(words)),
                            format_func=lambda i: f"{i}: {words[i]}", key="w_words")
    ui.set_params(words=",".join(map(str, chosen)) or None)
    return chosen


def mlm_section(name: str, text: str) -> None:
    st.markdown("BERT learns by filling in blanks (Devlin et al., 2019): **15 %** of the pieces are selected; of those "
                "**80 %** become `[MASK]`, **10 %** a random token and **10 %** stay as they were — so BERT cannot know which "
                "visible tokens are genuine, and must keep a good guess for every position. The loss is the "
                "cross-entropy −ln p(true token) averaged over the selected positions only.")
    chosen = chosen_words(_words(name, text), text)
    if chosen:
        st.caption("Each word you chose becomes `[MASK]`, so you see what BERT guesses there: the seed, the share and the "
                   "80/10/10 split below apply to the random draw only. Clear your choice to draw at random again.")
    seed = seed_control(disabled=bool(chosen))
    c1, c2, c3 = st.columns(3)
    rate = c1.slider("Selected share", 0.05, 0.5, ui.param("rate", 0.15, float, lo=0.05, hi=0.5), 0.01, key="w_rate",
                     disabled=bool(chosen))
    mask = c2.slider("of which → [MASK]", 0.0, 1.0, ui.param("maskp", 0.8, float, lo=0.0, hi=1.0), 0.05, key="w_maskp",
                     disabled=bool(chosen))
    rand = c3.slider("of which → random token", 0.0, 1.0, ui.param("randp", 0.1, float, lo=0.0, hi=1.0), 0.05, key="w_randp",
                     disabled=bool(chosen))
    if mask + rand > 1.0:
        st.info(f"[MASK] and random add up to {mask + rand:.0%}; the random share is cut to {1 - mask:.0%}.", icon="ℹ️")
        rand = round(1.0 - mask, 2)
    if not chosen:
        st.caption(f"Of the selected: {mask:.0%} [MASK] · {rand:.0%} random · {1 - mask - rand:.0%} kept.")
    ui.set_params(rate=rate, maskp=mask, randp=rand)
    draw = (0, 0.15, (1.0, 0.0)) if chosen else (seed, rate, (mask, rand))  # chosen words ignore them: one cache entry
    result, strip, top5 = _mlm(name, text, *draw, tuple(chosen) or None)
    ui.show_notes(result.notes)
    scored = result.scored
    hits = sum(p.in_top5 for p in scored)
    m1, m2, m3 = st.columns(3)
    m1.metric("Selected positions", len(scored))
    m2.metric("True token in the top 5", f"{hits} of {len(scored)}")
    m3.metric("MLM loss (nats)", f"{result.loss:.2f}" if scored else "—", help="Mean −ln p(true token) over the selected positions.")
    st.markdown("**What the draw did.** Top row: the pieces of your text; bottom row: what BERT actually reads. "
                "Hover a coloured piece to see BERT's five best guesses there.")
    ui.plot(strip, key="mlm_strip")
    st.markdown("**BERT's five best guesses at each selected position**, most likely first; ✓ and an orange frame mark "
                "the true piece. A random or kept token still has to be predicted: BERT does not know it was chosen.")
    ui.plot(top5, key="mlm_top5")
    with st.expander("The same as a table"):
        st.dataframe(vm.mlm_rows(result), hide_index=True, width="stretch")
    ui.download_view("masking", result, "masking_mlm.json", text=text)
def nsp_section(name: str) -> None:
    st.markdown("BERT's second objective: given `[CLS] A [SEP] B [SEP]`, is B the text that really follows A (**IsNext**) "
                "or a random one (**NotNext**)? Half of its training pairs are each. The **token_type_ids** (segment "
                "embeddings) tell BERT which tokens belong to A (0) and which to B (1); the answer is read from `[CLS]`.")
    mode = st.radio("Sentence B is", list(PAIR_MODES), format_func=PAIR_MODES.get, horizontal=True, key="w_pair",
                    index=list(PAIR_MODES).index(ui.param("pair", "true", choices=list(PAIR_MODES))))
    ui.set_params(pair=mode)
    if mode == "own":
        a = ui.text_input("a", default="To be, or not to be, that is the question.", label="Sentence A", height=68)
        b = ui.text_input("b", default="Whether 'tis nobler in the mind to suffer.", label="Sentence B", height=68)
    else:
        seed = seed_control()
        a, b = _nsp_sample(seed, mode == "true")
        st.caption("A speech from a held-out play (never trained on) and "
                   + ("the speech that follows it." if mode == "true" else "a speech from another play."))
        c1, c2 = st.columns(2)
        c1.text_area("Sentence A", a, disabled=True, height=110)
        c2.text_area("Sentence B", b, disabled=True, height=110)
    result, fig = _nsp(name, a, b)
    ui.show_notes(result.notes)
    verdict = "IsNext" if result.is_next >= 0.5 else "NotNext"
    st.metric("BERT's P(IsNext)", f"{result.is_next:.1%}", help="softmax of the NSP head on [CLS]",
              delta=f"it says {verdict}", delta_color="off", delta_arrow="off")
    ui.plot(fig, key="nsp_strip")
    ui.download_view("masking", {"a": a, "b": b, "nsp": result}, "masking_nsp.json")


def t5_section(name: str, text: str) -> None:
    st.markdown("T5 (Raffel et al., 2020) removes random **spans** (15 % of the tokens, 3 tokens long on average) and puts "
                "one **sentinel** `<extra_id_k>` in place of each; the target is each sentinel followed by the text it hides. "
                "The decoder writes that target, so T5 learns to reconstruct text, not just single words.")
    seed = seed_control()
    c1, c2 = st.columns(2)
    noise = c1.slider("Noise density (share of tokens hidden)", 0.05, 0.5, ui.param("noise", 0.15, float, lo=0.05, hi=0.5), 0.01, key="w_noise")
    span = c2.slider("Mean span length (tokens)", 1.0, 8.0, ui.param("span", 3.0, float, lo=1.0, hi=8.0), 0.5, key="w_span")
    ui.set_params(noise=noise, span=span)
    result, fig = _t5(name, text, seed, noise, span)
    ui.show_notes(result.notes)
    if warning := not_yet_learnt(ui.evaluation(), name):
        st.warning(warning, icon="🌱")
    correct = sum(f.correct for f in result.fills)
    m1, m2 = st.columns(2)
    m1.metric("Spans filled exactly", f"{correct} of {len(result.fills)}")
    m2.metric("Target loss (nats/token)", f"{result.target_loss:.2f}", help="Teacher-forced cross-entropy of the true target.")
    st.markdown("Sentinel ⟨k⟩ has the same colour in the input, the target and T5's own greedy output.")
    ui.plot(fig, key="t5_strip")
    st.dataframe(vm.t5_rows(result), hide_index=True, width="stretch")
    ui.download_view("masking", result, "masking_t5.json", text=text)
    c1, c2 = st.columns(2)
    c1.text_area("The text as T5's pieces spell it (the truth)", result.original, disabled=True, height=120)
    c2.text_area("The text with T5's fills put back", result.reconstruction, disabled=True, height=120)
    if " ".join(result.original.split()) != " ".join(text.split()):
        st.caption("This differs from what you typed: T5's vocabulary has no piece for some characters, "
                   "so they became `<unk>` and cannot be written back.")


def gpt2_section(name: str, text: str) -> None:
    st.markdown("GPT-2 (Radford et al., 2019) has the simplest objective: every position predicts the **next** token, "
                "reading only the tokens before it (the causal mask). The targets are the input shifted by one, so one "
                "text gives a prediction at every position — unlike MLM, which learns from 15 % of them. The loss is "
                "the mean of −ln p(next token); perplexity is e to that loss.")
    table, fig = _shift(name, text)
    ui.show_notes(table.notes)
    m1, m2, m3 = st.columns(3)
    m1.metric("Positions predicted", len(table.rows))
    m2.metric("Loss (nats/token)", f"{table.loss:.2f}")
    m3.metric("Perplexity", f"{table.perplexity:,.1f}")
    st.markdown("Bars: the probability GPT-2 gave the true next token. Diamonds: the probability of its own favourite; "
                "where the two meet, its favourite was right.")
    ui.plot(fig, key="shift")
    st.dataframe(vm.shift_rows(table), hide_index=True, width="stretch", height=320)
    ui.download_view("masking", table, "masking_gpt2.json", text=text)


st.title("Masking: what each model is trained to predict")
st.markdown("A language model learns from text alone by hiding part of it and predicting what was hidden. The three "
            "models hide it differently, and that choice decides what each is good at.")
objective = st.radio("Objective", list(OBJECTIVES), format_func=OBJECTIVES.get, horizontal=True, key="w_objective",
                     index=list(OBJECTIVES).index(ui.param("objective", "mlm", choices=list(OBJECTIVES))))
ui.set_params(objective=objective)
kinds = views.OBJECTIVE_MODELS[objective]
try:
    name, loaded = ui.pick_model(kinds, key=f"{kinds[0]}_model", label="Model")
    if objective == "mlm" and kind_of(loaded).no_nsp:
        st.info(kind_of(loaded).no_nsp, icon="ℹ️")
    if objective == "nsp":
        nsp_section(name)
    else:
        text = ui.text_input("text", PRESETS, default=DEFAULT, label="Text", upload=True)
        if not text.strip():
            st.info("Type a sentence (or pick a preset) to see what the model is trained to predict in it.", icon="✏️")
            st.stop()
        {"mlm": mlm_section, "t5": t5_section, "gpt2": gpt2_section}[objective](name, text)
except LmvizError as err:
    ui.error(err)
