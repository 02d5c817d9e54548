"""`rnncli shapes` reports what torch itself returns, for every cell and layout."""

import json

import pytest
import torch
from typer.testing import CliRunner

from rnncli.cli import app
from rnncli.errors import RnncliError
from rnncli.shapes import ShapesSpec, describe

runner = CliRunner()


def by_name(report):
    return {t["name"]: t["shape"] for t in report["tensors"]}


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_shapes_match_torch(cell, bidirectional, batch_first):
    spec = ShapesSpec(seq=7, batch=3, feature=11, hidden=13, layers=2, cell=cell,
                      bidirectional=bidirectional, batch_first=batch_first, vocab=37, classes=5)
    report = describe(spec)
    rnn = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](
        11, 13, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(3, 7, 11) if batch_first else torch.randn(7, 3, 11)
    out, state = rnn(x)
    h_n = state[0] if cell == "lstm" else state
    shapes = by_name(report)
    assert shapes["x"] == list(x.shape)
    assert shapes["out"] == list(out.shape)
    assert shapes["h_n"] == list(h_n.shape)
    assert shapes["h0"] == list(h_n.shape)
    assert shapes["x_t"] == [3, 11]
    assert ("c_n" in shapes) == (cell == "lstm")
    assert {p["name"]: p["shape"] for p in report["parameters"]} == {
        n: list(p.shape) for n, p in rnn.named_parameters()}
    pipeline = {s["stage"]: s["shape"] for s in report["pipeline"]}
    dirs = 2 if bidirectional else 1
    assert pipeline["token ids"] == [7, 3]
    assert pipeline["embedding"] == [7, 3, 11]
    assert pipeline["logits"] == [3, 5]
    assert pipeline["pooled (last step)"] == [3, 13 * dirs]


def test_weight_sharing_counts_real_parameters():
    report = describe(ShapesSpec(seq=10, batch=3, feature=100, hidden=20, layers=1))
    ws = report["weight_sharing"]
    assert ws["rnn_parameters"] == 100 * 20 + 20 * 20 + 2 * 20
    assert ws["dense_per_step_parameters"] == 10 * (100 * 20 + 20)


def test_cli_four_layer_example():
    result = runner.invoke(app, ["shapes", "--seq", "10", "--batch", "3", "--feature", "100",
                                 "--hidden", "20", "--layers", "4", "--json"])
    assert result.exit_code == 0, result.output
    shapes = by_name(json.loads(result.output))
    assert shapes["out"] == [10, 3, 20]
    assert shapes["h_n"] == [4, 3, 20]


def test_cli_tables_show_out_and_h_n():
    result = runner.invoke(app, ["shapes", "--seq", "10", "--batch", "3", "--layers", "4"])
    assert result.exit_code == 0, result.output
    assert "(10, 3, 20)" in result.output and "(4, 3, 20)" in result.output
    assert "top layer, every step" in result.output and "last step, every layer" in result.output


def test_bad_sizes_are_one_line_errors():
    with pytest.raises(RnncliError):
        describe(ShapesSpec(hidden=0))
    result = runner.invoke(app, ["shapes", "--hidden", "0"])
    assert result.exit_code == 2
    assert "hidden" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("cell,layers,pool", [("rnn", 1, "last"), ("lstm", 2, "attn")])
def test_an_explanation_carries_the_shapes_of_its_own_forward_pass(model_folder, cell, layers, pool):
    from conftest import WORDS

    from rnncli import load_model

    folder, model = model_folder(cell=cell, layers=layers, pool=pool)
    text = " ".join(WORDS[:7])  # 7 tokens
    shapes = load_model(folder).explain(text).shapes
    tensors = {r["name"]: tuple(r["shape"]) for r in shapes["tensors"]}
    assert tensors["x"] == (7, 1, 11) and tensors["x_t"] == (1, 11)  # (seq, batch, embed), one text
    assert tensors["out"] == (7, 1, 13) and tensors["h_n"] == tensors["h0"] == (layers, 1, 13)
    assert ("c_n" in tensors) == (cell == "lstm")
    assert [(r["name"], tuple(r["shape"])) for r in shapes["parameters"]] == \
           [(name, tuple(p.shape)) for name, p in model.rnn.named_parameters()]
