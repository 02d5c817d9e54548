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


def _wait_for(path, proc, seconds=180.0):
    """Wait until `path` exists: the first write's time depends on how loaded the machine is."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, "training ended before it wrote its folder"
        assert time.monotonic() < deadline, f"no folder after {seconds:.0f}s"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_no_half_folder(tmp_path):
    rng = random.Random(0)
    for attempt in range(6):
        out = tmp_path / f"m{attempt}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "rnncli", "train", "--out", str(out), "--embed", "11", "--hidden", "13",
             "--epochs", "30", "--patience", "30", "--batch-size", "8", "--device", "cpu"],
            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rewriting = attempt % 2 == 1
        if rewriting:  # while later epochs rewrite the folder
            _wait_for(out, proc)
            time.sleep(rng.uniform(0.0, 3.0))
        else:  # anywhere from start-up to the first write and beyond
            time.sleep(rng.uniform(0.5, 8.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert out.exists() or not rewriting  # once written, the folder is never taken away
        if out.exists():  # all or nothing: a folder that exists loads and predicts
            loaded = load(out)
            assert loaded.meta["best"]["epoch"] >= 1
            assert Classifier(loaded).predict(["i hate this boring movie"])[0].label in loaded.labels
        latest = tmp_path / "runs" / "latest"
        if latest.exists():
            load(latest)
