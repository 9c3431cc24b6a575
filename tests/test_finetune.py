"""Fine-tuning the shipped models into classifiers: it learns, it stops, it says what is wrong with bad settings, its
download loads with transformers and with --models, and the shipped files are never touched."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lmviz.analysis import finetune_tasks as tasks
from lmviz.analysis.finetune import Spec, changed_heads, finetune, prepare, try_text
from lmviz.errors import LmvizError
from lmviz.models import checkpoints

ROOT = Path(__file__).resolve().parent.parent


def shipped_hashes() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
            for kind in ("bert", "gpt2", "t5") for p in sorted(checkpoints.shipped(kind).glob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def before_hashes():
    return shipped_hashes()


@pytest.fixture(scope="module")
def models(before_hashes):
    torch.set_num_threads(1)
    return {k: checkpoints.load(checkpoints.shipped(k), "cpu") for k in ("bert", "gpt2", "t5")}


@pytest.fixture(scope="module")
def bert_run(models):
    """BERT's [CLS] fine-tuned on verse or prose for a bounded 40 steps of 16 speeches."""
    return finetune(models["bert"], Spec(task="verse", examples=640, epochs=1, lr=5e-4, max_steps=40, evals=1))


# --- tasks and baselines -------------------------------------------------------------------------------------------------

def test_tasks_train_on_training_plays_and_measure_on_held_out_plays_only():
    for key, t in tasks.TASKS.items():
        train, held = tasks.pools(key)
        assert {e.play for e in held} <= set(t.held_out_plays()) and len(held) == tasks.HELD_OUT_SIZE
        assert not {e.play for e in train} & set(t.held_out_plays())
        assert {e.label for e in held} == set(range(len(t.labels)))
    assert len(tasks.TASKS["genre"].labels) == 2 and len(tasks.TASKS["verse"].labels) == 2


def test_verse_and_prose_are_told_by_their_printed_lines():
    from lmviz.pretrain.corpus import Document, Speech

    doc = Document("x", ())
    assert tasks.verse_or_prose(doc, Speech("A", "Stand you a while aloof,\nThou know'st no less\nTo thee the book")) == "verse"
    assert tasks.verse_or_prose(doc, Speech("A", "Nay, either tell me where\nnot open my lips so wide\nway of thy excuse")) == "prose"
    assert tasks.verse_or_prose(doc, Speech("A", "One line only.")) is None


def test_the_bag_of_words_baseline_beats_the_majority_label_on_genre():
    sample = tasks.training_sample("genre", 1024, 0)
    _, held = tasks.pools("genre")
    b = tasks.baselines(sample, list(held), 2)
    assert b.bow_accuracy > b.majority_accuracy + 0.02
    assert b.majority_label == 0  # comedies outnumber tragedies among the training plays


def test_too_few_examples_a_bad_task_and_bad_settings_get_a_message(models):
    with pytest.raises(LmvizError, match="too few"):
        tasks.training_sample("genre", 3, 0)
    with pytest.raises(LmvizError, match="no task"):
        prepare(models["bert"], Spec(task="<script>"))
    with pytest.raises(LmvizError, match="changes nothing"):
        prepare(models["bert"], Spec(lr=0.0))
    with pytest.raises(LmvizError, match="far past"):
        prepare(models["gpt2"], Spec(lr=1000.0))
    for bad in (Spec(lr=float("nan")), Spec(epochs=0), Spec(mode="x"), Spec(lam=-1.0), Spec(lam=float("inf"))):
        with pytest.raises(LmvizError):
            prepare(models["t5"], bad)


# --- training ------------------------------------------------------------------------------------------------------------

def test_bert_cls_fine_tuned_for_40_steps_beats_the_majority_label_on_held_out_plays(bert_run):
    r = bert_run
    assert r.status == "done" and r.step == 40 and len(r.loss) == 40
    assert r.outcome.accuracy >= r.baselines.majority_accuracy + 0.03, (r.outcome.accuracy, r.baselines)
    assert r.outcome.confusion.sum() == len(r.held) and r.evals[-1] == (40, r.outcome.accuracy)
    assert np.mean(r.loss[-10:]) < np.mean(r.loss[:10])


def test_gpt2_with_lambda_zero_trains_on_exactly_the_classification_loss(models):
    run = prepare(models["gpt2"], Spec(task="genre", examples=16))
    clf = run.classifier
    batch = clf.encode([e.text for e in run.train[:4]])
    y = torch.tensor([e.label for e in run.train[:4]])
    total0, parts0 = clf.loss(batch, y, 0.0)
    total1, parts1 = clf.loss(batch, y, 0.5)
    assert float(total0.detach()) == parts0["classification"]
    assert parts1["lm"] > 1.0 and float(total1.detach()) == pytest.approx(parts1["classification"] + 0.5 * parts1["lm"], rel=1e-6)


def test_a_stopped_run_keeps_its_curves_and_is_measured(models):
    steps = []
    run = finetune(models["gpt2"], Spec(task="genre", examples=160, lam=0.3), stop=lambda: len(steps) >= 3,
                   on_step=lambda r: steps.append(r.step))
    assert run.status == "stopped" and "Stopped at step 3" in run.message
    assert len(run.loss) == len(run.classification) == len(run.lm) == 3
    assert run.outcome is not None and run.evals[-1][0] == 3


def test_a_learning_rate_that_blows_up_ends_the_run_with_a_message(models):
    run = prepare(models["bert"], Spec(task="genre", examples=32, lr=1.0, max_steps=4))
    run.classifier.head.weight.data.fill_(1e38)  # as an overflowing update leaves it
    run = finetune(models["bert"], run.spec, run=run)
    assert run.status == "diverged" and "too high" in run.message and run.outcome is not None


def test_a_bare_bert_without_a_pooler_gets_a_fresh_one_and_says_so(models, tmp_path):
    state = {n[len("bert."):]: t for n, t in checkpoints._unique_state(models["bert"].model).items()
             if n.startswith("bert.") and "pooler" not in n}
    from safetensors.torch import save_file

    folder = tmp_path / "bare"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    checkpoints.write_json(folder / "config.json", {**models["bert"].model.config.to_hf(), "architectures": ["BertModel"]})
    models["bert"].tokenizer.save(str(folder / "tokenizer.json"))
    bare = checkpoints.load(folder, "cpu")
    run = finetune(bare, Spec(task="genre", examples=32, mode="probe", max_steps=2))
    assert any("no pooler" in n for n in run.notes) and run.status == "done"


# --- after training ------------------------------------------------------------------------------------------------------

def test_what_changed_inside_names_the_most_changed_head_and_its_row(models, bert_run):
    ch = changed_heads(models["bert"], bert_run.classifier, bert_run.held, n=8)
    assert ch["delta"].shape == (4, 4) and ch["delta"][ch["layer"], ch["head"]] == ch["delta"].max() > 0
    assert len(ch["tokens"]) == len(ch["before"]) == len(ch["after"]) and ch["tokens"][0] == "[CLS]"
    assert abs(ch["before"].sum() - 1) < 1e-4 and abs(ch["after"].sum() - 1) < 1e-4
    assert not np.allclose(ch["before"], ch["after"])


def test_typed_text_gets_probabilities_and_empty_text_a_message(bert_run):
    probs, notes = try_text(bert_run.classifier, "Tomorrow and tomorrow and tomorrow creeps in this petty pace")
    assert set(probs) == {"verse", "prose"} and abs(sum(probs.values()) - 1) < 1e-5 and not notes
    _, notes = try_text(bert_run.classifier, "word " * 200)
    assert "first 64" in notes[0]
    with pytest.raises(LmvizError, match="Type a speech"):
        try_text(bert_run.classifier, "  \n ")


# --- the download ----------------------------------------------------------------------------------------------------------

TEXT = "If music be the food of love, play on; give me excess of it, that, surfeiting, the appetite may sicken"


def test_the_downloaded_bert_loads_into_transformers_with_the_same_probabilities_and_into_the_app(bert_run, tmp_path):
    from transformers import BertForSequenceClassification

    folder = bert_run.classifier.save(tmp_path / "bert-verse")
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json"}
    hf = BertForSequenceClassification.from_pretrained(folder).eval()
    assert hf.config.id2label == {0: "verse", 1: "prose"}
    batch = bert_run.classifier.encode([TEXT])
    with torch.no_grad():
        theirs = hf(input_ids=batch["ids"], attention_mask=batch["mask"]).logits.softmax(-1)[0]
    ours, _ = try_text(bert_run.classifier, TEXT)
    assert torch.allclose(theirs, torch.tensor(list(ours.values())), atol=1e-5)
    loaded = checkpoints.load(folder, "cpu")  # what --models DIR does with it
    assert loaded.kind == "bert" and loaded.model.config.hidden_size == 192


def test_the_downloaded_gpt2_and_t5_load_into_transformers_and_into_the_app(models, tmp_path):
    from transformers import GPT2ForSequenceClassification, T5ForConditionalGeneration

    for kind, cls in (("gpt2", GPT2ForSequenceClassification), ("t5", T5ForConditionalGeneration)):
        run = finetune(models[kind], Spec(task="genre", examples=32, max_steps=2, evals=0))
        folder = run.classifier.save(tmp_path / kind)
        hf = cls.from_pretrained(folder).eval()
        clf = run.classifier
        batch = clf.encode([TEXT])
        ours, _ = try_text(clf, TEXT)
        with torch.no_grad():
            if kind == "gpt2":
                theirs = hf(input_ids=batch["ids"]).logits.softmax(-1)[0]
            else:
                scores = []
                for target in clf.targets:
                    dec = torch.tensor([[hf.config.decoder_start_token_id] + target[:-1]])
                    logp = hf(input_ids=batch["ids"], decoder_input_ids=dec).logits.log_softmax(-1)[0]
                    scores.append(sum(float(logp[i, t]) for i, t in enumerate(target)))
                theirs = torch.tensor(scores).softmax(-1)
        assert torch.allclose(theirs, torch.tensor(list(ours.values())), atol=1e-4), kind
        assert checkpoints.load(folder, "cpu").kind == kind


def test_the_shipped_model_files_are_byte_identical_after_fine_tuning(before_hashes, bert_run, models):
    finetune(models["t5"], Spec(task="verse", examples=16, max_steps=1, evals=0))
    assert shipped_hashes() == before_hashes


def test_a_classifier_that_gives_every_speech_one_label_is_named_as_such():
    from lmviz.analysis.finetune import Outcome

    one = Outcome(0.6, np.array([[0.7, 0.3]] * 5), [0, 0, 0, 1, 1], np.array([[3, 0], [2, 0]]))
    assert one.only_label() == 0
    two = Outcome(0.8, np.array([[0.7, 0.3]] * 5), [0, 0, 0, 1, 1], np.array([[3, 0], [1, 1]]))
    assert two.only_label() is None
