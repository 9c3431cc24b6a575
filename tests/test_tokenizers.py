"""The three shipped tokenizers as the Tokenization page shows them: exact round trips, exact offsets, honest [UNK]s."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer

from lmviz.pretrain import corpus
from lmviz.__main__ import main
from lmviz.errors import LmvizError
from lmviz.pretrain.tokenizers import DEFAULT_OUT, KINDS, explain, train_all
from conftest import MODELS_DIR
from hostile import HOSTILE

UNICODE = [
    "👩‍👩‍👧‍👦 family, 🤷🏽‍♀️ shrug, 👍🏿 thumbs",  # ZWJ sequences and skin-tone modifiers
    "漢字とかなの混ざった日本語の文",  # CJK
    "e\u0301 combining a\u0308\u0304 marks",  # combining marks
    "مرحبا بالعالم and שלום עולם",  # right-to-left scripts
    "\u202eevil\u202c zero\u200bwidth\u200djoiner",  # bidi override, zero-width space and joiner
    "İstanbul ǅ ß ﬁne 123 [a] x",  # case-mapping oddities, ligature, digits, brackets
]
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80) | st.lists(
    st.sampled_from(["to", "be", " ", "  ", "\n", "\t", "é", "\u0301", "🤷🏽‍♀️", "漢字", "مرحبا", "[", "1", "\x85", "ﬁ"]), max_size=25,
).map("".join)


def assert_offsets_slice_each_piece_source(kind, tok, text):
    """``text[start:end]`` is what each piece stands for: the same text after the tokenizer's own normalisation."""
    exp = explain(kind, tok, text)
    norm = tok.normalizer
    for p in exp.pieces:
        source = exp.text[p.start : p.end]
        if p.special:
            assert source == "" or source == p.display, p  # template tokens are zero-width; typed ones are their text
        elif kind == "bert" and p.unknown:
            word = norm.normalize_str(source).strip()
            assert word and not any(c.isspace() for c in word), (p, source)  # a whole word the vocabulary cannot spell
        elif kind == "bert":
            assert norm.normalize_str(source).strip() == p.display.removeprefix("##"), (p, source)
        elif kind == "gpt2":
            assert (p.raw_bytes in source.encode()) if p.partial_char else (source.encode() == p.raw_bytes), (p, source)
        else:
            shown = norm.normalize_str(source).replace(" ", "▁")
            # Metaspace's word boundary before the first word stands for no character of the text
            assert p.display == shown or (p.start == 0 and p.display == "▁" + shown), (p, source)
    return exp


# --- round trips -----------------------------------------------------------------------------------

@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_byte_level_bpe_decodes_any_string_back_exactly(tokenizers, text):
    tok = tokenizers["gpt2"]
    ids = tok.encode(text).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.token_to_id("<unk>") is None and tok.token_to_id("[UNK]") is None


@given(text=any_text)
def test_byte_level_bpe_pieces_hold_the_texts_bytes_in_order(tokenizers, text):
    exp = explain("gpt2", tokenizers["gpt2"], text)
    assert b"".join(p.raw_bytes for p in exp.pieces) == text.encode()


def test_wordpiece_and_unigram_decode_plain_text_back(tokenizers):
    text = "to be or not to be, that is the question."
    assert tokenizers["bert"].decode(tokenizers["bert"].encode(text).ids) == text
    assert tokenizers["t5"].decode(tokenizers["t5"].encode(text).ids) == text


# --- offsets ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", UNICODE + [h for h in HOSTILE if len(h) < 1000])
def test_offsets_slice_the_original_text_to_each_pieces_source(tokenizers, kind, text):
    assert_offsets_slice_each_piece_source(kind, tokenizers[kind], text)


@given(text=any_text)
def test_offsets_are_exact_for_any_text(tokenizers, text):
    for kind in KINDS:
        assert_offsets_slice_each_piece_source(kind, tokenizers[kind], text)


@pytest.mark.parametrize("text, first", [("漢字 hello", "漢字"), ("👍🏿 ok", "👍🏿"), ("123", "1"), ("[a]", "["), ("e\u0301", "e")])
def test_t5_word_boundary_before_a_first_word_of_its_own_is_zero_width(tokenizers, text, first):
    pieces = explain("t5", tokenizers["t5"], text).pieces
    assert pieces[0].display == "▁" and pieces[0].start == pieces[0].end == 0
    assert text[pieces[1].start : pieces[1].end].startswith(first)


def test_t5_word_boundary_for_a_space_covers_that_space(tokenizers):
    pieces = explain("t5", tokenizers["t5"], "a 👍🏿").pieces
    bare = [p for p in pieces if p.display == "▁"]
    assert [(p.start, p.end) for p in bare] == [(1, 2)]


# --- [UNK] and bytes -------------------------------------------------------------------------------

def test_wordpiece_turns_an_unseen_character_into_unk_and_says_so(tokenizers):
    tok = tokenizers["bert"]
    exp = explain("bert", tok, "to be 🦜 or not")
    unknown = [p for p in exp.pieces if p.unknown]
    assert len(unknown) == 1
    assert unknown[0].id == tok.token_to_id("[UNK]") and unknown[0].display == "[UNK]"
    assert exp.text[unknown[0].start : unknown[0].end] == "🦜"
    assert not unknown[0].special  # it stands for text, unlike [CLS] and [SEP]
    assert not any(p.unknown for p in explain("bert", tok, "to be or not").pieces)


def test_byte_level_bpe_shows_the_raw_bytes_behind_parts_of_a_character(tokenizers):
    exp = explain("gpt2", tokenizers["gpt2"], "漢")
    assert len(exp.pieces) >= 2 and all(p.partial_char for p in exp.pieces)
    assert b"".join(p.raw_bytes for p in exp.pieces) == "漢".encode() == b"\xe6\xbc\xa2"
    assert all((p.start, p.end) == (0, 1) for p in exp.pieces)
    assert not any(p.unknown for p in exp.pieces)
    whole = explain("gpt2", tokenizers["gpt2"], " the").pieces
    assert [(p.display, p.raw_bytes, p.partial_char) for p in whole] == [(" the", b" the", False)]


def test_a_megabyte_of_text_is_explained_exactly(tokenizers):
    hamlet = next(d for d in corpus.shakespeare() if d.name == "hamlet").text
    text = (hamlet * 10)[:1_000_000] + " 漢字 🤷🏽‍♀️ مرحبا"
    exp = explain("gpt2", tokenizers["gpt2"], text)
    assert b"".join(p.raw_bytes for p in exp.pieces) == text.encode()
    assert exp.pieces[-1].end == len(text)


# --- the files and the command that writes them ----------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_shipped_files_load_in_tokenizers_and_transformers(kind):
    from transformers import PreTrainedTokenizerFast

    path = str(MODELS_DIR / kind / "tokenizer.json")
    text = "O Romeo, Romeo! wherefore art thou Romeo?"
    assert PreTrainedTokenizerFast(tokenizer_file=path)(text)["input_ids"] == Tokenizer.from_file(path).encode(text).ids


def test_the_command_writes_loadable_tokenizers_trained_on_the_given_text(tmp_path):
    from transformers import PreTrainedTokenizerFast

    doc = corpus.user_document("To be, or not to be, that is the question.\n\nWhether 'tis nobler in the mind to suffer\n\n"
                               "The slings and arrows of outrageous fortune.")
    report = train_all(tmp_path, [doc])
    assert set(report) == set(KINDS)
    for kind in KINDS:
        path = tmp_path / kind / "tokenizer.json"
        assert report[kind]["path"] == str(path) and report[kind]["vocab_size"] == Tokenizer.from_file(str(path)).get_vocab_size()
        assert PreTrainedTokenizerFast(tokenizer_file=str(path))("to be")["input_ids"]


def test_the_command_refuses_to_write_beside_a_trained_model(tmp_path, capsys):
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "t5" / "tokenizer.json").write_text("the shipped one", encoding="utf-8")
    assert main(["tokenizers", "--out", str(tmp_path)]) == 2
    assert "t5/model.safetensors" in capsys.readouterr().err
    assert (tmp_path / "t5" / "tokenizer.json").read_text(encoding="utf-8") == "the shipped one"
    assert not (tmp_path / "bert").exists()  # refused before training anything
    with pytest.raises(LmvizError, match="model.safetensors"):
        train_all(MODELS_DIR)


def test_the_command_writes_to_a_fresh_ignored_folder_by_default():
    import subprocess

    assert not (DEFAULT_OUT / "bert" / "model.safetensors").exists()
    assert MODELS_DIR.resolve() not in [DEFAULT_OUT.resolve(), *DEFAULT_OUT.resolve().parents]
    probe = DEFAULT_OUT / "bert" / "tokenizer.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=MODELS_DIR.parent.parent)
    assert ignored.returncode == 0, f"{probe} would be committed"
