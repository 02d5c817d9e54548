"""Data-parallel training under torchrun: two CPU processes (gloo) train one model and write one folder."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rnncli import checkpoint
from rnncli.batching import LengthBuckets
from rnncli.distributed import Dist, device_spec, from_env
from rnncli.errors import RnncliError
from rnncli.evaluate import evaluate_folder
from rnncli.tokenizer import Encoded

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def run_torchrun(args, cwd, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*TORCHRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_processes_share_out_the_batches_evenly():
    lengths = np.array([1, 2, 2, 3, 3, 3, 5, 5, 5, 5, 5])
    enc = Encoded(ids=np.arange(lengths.sum()), starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                  lengths=lengths, full_lengths=lengths)
    buckets = LengthBuckets(enc)
    whole = [tuple(idx) for idx, _, _ in buckets.batches(2, np.random.default_rng(3))]
    parts = [[tuple(idx) for idx, _, _ in buckets.batches(2, np.random.default_rng(3), part=p, parts=3)]
             for p in range(3)]
    assert [len(p) for p in parts] == [buckets.num_batches(2, parts=3)] * 3  # equal steps: no process waits
    assert set().union(*map(set, parts)) == set(whole)  # every batch of the epoch is trained on
    assert parts[0] == whole[0::3]


def test_place_comes_from_torchrun_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert from_env() == Dist(rank=3, world=4, local_rank=1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(RnncliError, match="does not fit"):
        from_env()
    with pytest.raises(RnncliError, match="use --device cuda"):
        device_spec("cuda:1", Dist(rank=0, world=2))
    assert device_spec("cpu", Dist(rank=1, world=2, local_rank=1)) == "cpu"


@pytest.mark.parametrize("adversarial", [0.0, 0.5])
def test_two_processes_train_one_model(tmp_path, adversarial):
    """Both processes end with equal weights; only the main one writes the folder and prints. An
    adversarial step runs the model twice before its one backward pass, under DDP too."""
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent("""
        import hashlib, os, sys
        from rnncli.config import resolve
        from rnncli.train import train

        run = train(resolve(None, {"embed": 11, "hidden": 13, "layers": 2, "epochs": 2, "batch_size": 16,
                                   "device": "cpu", "out": sys.argv[1], "adversarial": float(sys.argv[2])}))
        digest = hashlib.sha256()
        for name, tensor in sorted(run.model.state_dict().items()):
            digest.update(name.encode() + tensor.numpy().tobytes())
        with open(f"digest-{os.environ['RANK']}.txt", "w") as fh:
            fh.write(f"{digest.hexdigest()} {run.best_accuracy}")
    """))
    p = run_torchrun([str(script), "model", str(adversarial)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    digests = [(tmp_path / f"digest-{r}.txt").read_text().split() for r in (0, 1)]
    assert digests[0] == digests[1]  # same weights, same reduced validation accuracy

    model = tmp_path / "model"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["model", "runs"]  # one folder
    meta = json.loads((model / checkpoint.CONFIG).read_text())
    assert meta["distributed"] == {"processes": 2, "batch_size_per_process": 16}
    records = checkpoint.read_metrics(model)
    assert [r["epoch"] for r in records if r["split"] == "validation"] == [1, 2]  # written once, not twice
    # the accuracy summed over the two shards is the accuracy of the saved model on the whole split
    whole = evaluate_folder(str(model), split="validation").metrics.accuracy
    assert whole == pytest.approx(meta["best"]["accuracy"])
    assert whole == pytest.approx(float(digests[0][1]))


def test_cli_under_torchrun_prints_once(tmp_path):
    p = run_torchrun(["-m", "rnncli", "train", "--embed", "11", "--hidden", "13", "--epochs", "1",
                      "--batch-size", "32", "--device", "cpu", "--out", "cli-model"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("best model (epoch 1") == 1
    assert (tmp_path / "cli-model" / checkpoint.WEIGHTS).is_file()


def test_existing_out_stops_every_process(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    p = run_torchrun(["-m", "rnncli", "train", "--epochs", "1", "--device", "cpu", "--out", "taken"], cwd=tmp_path)
    assert p.returncode != 0
    assert p.stderr.count("rnncli: error: taken: already exists") == 1  # said once, by the main process
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
