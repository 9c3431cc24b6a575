"""Fuzz every public entry point that takes user input: it answers, or raises ``LmvizError``; nothing else.

The default profile runs a few dozen cases per test; the dedicated run
``HYPOTHESIS_PROFILE=fuzz python -m pytest -q tests/test_fuzz.py`` runs 2,000 per test (over 10,000 in all).
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmviz.analysis import arithmetic


from lmviz.pretrain import corpus, masking, objectives
from lmviz.errors import LmvizError
from lmviz.analysis.inference import attention_run, encode
from lmviz.pretrain.tokenizers import KINDS, explain
from hostile import HOSTILE

# Text a student might type: any Unicode (surrogates included), the hostile list, special tokens glued to words.
SPECIALS = ["[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "</s>", "<pad>", "<extra_id_0>", "<extra_id_99>", "<|endoftext|>"]
texts = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec=None, categories=None), max_size=80),
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(SPECIALS + ["to", "be", "or", "not", " ", "\n", "é", "🤷🏽‍♀️", "漢字", "مرحبا"]), max_size=40).map("".join),
)


def answers_or_lmviz_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except LmvizError as err:
        assert str(err).strip(), "an error must say what is wrong"
        return None


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


@given(text=texts, pair=st.none() | texts)
def test_explain_any_text(tokenizers, text, pair):
    for kind in KINDS:
        exp = answers_or_lmviz_error(explain, kind, tokenizers[kind], text, pair)
        if exp is not None:
            for p in exp.pieces:
                assert 0 <= p.start <= p.end


@given(text=texts, kind=st.sampled_from(["bert", "gpt2", "t5"]))
def test_encode_and_attention_any_text(models, text, kind):
    loaded = models[kind]
    enc = answers_or_lmviz_error(encode, loaded, text)
    if enc is not None:
        assert len(enc.ids) == len(enc.labels) <= 256
    run = answers_or_lmviz_error(attention_run, loaded, text, target=text[:40] if kind == "t5" else None)
    if run is not None:
        for probs in run.record.probs.values():
            for p in probs:
                assert torch.isfinite(p).all()
                assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-4)


@given(text=texts, seed=st.integers(-2**40, 2**40), rate=(st.floats(-1, 2) | st.just(float("nan"))), chosen=st.none() | st.lists(st.integers(-5, 50), max_size=5))
def test_masking_page_objectives_any_input(models, text, seed, rate, chosen):
    answers_or_lmviz_error(objectives.mlm_predict, models["bert"], text, seed=seed, rate=rate,
                           chosen=tuple(chosen) if chosen is not None else None)
    answers_or_lmviz_error(objectives.t5_reconstruct, models["t5"], text, seed=seed, noise=rate)
    answers_or_lmviz_error(objectives.gpt2_shift_table, models["gpt2"], text)
    answers_or_lmviz_error(objectives.nsp_predict, models["bert"], text, text[::-1])


@given(layer=st.integers(-3, 8), head=st.integers(-3, 8), query=st.integers(-3, 300), kind=st.sampled_from(["self", "causal", "cross", "nope"]))
def test_head_arithmetic_any_index(models, layer, head, query, kind):
    run = attention_run(models["t5"], "The course of true love never did run smooth.", target="true love")
    result = answers_or_lmviz_error(arithmetic.head_arithmetic, run.record, kind, layer, head, query)
    if result is not None:
        assert abs(result.probs.sum() - 1) < 1e-6


@given(data=st.binary(max_size=300) | st.sampled_from([b"", b"   \n", b"\xff\xfe\x00a", "héllo".encode("latin-1"), "ok text".encode()]))
def test_uploaded_bytes(data):
    text = answers_or_lmviz_error(corpus.decode_user_bytes, data, "upload.txt")
    if text is not None:
        assert text.strip()
        doc = answers_or_lmviz_error(corpus.user_document, text)
        assert doc is None or doc.speeches


@given(length=st.integers(-2, 300), density=(st.floats(-1, 2) | st.just(float("nan"))), mean=(st.floats(-1, 20) | st.just(float("nan"))), seed=st.integers(0, 2**32))
def test_span_corruption_any_settings(length, density, mean, seed):
    import numpy as np

    spans = answers_or_lmviz_error(masking.random_spans, length, np.random.default_rng(seed), density, mean)
    if spans is not None:
        for a, b in spans:
            assert 0 <= a < b <= max(length, 0)


@given(spans=st.lists(st.tuples(st.integers(-3, 12), st.integers(-3, 12)) | st.lists(st.integers(-3, 12), max_size=3), max_size=6),
       n_sentinels=st.integers(0, 4))
def test_span_corruption_any_spans(spans, n_sentinels):
    ids = list(range(100, 110))
    sentinels = list(range(900, 900 + n_sentinels))
    sc = answers_or_lmviz_error(masking.span_corrupt, ids, None, sentinel_ids=sentinels, eos_id=1, spans=spans)
    if sc is not None:
        assert masking.uncorrupt(sc.input_ids, sc.target_ids, sentinels, 1) == ids


@given(docs=st.lists(st.lists(st.lists(st.integers(5, 50), max_size=4), max_size=5), max_size=4),
       max_tokens=st.none() | st.integers(-2, 40), seed=st.integers(0, 2**32))
def test_nsp_any_documents(docs, max_tokens, seed):
    import numpy as np

    pair = answers_or_lmviz_error(masking.nsp_pair, docs, np.random.default_rng(seed), max_tokens)
    if pair is not None:
        assert pair.a and pair.b
        max_len = max_tokens if max_tokens is not None else 64
        row = answers_or_lmviz_error(masking.pair_ids, pair.a, pair.b, cls_id=2, sep_id=3, max_len=max_len)
        if row is not None:
            assert len(row[0]) == len(row[1]) <= max_len


@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 6)), special_shape=st.tuples(st.integers(1, 3), st.integers(1, 6)),
       vocab=st.integers(-1, 12), seed=st.integers(0, 2**32))
def test_mlm_any_shapes_and_vocabulary(shape, special_shape, vocab, seed):
    ids = torch.randint(0, 8, shape, generator=torch.Generator().manual_seed(seed))
    special = torch.zeros(special_shape, dtype=torch.bool)
    d = answers_or_lmviz_error(masking.mlm_mask, ids, special, mask_id=4, vocab_size=vocab, generator=torch.Generator().manual_seed(seed))
    if d is not None:
        assert d.input_ids.shape == ids.shape
        assert not ((d.outcome == masking.RANDOM) & (d.input_ids == 4)).any()
