"""The pretraining objectives hold the properties a reader of the BERT and T5 papers would check, on real play text."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmviz.pretrain import corpus, masking
from lmviz.errors import LmvizError
from lmviz.pretrain.masking import IGNORE, KEPT, MASKED, RANDOM, UNSELECTED
from lmviz.pretrain.tokenizers import SENTINELS

ROWS, SEQ = 512, 128


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: a second thread only waits for a busy core
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hamlet():
    return next(d for d in corpus.shakespeare() if d.name == "hamlet")


@pytest.fixture(scope="module")
def bert_batch(tokenizers, hamlet):
    """512 rows of 128 positions: ``[CLS] A [SEP] B [SEP]`` from Hamlet's speeches, padded as training pads them."""
    tok = tokenizers["bert"]
    ids = {n: tok.token_to_id(n) for n in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    speeches = [e.ids for e in tok.encode_batch([str(s) for s in hamlet.speeches], add_special_tokens=False) if e.ids]
    rng = np.random.default_rng(0)
    batch = torch.full((ROWS, SEQ), ids["[PAD]"])
    for r in range(ROWS):
        pair = masking.nsp_pair([speeches], rng, max_tokens=SEQ - int(rng.integers(0, 40)))
        row, _ = masking.pair_ids(pair.a, pair.b, cls_id=ids["[CLS]"], sep_id=ids["[SEP]"], max_len=SEQ)
        batch[r, : len(row)] = torch.tensor(row)
    special = (batch == ids["[PAD]"]) | (batch == ids["[CLS]"]) | (batch == ids["[SEP]"])
    return batch, special, ids, tok.get_vocab_size()


def draw(bert_batch, seed: int) -> masking.MlmDraw:
    batch, special, ids, vocab = bert_batch
    return masking.mlm_mask(batch, special, mask_id=ids["[MASK]"], vocab_size=vocab,
                            generator=torch.Generator().manual_seed(seed), special_ids=ids.values())


# --- BERT MLM ------------------------------------------------------------------------------------

def test_mlm_selects_15_percent_and_splits_them_80_10_10(bert_batch):
    batch, special, _, _ = bert_batch
    d = draw(bert_batch, 0)
    selected = d.outcome != UNSELECTED
    assert abs(selected.sum() / (~special).sum() - 0.15) < 0.01
    n = selected.sum().item()
    assert n > 9000
    assert abs((d.outcome == MASKED).sum().item() / n - 0.8) < 0.02
    assert abs((d.outcome == RANDOM).sum().item() / n - 0.1) < 0.015
    assert abs((d.outcome == KEPT).sum().item() / n - 0.1) < 0.015


def test_special_positions_are_never_selected(bert_batch):
    batch, special, _, _ = bert_batch
    for seed in range(5):
        d = draw(bert_batch, seed)
        assert (d.outcome[special] == UNSELECTED).all()
        assert torch.equal(d.input_ids[special], batch[special])
        assert (d.labels[special] == IGNORE).all()


def test_each_outcome_does_what_its_colour_says(bert_batch):
    batch, _, ids, _ = bert_batch
    d = draw(bert_batch, 1)
    assert (d.input_ids[d.outcome == MASKED] == ids["[MASK]"]).all()
    assert torch.equal(d.input_ids[d.outcome == KEPT], batch[d.outcome == KEPT])
    assert torch.equal(d.input_ids[d.outcome == UNSELECTED], batch[d.outcome == UNSELECTED])
    selected = d.outcome != UNSELECTED
    assert torch.equal(d.labels[selected], batch[selected])  # every selected position is predicted, whatever it shows
    assert (d.labels[~selected] == IGNORE).all()


def test_random_replacements_are_ordinary_tokens_from_across_the_vocabulary(bert_batch):
    _, _, ids, vocab = bert_batch
    drawn = torch.cat([draw(bert_batch, s).input_ids[draw(bert_batch, s).outcome == RANDOM] for s in range(4)])
    assert not set(drawn.tolist()) & set(ids.values())
    assert len(set(drawn.tolist())) > vocab // 4  # uniform over ~4,000 ids, not the text's own words


def test_same_seed_same_draw_new_seed_new_draw(bert_batch):
    a, b, c = draw(bert_batch, 7), draw(bert_batch, 7), draw(bert_batch, 8)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.outcome, b.outcome)
    assert (a.outcome != c.outcome).float().mean() > 0.1


def test_a_users_chosen_positions_are_all_predicted_but_never_a_special_one():
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    special = torch.tensor([[True, False, False, False, True]])
    chosen = torch.tensor([[True, True, False, True, False]])
    d = masking.mlm_mask(ids, special, mask_id=4, vocab_size=20, generator=torch.Generator().manual_seed(0), chosen=chosen)
    assert (d.outcome != UNSELECTED).tolist() == [[False, True, False, True, False]]


@pytest.mark.parametrize("kwargs, message", [
    ({"special": torch.zeros(1, 4, dtype=torch.bool)}, "shape"),
    ({"chosen": torch.ones(2, 5, dtype=torch.bool)}, "shape"),
    ({"vocab_size": 0}, "vocabulary size"),
    ({"vocab_size": 5, "special_ids": [0, 1, 2, 3]}, "no ordinary token"),
    ({"rate": 0.0}, "rate"),
    ({"mask_frac": 0.9, "random_frac": 0.2}, "100 %"),
])
def test_mlm_bad_settings_get_a_readable_error(kwargs, message):
    args = {"special": torch.zeros(1, 5, dtype=torch.bool), "mask_id": 4, "vocab_size": 30,
            "generator": torch.Generator().manual_seed(0), **kwargs}
    with pytest.raises(LmvizError, match=message):
        masking.mlm_mask(torch.tensor([[5, 6, 7, 8, 9]]), args.pop("special"), **args)


# --- BERT NSP ------------------------------------------------------------------------------------

def numbered_docs(n_docs: int, n_sentences: int) -> list[list[list[int]]]:
    """Sentence ``j`` of document ``d`` is ``[1000 d + j]`` repeated 1 to 4 times: every id says where it came from."""
    return [[[1000 * d + j] * (1 + (d + j) % 4) for j in range(n_sentences)] for d in range(n_docs)]


def where(ids: list[int]) -> list[tuple[int, int]]:
    """The (document, sentence) of each sentence in a segment, in order."""
    out = []
    for i in ids:
        if not out or out[-1] != divmod(i, 1000):
            out.append(divmod(i, 1000))
    return out


@pytest.mark.parametrize("max_tokens", [None, 24])
def test_nsp_is_balanced_and_isnext_b_follows_a_while_notnext_b_comes_from_another_play(max_tokens):
    rng = np.random.default_rng(0)
    pairs = [masking.nsp_pair(numbered_docs(5, 12), rng, max_tokens) for _ in range(2000)]
    assert abs(np.mean([p.is_next for p in pairs]) - 0.5) < 0.04
    for p in pairs:
        a, b = where(p.a), where(p.b)
        assert all(x[0] == a[0][0] and x[1] == a[0][1] + k for k, x in enumerate(a))  # A: consecutive sentences
        assert all(x[0] == b[0][0] and x[1] == b[0][1] + k for k, x in enumerate(b))  # so is B
        if p.is_next:
            assert b[0] == (a[-1][0], a[-1][1] + 1)
        else:
            assert b[0][0] != a[0][0]


def test_nsp_on_real_speeches_is_balanced(tokenizers):
    tok = tokenizers["bert"]
    plays = corpus.split()[1]
    docs = [[e.ids for e in tok.encode_batch([str(s) for s in d.speeches], add_special_tokens=False)] for d in plays]
    rng = np.random.default_rng(1)
    share = np.mean([masking.nsp_pair(docs, rng, 128).is_next for _ in range(2000)])
    assert abs(share - 0.5) < 0.04


def test_nsp_from_one_document_still_draws_notnext_from_elsewhere_in_it():
    rng = np.random.default_rng(0)
    pairs = [masking.nsp_pair(numbered_docs(1, 6), rng, 12) for _ in range(1000)]
    assert abs(np.mean([p.is_next for p in pairs]) - 0.5) < 0.05
    for p in pairs:
        a, b = where(p.a), where(p.b)
        if p.is_next:
            assert b[0][1] == a[-1][1] + 1
        else:
            assert b[0][1] != a[-1][1] + 1 and not set(a) & set(b)


@pytest.mark.parametrize("docs, message", [
    ([], "at least two sentences"),
    ([[[1]]], "at least two sentences"),
    ([[[1], [2]]], "three sentences"),
    ([[[1], [2], [3]], []], "document 2 has none"),
])
def test_nsp_without_enough_sentences_gets_a_readable_error(docs, message):
    with pytest.raises(LmvizError, match=message):
        masking.nsp_pair(docs, np.random.default_rng(0))


def test_pair_ids_are_cls_a_sep_b_sep_with_segment_ids_and_truncate_the_longer_side():
    ids, types = masking.pair_ids([5, 6, 7, 8], [9], cls_id=2, sep_id=3, max_len=7)
    assert ids == [2, 5, 6, 7, 3, 9, 3]
    assert types == [0, 0, 0, 0, 0, 1, 1]
    with pytest.raises(LmvizError, match="at least 3"):
        masking.pair_ids([5], [6], cls_id=2, sep_id=3, max_len=2)


# --- T5 span corruption --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def t5_stream(tokenizers, hamlet):
    return tokenizers["t5"].encode(hamlet.text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def t5_ids(tokenizers):
    tok = tokenizers["t5"]
    return [tok.token_to_id(s) for s in SENTINELS], tok.token_to_id("</s>")


def test_t5_corrupts_15_percent_in_spans_of_mean_length_3(t5_stream, t5_ids):
    sentinels, eos = t5_ids
    rng = np.random.default_rng(0)
    noise = n_spans = total = 0
    for _ in range(500):
        length = int(rng.integers(40, 400))
        start = int(rng.integers(0, len(t5_stream) - length))
        sc = masking.span_corrupt(t5_stream[start : start + length], rng, sentinel_ids=sentinels, eos_id=eos)
        noise += sum(e - s for s, e in sc.spans)
        n_spans += len(sc.spans)
        total += length
    assert abs(noise / total - 0.15) < 0.01
    assert abs(noise / n_spans - 3.0) < 0.25


def test_each_sentinel_appears_once_in_the_target_and_the_pair_rebuilds_the_text_exactly(tokenizers, t5_stream, t5_ids):
    sentinels, eos = t5_ids
    rng = np.random.default_rng(1)
    for _ in range(200):
        start = int(rng.integers(0, len(t5_stream) - 120))
        ids = t5_stream[start : start + 120]
        sc = masking.span_corrupt(ids, rng, sentinel_ids=sentinels, eos_id=eos)
        used = [t for t in sc.input_ids if t in sentinels]
        assert used == sentinels[: len(sc.spans)]
        assert [t for t in sc.target_ids if t in sentinels] == used
        assert sc.target_ids[-1] == eos and sc.input_ids[-1] == eos and sc.target_ids.count(eos) == 1
        rebuilt = masking.uncorrupt(sc.input_ids, sc.target_ids, sentinels, eos)
        assert rebuilt == ids
        assert tokenizers["t5"].decode(rebuilt) == tokenizers["t5"].decode(ids)
    text = "Now is the winter of our discontent made glorious summer by this sun of York"
    ids = tokenizers["t5"].encode(text, add_special_tokens=False).ids
    sc = masking.span_corrupt(ids, rng, sentinel_ids=sentinels, eos_id=eos)
    assert tokenizers["t5"].decode(masking.uncorrupt(sc.input_ids, sc.target_ids, sentinels, eos)) == text


def test_span_corruption_with_the_same_seed_is_the_same(t5_stream, t5_ids):
    sentinels, eos = t5_ids
    runs = [masking.span_corrupt(t5_stream[:200], np.random.default_rng(s), sentinel_ids=sentinels, eos_id=eos) for s in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0].spans != runs[2].spans


def test_a_text_longer_than_the_sentinels_can_cover_is_corrupted_up_to_the_last_and_says_so(t5_stream, t5_ids):
    sentinels, eos = t5_ids
    ids = t5_stream[:2000]
    sc = masking.span_corrupt(ids, np.random.default_rng(0), sentinel_ids=sentinels, eos_id=eos)
    assert len(sc.spans) == len(sentinels) == 32
    assert sc.notes and "32" in sc.notes[0]
    assert masking.uncorrupt(sc.input_ids, sc.target_ids, sentinels, eos) == ids
    assert not masking.span_corrupt(ids[:100], np.random.default_rng(0), sentinel_ids=sentinels, eos_id=eos).notes


def test_given_spans_are_used_as_given():
    sc = masking.span_corrupt([10, 11, 12, 13, 14], None, sentinel_ids=[90, 91], eos_id=1, spans=[(1, 2), (3, 5)])
    assert sc.input_ids == [10, 90, 12, 91, 1]
    assert sc.target_ids == [90, 11, 91, 13, 14, 1]


@pytest.mark.parametrize("spans, message", [
    ([(0, 1), (2, 3), (4, 5)], "only 2 sentinels"),
    ([(2, 1)], "non-empty"),
    ([(1, 1)], "non-empty"),
    ([(3, 9)], "within the 5 tokens"),
    ([(-1, 2)], "within"),
    ([(2, 4), (1, 3)], "after the previous span"),
    ([(1,)], "pair of whole numbers"),
    (["ab"], "pair of whole numbers"),
    ([(0.5, 2)], "pair of whole numbers"),
])
def test_malformed_spans_get_a_readable_error(spans, message):
    with pytest.raises(LmvizError, match=message):
        masking.span_corrupt([10, 11, 12, 13, 14], None, sentinel_ids=[90, 91], eos_id=1, spans=spans)


# --- GPT-2 causal LM -----------------------------------------------------------------------------

def test_gpt2_pairs_each_position_with_the_next_token(tokenizers):
    ids = torch.tensor(tokenizers["gpt2"].encode("To be, or not to be, that is the question.").ids)
    inputs, targets = masking.causal_lm_pairs(ids)
    assert inputs.shape == targets.shape == (1, len(ids) - 1)
    assert torch.equal(inputs[0], ids[:-1]) and torch.equal(targets[0], ids[1:])
    assert torch.equal(targets[0, :-1], inputs[0, 1:])
    with pytest.raises(LmvizError, match="two tokens"):
        masking.causal_lm_pairs(ids[:1])
