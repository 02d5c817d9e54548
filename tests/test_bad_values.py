"""Values found by trying them as a user would: each one ends in one line on stderr, exit code 2,
no traceback, and nothing written. The CLI runs as a real process, as a user meets it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import one_line_error

from rnncli import checkpoint
from rnncli.config import from_dict, help_text
from rnncli.data import ALIASES
from rnncli.errors import RnncliError

RNNCLI = [sys.executable, "-m", "rnncli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(args, cwd, stdin=subprocess.DEVNULL, timeout=120, input=None):
    return subprocess.run([*RNNCLI, *args], cwd=cwd, env=ENV, stdin=None if input is not None else stdin,
                          input=input, capture_output=True, text=True, timeout=timeout, check=False)


PEAK = """
import atexit, sys
where = sys.argv.pop(1)
def peak():  # VmHWM: this process's own peak since exec, not the forking parent's
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    open(where, "w").write(line.split()[1])
atexit.register(peak)
from rnncli.__main__ import main
main()
"""


def run_measured(args, cwd):
    """`run`, and the command's own peak memory in MB."""
    p = subprocess.run([sys.executable, "-c", PEAK, str(cwd / "peak-kb"), *args], cwd=cwd, env=ENV,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)
    return p, int((cwd / "peak-kb").read_text()) / 1024


@pytest.mark.parametrize("flag, value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-inf"), ("--weight-decay", "nan"), ("--lr-decay", "nan"),
    ("--val-fraction", "nan"), ("--dropout", "nan"), ("--clip", "nan"), ("--word-dropout", "inf"),
    ("--label-smoothing", "nan"), ("--adversarial", "nan"), ("--adversarial", "inf"),
])
def test_non_finite_floats_are_refused_by_name_with_their_range(tmp_path, flag, value):
    line = one_line_error(run(["train", flag, value], tmp_path))
    assert f"{flag} must be a finite number" in line and value in line
    assert "loss exploded" not in line  # NaN dropout is the value's fault, not the learning rate's
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_toml_config_with_nan_is_refused_too(tmp_path):
    (tmp_path / "run.toml").write_text("[train]\nclip = nan\n")
    line = one_line_error(run(["train", "--config", "run.toml"], tmp_path))
    assert "run.toml: `clip` must be a finite number >= 0" in line


@pytest.mark.parametrize("value", ["-1", str(2**32)])
def test_a_seed_is_between_0_and_2_to_the_32(tmp_path, value):
    assert "--seed must be an integer between 0 and 4294967295" in one_line_error(
        run(["train", "--seed", value], tmp_path))


@pytest.mark.parametrize("flag, value", [("--hidden", "100000"), ("--embed", "10000000000"),
                                         ("--layers", "1000"), ("--max-length", "-5")])
def test_sizes_have_upper_and_lower_bounds(tmp_path, flag, value):
    assert f"{flag} must be an integer between" in one_line_error(run(["train", flag, value], tmp_path))


@pytest.mark.parametrize("args", [["eval", "--batch-size", "0"], ["predict", "--top-k", "0", "x"],
                                  ["train", "--lr", "fast"], ["train", "--no-such-flag"], ["no-such-command"]])
def test_usage_mistakes_are_one_line_too(tmp_path, args):
    assert one_line_error(run(args, tmp_path)).startswith("rnncli: error: ")


@pytest.mark.parametrize("args", [["--seq", "100000"], ["--hidden", "100000", "--feature", "100000"],
                                  ["--vocab", "1000000000"]])
def test_shapes_refuses_sizes_that_would_take_gigabytes(tmp_path, args):
    assert "shapes" not in one_line_error(run(["shapes", *args], tmp_path, timeout=60)).split(":")[0]


def crafted(tiny_model, tmp_path, **model):
    """A copy of a real model folder whose config.json promises other sizes than its weights hold."""
    folder = shutil.copytree(tiny_model, tmp_path / "crafted")
    meta = json.loads((folder / checkpoint.CONFIG).read_text())
    meta["config"]["model"].update(model)
    (folder / checkpoint.CONFIG).write_text(json.dumps(meta))
    return folder


def test_a_config_larger_than_its_weights_is_refused_before_anything_is_allocated(tiny_model, tmp_path):
    folder = crafted(tiny_model, tmp_path, hidden=8000)  # within --hidden's range: only the weights can tell
    with pytest.raises(RnncliError, match=r"does not match config.json: .* \(2, 13\) in the weights, \(2, 8000\)"):
        checkpoint.inspect(folder)
    start = time.monotonic()
    p, peak_mb = run_measured(["predict", "--model", str(folder), "a fine film"], tmp_path)
    seconds = time.monotonic() - start
    line = one_line_error(p)
    assert "does not match config.json" in line
    assert peak_mb < 500, f"{peak_mb:.0f} MB"  # torch alone is more: the folder is refused before it loads
    assert seconds < 60  # the unchecked folder took 11.5 minutes and 10 GB


def test_an_absurd_config_is_refused_by_its_own_range(tiny_model, tmp_path):
    folder = crafted(tiny_model, tmp_path, hidden=10**9)
    assert "`hidden` must be an integer between 1 and 8192" in one_line_error(
        run(["predict", "--model", str(folder), "a fine film"], tmp_path))
    assert "`hidden`" in one_line_error(run(["eval", "--model", str(folder)], tmp_path))


def test_an_old_model_folder_with_the_init_key_still_loads():
    assert from_dict({"model": {"init": "identity"}}).model.weight_init == "identity"


def make_unwritable(folder):
    """chmod, and for root (whom permissions do not stop) the immutable flag; None where neither holds."""
    folder.chmod(0o555)
    try:
        (folder / ".probe").touch()
    except OSError:
        return lambda: folder.chmod(0o755)
    (folder / ".probe").unlink()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode == 0:
        return lambda: (subprocess.run(["chattr", "-i", str(folder)], check=True), folder.chmod(0o755))
    folder.chmod(0o755)
    return None


def test_resume_into_a_folder_that_cannot_be_written_fails_before_reading_data(tiny_model_copy, tmp_path):
    undo = make_unwritable(tiny_model_copy)
    if undo is None:
        pytest.skip("this machine can make no folder unwritable to this user (no chmod effect, no chattr)")
    try:
        start = time.monotonic()
        line = one_line_error(run(["train", "--resume", str(tiny_model_copy)], tmp_path))
        assert time.monotonic() - start < 60
    finally:
        undo()
    assert "cannot write here" in line and "Permission" not in line.split("(")[0]


def test_zero_input_lines_give_zero_records(tiny_model, tmp_path):
    for p in (run(["predict", "--model", str(tiny_model), "--json", "-"], tmp_path),  # < /dev/null
              run(["predict", "--model", str(tiny_model), "-"], tmp_path, input="")):  # an empty pipe
        assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p.stderr
    (tmp_path / "empty.txt").write_bytes(b"")
    p = run(["predict", "--model", str(tiny_model), "--file", "empty.txt"], tmp_path)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == ""


def test_n_lines_give_n_records_blank_ones_included(tiny_model, tmp_path):
    (tmp_path / "three.txt").write_text("a fine film\n\nawful\n")
    p = run(["predict", "--model", str(tiny_model), "--file", "three.txt", "--json"], tmp_path)
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["text"] for r in records] == ["a fine film", "", "awful"]
    assert [r["empty"] for r in records] == [False, True, False]


def test_a_broken_jsonl_line_is_named_by_its_number(tmp_path):
    rows = [json.dumps({"text": f"film {i}", "label": i % 2}) for i in range(40)]
    rows[36] = '{"text": "broken, "label": 1}'
    (tmp_path / "reviews.jsonl").write_text("\n".join(rows) + "\n")
    line = one_line_error(run(["train", "--dataset", "reviews.jsonl"], tmp_path))
    assert line.startswith("rnncli: error: ") and "reviews.jsonl: line 37: Expecting" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.jsonl"]


def test_help_names_every_alias_and_shows_defaults_one_way(tmp_path):
    assert all(alias in help_text("dataset") for alias in ALIASES)
    for command in ("train", "eval", "predict", "shapes"):
        p = run([command, "--help"], tmp_path)
        text = " ".join(p.stdout.split())
        assert p.returncode == 0 and "(default:" in text and "[default:" not in text, text
    predict = " ".join(run(["predict", "--help"], tmp_path).stdout.split())
    assert "0 < threshold < 1" in predict
    train = " ".join(run(["train", "--help"], tmp_path).stdout.split())
    assert "--weight-init" in train and "Not --init-from" in help_text("weight_init")
    assert "--init " not in train  # the old spelling works but is not offered


def test_the_old_init_spelling_still_works(tmp_path):
    assert "--weight-init must be one of default, orthogonal, identity, not 'bogus'" in one_line_error(
        run(["train", "--init", "bogus"], tmp_path))


def _ctrl_c_reaches_the_child():
    """A shell that starts a job in the background (as a CI runner may) ignores SIGINT for it, and
    Python keeps an ignored SIGINT ignored; a user's terminal delivers it, so the test does too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_training(tmp_path, *extra):
    """A run long enough to be interrupted at a chosen moment: epoch 1 takes seconds."""
    return subprocess.Popen([*RNNCLI, "train", "--out", "m", "--hidden", "96", "--batch-size", "8", "--epochs", "50",
                             "--patience", "50", "--device", "cpu", *extra], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_reaches_the_child)  # noqa: PLW1509 - no threads yet


def interrupt_when(proc, seen: str | None, signum=signal.SIGINT, seconds=240.0):
    """Send `signum` once stdout shows `seen` (at once when None); return (code, stdout, stderr)."""
    out = ""
    deadline = time.monotonic() + seconds
    try:
        while seen is not None and seen not in out:
            assert proc.poll() is None and time.monotonic() < deadline, out
            out += proc.stdout.readline()
        proc.send_signal(signum)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave a training process behind
            proc.kill()
            proc.wait()
    return proc.returncode, out + rest, err


@pytest.mark.slow
def test_ctrl_c_in_the_first_moments_is_exit_130_and_nothing_saved(tmp_path):
    proc = start_training(tmp_path)
    time.sleep(0.5)  # importing the CLI, torch or datasets
    code, _, err = interrupt_when(proc, None)
    assert code == 130 and err.startswith("rnncli: interrupted") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


@pytest.mark.slow
def test_ctrl_c_before_the_first_epoch_ends_is_exit_130_and_nothing_saved(tmp_path):
    code, _, err = interrupt_when(start_training(tmp_path), "vocabulary")  # the data report is out
    assert code == 130 and "Traceback" not in err, err
    assert err.strip() == "rnncli: interrupted before the first epoch ended; no model was saved"
    assert not (tmp_path / "m").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow
def test_an_interrupt_later_keeps_the_best_model_and_says_how_to_resume(tmp_path, signum, code):
    returned, _, err = interrupt_when(start_training(tmp_path), "best", signum)  # epoch 1's line
    assert returned == code and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnncli: interrupted in epoch ")
    assert "the best model so far (epoch 1) is saved in m; continue with: rnncli train --resume m" in lines[0]
    assert checkpoint.load(tmp_path / "m").meta["best"]["epoch"] >= 1
    assert (tmp_path / "m" / checkpoint.RESUME).is_file()
