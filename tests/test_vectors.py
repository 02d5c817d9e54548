"""`--vectors FILE` fills the embedding rows of the words it covers; `--freeze-vectors` keeps them fixed."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY
from typer.testing import CliRunner

from rnncli import checkpoint
from rnncli import train as train_module
from rnncli.cli import app
from rnncli.config import resolve
from rnncli.errors import RnncliError
from rnncli.train import Progress, train
from rnncli.vectors import read_vectors

EMBED = TINY["embed"]  # 11
# words of the generated reviews (`reviews_csv`), and two the vocabulary never holds
WORDS = ["the", "movie", "film", "plot", "terrible", "clever", "acting", ".", "zyzzyva", "qwertyuiop"]


def vector(i: int, dim: int = EMBED) -> list[float]:
    """A distinct, exactly representable vector per word: i + 0.25 * position."""
    return [i + 0.25 * k for k in range(dim)]


def write_vectors(path, words=WORDS, dim=EMBED, header=True, extra_lines=()):
    lines = [f"{len(words)} {dim}"] if header else []
    lines += [" ".join([w, *(f"{v:g}" for v in vector(i, dim))]) for i, w in enumerate(words)]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


def tiny(dataset, **overrides):
    return resolve(None, {**TINY, "dataset": str(dataset), **overrides})


# --------------------------------------------------------------------------- reading the file


@pytest.mark.parametrize("header", [True, False], ids=["word2vec header", "GloVe, no header"])
def test_reads_the_rows_of_vocabulary_words(tmp_path, header):
    vocab = {"<pad>": 0, "<unk>": 1, "film": 2, "plot": 3, "unseen": 4}
    v = read_vectors(write_vectors(tmp_path / "v.txt", header=header), vocab, EMBED)
    assert v.values.shape == (5, EMBED) and v.values.dtype == np.float32
    assert v.covered.tolist() == [False, False, True, True, False]
    assert v.values[2].tolist() == vector(WORDS.index("film"))
    assert v.values[3].tolist() == vector(WORDS.index("plot"))
    assert not v.values[[0, 1, 4]].any()
    assert v.words == 3 and v.coverage == pytest.approx(2 / 3)


def test_case_variants_fill_a_word_only_without_its_own_line(tmp_path):
    """A cased file (fastText crawl, word2vec) still covers a lowercased vocabulary."""
    path = write_vectors(tmp_path / "v.vec", words=["Film", "Plot", "plot"])
    v = read_vectors(path, {"<pad>": 0, "<unk>": 1, "film": 2, "plot": 3}, EMBED)
    assert v.values[2].tolist() == vector(0)  # "Film": no "film" line
    assert v.values[3].tolist() == vector(2)  # its own "plot" line wins over "Plot" before it


def test_a_token_with_spaces_is_skipped(tmp_path):
    """GloVe 840B has lines such as `. . . 0.1 ...`: a token that no vocabulary word equals."""
    path = write_vectors(tmp_path / "v.txt", words=["film"], header=False,
                         extra_lines=[". . . " + " ".join(["0.5"] * EMBED)])
    v = read_vectors(path, {"<pad>": 0, "<unk>": 1, "film": 2, ".": 3}, EMBED)
    assert v.covered.tolist() == [False, False, True, False]


# --------------------------------------------------------------------------- training with vectors


class Capture(Progress):
    def report(self, report):
        self.notes = report.notes


@pytest.fixture
def built(monkeypatch):
    """Records the embedding as it is right after the model is built (the optimizer comes next)."""
    seen = {}
    real = train_module.make_optimizer

    def spy(model, config, **kw):
        seen["weight"] = model.embedding.weight.detach().clone()
        return real(model, config, **kw)

    monkeypatch.setattr(train_module, "make_optimizer", spy)
    return seen


def vocab_of(folder):
    return json.loads((folder / checkpoint.TOKENIZER).read_text())["model"]["vocab"]


def test_covered_rows_hold_the_file_values_after_construction(tmp_path, monkeypatch, reviews_csv, built):
    monkeypatch.chdir(tmp_path)
    path = write_vectors(tmp_path / "v.vec")
    progress = Capture()
    run = train(tiny(reviews_csv, out="m", epochs=1, vectors=str(path), vectors_vocab=False), progress)
    vocab = vocab_of(run.out)
    weight = built["weight"]
    covered = [w for w in WORDS if w in vocab]
    assert len(covered) == 8  # the two made-up words are not in the vocabulary
    for w in covered:
        assert weight[vocab[w]].tolist() == vector(WORDS.index(w)), w
    assert not weight[0].any()  # padding
    # rows without a vector keep a random init, scaled to the vectors' spread
    known = torch.tensor([vector(WORDS.index(w)) for w in covered])
    rest = weight[[i for w, i in vocab.items() if w not in covered and i > 0]]
    assert 0.5 < float(rest.std() / known.std()) < 2.0
    words = len(vocab) - 2
    assert progress.notes[-1] == (f"vectors {path}: 8 of {words} training vocabulary words covered "
                                  f"({8 / words:.1%}), fine-tuned")


def test_file_words_join_the_vocabulary(tmp_path, monkeypatch, reviews_csv, built):
    """A word the training split never showed keeps its pretrained vector instead of becoming <unk>."""
    monkeypatch.chdir(tmp_path)
    path = write_vectors(tmp_path / "v.vec")
    progress = Capture()
    run = train(tiny(reviews_csv, out="m", vectors=str(path)), progress)  # weight decay 0
    vocab = vocab_of(run.out)
    size = len(vocab)
    assert (vocab["zyzzyva"], vocab["qwertyuiop"]) == (size - 2, size - 1)  # after the training words
    assert f"8 of {size - 4} training vocabulary words covered" in progress.notes[-1]
    assert progress.notes[-1].endswith("; 2 more words from the file, fine-tuned")
    model = checkpoint.load("m")
    for w in ("zyzzyva", "qwertyuiop"):
        assert built["weight"][vocab[w]].tolist() == vector(WORDS.index(w))
        # no training text holds them, so no step moved their rows
        assert model.model.embedding.weight[vocab[w]].tolist() == vector(WORDS.index(w))
    assert model.tokenizer.encode("Zyzzyva").ids == [vocab["zyzzyva"]]


def test_add_words_keeps_ids_and_skips_words_no_text_yields():
    from rnncli.tokenizer import add_words, train_tokenizer

    tok = train_tokenizer(["the film", "the plot"], max_vocab=50)
    before = tok.get_vocab()  # <pad> <unk> the film plot
    grown, added = add_words(tok, ["film", "Acting", "don't", "the", "cast", "acting", "score", "more"],
                             max_vocab=8)
    vocab = grown.get_vocab()
    assert {w: vocab[w] for w in before} == before
    # "Acting" joins as texts spell it; "don't" never comes out of a text whole; 8 ids stop "more"
    assert added == 3
    assert sorted(vocab, key=vocab.get)[len(before):] == ["acting", "cast", "score"]


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "fine-tuned"])
def test_frozen_embedding_never_changes_fine_tuned_does(tmp_path, monkeypatch, reviews_csv, built, freeze):
    monkeypatch.chdir(tmp_path)
    path = write_vectors(tmp_path / "v.vec", header=False)
    train(tiny(reviews_csv, out="m", vectors=str(path), freeze_vectors=freeze))
    path.unlink()  # the model folder needs no vectors file
    loaded = checkpoint.load("m")
    after = loaded.model.embedding.weight.detach()
    assert not after[0].any()  # the padding row stays zero either way
    assert torch.equal(after, built["weight"]) == freeze
    assert loaded.config.model.vectors == str(path)  # the resolved config records the file
    assert loaded.config.model.freeze_vectors == freeze
    assert loaded.model.embedding.weight.requires_grad == (not freeze)


def test_resume_takes_the_weights_from_the_checkpoint_not_the_file(tmp_path, monkeypatch, reviews_csv, built):
    monkeypatch.chdir(tmp_path)
    path = write_vectors(tmp_path / "v.vec")

    class StopAfterFirstEpoch(Progress):
        def epoch_end(self, result):
            raise KeyboardInterrupt

    run = train(tiny(reviews_csv, out="m", epochs=3, patience=3, vectors=str(path), freeze_vectors=True),
                StopAfterFirstEpoch())
    assert run.stopped == "interrupted"
    initial = built["weight"]
    path.unlink()  # reading it again would fail
    resumed = train(resume="m")
    assert resumed.stopped == "finished" and len(resumed.history) == 3
    assert torch.equal(checkpoint.load("m").model.embedding.weight.detach(), initial)  # still frozen


def test_frozen_embedding_gets_no_optimizer_state(reviews_csv):
    from rnncli.model import RNNClassifier

    config = tiny(reviews_csv, vectors="unused.vec", freeze_vectors=True)
    model = RNNClassifier(config.model, vocab_size=20, num_classes=2)
    optimizer = train_module.make_optimizer(model, config)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert all(p is not model.embedding.weight for p in params)
    assert len(params) == len(list(model.parameters())) - 1


# --------------------------------------------------------------------------- mistakes, as the CLI reports them

runner = CliRunner()


def cli_error(tmp_path, reviews_csv, *args):
    """Exit code 2, one line on stderr, no traceback, no model folder; returns the line."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = runner.invoke(app, ["train", "--dataset", str(reviews_csv), "--out", str(tmp_path / "m"),
                                 *flags, *map(str, args)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not (tmp_path / "m").exists()
    return lines[0]


def test_missing_file(tmp_path, reviews_csv):
    line = cli_error(tmp_path, reviews_csv, "--vectors", tmp_path / "nowhere.vec")
    assert line == f"rnncli: error: {tmp_path / 'nowhere.vec'}: vectors file not found"


def test_malformed_line_names_its_number(tmp_path, reviews_csv):
    path = write_vectors(tmp_path / "v.vec", extra_lines=["script 0.5 0.25"])
    line = cli_error(tmp_path, reviews_csv, "--vectors", path)
    assert line == (f"rnncli: error: {path}: line {len(WORDS) + 2}: expected a word and {EMBED} numbers, "
                    "found 2 numbers")
    path = write_vectors(tmp_path / "w.vec", header=False, extra_lines=["cast " + "x " * EMBED])
    assert f"{path}: line {len(WORDS) + 1}: not a number" in cli_error(tmp_path, reviews_csv, "--vectors", path)


@pytest.mark.parametrize("header", [True, False])
def test_dimension_other_than_embed(tmp_path, reviews_csv, header):
    path = write_vectors(tmp_path / "v.vec", dim=7, header=header)
    line = cli_error(tmp_path, reviews_csv, "--vectors", path)
    assert line == f"rnncli: error: {path}: vectors have 7 dimensions but --embed is {EMBED}; pass --embed 7"


def test_no_vocabulary_word_covered(tmp_path, reviews_csv):
    path = write_vectors(tmp_path / "v.vec", words=["zyzzyva", "qwertyuiop"])
    line = cli_error(tmp_path, reviews_csv, "--vectors", path)
    assert line.startswith(f"rnncli: error: {path}: no word of the vocabulary (")


def test_freeze_needs_vectors(tmp_path, reviews_csv):
    assert "--freeze-vectors needs --vectors" in cli_error(tmp_path, reviews_csv, "--freeze-vectors")


def test_cli_shows_coverage(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)  # a short relative path: rich wraps long lines
    write_vectors(tmp_path / "v.vec")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "epochs": 1}.items()]
    result = runner.invoke(app, ["train", "--dataset", str(reviews_csv), "--out", "m", *flags,
                                 "--vectors", "v.vec", "--freeze-vectors"])
    assert result.exit_code == 0, result.output
    assert "note: vectors v.vec: 8 of " in result.stdout and "frozen" in result.stdout


def test_library_error_without_the_cli(tmp_path):
    with pytest.raises(RnncliError, match="vectors file not found"):
        read_vectors(tmp_path / "none.vec", {"<pad>": 0, "<unk>": 1, "a": 2}, EMBED)
