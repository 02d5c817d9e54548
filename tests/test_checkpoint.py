"""A model folder loads back exactly, never runs code from the folder, and names what is wrong with it."""

import json
import pickle

import pytest
import torch

from rnncli import checkpoint
from rnncli.errors import RnncliError


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_save_then_load_gives_the_same_logits(model_folder, cell, bidirectional):
    folder, model = model_folder(cell=cell, bidirectional=bidirectional, layers=2, pool="max")
    loaded = checkpoint.load(folder)
    ids = torch.randint(2, 37, (7, 3))  # (seq, batch)
    lengths = torch.tensor([7, 4, 1])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids), model(ids))
        assert torch.equal(loaded.model(ids, lengths), model(ids, lengths))
    assert not loaded.model.training
    assert loaded.labels == ["negative", "neutral", "positive"]
    assert loaded.config.model.cell == cell and loaded.config.model.bidirectional == bidirectional
    assert loaded.tokenizer.get_vocab_size() == 37


class WritesAFile:
    """Unpickling this object opens (creates) `marker`: the kind of payload a model.pt can hide."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_payload_would_run_if_unpickled(tmp_path):
    pickle.loads(pickle.dumps(WritesAFile(tmp_path / "proof")))
    assert (tmp_path / "proof").exists()  # so the checks below are not vacuous


def test_a_pickle_beside_the_weights_is_ignored(tiny_model_copy, tmp_path):
    marker = tmp_path / "pwned"
    (tiny_model_copy / "model.pt").write_bytes(pickle.dumps(WritesAFile(marker)))
    checkpoint.load(tiny_model_copy)
    assert not marker.exists()


def test_a_pickle_instead_of_the_weights_is_refused(tiny_model_copy, tmp_path):
    marker = tmp_path / "pwned"
    (tiny_model_copy / checkpoint.WEIGHTS).rename(tiny_model_copy / "model.pt")
    (tiny_model_copy / "model.pt").write_bytes(pickle.dumps(WritesAFile(marker)))
    with pytest.raises(RnncliError, match="model.safetensors"):
        checkpoint.load(tiny_model_copy)
    (tiny_model_copy / checkpoint.WEIGHTS).write_bytes(pickle.dumps(WritesAFile(marker)))
    with pytest.raises(RnncliError, match="model.safetensors"):
        checkpoint.load(tiny_model_copy)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5, -1])
def test_truncated_weights_name_the_file(tiny_model_copy, keep):
    weights = tiny_model_copy / checkpoint.WEIGHTS
    data = weights.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    weights.write_bytes(data[:cut])
    with pytest.raises(RnncliError, match=r"model\.safetensors.*(unreadable|truncated)"):
        checkpoint.load(tiny_model_copy)


@pytest.mark.parametrize("section, key, value", [("model", "hidden", 17), ("model", "cell", "gru"),
                                                 ("model", "layers", 2), ("model", "bidirectional", True)])
def test_config_that_does_not_fit_the_weights(tiny_model_copy, section, key, value):
    path = tiny_model_copy / checkpoint.CONFIG
    meta = json.loads(path.read_text())
    meta["config"][section][key] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(RnncliError, match=r"model\.safetensors.*does not match config\.json"):
        checkpoint.load(tiny_model_copy)


def test_label_count_that_does_not_fit_the_weights(tiny_model_copy):
    path = tiny_model_copy / checkpoint.CONFIG
    meta = json.loads(path.read_text())
    meta["labels"] = ["neg", "meh", "pos"]
    path.write_text(json.dumps(meta))
    with pytest.raises(RnncliError, match="does not match"):
        checkpoint.load(tiny_model_copy)


def test_missing_tokenizer(tiny_model_copy):
    (tiny_model_copy / checkpoint.TOKENIZER).unlink()
    with pytest.raises(RnncliError, match=r"tokenizer\.json"):
        checkpoint.load(tiny_model_copy)


def test_newer_format_is_refused(tiny_model_copy):
    path = tiny_model_copy / checkpoint.CONFIG
    meta = json.loads(path.read_text())
    meta["format_version"] = checkpoint.FORMAT_VERSION + 1
    path.write_text(json.dumps(meta))
    with pytest.raises(RnncliError, match="newer.*upgrade rnncli"):
        checkpoint.load(tiny_model_copy)


def test_missing_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(RnncliError, match="rnncli train"):
        checkpoint.load(tmp_path / "nothing-here")
    with pytest.raises(RnncliError, match="rnncli train"):
        checkpoint.load(tmp_path)  # a folder, but not a model folder


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers, pool, ngrams", [(1, "last", 0), (2, "attn", 3), (3, "max", 2)])
def test_weight_layout_from_the_config_is_the_models_own(cell, bidirectional, layers, pool, ngrams):
    """The shapes a folder is checked against before loading are exactly those of the module."""
    from rnncli.config import ModelConfig
    from rnncli.layout import weight_shapes
    from rnncli.model import RNNClassifier

    config = ModelConfig(cell=cell, bidirectional=bidirectional, layers=layers, pool=pool, embed=11, hidden=13,
                         ngrams=ngrams, ngram_buckets=101)
    model = RNNClassifier(config, vocab_size=37, num_classes=5)
    assert weight_shapes(config, 37, 5) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_a_weight_missing_or_extra_is_named(tiny_model_copy):
    from safetensors.torch import load_file, save_file

    path = tiny_model_copy / checkpoint.WEIGHTS
    state = load_file(str(path))
    save_file({k: v for k, v in state.items() if k != "head.bias"}, str(path))
    with pytest.raises(RnncliError, match=r"head.bias is absent in the weights, \(2,\) by the config"):
        checkpoint.inspect(tiny_model_copy)
    save_file({**state, "extra.weight": torch.zeros(3)}, str(path))
    with pytest.raises(RnncliError, match="extra.weight is \\(3,\\) in the weights, no such weight by the config"):
        checkpoint.load(tiny_model_copy)


@pytest.mark.parametrize("change, message", [({"labels": ["only"]}, "two or more"),
                                             ({"vocab_size": 10**12}, "vocab_size"),
                                             ({"vocab_size": "37"}, "vocab_size")])
def test_labels_and_vocab_size_are_checked_before_loading(tiny_model_copy, change, message):
    path = tiny_model_copy / checkpoint.CONFIG
    path.write_text(json.dumps(json.loads(path.read_text()) | change))
    with pytest.raises(RnncliError, match=message):
        checkpoint.inspect(tiny_model_copy)
