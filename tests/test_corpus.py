"""The corpus a student reads about: 38 clean plays, two of them never trained on, and their own text."""
from __future__ import annotations

import re

import pytest

from lmviz.pretrain import corpus
from lmviz.errors import LmvizError


@pytest.fixture(scope="module")
def plays():
    return corpus.shakespeare()


def test_all_38_plays_load_with_speeches(plays):
    assert len(plays) == 38
    assert len({p.name for p in plays}) == 38
    assert all(len(p.speeches) > 100 for p in plays)
    assert {"hamlet", "macbeth", "the-tempest"} <= {p.name for p in plays}


def test_held_out_plays_are_real_plays_and_form_the_held_out_split(plays):
    train, held, valid = corpus.split()
    assert sorted(d.name for d in held) == sorted(corpus.HELD_OUT)
    assert sorted(d.name for d in valid) == sorted(corpus.VALIDATION)
    assert len(train) + len(held) + len(valid) == len(plays)
    assert not {d.name for d in train} & set(corpus.HELD_OUT + corpus.VALIDATION)


def test_no_line_of_a_held_out_play_is_in_the_training_text(plays):
    train, held, _ = corpus.split()
    train_lines = {line for d in train for s in d.speeches for line in s.text.split("\n")}
    held_lines = [line for d in held for s in d.speeches for line in s.text.split("\n")]
    # Stock phrases ("Ay, my good lord.") recur in many plays; every line of real length must be unseen.
    distinctive = [line for line in held_lines if len(line) >= 40]
    assert len(distinctive) > 1000
    assert not [line for line in distinctive if line in train_lines]
    train_speeches = {s.text for d in train for s in d.speeches}
    assert not [s.text for d in held for s in d.speeches if len(s.text) >= 40 and s.text in train_speeches]


def test_no_markdown_survives_cleaning(plays):
    for play in plays:
        text = play.text
        assert "**" not in text, play.name
        assert "#" not in text, play.name
        assert "_" not in text, play.name
        assert "\\" not in text, play.name
        assert not re.search(r"\bExit\b|\bExeunt\b", text), play.name


def test_stage_directions_are_dropped():
    markdown = "# ACT I\n\n**HAMLET**\n\nTo be, or not to be. _[Aside]_\n\n_Exit._\n\n_Enter Ghost,\nslowly._\n\n**GHOST**\n\nMark me.\n"
    assert corpus.clean_play(markdown) == [corpus.Speech("HAMLET", "To be, or not to be."), corpus.Speech("GHOST", "Mark me.")]


def test_speakers_are_upper_case_and_written_as_a_heading_line(plays):
    for play in plays:
        for speech in play.speeches:
            assert speech.speaker and speech.speaker == speech.speaker.upper(), (play.name, speech.speaker)
            assert speech.text.strip()
            assert str(speech).startswith(f"{speech.speaker}:\n")


def test_speaker_names_hold_no_colon_of_their_own(plays):
    names = {s.speaker for p in plays for s in p.speeches}
    assert not [n for n in names if ":" in n]
    assert "ROSENCRANTZ & GUILDENSTERN" in names  # the source writes one of its headings "ROSENCRANTZ: & GUILDENSTERN:"
    assert corpus.clean_play("**FIRST LORD:**\n\nMy lord.\n") == [corpus.Speech("FIRST LORD", "My lord.")]


def test_a_speech_keeps_its_verse_lines(plays):
    macbeth = next(p for p in plays if p.name == "macbeth")
    speech = next(s for s in macbeth.speeches if "To-morrow, and to-morrow, and to-morrow," in s.text)
    assert speech.speaker == "MACBETH"
    assert "The way to dusty death. Out, out, brief candle!\nLife's but a walking shadow" in speech.text


# --- the user's own text -----------------------------------------------------------------------------

def test_user_bytes_decode_as_utf8_with_or_without_bom():
    assert corpus.decode_user_bytes("naïve café 😀".encode()) == "naïve café 😀"
    assert corpus.decode_user_bytes(b"\xef\xbb\xbfhello") == "hello"


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"  \n\t \n", "is empty"),
    (b"PK\x03\x04\x00\x00binary", "binary file"),
    (b"caf\xe9 au lait", "not UTF-8"),
    (b"\xff\xfe\x00h\x00i", "binary file"),
])
def test_unreadable_user_bytes_get_a_readable_error(data, message):
    with pytest.raises(LmvizError, match=message):
        corpus.decode_user_bytes(data, "notes.txt")


def test_the_error_names_the_user_file():
    with pytest.raises(LmvizError, match="notes.txt"):
        corpus.decode_user_bytes(b"", "notes.txt")


def test_an_oversized_upload_is_refused_with_the_limit(monkeypatch):
    monkeypatch.setattr(corpus, "MAX_USER_BYTES", 10)
    with pytest.raises(LmvizError, match="limit"):
        corpus.decode_user_bytes(b"x" * 11)


def test_user_text_becomes_a_document_of_paragraphs():
    doc = corpus.user_document("First  paragraph\nstill first.\n\n\n  Second.\n", "mine")
    assert doc.name == "mine"
    assert [s.text for s in doc.speeches] == ["First paragraph still first.", "Second."]
    assert doc.text == "First paragraph still first.\n\nSecond."


@pytest.mark.parametrize("text", ["", "   \n\n  ", "\x00\x00"])
def test_empty_user_text_is_refused(text):
    with pytest.raises(LmvizError, match="empty"):
        corpus.user_document(text)


def test_user_text_must_be_a_string():
    with pytest.raises(LmvizError):
        corpus.user_document(b"bytes")


def test_a_folder_of_txt_files_loads_as_documents_in_name_order(tmp_path):
    (tmp_path / "b.txt").write_text("Second file.\n\nTwo paragraphs.", encoding="utf-8")
    (tmp_path / "a.txt").write_text("First file.", encoding="utf-8")
    (tmp_path / "ignored.md").write_text("# not text", encoding="utf-8")
    docs = corpus.load_user_path(tmp_path)
    assert [d.name for d in docs] == ["a", "b"]
    assert [len(d.speeches) for d in docs] == [1, 2]
    assert corpus.load_user_path(tmp_path / "a.txt")[0].text == "First file."


def test_a_folder_with_a_bad_file_names_that_file(tmp_path):
    (tmp_path / "good.txt").write_text("Fine.", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"\x00\x01\x02")
    with pytest.raises(LmvizError, match="bad.txt"):
        corpus.load_user_path(tmp_path)


def test_a_missing_path_is_refused(tmp_path):
    with pytest.raises(LmvizError, match="does not exist"):
        corpus.load_user_path(tmp_path / "nowhere.txt")


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_path_is_refused_rather_than_read_as_the_current_folder(tmp_path, monkeypatch, path):
    (tmp_path / "private.txt").write_text("Not meant to be loaded.", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LmvizError, match="No file or folder"):
        corpus.load_user_path(path)


def test_a_folder_without_txt_files_is_refused(tmp_path):
    with pytest.raises(LmvizError, match="no .txt files"):
        corpus.load_user_path(tmp_path)


def test_a_users_corpus_holds_out_its_last_file_or_the_end_of_its_only_file(tmp_path):
    (tmp_path / "a.txt").write_text("One.\n\nTwo.", encoding="utf-8")
    docs = corpus.load_user_path(tmp_path)
    train, held, valid = corpus.split(docs)
    assert [d.name for d in train] == ["a"] and [s.text for s in train[0].speeches] == ["One."]
    assert [s.text for s in held[0].speeches] == ["Two."], "one file: its last tenth (at least one paragraph) is held out"
    assert valid == held, "too short for a tenth of its own: validation falls back to the test paragraph"
    assert list(corpus.speeches(docs)) == [(0, 0, docs[0].speeches[0]), (0, 1, docs[0].speeches[1])]
    (tmp_path / "b.txt").write_text("Three.\n\nFour.", encoding="utf-8")
    train, held, _ = corpus.split(corpus.load_user_path(tmp_path))
    assert [d.name for d in train] == ["a"] and [d.name for d in held] == ["b"], "several files: the last is held out"
    (tmp_path / "c.txt").write_text("Five.\n\nSix.", encoding="utf-8")
    train, held, valid = corpus.split(corpus.load_user_path(tmp_path))
    assert [[d.name] for d in (train[0], held[0], valid[0])] == [["a"], ["c"], ["b"]], "three files: the one before the last validates"
    (tmp_path / "c.txt").unlink()
    ten = tmp_path / "ten" / "t.txt"
    ten.parent.mkdir()
    ten.write_text("\n\n".join(f"Line {i}." for i in range(20)), encoding="utf-8")
    train, held, valid = corpus.split(corpus.load_user_path(ten))
    assert [len(d.speeches) for d in (train[0], valid[0], held[0])] == [16, 2, 2]
    one = tmp_path / "one" / "c.txt"
    one.parent.mkdir()
    one.write_text("Only one paragraph.", encoding="utf-8")
    with pytest.raises(LmvizError, match="single paragraph"):
        corpus.split(corpus.load_user_path(one))
