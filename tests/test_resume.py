"""Interrupted training loses nothing: SIGTERM mid-run, then `--resume`, ends like an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnncli.cli import app

TINY = ["--embed", "11", "--hidden", "13", "--epochs", "6", "--patience", "6", "--device", "cpu",
        "--batch-size", "16"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process


def train_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "rnncli", "train", "--out", str(out), *TINY]


def validation_records(folder: Path) -> list[dict]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in ("epoch", "train_loss", "loss", "accuracy")} for r in records
            if r["split"] == "validation"]


@pytest.mark.slow
def test_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(train_cmd(whole), check=True, capture_output=True, cwd=tmp_path, env=ENV)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(train_cmd(cut), cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for two finished epochs, then stop it mid-run
        if (cut / "metrics.jsonl").exists() and len(validation_records(cut)) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM, proc.stderr.read().decode()  # 143, as shells report it
    assert len(validation_records(cut)) < 6  # it really stopped early
    assert (cut / "resume.safetensors").exists()
    assert (cut / "model.safetensors").exists()  # the best model so far is in place

    resumed = subprocess.run([sys.executable, "-m", "rnncli", "train", "--resume", str(cut)],
                             capture_output=True, text=True, cwd=tmp_path, env=ENV, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert validation_records(cut) == validation_records(whole)
    assert (cut / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    assert not (cut / "resume.safetensors").exists()


def test_resume_refuses_other_options_and_finished_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "--epochs", "3"])
    assert result.exit_code == 2 and "--resume" in result.output
    done = tmp_path / "done"
    assert runner.invoke(app, ["train", "--out", str(done), *TINY[:-6], "--epochs", "1"]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(done)])
    assert result.exit_code == 2
    assert "no interrupted training to resume" in result.output and "Traceback" not in result.output
