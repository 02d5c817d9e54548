"""`rnncli pretrain`: a language model on unlabeled text, whose layers a classifier then starts from."""

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnncli import checkpoint, load_model
from rnncli.builtin import generate
from rnncli.cli import app
from rnncli.config import DataConfig, ModelConfig, resolve
from rnncli.errors import RnncliError
from rnncli.lm import LanguageModel
from rnncli.lmstream import open_text_stream
from rnncli.model import RNNClassifier
from rnncli.pretrain import Progress, lm_texts, pretrain
from rnncli.streaming import open_stream
from rnncli.train import check_architecture, source_body, train

runner = CliRunner()
TINY = {"embed": 11, "hidden": 13, "batch_size": 16, "device": "cpu"}


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def reviews_txt(tmp_path_factory) -> Path:
    """600 generated reviews, one per line, without their labels."""
    path = tmp_path_factory.mktemp("text") / "reviews.txt"
    path.write_text("".join(text + "\n" for text, _ in generate(600, seed=11)))
    return path


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_bidirectional_classifier_from_the_lm_reads_as_its_two_stacks(cell, layers):
    """The classifier's forward half is the forward stack's output and its backward half the
    backward stack's on the reversed text: the cross-direction columns start at zero."""
    config = ModelConfig(cell=cell, layers=layers, embed=11, hidden=13, bidirectional=True)
    lm = LanguageModel(config, vocab_size=37).eval()
    clf = RNNClassifier(config, vocab_size=37, num_classes=5).eval()
    missing = clf.load_state_dict(source_body(lm), strict=False).missing_keys
    assert sorted(missing) == ["head.bias", "head.weight"]
    ids = torch.randint(2, 37, (7, 3))  # (seq, batch)
    with torch.no_grad():
        out, _ = clf.encode(ids)  # (seq, batch, 2 hidden)
        x = lm.embedding(ids)
        forward = lm.forward_rnn(x)[0]  # (seq, batch, hidden)
        backward = lm.backward_rnn(x.flip(0))[0].flip(0)
    torch.testing.assert_close(out[..., :13], forward)
    torch.testing.assert_close(out[..., 13:], backward)


def test_each_direction_scores_the_word_it_has_not_read():
    """Forward: the output at step t scores word t + 1; backward: the word before."""
    lm = LanguageModel(ModelConfig(cell="gru", embed=11, hidden=13, bidirectional=True), vocab_size=37).eval()
    ids = torch.randint(2, 37, (7, 3))
    with torch.no_grad():
        total, count = lm(ids)
        x = lm.embedding(ids)
        expected = 0.0
        for rnn, seq in ((lm.forward_rnn, ids), (lm.backward_rnn, ids.flip(0))):
            out = rnn(x if rnn is lm.forward_rnn else x.flip(0))[0][:-1]  # (seq - 1, batch, hidden)
            logp = lm.softmax.log_prob(out.reshape(-1, 13))  # (words, vocab)
            expected -= logp.gather(1, seq[1:].reshape(-1, 1)).sum()
    assert count == 2 * 6 * 3
    torch.testing.assert_close(total, expected)


def test_pretrain_then_train_from_it_then_predict(tmp_path, monkeypatch, reviews_csv, reviews_txt):
    monkeypatch.chdir(tmp_path)
    config = resolve(None, {**TINY, "cell": "gru", "bidirectional": True, "epochs": 2, "dataset": str(reviews_txt),
                            "out": "lm"})
    run = pretrain(config)
    assert [e.epoch for e in run.history] == [1, 2]
    assert run.history[-1].perplexity < run.history[0].perplexity < 37 * 3  # it learns the word order
    meta = json.loads(Path("lm/config.json").read_text())
    assert meta["kind"] == "language-model" and meta["best"]["epoch"] == run.best_epoch
    assert not Path("runs/latest").exists()  # runs/latest stays the newest classifier
    assert not Path("lm/resume.safetensors").exists()

    lm = checkpoint.load_lm("lm").model
    clf = train(resolve(None, {**TINY, "cell": "gru", "bidirectional": True, "pool": "attn", "epochs": 1,
                               "dataset": str(reviews_csv), "init_from": "lm", "lr": 1e-9}))
    assert any("a language model pretrained on" in n for n in clf.report.notes)
    # at a vanishing learning rate the layers are still the language model's
    torch.testing.assert_close(clf.model.rnn.weight_hh_l0_reverse, lm.backward_rnn.weight_hh_l0, atol=1e-6, rtol=0)
    answers = load_model(clf.out).predict(["a wonderful film", "dull and boring"])
    assert [a.label for a in answers] and all(a.label in ("neg", "pos") for a in answers)


def test_pretraining_starts_its_embedding_from_word_vectors(tmp_path, monkeypatch, reviews_txt):
    """The covered rows start as the file's vectors (and move with the language model); a word only
    the file knows joins the vocabulary, as it does for rnncli train."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    words = {"wonderful": rng.normal(size=11), "zyzzyva": rng.normal(size=11)}  # the second is in no review
    Path("v.vec").write_text("2 11\n" + "".join(f"{w} {' '.join(f'{x:.6f}' for x in v)}\n" for w, v in words.items()))
    flags = {**TINY, "epochs": 1, "dataset": str(reviews_txt), "vectors": "v.vec", "vector_epochs": 0}
    still = pretrain(resolve(None, {**flags, "out": "still", "lr": 1e-9}))
    vocab = checkpoint.load_lm("still").tokenizer.get_vocab()
    rows = still.model.embedding.weight.detach().numpy()
    for word, vector in words.items():
        np.testing.assert_allclose(rows[vocab[word]], vector, atol=1e-5)
    assert any("vectors v.vec: 1 of" in n and "1 more words from the file" in n for n in still.report.notes)
    moved = pretrain(resolve(None, {**flags, "out": "moved"})).model.embedding.weight.detach().numpy()
    assert not np.allclose(moved[vocab["wonderful"]], words["wonderful"], atol=1e-3)  # fine-tuned, not frozen
    with pytest.raises(RnncliError, match="--freeze-vectors is for rnncli train"):
        pretrain(resolve(None, {**flags, "out": "frozen", "freeze_vectors": True}))


def test_skipgram_vectors_start_the_embedding_and_repeat_with_the_seed(tmp_path, monkeypatch, reviews_txt):
    """Before the first epoch, skip-gram (gensim) learns a vector for each word seen twice or more;
    the same seed gives the same vectors, and --vector-epochs 0 leaves the embedding random."""
    from rnncli.skipgram import learn_vectors

    texts = reviews_txt.read_text().splitlines()
    vocab = {"<pad>": 0, "<unk>": 1, "wonderful": 2, "dull": 3, "qwertyuiop": 4}
    first, again = (learn_vectors(texts, vocab, dim=11, epochs=2, seed=5) for _ in range(2))
    assert first.vectors.covered.tolist() == [False, False, True, True, False]  # the last is in no review
    np.testing.assert_array_equal(first.vectors.values, again.vectors.values)
    assert "2 of 3 vocabulary words covered" in first.note(2)

    monkeypatch.chdir(tmp_path)
    flags = {**TINY, "epochs": 1, "dataset": str(reviews_txt), "lr": 1e-9}
    config = resolve(None, {**flags, "out": "sg", "vector_epochs": 2})
    run = pretrain(config)
    assert any(n.startswith("word vectors: skip-gram, 2 passes") for n in run.report.notes)
    words = checkpoint.load_lm("sg").tokenizer.get_vocab()
    read = lm_texts(config.data, seed=0).train  # the texts it trains on, without the held-out ones
    learned = learn_vectors(read, words, dim=11, epochs=2, seed=0).vectors
    rows = run.model.embedding.weight.detach().numpy()
    np.testing.assert_allclose(rows[learned.covered], learned.values[learned.covered], atol=1e-5)
    plain = pretrain(resolve(None, {**flags, "out": "plain", "vector_epochs": 0}))
    assert not any(n.startswith("word vectors") for n in plain.report.notes)


def test_without_gensim_the_skipgram_stage_names_the_extra(tmp_path, monkeypatch, reviews_txt):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "gensim", None)  # import gensim now raises ImportError
    monkeypatch.setitem(sys.modules, "gensim.models", None)
    with pytest.raises(RnncliError, match=r'pip install "rnncli\[pretrain\]" \(or --vector-epochs 0'):
        pretrain(resolve(None, {**TINY, "epochs": 1, "dataset": str(reviews_txt), "out": "lm"}))


@pytest.mark.parametrize("streamed", [{}, {"streaming": True, "stream_buffer": 100, "vocab_sample": 300}],
                         ids=["in memory", "streaming"])
def test_interrupted_pretraining_resumes_to_the_same_model(tmp_path, monkeypatch, reviews_txt, streamed):
    monkeypatch.chdir(tmp_path)

    class StopInEpoch3(Progress):
        def epoch_start(self, epoch, batches):
            if epoch == 3:
                raise KeyboardInterrupt

    flags = {**TINY, "epochs": 3, "patience": 3, "dataset": str(reviews_txt), **streamed}
    whole = pretrain(resolve(None, {**flags, "out": "whole"}))
    cut = pretrain(resolve(None, {**flags, "out": "cut"}), StopInEpoch3())
    assert cut.stopped == "interrupted" and len(cut.history) == 2
    assert Path("cut/resume.safetensors").exists()
    with pytest.raises(RnncliError, match="rnncli pretrain --resume"):
        train(resume="cut")
    resumed = pretrain(resume="cut")
    assert [e.loss for e in resumed.history] == [e.loss for e in whole.history]
    assert Path("cut/model.safetensors").read_bytes() == Path("whole/model.safetensors").read_bytes()
    assert not Path("cut/resume.safetensors").exists()


def test_a_language_model_is_refused_where_a_classifier_is_needed(tmp_path, monkeypatch, reviews_txt):
    monkeypatch.chdir(tmp_path)
    pretrain(resolve(None, {**TINY, "epochs": 1, "dataset": str(reviews_txt), "out": "lm"}))
    for args in (["predict", "--model", "lm", "good"], ["eval", "--model", "lm"], ["export", "--model", "lm"]):
        assert "rnncli train --init-from lm" in one_line_error(runner.invoke(app, args))
    # a classifier of another architecture cannot start from it
    line = one_line_error(runner.invoke(app, ["train", "--embed", "11", "--hidden", "17", "--init-from", "lm"]))
    assert "hidden is 13" in line


def test_a_classifier_takes_the_language_models_architecture(tmp_path, monkeypatch, reviews_csv, reviews_txt):
    """`train --init-from LM` needs no architecture flags; flags that disagree are all named in one line."""
    monkeypatch.chdir(tmp_path)
    pretrain(resolve(None, {**TINY, "cell": "gru", "layers": 2, "bidirectional": True, "epochs": 1,
                            "vector_epochs": 0, "dataset": str(reviews_txt), "out": "lm"}))
    line = one_line_error(runner.invoke(app, ["train", "--dataset", str(reviews_csv), "--init-from", "lm",
                                              "--cell", "lstm", "--hidden", "17"]))
    assert line == ("rnncli: error: --init-from lm: its cell is gru, this run's lstm; its hidden is 13, this run's "
                    "17; they must match (pass --cell gru --hidden 13, or leave them unset to take the source's)")
    result = runner.invoke(app, ["train", "--dataset", str(reviews_csv), "--init-from", "lm", "--epochs", "1",
                                 "--batch-size", "16", "--device", "cpu", "--out", "clf"])
    assert result.exit_code == 0, result.output
    model = checkpoint.load("clf").config.model
    assert (model.cell, model.layers, model.embed, model.hidden, model.bidirectional) == ("gru", 2, 11, 13, True)


def test_bad_pretraining_input_is_one_line(tmp_path, monkeypatch, reviews_txt):
    monkeypatch.chdir(tmp_path)
    Path("empty.txt").write_text("\n \n")
    Path("latin1.txt").write_bytes("a caf\xe9 film\n".encode("latin-1"))
    Path("one-word.txt").write_text("good\nbad\nfine\n")
    Path("header.csv").write_text("text,label\n")
    cases = {
        ("--dataset", "empty.txt"): "0 non-empty text(s)",
        ("--dataset", "missing.txt"): "no such file",
        ("--dataset", "latin1.txt"): "not valid UTF-8",
        ("--dataset", "one-word.txt"): "too few texts of two or more words",
        ("--dataset", str(reviews_txt), "--hidden", "3"): "--hidden must be at least 8",
        ("--dataset", str(reviews_txt), "--max-length", "1"): "--max-length must be at least 2",
        ("--dataset", str(reviews_txt), "--lr", "nan"): "--lr must be a finite number",
        ("--streaming", "--dataset", "latin1.txt"): "not valid UTF-8 (line 1, byte 5)",
        ("--streaming", "--dataset", "empty.txt"): "0 training and 0 held-out text(s) among the first",
        ("--streaming", "--dataset", "header.csv"): "header.csv: the train split is empty",
        ("--resume", "nowhere"): "nowhere",
    }
    for args, message in cases.items():
        assert message in one_line_error(runner.invoke(app, ["pretrain", *args])), args
    assert not Path("runs").exists()  # nothing was written


def test_a_stream_reads_a_buffer_of_each_source_in_turn_and_never_a_held_out_text(reviews_csv, reviews_txt):
    """--streaming: the same texts as in memory, less those a seeded hash holds out for the perplexity
    and the rows `train --streaming` validates on; never more than a buffer at a time."""
    config = DataConfig(dataset=f"{reviews_csv},{reviews_txt}", streaming=True, stream_buffer=64, vocab_sample=150)
    stream = open_text_stream(config, seed=4)
    chunks = list(stream.chunks(64, epoch=1))
    assert max(map(len, chunks)) <= 64
    read = [t for chunk in chunks for t in chunk]
    csv_rows = set(open_stream(dataclasses.replace(config, dataset=str(reviews_csv)), seed=4).sample.texts)
    assert set(chunks[0]) <= csv_rows and not set(chunks[1]) & csv_rows  # the csv's first buffer, then the file's
    validated = set(open_stream(dataclasses.replace(config, dataset=str(reviews_csv)), seed=4).splits["validation"].texts)
    assert not validated & set(read)
    assert stream.validation and not set(stream.validation) & set(read)
    assert not any(stream.held_out(t) for t in read)
    whole = [t for t in reviews_txt.read_text().splitlines() if t.strip()]
    assert {t for t in whole if not stream.held_out(t)} <= set(read)
    assert 0.03 < sum(map(stream.held_out, whole)) / len(whole) < 0.2  # about val_fraction, 10%
    assert len(stream.sample) + len(stream.validation) == 150  # the first --vocab-sample texts


def test_a_stream_sorted_by_label_is_read_past_its_first_class(tmp_path, reviews_csv):
    """Pretraining reads no labels: a class the vocabulary sample never saw is no error here."""
    rows = reviews_csv.read_text().splitlines()
    sorted_csv = tmp_path / "sorted.csv"
    sorted_csv.write_text("\n".join([rows[0], *sorted(rows[1:], key=lambda r: r.endswith(",pos"))]) + "\n")
    stream = open_text_stream(DataConfig(dataset=str(sorted_csv), streaming=True, vocab_sample=40), seed=0)
    read = {t for chunk in stream.chunks(64, epoch=1) for t in chunk}
    positive = {r.rsplit(",", 1)[0].strip('"') for r in rows[1:] if r.endswith(",pos")}
    assert read & positive


def test_streaming_pretraining_then_train_from_it(tmp_path, monkeypatch, reviews_csv, reviews_txt):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["pretrain", "--streaming", "--dataset", str(reviews_txt), "--stream-buffer", "50",
                                 "--vocab-sample", "200", "--embed", "11", "--hidden", "13", "--epochs", "2",
                                 "--vector-epochs", "0", "--device", "cpu", "--out", "lm"])
    assert result.exit_code == 0, result.output
    meta = json.loads(Path("lm/config.json").read_text())
    assert meta["dataset"]["streaming"] and meta["config"]["data"]["streaming"]
    run = train(resolve(None, {"dataset": str(reviews_csv), "init_from": "lm", "epochs": 1, "device": "cpu"}))
    assert load_model(run.out).predict(["a wonderful film"])[0].label in ("neg", "pos")


def test_a_crafted_lm_folder_is_refused_before_loading(tmp_path, reviews_txt):
    pretrain(resolve(None, {**TINY, "epochs": 1, "dataset": str(reviews_txt), "out": str(tmp_path / "lm")}))
    path = tmp_path / "lm" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["model"]["hidden"] = 8192  # promises far larger weights than the file holds
    path.write_text(json.dumps(meta))
    with pytest.raises(RnncliError, match="does not match config.json"):
        checkpoint.load_lm(tmp_path / "lm")


def test_several_sources_and_never_the_rows_train_validates_on(reviews_csv, reviews_txt):
    """`a,b` reads both; a labeled source without a validation split loses the rows `rnncli train`
    carves out of it with the same seed, so fine-tuning never validates on pretrained texts."""
    from rnncli.config import DataConfig
    from rnncli.data import load_corpus
    from rnncli.pretrain import lm_texts

    both = lm_texts(DataConfig(dataset=f"{reviews_txt},{reviews_csv}"), seed=4)
    validated = set(load_corpus(DataConfig(dataset=str(reviews_csv)), seed=4).splits["validation"].texts)
    read = both.train + both.validation
    assert len(read) == 600 + 270  # the text file's 600 lines and 90% of the csv's 300 rows
    assert not validated & set(read[600:])
    assert any(n.startswith(f"{reviews_csv}: 270 texts") for n in both.notes)
    with pytest.raises(RnncliError, match="an empty name"):
        lm_texts(DataConfig(dataset=f"{reviews_txt},"), seed=0)


def test_each_lm_config_pretrains_a_language_model_of_its_own_architecture():
    """A header's `rnncli pretrain --config X` must build what its `train --init-from` accepts."""
    root = Path(__file__).parents[1]
    configs = sorted((root / "configs").glob("*-lm.toml"))
    assert len(configs) == 5
    for path in configs:
        header = path.read_text()
        pretrain_config = re.search(r"rnncli pretrain --config (\S+)", header).group(1)
        lm_out = re.search(r"--out (\S+)", header).group(1)
        assert f"--init-from {lm_out}" in header
        check_architecture(resolve(root / pretrain_config).model, resolve(path).model, lm_out)


def test_a_language_model_of_another_activation_is_refused():
    relu, tanh = ModelConfig(nonlinearity="relu"), ModelConfig(nonlinearity="tanh")
    with pytest.raises(RnncliError, match="its nonlinearity is relu, this run's tanh"):
        check_architecture(relu, tanh, "runs/lm")
