"""A user's mistakes end in one line on stderr and exit code 2, with nothing already saved lost."""

import pytest
import torch
from typer.testing import CliRunner

from rnncli.cli import app
from rnncli.device import resolve_device
from rnncli.errors import RnncliError

runner = CliRunner()
TINY = ["--embed", "11", "--hidden", "13", "--epochs", "1", "--device", "cpu"]


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_cuda():
    with pytest.raises(RnncliError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(RnncliError, match="CUDA is not available"):
        resolve_device("cuda:1")
    assert "CUDA" in one_line_error(runner.invoke(app, ["train", "--device", "cuda"]))


def test_unknown_device_spelling():
    with pytest.raises(RnncliError, match="unknown device"):
        resolve_device("tpu")


def test_auto_device_is_cpu_without_cuda():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_empty_data_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.csv").write_text("text,label\n")
    message = one_line_error(runner.invoke(app, ["train", "--dataset", "empty.csv", *TINY]))
    assert "empty.csv" in message


def test_output_folder_that_cannot_be_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    message = one_line_error(runner.invoke(app, ["train", "--out", "a-file/model", *TINY]))
    assert "cannot write" in message
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_existing_model_folder_is_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["train", "--out", "m", *TINY]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    assert "already exists" in one_line_error(runner.invoke(app, ["train", "--out", "m", *TINY]))
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before


@pytest.mark.parametrize("flag", ["--hidden", "--layers", "--embed", "--epochs", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_sizes_are_rejected(flag, value):
    assert f"{flag} must be an integer between 1 and" in one_line_error(runner.invoke(app, ["train", flag, value]))


def test_half_precision_on_cpu(tmp_path):
    line = one_line_error(runner.invoke(app, ["train", *TINY, "--precision", "bf16", "--out", str(tmp_path / "m")]))
    assert "needs a CUDA device" in line
    assert not (tmp_path / "m").exists()


def test_a_hub_id_without_a_network_fails_at_once_in_one_line(tmp_path, monkeypatch):
    """When the hub's host does not resolve, datasets reads only its cache: no half minute of retries."""
    import socket
    import urllib.request

    import datasets.config
    from huggingface_hub import constants

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(urllib.request, "getproxies", dict)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    before = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    for command in (["train"], ["pretrain"], ["train", "--streaming"]):
        line = one_line_error(runner.invoke(app, [*command, "--dataset", "someone/not-cached-here"]))
        assert "huggingface.co cannot be reached from here and the local cache lacks it" in line, command
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before  # offline only for that call
    assert not (tmp_path / "runs").exists()
