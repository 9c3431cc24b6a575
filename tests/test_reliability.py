"""A classroom's server: broken checkpoints, the user's own models, links that try to reach outside, hostile text.

Each test runs the real app through Streamlit's AppTest with the real models; a page that shows a
traceback (``at.exception``) fails it.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from hostile import HOSTILE
from lmviz.models import checkpoints

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["app_pages/home.py", "app_pages/tokenization.py", "app_pages/masking.py", "app_pages/attention.py", "app_pages/masks.py",
         "app_pages/generation.py", "app_pages/compare.py", "app_pages/layers.py", "app_pages/finetune.py"]
NAMES = {"bert": "BERT", "gpt2": "GPT-2", "t5": "T5"}


def fresh_app(params: dict | None = None, clear: bool = False) -> AppTest:
    """The app with these query params; ``clear`` drops every cache (models reload) for tests that swap model folders."""
    if clear:
        st.cache_resource.clear()
        st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    return at


def every_page(at: AppTest) -> None:
    """Run each page in turn; none may show a traceback."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])


def sidebar_text(at: AppTest) -> str:
    return " ".join(w.value for w in at.sidebar.warning) + " " + " ".join(w.value for w in at.sidebar.error)


def corrupt(folder: Path, how: str) -> None:
    if how == "truncated weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    elif how == "wrong shapes":
        cfg = json.loads((folder / "config.json").read_text())
        for key in ("hidden_size", "n_embd", "d_model"):
            if key in cfg:
                cfg[key] = cfg[key] * 2
        (folder / "config.json").write_text(json.dumps(cfg))
    elif how == "missing tokenizer":
        (folder / "tokenizer.json").unlink()
    elif how == "bad JSON":
        (folder / "config.json").write_text("{ this is not json")


@pytest.fixture
def assets_copy(tmp_path, monkeypatch):
    dst = tmp_path / "models"
    for kind in NAMES:
        shutil.copytree(checkpoints.shipped(kind), dst / kind)
    monkeypatch.setenv("LMVIZ_ASSETS", str(dst))
    yield dst
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.mark.parametrize("kind,how", [("gpt2", "truncated weights"), ("bert", "wrong shapes"), ("t5", "missing tokenizer"),
                                      ("bert", "bad JSON")])
def test_one_broken_model_is_named_and_every_page_keeps_working(assets_copy, kind, how):
    corrupt(assets_copy / kind, how)
    at = fresh_app(clear=True)
    at.run()
    assert not at.exception
    said = sidebar_text(at)
    assert NAMES[kind] in said and "unavailable" in said, said
    others = [NAMES[k] for k in NAMES if k != kind]
    assert not any(f"{o} " in said for o in others), f"only {NAMES[kind]} is broken: {said}"
    every_page(at)


@pytest.mark.parametrize("value", ["../../etc/passwd", "/etc/passwd", "..", "gpt2/../../..", "C:\\Windows\\win.ini", "%2e%2e%2f"])
def test_a_link_cannot_name_a_path_outside_the_models(value, monkeypatch, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    monkeypatch.setenv("LMVIZ_MODELS", str(tmp_path / "models"))
    at = fresh_app({"model": value, "models": value}, clear=True)
    every_page(at)
    from lmviz.app import ui

    assert all(Path(p).resolve().is_relative_to(checkpoints.shipped("bert").parent.resolve()) for p in ui.registry().values())


CI_HOSTILE = {2, 3, 9, 13, 17, 19}  # script, img onerror, bidi override, emoji ZWJ, special tokens, 10 000 words


@pytest.mark.parametrize("text", [t if i in CI_HOSTILE else pytest.param(t, marks=pytest.mark.slow) for i, t in enumerate(HOSTILE)],
                         ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_text_in_every_page(text):
    text = re.sub("[\ud800-\udfff]", "\ufffd", text[:2000])  # a browser's TextEncoder sends a lone surrogate as U+FFFD
    at = fresh_app({"text": text, "prompt": text})
    every_page(at)


def link_keys(page: str) -> list[str]:
    """The query-param keys a page reads (``ui.param("key", ...)``, ``text_input(key=...)``), from its source."""
    import re

    src = (ROOT / page).read_text()
    return sorted(set(re.findall(r"""param\(\s*["']([a-z_]+)["']""", src)) | {"text", "model", "prompt", "pair"})


GARBAGE = ["1e309", "-99999999999999999999", "<script>alert(1)</script>"]  # CI; the slow run adds the rest
MORE_GARBAGE = ["nan", "-1", "abc", "../..", "", "0x10", "inf", "99999"]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("junk", GARBAGE + [pytest.param(j, marks=pytest.mark.slow) for j in MORE_GARBAGE])
def test_an_old_or_edited_link_never_breaks_a_page(page, junk):
    at = fresh_app({k: junk for k in link_keys(page)})
    at.run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    assert not at.exception, (page, junk, [e.value for e in at.exception])


def test_your_own_transformers_checkpoint_is_offered_on_every_page(tmp_path, monkeypatch):
    """A GPT-2 and a BERT written by transformers' save_pretrained (other sizes than ours) appear beside the shipped ones."""
    import torch
    import transformers

    torch.manual_seed(0)
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=8192, n_positions=64, n_embd=32, n_layer=3, n_head=2))
    gpt.save_pretrained(tmp_path / "tiny-gpt2")
    shutil.copy(checkpoints.shipped("gpt2") / "tokenizer.json", tmp_path / "tiny-gpt2")
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=4096, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                          intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(tmp_path / "bare-bert")
    shutil.copy(checkpoints.shipped("bert") / "tokenizer.json", tmp_path / "bare-bert")
    monkeypatch.setenv("LMVIZ_MODELS", str(tmp_path))
    at = fresh_app({"model": "tiny-gpt2 (yours)"}, clear=True)
    at.run()
    at.switch_page("app_pages/attention.py").run()
    assert not at.exception, [e.value for e in at.exception]
    chosen = [s for s in at.selectbox if s.label == "Model"][0]
    assert "tiny-gpt2 (yours)" in chosen.options and "bare-bert (yours)" in chosen.options, chosen.options
    assert chosen.value == "tiny-gpt2 (yours)"
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
    st.cache_resource.clear()


@pytest.mark.parametrize("page,key", [("app_pages/tokenization.py", "text"), ("app_pages/masking.py", "text"), ("app_pages/attention.py", "text"),
                                      ("app_pages/masks.py", "text"), ("app_pages/generation.py", "prompt"), ("app_pages/compare.py", "text")])
def test_hostile_uploads_get_a_message_and_never_markup(page, key):
    at = fresh_app({key: "To be"})
    at.run()
    at.switch_page(page).run()
    name = "<img src=x onerror=alert(1)> **bold** $x$.txt"
    for data in (b"\x00\x01\x02binary", b"\xff\xfe\xfa not utf-8", b"   "):
        at.file_uploader(key=f"w_{key}_file").set_value((name, data, "application/octet-stream")).run()
        assert not at.exception, [e.value for e in at.exception]
        message = at.error[0].value
        assert "\\<img" in message and "\\*\\*bold\\*\\*" in message and "\\$x\\$" in message  # shown as typed, not rendered
        assert at.text_area(key=f"w_{key}").value == "To be"
    long = ("word " * 10_000).encode()  # 50,000 characters: taken, cut for the figures, and the page says so
    at.file_uploader(key=f"w_{key}_file").set_value(("long.txt", long, "text/plain")).run()
    assert not at.exception and not at.error
    assert at.text_area(key=f"w_{key}").value == long.decode()
    which = "last" if key == "prompt" else "first"  # a prompt keeps its end, the part the model continues
    assert any(f"only the {which} 20,000 are used" in i.value for i in at.info)
    assert key not in at.query_params  # too long for the link
