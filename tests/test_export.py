"""`rnncli export` and `--runtime onnx`: a file that answers as the torch model does, for every
architecture, batch and length, loaded only from a sound folder, and run without torch."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import WORDS, one_line_error, run_without
from typer.testing import CliRunner

from rnncli.cli import app
from rnncli.config import ModelConfig
from rnncli.errors import RnncliError
from rnncli.export import TOLERANCE, check, export, write_graph
from rnncli.inference import probabilities
from rnncli.model import RNNClassifier
from rnncli.onnxmodel import ONNX, OnnxModel
from rnncli.tokenizer import Encoded

pytest.importorskip("onnxruntime")
runner = CliRunner()
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
TEXTS = ["a gorgeous , witty film", "dull", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11", "", "great great great"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def random_texts(vocab: int, lengths: list[int], seed: int = 1) -> Encoded:
    """Encoded texts of these lengths, of random known ids."""
    rng = np.random.default_rng(seed)
    lengths = np.array(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return Encoded(ids=rng.integers(2, vocab, size=int(lengths.sum())), starts=starts, lengths=lengths,
                   full_lengths=lengths)


ARCHITECTURES = list(itertools.product(["rnn", "gru", "lstm"], [False, True], ["last", "mean", "max", "attn"]))


@pytest.mark.parametrize("cell,bidirectional,pool", ARCHITECTURES)
def test_every_architecture_answers_as_torch_does(tmp_path, cell, bidirectional, pool):
    layers = 2 if pool in ("last", "attn") else 1  # one and two layers, across the poolings
    config = ModelConfig(cell=cell, bidirectional=bidirectional, pool=pool, layers=layers, embed=11, hidden=13,
                         dropout=0.0, nonlinearity="relu" if pool == "max" else "tanh")
    model = RNNClassifier(config, vocab_size=37, num_classes=5).eval()
    path = tmp_path / "model.onnx"
    write_graph(model, path)
    assert max(c.max_difference for c in check(model, path, vocab=37, max_length=40)) <= TOLERANCE["none"]
    # through the runtime's own batching: sorted, padded batches of 3, lengths the export never saw
    import onnxruntime

    onnx_model = OnnxModel(onnxruntime.InferenceSession(str(path)), path, "none")
    enc = random_texts(37, [1, 7, 40, 2, 19, 3, 3])
    got, want = onnx_model.probabilities(enc, batch_size=3), probabilities(model, enc, batch_size=3)
    assert got.shape == want.shape == (7, 5)
    assert np.abs(got - want).max() <= TOLERANCE["none"]


@pytest.mark.parametrize("cell,bidirectional,pool", [("rnn", False, "last"), ("gru", True, "mean")])
def test_an_ngram_bag_answers_as_torch_does(tmp_path, cell, bidirectional, pool):
    """The bag's hashing runs inside the graph, on the same ids (`--ngrams`)."""
    config = ModelConfig(cell=cell, bidirectional=bidirectional, pool=pool, embed=11, hidden=13, dropout=0.0,
                         ngrams=3, ngram_buckets=101)
    model = RNNClassifier(config, vocab_size=37, num_classes=5).eval()
    with torch.no_grad():
        model.ngrams.weight.normal_()
        model.ngrams.ratio.normal_()[0] = 0
    path = tmp_path / "model.onnx"
    write_graph(model, path)
    assert max(c.max_difference for c in check(model, path, vocab=37, max_length=40)) <= TOLERANCE["none"]


@pytest.mark.parametrize("bidirectional,pool", [(False, "last"), (True, "mean"), (True, "attn")])
def test_a_plain_rnn_folds_its_embedding_into_its_first_layer(tmp_path, bidirectional, pool):
    import onnx

    config = ModelConfig(cell="rnn", bidirectional=bidirectional, pool=pool, layers=2, embed=13, hidden=11,
                         dropout=0.0)  # an embedding at least as wide as the state: a (vocab, hidden) table
    model = RNNClassifier(config, vocab_size=37, num_classes=2).eval()
    path = tmp_path / "model.onnx"
    write_graph(model, path)
    shapes = [tuple(w.dims) for w in onnx.load(path).graph.initializer]
    assert (37, 11) in shapes and (37, 13) not in shapes  # the table is there, the embedding is not
    assert max(c.max_difference for c in check(model, path, vocab=37, max_length=40)) <= TOLERANCE["none"]


def test_the_check_covers_batch_one_length_one_and_the_longest_text(tiny_model_copy):
    done = export(tiny_model_copy)
    cases = {(c.batch, max(c.lengths)) for c in done.checks}
    max_length = json.loads((tiny_model_copy / "config.json").read_text())["config"]["data"]["max_length"]
    assert (1, 1) in cases and max(length for _, length in cases) == max_length
    assert done.max_difference <= TOLERANCE["none"] and done.path == str(tiny_model_copy / ONNX)


def test_a_file_that_answers_otherwise_is_not_written(tiny_model_copy, monkeypatch):
    import rnncli.export

    def wrong_graph(model, path):
        other = RNNClassifier(model.config, model.embedding.num_embeddings, model.head.out_features).eval()
        write_graph(other, path)  # other (random) weights: answers unlike the model's

    monkeypatch.setattr(rnncli.export, "write_graph", wrong_graph)
    with pytest.raises(RnncliError, match="differs from the torch model"):
        export(tiny_model_copy)
    assert sorted(p.name for p in tiny_model_copy.iterdir()) == sorted(
        ["config.json", "metrics.jsonl", "model.safetensors", "tokenizer.json"])  # nothing left behind


def test_predict_with_onnx_gives_the_torch_records(tiny_model_copy):
    assert invoke("export", "--model", tiny_model_copy).exit_code == 0
    runs = {}
    for runtime in ("torch", "onnx"):
        result = invoke("predict", "--model", tiny_model_copy, "--runtime", runtime, "--json", *TEXTS)
        assert result.exit_code == 0, result.output
        runs[runtime] = [json.loads(line) for line in result.stdout.splitlines()]
    for a, b in zip(runs["torch"], runs["onnx"], strict=True):
        assert {k: v for k, v in a.items() if k not in ("score", "probabilities")} == \
               {k: v for k, v in b.items() if k not in ("score", "probabilities")}
        if not a["empty"]:
            assert abs(a["score"] - b["score"]) <= TOLERANCE["none"]
            assert a["probabilities"].keys() == b["probabilities"].keys()


def test_auto_says_when_it_runs_the_onnx_file(tiny_model_copy):
    result = invoke("predict", "--model", tiny_model_copy, "great film")
    assert result.exit_code == 0 and "model.onnx" not in result.stderr  # none yet: torch, silently
    invoke("export", "--model", tiny_model_copy)
    result = invoke("predict", "--model", tiny_model_copy, "great film")
    assert result.exit_code == 0 and "running model.onnx (fp32) in onnxruntime" in result.stderr
    result = invoke("eval", "--model", tiny_model_copy, "--json")
    assert json.loads(result.stdout)["runtime"] == "onnx"
    assert json.loads(invoke("eval", "--model", tiny_model_copy, "--json", "--runtime", "torch").stdout)[
        "runtime"] == "torch"


def test_eval_scores_alike_with_either_runtime(tiny_model_copy):
    invoke("export", "--model", tiny_model_copy)
    scores = {r: json.loads(invoke("eval", "--model", tiny_model_copy, "--json", "--runtime", r).stdout)
              for r in ("torch", "onnx")}
    assert scores["torch"]["confusion"] == scores["onnx"]["confusion"]
    assert scores["torch"]["loss"] == pytest.approx(scores["onnx"]["loss"], abs=1e-5)


@pytest.mark.parametrize("command", [
    ["predict", "--runtime", "onnx", "--json", "great film"],
    ["eval", "--runtime", "onnx", "--json"],
])
def test_the_onnx_runtime_never_imports_torch(tiny_model_copy, command):
    invoke("export", "--model", tiny_model_copy)
    code = ("import json, sys\nfrom rnncli.cli import main\n"
            f"try:\n    main({[*command, '--model', str(tiny_model_copy)]!r})\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(json.dumps(sorted(m for m in ('torch', 'datasets') if m in sys.modules)))")
    p = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300,
                       check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    imported = json.loads(p.stdout.splitlines()[-1])
    assert "torch" not in imported
    if command[0] == "predict":
        assert imported == []  # nor datasets: eval reads its data with it


def test_int8_is_smaller_and_reports_accuracy_before_and_after(tiny_model_copy):
    result = invoke("export", "--model", tiny_model_copy, "--quantize", "int8", "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    import onnx

    # a tiny model's file is mostly graph, so its size says little (bench/export.py gives the ratio);
    # its largest weights, the embedding table, are held in 8 bits
    eight_bits = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    held = {tuple(w.dims) for w in onnx.load(done["path"]).graph.initializer if w.data_type in eight_bits}
    vocab = json.loads((tiny_model_copy / "config.json").read_text())["vocab_size"]
    assert (vocab, 11) in held, held
    assert done["accuracy"]["split"] == "validation" and done["accuracy"]["texts"] > 0
    assert 0 <= done["accuracy"]["onnx"] <= 1 and 0 <= done["accuracy"]["torch"] <= 1
    assert done["max_difference"] <= TOLERANCE["int8"]
    result = invoke("predict", "--model", tiny_model_copy, "--runtime", "onnx", "great film")
    assert result.exit_code == 0, result.output
    info = invoke("predict", "--model", tiny_model_copy, "great film")
    assert "running model.onnx (int8)" in info.stderr


def test_export_table_output(tiny_model_copy):
    result = invoke("export", "--model", tiny_model_copy)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "checked against torch on 7 batches" in " ".join(result.stdout.split())


# ------------------------------------------------------------------ refused, in one line


def run(*args):
    return subprocess.run([sys.executable, "-m", "rnncli", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.parametrize("args,message", [
    (["--format", "tflite"], "unknown --format 'tflite'"),
    (["--quantize", "int4"], "unknown --quantize 'int4'"),
    (["--out", "."], "is a folder"),
    (["--out", "no/such/dir/m.onnx"], "no such folder"),
])
def test_export_refuses_bad_options(tiny_model_copy, args, message):
    assert message in one_line_error(run("export", "--model", tiny_model_copy, *args))
    assert not (tiny_model_copy / ONNX).exists()


@pytest.mark.parametrize("args,message", [
    (["--runtime", "tensorflow"], "unknown runtime 'tensorflow'"),
    (["--runtime", "onnx"], "model.onnx: missing; write it with `rnncli export"),
    (["--runtime", "onnx", "--device", "cuda"], "--runtime onnx runs on the CPU"),
])
def test_predict_refuses_a_runtime_it_cannot_use(tiny_model_copy, args, message):
    assert message in one_line_error(run("predict", "--model", tiny_model_copy, *args, "great film"))


def test_explain_needs_the_torch_runtime(tiny_model_copy):
    invoke("export", "--model", tiny_model_copy)
    assert invoke("predict", "--model", tiny_model_copy, "--explain", "great film").exit_code == 0  # auto: torch
    line = one_line_error(run("predict", "--model", tiny_model_copy, "--runtime", "onnx", "--explain", "great"))
    assert "use --runtime torch" in line


def damage_truncated(folder):
    data = (folder / ONNX).read_bytes()
    (folder / ONNX).write_bytes(data[: len(data) // 2])


def damage_other_weights(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    state["head.bias"] = state["head.bias"] + 1
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def damage_not_ours(folder):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), folder / ONNX)


def damage_huge(folder):
    with open(folder / ONNX, "r+b") as fh:  # sparse: costs no disk, and must cost no reading either
        fh.truncate(64 << 30)


def damage_external_data(folder):
    """A file whose weights claim to live in another file of the folder (here a sparse 64 GB one)."""
    from onnx import TensorProto, helper

    with open(folder / "weights.bin", "wb") as fh:
        fh.truncate(64 << 30)
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 34], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(1 << 36))):
        w.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 34])], initializer=[w])
    (folder / ONNX).write_bytes(helper.make_model(graph).SerializeToString())


def damage_garbage(folder):
    (folder / ONNX).write_bytes(os.urandom(4096))


@pytest.mark.parametrize("damage,message", [
    (damage_truncated, "unreadable or truncated"),
    (damage_garbage, "unreadable or truncated"),
    (damage_external_data, "unreadable or truncated"),
    (damage_other_weights, "exported from other weights than model.safetensors"),
    (damage_not_ours, "not an rnncli export"),
    (damage_huge, "more than an export of model.safetensors can be"),
])
def test_a_broken_or_foreign_model_onnx_is_one_line(tiny_model_copy, damage, message):
    invoke("export", "--model", tiny_model_copy)
    damage(tiny_model_copy)
    assert message in one_line_error(run("predict", "--model", tiny_model_copy, "--runtime", "onnx", "great"))


def test_onnx_is_loaded_only_from_a_sound_folder(tiny_model_copy):
    invoke("export", "--model", tiny_model_copy)
    config = json.loads((tiny_model_copy / "config.json").read_text())
    config["config"]["model"]["hidden"] = 4096  # promises weights the file does not hold
    (tiny_model_copy / "config.json").write_text(json.dumps(config))
    assert "does not match config.json" in one_line_error(
        run("predict", "--model", tiny_model_copy, "--runtime", "onnx", "great"))


def test_without_the_extra_the_error_names_it(tiny_model_copy):
    p = run_without("onnxruntime", ["export", "--model", str(tiny_model_copy)])
    assert 'pip install "rnncli[onnx]"' in one_line_error(p)


def test_an_untrained_folder_exports_too(model_folder):
    """A folder that was never trained (no data set) exports too; only int8 needs validation data."""
    folder, _ = model_folder(cell="gru", bidirectional=True, pool="attn")
    done = export(folder)
    assert done.max_difference <= TOLERANCE["none"]
    result = invoke("predict", "--model", folder, "--runtime", "onnx", "--json", " ".join(WORDS[:9]))
    torch_result = invoke("predict", "--model", folder, "--runtime", "torch", "--json", " ".join(WORDS[:9]))
    a, b = json.loads(result.stdout), json.loads(torch_result.stdout)
    assert a["label"] == b["label"] and abs(a["score"] - b["score"]) <= TOLERANCE["none"]


def test_the_readme_snippet_runs_the_file_without_rnncli(tiny_model_copy):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = readme.split("<!-- onnx-snippet -->\n```python\n")[1].split("```\n<!-- /onnx-snippet -->")[0]
    invoke("export", "--model", tiny_model_copy)
    code = snippet.replace("runs/sst2", str(tiny_model_copy)) + \
        "\nimport sys\nassert not [m for m in sys.modules if m.split('.')[0] in ('rnncli', 'torch')]\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                       cwd=tiny_model_copy.parent)
    assert p.returncode == 0, p.stderr[-2000:]
    texts = ["a gorgeous, witty film", "I hate this boring movie"]
    labels = [json.loads(line)["label"] for line in invoke("predict", "--model", tiny_model_copy, "--json",
                                                           *texts).stdout.splitlines()]
    assert p.stdout.startswith(str(labels)), p.stdout


def test_new_weights_remove_the_export_of_the_old_ones(tiny_model_copy):
    from rnncli import checkpoint

    export(tiny_model_copy)
    loaded = checkpoint.load(tiny_model_copy)
    checkpoint.save_weights(tiny_model_copy, loaded.model)  # as training does for a new best epoch
    assert not (tiny_model_copy / ONNX).exists()
    result = invoke("predict", "--model", tiny_model_copy, "great film")  # auto: the weights, silently
    assert result.exit_code == 0 and "model.onnx" not in result.stderr
