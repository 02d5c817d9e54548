"""train(config) -> Run: it learns, it repeats itself, and it leaves a complete model folder or none."""

import contextlib
import csv
import json
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import TINY, write_reviews_csv
from safetensors.torch import load_file

from rnncli import checkpoint
from rnncli import train as train_module
from rnncli.config import ModelConfig, resolve
from rnncli.errors import RnncliError
from rnncli.model import RNNClassifier
from rnncli.train import Progress, train


def tiny(dataset, **overrides):
    return resolve(None, {**TINY, "dataset": str(dataset), **overrides})


def test_learns_the_builtin_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    run = train(resolve(None, {"hidden": 64, "embed": 64, "device": "cpu", "out": "builtin"}))
    assert time.monotonic() - start < 60
    assert run.best_accuracy >= 0.90
    assert run.history[-1].split == "validation"
    assert run.test is not None and run.test.accuracy >= 0.85  # the built-in corpus has a test split


def test_same_seed_same_run(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)
    runs = [train(tiny(reviews_csv, out=out, seed=7)) for out in ("a", "b")]

    def history(run):  # everything but the clock
        return [{k: v for k, v in asdict(e).items() if k not in ("seconds", "tokens_per_second")}
                for e in run.history]

    assert history(runs[0]) == history(runs[1])
    a, b = (load_file(str(tmp_path / out / checkpoint.WEIGHTS)) for out in ("a", "b"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_model_folder_contents(tiny_model, reviews_csv):
    assert sorted(p.name for p in tiny_model.iterdir()) == sorted(
        [checkpoint.WEIGHTS, checkpoint.CONFIG, checkpoint.TOKENIZER, checkpoint.METRICS])
    meta = json.loads((tiny_model / checkpoint.CONFIG).read_text())
    assert meta["format_version"] == checkpoint.FORMAT_VERSION
    assert meta["labels"] == ["neg", "pos"]
    assert meta["vocab_size"] == len(json.loads((tiny_model / "tokenizer.json").read_text())["model"]["vocab"])
    assert meta["dataset"]["name"] == str(reviews_csv)
    assert len(meta["dataset"]["fingerprint"]) == 16
    assert {"rnncli", "torch", "datasets"} <= meta["versions"].keys()
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["config"]["model"]["hidden"] == TINY["hidden"]
    records = [json.loads(line) for line in (tiny_model / checkpoint.METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, TINY["epochs"] + 1))  # one per epoch
    assert all(r["split"] == "validation" for r in records)
    assert meta["best"]["epoch"] in [r["epoch"] for r in records]


def test_runs_latest_points_at_the_newest_folder(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)
    first = train(tiny(reviews_csv, epochs=1))
    second = train(tiny(reviews_csv, epochs=1))
    assert first.out != second.out
    assert first.out.parent == second.out.parent == Path("runs")
    assert first.out.name.startswith("reviews.csv-")
    assert (tmp_path / "runs" / "latest").resolve() == (tmp_path / second.out).resolve()
    assert checkpoint.load("runs/latest").meta["dataset"]["name"] == str(reviews_csv)


def test_a_single_class_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("one.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["text", "label"]] + [[f"good film {i}", "pos"] for i in range(20)])
    with pytest.raises(RnncliError, match="single class"):
        train(tiny("one.csv", out="m"))
    assert not (tmp_path / "m").exists()


def test_an_existing_folder_is_never_overwritten(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "m").iterdir()}
    with pytest.raises(RnncliError, match="already exists"):
        train(tiny(reviews_csv, out="m"))
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "m").iterdir()} == before


def test_huge_learning_rate_is_caught(tmp_path, monkeypatch, reviews_csv):
    """With --lr 1e3 the loss is thousands of times chance level; that is divergence, not training."""
    monkeypatch.chdir(tmp_path)
    try:
        run = train(tiny(reviews_csv, out="m", lr=1e3, epochs=3))
    except RnncliError as e:  # no epoch finished: no model
        assert "lr" in str(e)
        assert not (tmp_path / "m").exists()
    else:
        assert run.stopped == "diverged", [e.loss for e in run.history]
        assert "lr" in run.message
        checkpoint.load("m")


def test_non_finite_loss_before_any_epoch_leaves_no_folder(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RnncliError, match=r"no model was saved.*loss exploded to nan.*--lr"):
        train(tiny(reviews_csv, out="m", lr=1e38, restarts=0))
    assert not (tmp_path / "m").exists()
    assert not (tmp_path / "runs" / "latest").exists()


def test_divergence_after_a_saved_epoch_keeps_the_best_model(tmp_path, monkeypatch, reviews_csv):
    """The learning rate jumps to 1e38 in epoch 2: epoch 2 diverges, epoch 1's model stays."""
    optimizers = []
    real = train_module.make_optimizer

    def spy(model, config, **kw):
        optimizers.append(real(model, config, **kw))
        return optimizers[-1]

    class Sabotage(Progress):
        def epoch_start(self, epoch, batches):  # after train() has set the epoch's rate
            if epoch == 2:
                for group in optimizers[0].param_groups:
                    group["lr"] = 1e38

    monkeypatch.setattr(train_module, "make_optimizer", spy)
    monkeypatch.chdir(tmp_path)
    run = train(tiny(reviews_csv, out="m", epochs=3), Sabotage())
    assert run.stopped == "diverged" and "epoch 2" in run.message
    assert [e.epoch for e in run.history] == [1] and run.best_epoch == 1
    loaded = checkpoint.load("m")
    assert loaded.meta["best"]["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())
    assert len((tmp_path / "m" / checkpoint.METRICS).read_text().splitlines()) == 1


def test_lr_decay_lowers_each_epochs_rate(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)
    run = train(tiny(reviews_csv, out="decayed", epochs=3, patience=3, lr=0.004, lr_decay=0.5))
    assert [e.lr for e in run.history] == pytest.approx([0.004, 0.002, 0.001])
    records = checkpoint.read_metrics(Path("decayed"))
    assert [r["lr"] for r in records if r["split"] == "validation"] == pytest.approx([0.004, 0.002, 0.001])
    constant = train(tiny(reviews_csv, out="constant", epochs=3, patience=3, lr=0.004))
    assert [e.lr for e in constant.history] == pytest.approx([0.004] * 3)
    assert constant.history[0].train_loss == run.history[0].train_loss  # the same first epoch...
    assert constant.history[-1].train_loss != run.history[-1].train_loss  # ...then slower steps


def test_label_smoothing_reaches_the_loss(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)
    plain = train(tiny(reviews_csv, out="plain", epochs=1))
    smooth = train(tiny(reviews_csv, out="smooth", epochs=1, label_smoothing=0.2))
    assert checkpoint.load("smooth").config.train.label_smoothing == 0.2
    # a smoothed target cannot be met exactly, so its loss stays higher on the same batches
    assert smooth.history[0].train_loss > plain.history[0].train_loss


def test_class_weights_auto(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_reviews_csv(tmp_path / "all.csv", n=300)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    skewed = [rows[0]] + [r for r in rows[1:] if r[1] == "pos"] + [r for r in rows[1:] if r[1] == "neg"][:40]
    with open("skewed.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(skewed)
    plain = train(tiny("skewed.csv", out="plain", epochs=1))
    weighted = train(tiny("skewed.csv", out="weighted", epochs=1, class_weights="auto"))
    assert weighted.stopped == "finished" and len(weighted.history) == 1
    assert checkpoint.load("weighted").config.train.class_weights == "auto"
    # same seed, same batches: only the loss weights differ
    assert weighted.history[0].train_loss != plain.history[0].train_loss


@pytest.mark.parametrize("clip", [0.05, 100.0])  # clipped at every step, and never
def test_row_gradients_make_the_same_updates_as_dense_ones(clip):
    """Gradients(rows=True) only saves work: AdamW moves every weight as with the dense gradient."""
    from rnncli.config import ModelConfig
    from rnncli.model import RNNClassifier
    from rnncli.optimizer import Gradients

    cfg = ModelConfig(embed=11, hidden=13, layers=2)
    states = []
    for rows in (False, True):
        torch.manual_seed(0)
        model = RNNClassifier(cfg, vocab_size=37, num_classes=3).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        gradients = Gradients(model, rows=rows)
        draw = torch.Generator().manual_seed(1)
        for _ in range(6):
            ids = torch.randint(1, 20, (7, 3), generator=draw)  # (seq, batch): rows 20-36 never used
            y = torch.randint(0, 3, (3,), generator=draw)
            loss = torch.nn.functional.cross_entropy(model(ids), y)
            gradients.zero(ids)
            loss.backward()
            gradients.clip(clip)
            optimizer.step()
            gradients.zero_rows()
            if rows:  # the buffer is zero again, ready for the next batch
                assert not model.embedding.weight.grad.any()
        gradients.close()
        assert model.embedding.weight.grad is None and not model.embedding.sparse
        states.append(model.state_dict())
    dense, sparse = states
    for name in dense:
        torch.testing.assert_close(sparse[name], dense[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.manual_seed(0)
    start = RNNClassifier(cfg, vocab_size=37, num_classes=3).embedding.weight
    assert not torch.allclose(sparse["embedding.weight"][1:20], start[1:20])  # the used rows did learn


def test_init_from_starts_from_the_source_body_with_a_new_head(tmp_path, monkeypatch, reviews_csv, tiny_model):
    """Transfer: vocabulary, embedding and recurrent layers come from a trained folder; the head is new."""
    monkeypatch.chdir(tmp_path)
    with open(reviews_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    three = tmp_path / "three.csv"
    with open(three, "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=["text", "label"])
        out.writeheader()
        out.writerows({"text": r["text"], "label": "mixed" if i % 3 == 0 else r["label"]} for i, r in enumerate(rows))
    # a learning rate so small that the trained weights still show where they started
    run = train(tiny(three, out="moved", init_from=str(tiny_model), epochs=1, lr=1e-12))
    source = checkpoint.load(tiny_model)
    moved = checkpoint.load(run.out)
    assert moved.tokenizer.get_vocab() == source.tokenizer.get_vocab()
    assert moved.labels == ["mixed", "neg", "pos"]
    theirs, ours = source.model.state_dict(), moved.model.state_dict()
    for name in theirs:
        if name.startswith("head."):
            assert ours[name].shape[0] == 3  # one row per new label
        else:
            torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6, msg=name)
    assert any("started from" in note for note in run.report.notes)


def test_init_from_may_change_the_pooling(tmp_path, monkeypatch, reviews_csv):
    """The attention scorer travels when both runs pool by `attn`; another pooling leaves it behind."""
    monkeypatch.chdir(tmp_path)
    source = checkpoint.load(train(tiny(reviews_csv, out="attn", pool="attn", epochs=1)).out).model.state_dict()
    kept = checkpoint.load(train(tiny(reviews_csv, out="kept", pool="attn", init_from="attn", epochs=1,
                                      lr=1e-12)).out).model.state_dict()
    maxed = checkpoint.load(train(tiny(reviews_csv, out="maxed", pool="max", init_from="attn", epochs=1,
                                       lr=1e-12)).out).model.state_dict()
    torch.testing.assert_close(kept["attn.weight"], source["attn.weight"], rtol=0, atol=1e-6)
    assert "attn.weight" not in maxed
    torch.testing.assert_close(maxed["rnn.weight_hh_l0"], source["rnn.weight_hh_l0"], rtol=0, atol=1e-6)


def test_init_from_refuses_another_architecture_or_vectors_too(tmp_path, monkeypatch, reviews_csv, tiny_model):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RnncliError, match=r"its hidden is 13, this run's 17; .*--hidden 13"):
        train(tiny(reviews_csv, out="a", init_from=str(tiny_model), hidden=17))
    with pytest.raises(RnncliError, match=r"--no-bidirectional"):
        train(tiny(reviews_csv, out="b", init_from=str(tiny_model), bidirectional=True))
    vectors = tmp_path / "v.vec"
    vectors.write_text("movie " + " ".join(["0.1"] * 11) + "\n")
    with pytest.raises(RnncliError, match="give one of them"):
        train(tiny(reviews_csv, out="c", init_from=str(tiny_model), vectors=str(vectors)))
    with pytest.raises(RnncliError, match="no model here"):
        train(tiny(reviews_csv, out="d", init_from=str(tmp_path / "nowhere")))
    assert not any((tmp_path / name).exists() for name in "abcd")  # nothing half-written


def test_init_from_takes_the_sizes_the_config_and_flags_leave_unset(tmp_path, monkeypatch, reviews_csv, tiny_model):
    """The source's cell and sizes stand in for the defaults; what a TOML file or a flag sets wins and is checked."""
    monkeypatch.chdir(tmp_path)
    model = resolve(None, {"init_from": str(tiny_model), "pool": "max"}).model
    assert (model.cell, model.embed, model.hidden, model.bidirectional, model.pool) == ("rnn", 11, 13, False, "max")
    Path("wide.toml").write_text("[model]\nhidden = 17\n")
    assert resolve("wide.toml", {"init_from": str(tiny_model), "embed": 19}).model.hidden == 17
    with pytest.raises(RnncliError, match=r"its embed is 11, this run's 19; its hidden is 13, this run's 17; "
                                          r"they must match \(pass --embed 11 --hidden 13,"):
        train(resolve("wide.toml", {"dataset": str(reviews_csv), "init_from": str(tiny_model), "embed": 19}))
    run = train(resolve(None, {"dataset": str(reviews_csv), "init_from": str(tiny_model), "epochs": 1,
                               "device": "cpu", "out": "moved"}))
    assert checkpoint.load(run.out).config.model.hidden == 13  # saved beside the model as it trained


def test_the_adversarial_push_has_length_eps_per_text_along_the_gradient():
    grad = torch.randn(7, 3, 11)  # (seq, batch, embed)
    grad[:, 2] = 0.0  # a text whose loss does not depend on its words
    push = train_module.adversarial_push(grad, 0.5)
    assert push.shape == (7, 3, 11)
    norms = push.pow(2).sum((0, 2)).sqrt()  # (batch,)
    torch.testing.assert_close(norms[:2], torch.tensor([0.5, 0.5]))
    cosine = torch.nn.functional.cosine_similarity(push[:, 0].flatten(), grad[:, 0].flatten(), dim=0)
    assert cosine > 0.9999
    assert torch.equal(push[:, 2], torch.zeros(7, 11))  # no direction: no push, and no NaN


@pytest.mark.parametrize("cell, bidirectional", [("rnn", False), ("gru", True), ("lstm", False)])
def test_the_push_raises_the_loss_of_each_cell(cell, bidirectional):
    torch.manual_seed(0)
    model = RNNClassifier(ModelConfig(cell=cell, bidirectional=bidirectional, embed=11, hidden=13, dropout=0.0),
                          37, 2)
    ids, y = torch.randint(1, 37, (7, 3)), torch.tensor([0, 1, 1])  # (seq, batch), (batch,)
    lengths = torch.tensor([7, 5, 3])  # padded texts: a bidirectional model packs them
    ids[5:, 1], ids[3:, 2] = 0, 0
    zero = torch.zeros(7, 3, 11, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(model(ids, lengths, zero), y)
    grad, = torch.autograd.grad(loss, zero)
    assert torch.equal(grad[5:, 1], torch.zeros(2, 11))  # padding plays no part
    pushed = torch.nn.functional.cross_entropy(model(ids, lengths, train_module.adversarial_push(grad, 0.1)), y)
    away = torch.nn.functional.cross_entropy(model(ids, lengths, train_module.adversarial_push(-grad, 0.1)), y)
    assert away < loss < pushed


def test_adversarial_training_steps_the_fused_and_the_plain_recurrence_alike():
    """The fused CPU recurrence is differentiated twice in an adversarial step (once for the push,
    once for the update): its weights must come out as torch's own nn.GRU's do."""
    config = resolve(None, {**TINY, "cell": "gru", "adversarial": 0.3, "dropout": 0.0})
    setup = train_module.Setup(train_module.ddp.Dist(), torch.device("cpu"), contextlib.nullcontext, None)
    ids, y = torch.randint(1, 37, (7, 3)), torch.tensor([0, 1, 1])  # (seq, batch), (batch,)
    weights = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = RNNClassifier(config.model, vocab_size=37, num_classes=2)
        model.fused = fused
        learner = train_module.Learner(model, config, corpus=None, setup=setup)  # no class weights: no corpus read
        for _ in range(3):
            learner.step(ids, None, y)
        learner.gradients.close()
        weights.append(model.state_dict())
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=1e-5, rtol=1e-4)


def test_adversarial_training_reaches_the_step_and_the_folder(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)
    plain = train(tiny(reviews_csv, out="plain", epochs=1))
    pushed = train(tiny(reviews_csv, out="pushed", epochs=1, adversarial=1.0))
    assert checkpoint.load("pushed").config.train.adversarial == 1.0
    # the same batches and first weights: only the pushed copies' gradients tell the runs apart
    assert pushed.history[0].train_loss != plain.history[0].train_loss
    assert pushed.best_accuracy >= 0.5
