"""Tokenization: one text through WordPiece (BERT), byte-level BPE (GPT-2) and Unigram (T5), aligned."""
import streamlit as st

from lmviz.app import ui, views
from lmviz.errors import LmvizError
from lmviz.analysis.inference import label
from lmviz.app.ui import KINDS
from lmviz.viz import tokens as vt

PRESETS = {
    "A long rare word": "Thou art not for the fashion of these times: honorificabilitudinitatibus!",
    "Contractions": "'Tis true, o'er the hills I'll go; ne'er shall we meet, and we'll say 't was so.",
    "Names": "Enter Coriolanus, Menenius Agrippa, Volumnia and Sicinius Velutus.",
    "Numbers": "In 1599 the Globe held 3,000 people; a ticket cost 1d, or 0.4% of a day's wage.",
    "Emoji": "Love 😍 and a family 👨‍👩‍👧 with a thumbs-up 👍🏽!",
    "Accents": "Café, naïve façade — the señor's fiancée in Verona.",
    "Other scripts": "Быть или не быть · 生存还是毁灭 · أكون أو لا أكون · Ἐν ἀρχῇ",
    "Markup and special tokens": "<b>bold</b> **not bold** $x^2$ [MASK] </s> <extra_id_0> <|endoftext|>",
    "A sentence pair (BERT)": {"text": "To be, or not to be, that is the question:",
                               "pair": "Whether 'tis nobler in the mind to suffer."},
}
DEFAULT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer."


@st.cache_data(max_entries=64, show_spinner=False)
def _explain_all(text: str, pair: str | None) -> dict:
    tokenizers = {}
    for kind in KINDS:  # the shipped model's tokenizer, else the first of your folders of that kind (a RoBERTa's BPE)
        names = ui.model_names((kind,))  # the ones that load: the sidebar says why another does not
        if names:
            tokenizers[kind] = ui.load_model(names[0]).tokenizer
    return views.explanations(tokenizers, text, pair)


@st.cache_data(max_entries=64, show_spinner=False)
def _figure(text: str, pair: str | None, width: int, lit: tuple[str, int] | None):
    return vt.aligned_rows(text, _explain_all(text, pair), pair, width=width, lit=lit)


def _pick_piece() -> None:
    """The figure's click callback: remember which piece was clicked, and for which text."""
    piece = vt.clicked_piece(ui.clicked("aligned"))
    if piece is not None:
        st.session_state["lit"] = (*piece, st.session_state.get("w_text"), st.session_state.get("w_pair"))


def _lit(explained: dict, text: str, pair: str | None) -> tuple[str, int] | None:
    """The clicked piece, if it was clicked on this very text (a new text forgets it), else the link's ``lit``."""
    picked = st.session_state.get("lit")
    if picked and picked[2] == text and (picked[3] or None) == pair:
        kind, i = picked[0], picked[1]
    else:
        kind, _, i = ui.param("lit", "").partition(":")
        i = int(i) if i.isdigit() else -1
    if kind in explained and 0 <= i < len(explained[kind].pieces):
        ui.set_params(lit=f"{kind}:{i}")
        return kind, i
    ui.set_params(lit=None)
    return None


def _piece_rows(exp) -> list[dict]:
    return [{"piece": label(p.display), "id": p.id, "characters": f"{p.start}–{p.end}" if p.end > p.start else "",
             "bytes": " ".join(f"{b:02X}" for b in p.raw_bytes) if p.raw_bytes is not None else "",
             "kind": "template" if p.special and p.start == p.end else "unknown" if p.unknown else
             "special (typed)" if p.special else "continues a word" if p.continues_word else "starts a word",
             "segment": "AB"[min(p.sequence, 1)]} for p in exp.pieces]


st.title("Tokenization: how each model cuts text into pieces")
st.markdown("A model never sees letters: a **tokenizer** cuts the text into pieces from a fixed vocabulary and gives each "
            "an id. Each of our models learnt its own vocabulary from the same plays: BERT's **WordPiece** "
            "(lower-case, `##` marks a piece that continues a word), GPT-2's **byte-level BPE** (merges of bytes, so any "
            "text can be written), and T5's **Unigram** (SentencePiece-style, `▁` marks the start of a word).")

text = ui.text_input("text", PRESETS, default=DEFAULT, label="Text", upload=True)
with st.expander("Sentence B (BERT reads a pair as [CLS] A [SEP] B [SEP])",
                 expanded=bool(st.session_state.get("w_pair", ui.param("pair", "")))):
    pair = ui.text_input("pair", default="", label="Sentence B (optional)", height=68)
width = st.slider("Characters per line", 30, 100, ui.param("width", 56, int, range(30, 101)), step=2, key="w_width")
ui.set_params(width=width)
pair = pair if pair.strip() else None

if not text.strip():
    st.info("Type some text (or pick a preset) to see how each tokenizer cuts it.", icon="✏️")
    st.stop()

explained = _explain_all(text, pair)
if not explained:
    ui.error(LmvizError("No tokenizer is available; see the sidebar for why."))
    st.stop()

st.subheader("The pieces, aligned under the text")
st.markdown("Each row is one tokenizer. A box sits under the characters it came from; hover it for its **id**, its "
            "characters (quoted from the text, underlined) and, for BPE, its **bytes**; **click** it to light up its "
            "characters in the text; hover a character of the text to see which piece each tokenizer put it in. Grey boxes are added by the model's template (`[CLS]`, `[SEP]`, "
            "`</s>`), black ones are unknown (`[UNK]`), hatched ones are single bytes (in hex) of a character that BPE "
            "has no piece for: such a character gets a wider column, one box per byte.")
if len(text) > vt.MAX_SHOWN or (pair and len(pair) > vt.MAX_SHOWN):
    st.info(f"The text is {len(text):,} characters: the figure draws the first {vt.MAX_SHOWN}; "
            "the counts below cover all of it.", icon="ℹ️")
lit = _lit(explained, text, pair)
ui.plot(_figure(text, pair, width, lit), key="aligned", on_click=_pick_piece)
if lit is not None:
    p = explained[lit[0]].pieces[lit[1]]
    source = (text, pair or "")[min(p.sequence, 1)]
    chars = f"character {p.start}" if p.end - p.start == 1 else f"characters {p.start}–{p.end - 1}"
    where = (f"{chars} of the text: “{ui.plain(source[p.start:p.end])}”" if p.end > p.start else
             "no characters of the text: the model's template adds it")
    st.caption(f"Lit up: {KINDS[lit[0]].tokenizer}'s piece {lit[1]}, **{ui.plain(label(p.display))}** (id {p.id}), from {where}.")

st.subheader("How many pieces?")
st.markdown("Fewer pieces per text means each piece carries more: **characters per token** is how much text one "
            "position of the model's context holds. **Tokens** counts every position the model reads, the template's "
            "included; characters per token counts only the tokens made from the text.")
st.dataframe(vt.token_counts(explained, pair), hide_index=True, width="stretch")

st.subheader("Characters the vocabulary never saw")
story = vt.unk_story(explained)
if story:
    for line in story:
        st.markdown("- " + ui.plain(line))
else:
    st.markdown("Every character here is in all three vocabularies. Try the **Emoji** or **Other scripts** preset: WordPiece "
                "and Unigram fall back to their unknown token, byte-level BPE spells the character out in bytes.")

st.subheader("Every piece, with its id")
kind = st.radio("Tokenizer", list(explained), format_func=lambda k: KINDS[k].tokenizer, horizontal=True, key="w_tok",
                index=list(explained).index(ui.param("tok", list(explained)[0], choices=list(explained))))
ui.set_params(tok=kind)
st.dataframe(_piece_rows(explained[kind]), hide_index=True, width="stretch", height=300)
ui.download_view("tokenization", {"pair": pair, "tokenizers": explained}, "tokenization.json", text=text)
