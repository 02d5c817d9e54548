"""`rnncli train`, `rnncli eval` and `rnncli predict` as a user runs them: output, exit codes, one-line errors."""

import csv
import json

import pytest
from typer.testing import CliRunner

from rnncli.cli import app

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def records(result):
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def one_line_error(result):
    """A user's mistake: exit code 2, a single line on stderr, no traceback; returns that line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rnncli: error: ")
    return lines[0]


# --------------------------------------------------------------------------- predict


def test_predict_json_one_object_per_text(tiny_model):
    got = records(invoke("predict", "--model", tiny_model, "--json", "i loved the film", "", "dull !"))
    assert [r["text"] for r in got] == ["i loved the film", "", "dull !"]
    for r in (got[0], got[2]):
        assert {"text", "label", "score", "probabilities"} <= r.keys()
        assert r["label"] in ("neg", "pos") and r["score"] == r["probabilities"][r["label"]]
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert got[1]["empty"] is True and got[1]["label"] is None


def test_predict_reads_standard_input(tiny_model):
    got = records(invoke("predict", "--model", tiny_model, "--json", "-", input="great fun\n\nawful\n"))
    assert [(r["text"], r["empty"]) for r in got] == [("great fun", False), ("", True), ("awful", False)]


def test_predict_file_gives_one_record_per_line(tiny_model, tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("i loved it\n\n   \nthe plot is dull\r\nlast line without newline")
    got = records(invoke("predict", "--model", tiny_model, "--json", "--file", path))
    assert [r["text"] for r in got] == ["i loved it", "", "   ", "the plot is dull", "last line without newline"]
    assert [r["empty"] for r in got] == [False, True, True, False, False]


def test_predict_file_splits_on_newlines_only(tiny_model, tmp_path):
    """Unicode line and page separators inside a line are part of the text, not new records."""
    path = tmp_path / "reviews.txt"
    path.write_text("first half\u2028second half\nform\x0cfeed\nnext\x85line\n", encoding="utf-8")
    got = records(invoke("predict", "--model", tiny_model, "--json", "--file", path))
    assert [r["text"] for r in got] == ["first half\u2028second half", "form\x0cfeed", "next\x85line"]


def test_predict_table_output(tiny_model):
    result = invoke("predict", "--model", tiny_model, "i loved the film", "")
    assert result.exit_code == 0, result.output
    assert "i loved the film" in result.stdout and "(empty text)" in result.stdout


def test_predict_threshold_flag(tiny_model):
    [plain] = records(invoke("predict", "--model", tiny_model, "--json", "i loved the film"))
    positive = plain["probabilities"]["pos"]
    [low] = records(invoke("predict", "--model", tiny_model, "--json", "--threshold", positive * 0.99,
                           "i loved the film"))
    [high] = records(invoke("predict", "--model", tiny_model, "--json", "--threshold",
                            min(positive * 1.01 + 1e-6, 0.999999), "i loved the film"))
    assert (low["label"], high["label"]) == ("pos", "neg")
    assert "threshold" in one_line_error(invoke("predict", "--model", tiny_model, "--threshold", 2, "x"))


def test_predict_invalid_utf8_file_is_one_line(tiny_model, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("fine\ncaf\xe9 cr\xe8me\n".encode("latin-1"))
    line = one_line_error(invoke("predict", "--model", tiny_model, "--file", path))
    assert "UTF-8" in line and "line 2" in line


def test_predict_a_megabyte_line_from_stdin(tiny_model):
    text = "i loved the film " * 60_000
    [got] = records(invoke("predict", "--model", tiny_model, "--json", "-", input=text + "\n"))
    assert got["truncated"] is True and got["tokens"] == 256 and got["label"] in ("neg", "pos")


def test_predict_punctuation_and_emoji_only(tiny_model):
    got = records(invoke("predict", "--model", tiny_model, "--json", "!!!", "😀🎬", "?!"))
    assert all(r["label"] in ("neg", "pos") and not r["empty"] for r in got)


def test_predict_without_a_model_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/latest here
    line = one_line_error(invoke("predict", "i loved it"))
    assert "runs/latest" in line and "rnncli train" in line


def test_predict_explain_json(tiny_model):
    [got] = records(invoke("predict", "--model", tiny_model, "--explain", "--json", "i loved the film"))
    assert got["tokens"] == ["i", "loved", "the", "film"]
    assert len(got["probabilities"]) == 4 and got["labels"] == ["neg", "pos"]
    assert got["probabilities"][-1][got["labels"].index(got["label"])] == pytest.approx(got["score"], abs=1e-5)


def test_predict_explain_an_attention_model(model_folder):
    folder, _ = model_folder(cell="gru", bidirectional=True, pool="attn")
    [got] = records(invoke("predict", "--model", folder, "--explain", "--json", "w1 w2 w3"))
    assert got["tokens"] == ["w1", "w2", "w3"] and "probabilities" not in got
    assert len(got["attention"]) == 3 and sum(got["attention"]) == pytest.approx(1.0, abs=1e-5)
    table = invoke("predict", "--model", folder, "--explain", "w1 w2 w3")
    assert table.exit_code == 0 and "Where the model looked" in table.stdout and "attention" in table.stdout
    assert all(f"{w:.3f}" in table.stdout for w in got["attention"])


def test_predict_explain_on_a_bidirectional_model_is_one_line(model_folder):
    folder, _ = model_folder(bidirectional=True)
    assert "bidirectional" in one_line_error(invoke("predict", "--model", folder, "--explain", "w1 w2"))


# --------------------------------------------------------------------------- eval


def test_eval_prints_accuracy_and_confusion(tiny_model):
    result = invoke("eval", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "macro-F1" in result.stdout and "baseline" in result.stdout
    assert "Confusion" in result.stdout
    [[a, b], [c, d]] = json.loads(invoke("eval", "--model", tiny_model, "--json").stdout)["confusion"]
    rows = [line for line in result.stdout.splitlines() if line.startswith(("│ neg", "│ pos"))][-2:]
    assert [[cell.strip() for cell in row.split("│")[2:4]] for row in rows] == [
        [str(a), str(b)], [str(c), str(d)]]  # the last table: rows true, columns predicted


def test_eval_json_is_one_object(tiny_model):
    result = invoke("eval", "--model", tiny_model, "--json")
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    got = json.loads(line)
    assert {"accuracy", "macro_f1", "per_class", "confusion", "majority_accuracy", "split"} <= got.keys()
    assert got["split"] == "validation" and got["labels"] == ["neg", "pos"]
    assert [c["label"] for c in got["per_class"]] == ["neg", "pos"]
    assert sum(map(sum, got["confusion"])) == got["examples"] == sum(c["support"] for c in got["per_class"])
    assert 0.0 <= got["majority_accuracy"] <= 1.0


def test_eval_on_labels_the_model_does_not_know(tiny_model, tmp_path):
    path = tmp_path / "other.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([["text", "label"], ["good", "pos"], ["meh", "mixed"], ["odd", "sarcastic"],
                                  ["bad", "neg"]])
    line = one_line_error(invoke("eval", "--model", tiny_model, "--dataset", path))
    assert "mixed" in line and "sarcastic" in line and "does not know" in line


# --------------------------------------------------------------------------- train


def test_train_then_predict_latest(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--dataset", reviews_csv, "--embed", 11, "--hidden", 13, "--epochs", 1,
                    "--batch-size", 3, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "saved to" in result.stdout
    assert (tmp_path / "runs" / "latest").resolve().name.startswith("reviews.csv-")
    got = records(invoke("predict", "--json", "i loved it"))  # runs/latest
    assert got[0]["label"] in ("neg", "pos")


def test_train_refuses_an_existing_out_folder(tmp_path, monkeypatch, reviews_csv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine")
    line = one_line_error(invoke("train", "--dataset", reviews_csv, "--out", "m", "--epochs", 1))
    assert "already exists" in line
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["keep.txt"]
