"""`kill -9` at any moment never leaves a model folder that half-loads."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from rnncli.checkpoint import load
from rnncli.predict import Classifier

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_no_half_folder(tmp_path):
    rng = random.Random(0)
    loadable = 0
    for attempt in range(6):
        out = tmp_path / f"m{attempt}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "rnncli", "train", "--out", str(out), "--embed", "11", "--hidden", "13",
             "--epochs", "30", "--patience", "30", "--batch-size", "8", "--device", "cpu"],
            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 8.0))  # before, during and after the folder's first write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # all or nothing: a folder that exists loads and predicts
            loaded = load(out)
            assert loaded.meta["best"]["epoch"] >= 1
            assert Classifier(loaded).predict(["i hate this boring movie"])[0].label in loaded.labels
            loadable += 1
        latest = tmp_path / "runs" / "latest"
        if latest.exists():
            load(latest)
    assert loadable >= 1  # the kills did land after a folder was written at least once
