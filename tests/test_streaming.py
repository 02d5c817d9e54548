"""--streaming: the training split read a buffer at a time, the vocabulary from its first rows."""

import textwrap
from collections import Counter

import datasets
import numpy as np
import pytest
from test_data import write_csv, write_parquet
from test_distributed import run_torchrun

from rnncli import checkpoint
from rnncli.builtin import generate
from rnncli.config import DataConfig, resolve
from rnncli.errors import RnncliError
from rnncli.streaming import open_stream
from rnncli.train import train


def reviews(n, seed):
    return [(text, ("neg", "pos")[y]) for text, y in generate(n, seed=seed)]


def streamed_rows(corpus, **kw):
    return [(t, corpus.labels[y]) for chunk in corpus.chunks(seed=0, epoch=1, **kw)
            for t, y in zip(chunk.texts, chunk.labels)]


def test_validation_is_carved_from_the_sample_and_never_trained_on(tmp_path):
    rows = reviews(200, seed=1)
    path = write_csv(tmp_path / "r.csv", ["text", "label"], rows)
    corpus = open_stream(DataConfig(dataset=str(path), vocab_sample=50, val_fraction=0.2))
    assert corpus.labels == ["neg", "pos"]
    assert len(corpus.splits["validation"]) == 10  # 20% of the 50-row sample, stratified
    assert len(corpus.sample) == 40
    val = set(corpus.splits["validation"].texts)
    trained = streamed_rows(corpus, buffer=17)
    assert not val & {t for t, _ in trained}
    assert Counter(trained) == Counter(r for r in rows if r[0] not in val)  # every other row, once


def test_shards_are_shared_between_processes(tmp_path):
    rows = reviews(90, seed=2)
    for k in range(3):
        write_parquet(tmp_path / f"train-0000{k}-of-00003.parquet", ["text", "label"], rows[k * 30:(k + 1) * 30])
    write_parquet(tmp_path / "validation.parquet", ["text", "label"], reviews(10, seed=3))
    corpus = open_stream(DataConfig(dataset=str(tmp_path), vocab_sample=20))
    assert len(corpus.shards) == 3
    assert len(corpus.splits["validation"]) == 10
    parts = [streamed_rows(corpus, buffer=8, part=p, parts=2) for p in (0, 1)]
    assert sorted(parts[0] + parts[1]) == sorted(rows)  # disjoint and complete
    assert {len(parts[0]), len(parts[1])} == {30, 60}  # whole shards: 1 and 2 of 3
    quarters = [streamed_rows(corpus, buffer=8, part=p, parts=4) for p in range(4)]  # more processes
    assert sorted(r for q in quarters for r in q) == sorted(rows)  # than shards: every 4th row of each
    assert [len(q) for q in quarters] == [24, 24, 21, 21]


def test_a_label_after_the_sample_is_a_clear_error(tmp_path):
    rows = [("good film", "pos"), ("bad film", "neg")] * 10 + [("so so", "meh")]
    path = write_csv(tmp_path / "r.csv", ["text", "label"], rows)
    corpus = open_stream(DataConfig(dataset=str(path), vocab_sample=10))
    with pytest.raises(RnncliError, match="label 'meh' appears after .*--vocab-sample"):
        streamed_rows(corpus, buffer=4)


def test_a_label_sorted_stream_is_pointed_out(tmp_path):
    rows = sorted(reviews(2400, seed=4), key=lambda r: r[1])
    path = write_parquet(tmp_path / "train.parquet", ["text", "label"], rows)
    corpus = open_stream(DataConfig(dataset=str(path), stream_buffer=500))
    assert any("of one label in a row" in note for note in corpus.notes)


def test_streamed_training_learns_and_saves_a_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = train(resolve(None, {"embed": 11, "hidden": 13, "batch_size": 32, "epochs": 3, "device": "cpu",
                               "streaming": True, "vocab_sample": 2000, "stream_buffer": 1000, "out": "m"}))
    assert run.best_accuracy >= 0.78  # the same small model in memory: 0.81 (chance: 0.5)
    assert checkpoint.read_meta(tmp_path / "m")["config"]["data"]["streaming"] is True
    assert any(note.startswith("streaming:") for note in run.report.notes)
    assert run.report.rows["train (first rows)"] == 2000  # the stream's length is not known in advance


def test_streaming_under_torchrun_with_uneven_shards(tmp_path):
    """Two processes stream different amounts (shards of 40 and 80 rows); Join keeps them in step."""
    rows = reviews(120, seed=6)
    data = tmp_path / "data"
    data.mkdir()
    for k, (a, b) in enumerate([(0, 40), (40, 120)]):
        write_parquet(data / f"train-0000{k}-of-00002.parquet", ["text", "label"], rows[a:b])
    write_parquet(data / "validation.parquet", ["text", "label"], reviews(30, seed=7))
    script = tmp_path / "ddp_stream.py"
    script.write_text(textwrap.dedent(f"""
        import hashlib, os
        from rnncli.config import resolve
        from rnncli.train import train

        run = train(resolve(None, {{"embed": 11, "hidden": 13, "epochs": 2, "batch_size": 4, "device": "cpu",
                                   "dataset": {str(data)!r}, "streaming": True, "stream_buffer": 16,
                                   "out": "model"}}))
        digest = hashlib.sha256(b"".join(t.numpy().tobytes() for _, t in sorted(run.model.state_dict().items())))
        open(f"digest-{{os.environ['RANK']}}.txt", "w").write(digest.hexdigest())
    """))
    p = run_torchrun([str(script)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "digest-0.txt").read_text() == (tmp_path / "digest-1.txt").read_text()
    assert (tmp_path / "model" / checkpoint.WEIGHTS).is_file()


def test_builtin_streams_too():
    corpus = open_stream(DataConfig(dataset="builtin", vocab_sample=500))
    assert isinstance(corpus.shards[0], datasets.IterableDataset)
    assert len(corpus.sample) == 500 and "test" in corpus.splits
    assert sum(len(c) for c in corpus.chunks(buffer=3000, seed=0, epoch=1)) == 8000
    assert np.array_equal(np.unique(corpus.sample.labels), [0, 1])


def test_eval_of_a_streamed_model_scores_the_rows_training_held_out(tmp_path, monkeypatch):
    """No validation split: training carved it from the stream's first rows; eval must carve the same."""
    from rnncli.evaluate import evaluate_folder

    monkeypatch.chdir(tmp_path)
    path = write_csv(tmp_path / "r.csv", ["text", "label"], reviews(600, seed=8))
    run = train(resolve(None, {"embed": 11, "hidden": 13, "batch_size": 16, "epochs": 2, "device": "cpu",
                               "dataset": str(path), "streaming": True, "vocab_sample": 300, "out": "m"}))
    result = evaluate_folder("m")
    assert result.split == "validation"
    assert result.metrics.examples == 30  # 10% of the 300-row sample, not of all 600 rows
    assert result.metrics.accuracy == pytest.approx(run.best_accuracy)
