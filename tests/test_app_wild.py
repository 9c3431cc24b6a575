"""Every page with folders from the wild offered through ``--models``: a RoBERTa and a BERT whose tokenizer pads to 128
tokens. Each page works with what the model has, or says what it lacks; none shows a traceback."""
from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from wild import byte_bpe, fixed_padding, unigram, wordpiece, write_folder

PAGES = ["home", "tokenization", "masking", "attention", "masks", "generation", "compare", "layers", "finetune"]


@pytest.fixture(scope="module")
def wild_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_folder(root / "roberta", "RobertaForMaskedLM", byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], roberta=True))
    write_folder(root / "sbert", "BertModel", fixed_padding(wordpiece(), "[PAD]"))
    write_folder(root / "t5", "T5ForConditionalGeneration", unigram(template=False))  # 4 sentinels, no </s> template
    write_folder(root / "gpt2", "GPT2Model", byte_bpe(["<|endoftext|>"]))  # no LM head of its own: it ties to wte
    write_folder(root / "nomask", "BertForMaskedLM", wordpiece(mask=False))
    return root


def _page(page: str, model: str, objective: str = "mlm") -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.switch_page(f"app_pages/{page}.py")
    for key in ("model", "bert_model", "t5_model", "gpt2_model"):  # the Masking page keeps one model per objective
        at.query_params[key] = f"{model} (yours)"
    at.query_params["objective"] = objective
    at.run()
    return at


@pytest.mark.parametrize("page", PAGES)
def test_every_page_works_with_a_roberta_from_the_models_folder(page, wild_models, monkeypatch):
    monkeypatch.setenv("LMVIZ_MODELS", str(wild_models))
    st.cache_resource.clear()
    at = _page(page, "roberta")
    assert not at.exception, [e.value for e in at.exception]
    if page == "masking":
        assert any("RoBERTa has no next-sentence head" in i.value for i in at.info)
    if page == "tokenization":
        assert "byte-level BPE (RoBERTa)" in [o for r in at.radio if r.key == "w_tok" for o in r.options]
    st.cache_resource.clear()


def test_a_padded_tokenizer_reads_the_texts_own_tokens_and_the_sidebar_says_so(wild_models, monkeypatch):
    monkeypatch.setenv("LMVIZ_MODELS", str(wild_models))
    st.cache_resource.clear()
    home = AppTest.from_file("../app.py", default_timeout=180)
    home.run()  # AppTest keeps the sidebar of the first page it runs only
    assert any("pads every text to 128 tokens" in c.value for c in home.sidebar.caption)
    at = _page("attention", "sbert")
    assert not at.exception
    queries = at.selectbox(key="w_query").options
    assert 10 < len(queries) < 60 and not any("[PAD]" in q for q in queries)
    st.cache_resource.clear()


@pytest.mark.parametrize("model, objective, said", [("t5", "t5", None), ("gpt2", "gpt2", None),
                                                     ("nomask", "mlm", "nomask/tokenizer.json has no [MASK] token")])
@pytest.mark.parametrize("page", ["masking", "generation", "layers"])
def test_a_tokenizer_unlike_ours_gets_each_page_or_a_message_naming_what_it_lacks(page, model, objective, said, wild_models,
                                                                                   monkeypatch):
    monkeypatch.setenv("LMVIZ_MODELS", str(wild_models))
    st.cache_resource.clear()
    at = _page(page, model, objective)
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    if said and page in ("masking", "layers"):
        assert any(said in e for e in errors), errors
    elif page != "generation" or model != "nomask":
        assert not errors, errors
    st.cache_resource.clear()
