"""Scores checked by hand, one vocabulary of field names, and a baseline to beat."""

import json
from dataclasses import fields

import numpy as np
import pytest
import torch

from rnncli import checkpoint
from rnncli.config import ModelConfig
from rnncli.evaluate import Metrics, evaluate, evaluate_folder, scores_from_labels
from rnncli.inference import logits_of
from rnncli.model import RNNClassifier
from rnncli.tokenizer import Encoded


def test_scores_with_a_class_never_predicted():
    gold = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 0])  # class 2 is never predicted
    s = scores_from_labels(gold, pred, 3)
    assert s["confusion"].tolist() == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    assert s["accuracy"] == pytest.approx(3 / 6)
    assert s["precision"].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert s["recall"].tolist() == pytest.approx([1 / 2, 1.0, 0.0])
    # F1 = 2PR / (P + R): 2(1/3)(1/2)/(5/6) = 0.4 and 2(2/3)(1)/(5/3) = 0.8, and 0 for class 2
    assert s["f1"].tolist() == pytest.approx([0.4, 0.8, 0.0])
    assert s["macro_f1"] == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    assert s["support"].tolist() == [2, 2, 2]


def test_scores_perfect_and_all_wrong():
    gold = np.array([0, 1, 1, 0, 1])
    perfect = scores_from_labels(gold, gold, 2)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0
    wrong = scores_from_labels(gold, 1 - gold, 2)
    assert wrong["accuracy"] == 0.0 and wrong["macro_f1"] == 0.0
    assert wrong["confusion"].tolist() == [[0, 2], [3, 0]]


def test_macro_f1_averages_the_classes_the_split_holds():
    gold = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])  # class 2 is predicted once but never true
    s = scores_from_labels(gold, pred, 3)
    assert s["f1"].tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert s["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)


def ragged(lengths, seed=0):
    """Random token ids (2..36) for texts of the given lengths, as `encode` lays them out."""
    rng = np.random.default_rng(seed)
    lengths = np.array(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths[:-1])])
    return Encoded(ids=rng.integers(2, 37, lengths.sum()), starts=starts, lengths=lengths, full_lengths=lengths)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return RNNClassifier(ModelConfig(embed=11, hidden=13, dropout=0.0), vocab_size=37, num_classes=3).eval()


def test_logits_come_back_in_input_order(model):
    enc = ragged([7, 2, 5, 2, 7, 1, 3])  # texts of one length are batched together, out of order
    logits = logits_of(model, enc, batch_size=3)
    with torch.no_grad():
        for i in range(len(enc)):
            alone = model(torch.from_numpy(enc.text(i))[:, None])[0]
            torch.testing.assert_close(logits[i], alone, atol=1e-5, rtol=0)


def test_evaluate_counts_and_majority_baseline(model):
    enc = ragged([7, 2, 5, 2, 7, 1, 3])
    gold = np.array([2, 2, 0, 2, 1, 2, 0])
    m = evaluate(model, enc, gold, ["neg", "neu", "pos"], batch_size=3)
    pred = logits_of(model, enc).argmax(1).numpy()
    assert m.examples == 7
    assert m.accuracy == pytest.approx((pred == gold).mean())
    assert np.array(m.confusion).sum() == 7 and np.array(m.confusion).sum(1).tolist() == [2, 1, 4]
    assert m.majority_label == "pos" and m.majority_accuracy == pytest.approx(4 / 7)
    assert [c["label"] for c in m.per_class] == ["neg", "neu", "pos"]
    assert [c["support"] for c in m.per_class] == [2, 1, 4]
    json.dumps(m.to_dict())  # plain types only


def test_metrics_and_metrics_jsonl_use_the_same_names(tiny_model):
    shared = {"accuracy", "macro_f1", "loss"}
    assert shared <= {f.name for f in fields(Metrics)}
    records = [json.loads(line) for line in (tiny_model / checkpoint.METRICS).read_text().splitlines()]
    for record in records:
        assert shared | {"split", "epoch"} <= record.keys()
    evaluation = evaluate_folder(str(tiny_model), split="validation")
    assert shared | {"split"} <= evaluation.to_dict().keys()


def test_evaluation_repeats_the_best_epochs_validation_score(tiny_model):
    """The validation split is carved again the same way, so eval sees the rows training saw."""
    meta = json.loads((tiny_model / checkpoint.CONFIG).read_text())
    records = [json.loads(line) for line in (tiny_model / checkpoint.METRICS).read_text().splitlines()]
    best = next(r for r in records if r["epoch"] == meta["best"]["epoch"] and r["split"] == "validation")
    m = evaluate_folder(str(tiny_model)).metrics  # no test split here: validation by default
    assert m.accuracy == best["accuracy"]
    assert m.macro_f1 == pytest.approx(best["macro_f1"])
    assert m.loss == pytest.approx(best["loss"], abs=1e-5)


def test_packed_chunks_give_the_padded_answers(monkeypatch):
    """Inference packs texts in chunks bounded by tokens; any chunking gives the padded path's logits."""
    from rnncli import inference as ev

    model = RNNClassifier(ModelConfig(embed=11, hidden=13, layers=2, dropout=0.0), 37, 3).eval()
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, 200)
    enc = Encoded(ids=rng.integers(1, 37, lengths.sum()), starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                  lengths=lengths, full_lengths=lengths)
    whole = ev.logits_of(model, enc)
    monkeypatch.setattr(ev, "PACKED_TOKENS", 100)  # about 5 texts a chunk
    chunked = ev.logits_of(model, enc)
    model.fused = False  # nn.RNN over padded batches
    padded = ev.logits_of(model, enc)
    torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole, padded, atol=1e-5, rtol=0)
