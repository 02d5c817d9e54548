"""Every data source ends as the same Corpus: texts, integer labels per split, label names, notes."""

import csv
import json
import os
import subprocess
import sys
import time

import datasets
import numpy as np
import pytest

from rnncli.config import DataConfig
from rnncli.data import load_corpus
from rnncli.errors import RnncliError

datasets.disable_progress_bars()

ROWS = [("a gorgeous , witty film", "pos"), ("dull and clumsy", "neg"), ("i loved it", "pos"),
        ("the plot is awful", "neg"), ("superb acting", "pos"), ("not good", "neg")]


def write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path, header, rows):
    path.write_text("".join(json.dumps(dict(zip(header, row))) + "\n" for row in rows))
    return path


def write_parquet(path, header, rows, features=None):
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


WRITERS = {
    "csv": lambda p, h, r: write_csv(p, h, r),
    "tsv": lambda p, h, r: write_csv(p, h, r, delimiter="\t"),
    "jsonl": write_jsonl,
    "parquet": write_parquet,
}


def everything(corpus):
    """All (text, label name) pairs of a corpus, whatever split they landed in."""
    return sorted((t, corpus.labels[y]) for s in corpus.splits.values() for t, y in zip(s.texts, s.labels))


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_one_local_file_of_each_type(tmp_path, suffix):
    path = WRITERS[suffix](tmp_path / f"reviews.{suffix}", ["text", "label"], ROWS)
    corpus = load_corpus(DataConfig(dataset=str(path), val_fraction=0.34))
    assert corpus.labels == ["neg", "pos"]  # strings become ids, names sorted
    assert everything(corpus) == sorted(ROWS)  # nothing lost, nothing mangled
    assert set(corpus.splits) == {"train", "validation"}
    assert corpus.source == str(path.resolve())
    assert len(corpus.fingerprint) == 16


def test_folder_in_hub_layout_keeps_its_splits(tmp_path):
    write_parquet(tmp_path / "train.parquet", ["sentence", "label"], [("good", 1), ("bad", 0), ("fine", 1)])
    write_parquet(tmp_path / "validation.parquet", ["sentence", "label"], [("awful", 0)])
    corpus = load_corpus(DataConfig(dataset=str(tmp_path)))
    assert corpus.splits["train"].texts == ["good", "bad", "fine"]
    assert corpus.splits["train"].labels.tolist() == [1, 0, 1]
    assert corpus.splits["validation"].texts == ["awful"]
    assert corpus.notes == []  # nothing carved


def test_folder_with_sharded_splits_reads_every_shard(tmp_path):
    """Hub downloads name files `train-00000-of-00002.parquet`; every shard is part of the split."""
    write_parquet(tmp_path / "train-00000-of-00002.parquet", ["text", "label"], [("good", 1), ("bad", 0)])
    write_parquet(tmp_path / "train-00001-of-00002.parquet", ["text", "label"], [("fine", 1), ("dull", 0)])
    write_parquet(tmp_path / "validation-00000-of-00001.parquet", ["text", "label"], [("awful", 0)])
    corpus = load_corpus(DataConfig(dataset=str(tmp_path)))
    assert sorted(corpus.splits["train"].texts) == ["bad", "dull", "fine", "good"]


@pytest.mark.parametrize("text_name", ["text", "sentence", "review", "content"])
def test_text_column_found_by_name(tmp_path, text_name):
    path = write_csv(tmp_path / "r.csv", ["id", text_name, "label"], [(i, t, y) for i, (t, y) in enumerate(ROWS)])
    assert everything(load_corpus(DataConfig(dataset=str(path), val_fraction=0.34))) == sorted(ROWS)


@pytest.mark.parametrize("label_name", ["label", "labels", "sentiment"])
def test_label_column_found_by_name(tmp_path, label_name):
    path = write_csv(tmp_path / "r.csv", ["text", label_name], ROWS)
    assert everything(load_corpus(DataConfig(dataset=str(path), val_fraction=0.34))) == sorted(ROWS)


def test_explicit_columns(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["body", "stars", "text"], [(t, y, "decoy") for t, y in ROWS])
    corpus = load_corpus(DataConfig(dataset=str(path), text_column="body", label_column="stars",
                                    val_fraction=0.34))
    assert everything(corpus) == sorted(ROWS)


def test_missing_column_names_the_columns(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["body", "stars"], ROWS)
    with pytest.raises(RnncliError, match=r"body, stars.*--text-column"):
        load_corpus(DataConfig(dataset=str(path)))
    with pytest.raises(RnncliError, match=r"'words'.*body, stars"):
        load_corpus(DataConfig(dataset=str(path), text_column="words", label_column="stars"))
    with pytest.raises(RnncliError, match=r"'grade'.*body, stars"):
        load_corpus(DataConfig(dataset=str(path), text_column="body", label_column="grade"))


def test_string_labels_become_sorted_ids(tmp_path):
    rows = [("a", "pos"), ("b", "neg"), ("c", "meh"), ("d", "pos"), ("e", "neg"), ("f", "meh")]
    path = write_parquet(tmp_path / "train.parquet", ["text", "label"], rows)
    write_parquet(tmp_path / "validation.parquet", ["text", "label"], [("g", "meh")])
    corpus = load_corpus(DataConfig(dataset=str(tmp_path)))
    assert path.exists() and corpus.labels == ["meh", "neg", "pos"]
    assert corpus.splits["train"].labels.tolist() == [2, 1, 0, 2, 1, 0]
    assert corpus.splits["validation"].labels.tolist() == [0]


def test_integer_labels_without_names_read_as_sentiment(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["text", "label"], [(t, int(y == "pos")) for t, y in ROWS])
    corpus = load_corpus(DataConfig(dataset=str(path), val_fraction=0.34))
    assert corpus.labels == ["negative", "positive"]
    assert everything(corpus) == sorted((t, "positive" if y == "pos" else "negative") for t, y in ROWS)


def test_class_label_names_are_used(tmp_path):
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["awful", "fine", "great"])})
    write_parquet(tmp_path / "train.parquet", ["text", "label"], [("x", 2), ("y", 0), ("z", 1)], features)
    write_parquet(tmp_path / "validation.parquet", ["text", "label"], [("w", 2)], features)
    corpus = load_corpus(DataConfig(dataset=str(tmp_path)))
    assert corpus.labels == ["awful", "fine", "great"]
    assert corpus.splits["train"].labels.tolist() == [2, 0, 1]


def test_unlabeled_rows_are_dropped_with_a_note(tmp_path):
    write_parquet(tmp_path / "train.parquet", ["text", "label"], [("a", 0), ("b", 1), ("c", -1), ("d", 1)])
    write_parquet(tmp_path / "validation.parquet", ["text", "label"], [("e", -1), ("f", 0)])
    corpus = load_corpus(DataConfig(dataset=str(tmp_path)))
    assert corpus.splits["train"].texts == ["a", "b", "d"]
    assert corpus.splits["validation"].texts == ["f"]
    assert "train: dropped 1 unlabeled rows" in corpus.notes
    assert "validation: dropped 1 unlabeled rows" in corpus.notes


@pytest.fixture
def skewed_csv(tmp_path):
    """1,000 distinct texts, 70% "a" and 30% "b", in no particular order."""
    rng = np.random.default_rng(1)
    labels = rng.permutation(["a"] * 700 + ["b"] * 300)
    return write_csv(tmp_path / "skewed.csv", ["text", "label"], [(f"text {i}", y) for i, y in enumerate(labels)])


def test_missing_validation_is_carved_stratified_and_disjoint(skewed_csv):
    corpus = load_corpus(DataConfig(dataset=str(skewed_csv), val_fraction=0.2), seed=3)
    train, val = corpus.splits["train"], corpus.splits["validation"]
    assert len(train) + len(val) == 1000
    assert 190 <= len(val) <= 210
    assert abs(val.labels.mean() - 0.3) <= 0.02  # the share of "b" is kept
    assert abs(train.labels.mean() - 0.3) <= 0.02
    assert not set(train.texts) & set(val.texts)
    assert any("carved" in note for note in corpus.notes)


def test_carving_is_seeded(skewed_csv):
    def validation(seed):
        return load_corpus(DataConfig(dataset=str(skewed_csv), val_fraction=0.2), seed=seed).splits["validation"]

    assert validation(3).texts == validation(3).texts
    assert validation(3).texts != validation(4).texts


def test_non_existent_paths_are_errors(tmp_path):
    for spec in [str(tmp_path / "nope.csv"), str(tmp_path / "no" / "folder"), "./nope.parquet"]:
        with pytest.raises(RnncliError, match="no such file or folder"):
            load_corpus(DataConfig(dataset=spec))


def offline_env(tmp_path):
    """No hub: offline mode, and an empty cache so nothing is found there either."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    env.pop("HF_DATASETS_CACHE", None)
    return env


def test_unreachable_hub_is_a_quick_error_naming_alternatives(tmp_path, monkeypatch):
    # `datasets` reads HF_HUB_OFFLINE when it is imported, so the load runs in a fresh process.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = ("from rnncli.config import DataConfig\nfrom rnncli.data import load_corpus\n"
            "from rnncli.errors import RnncliError\n"
            "try:\n    load_corpus(DataConfig(dataset='stanfordnlp/sst2'))\n"
            "except RnncliError as e:\n    print(e)\nelse:\n    raise SystemExit('loaded')\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=offline_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, check=False)
    assert time.monotonic() - start < 30
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert "stanfordnlp/sst2" in message
    assert "--dataset builtin" in message and ".csv" in message  # a local file and builtin instead


def test_cli_train_with_unreachable_hub_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rnncli", "train", "--dataset", "stanfordnlp/sst2"],
                          env=offline_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("rnncli: error:") and "builtin" in lines[0]
