import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --- shared helpers for the data, training, checkpoint, evaluation, prediction and CLI tests ---

import contextlib
import os
from pathlib import Path


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine torch's thread pool
    spins against the other process and makes every step 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def inside(folder: Path):
    """Run a block with `folder` as the working directory, so training writes `runs/` there."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(before)


def write_reviews_csv(path: Path, n: int = 300, seed: int = 5) -> Path:
    """`n` generated movie reviews with string labels "neg"/"pos", in a csv with columns text,label."""
    import csv

    from rnncli.builtin import generate

    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for text, y in generate(n, seed=seed):
            writer.writerow([text, ("neg", "pos")[y]])
    return path


# Every tiny training run uses these: distinct odd sizes, and few epochs.
TINY = {"embed": 11, "hidden": 13, "epochs": 2, "batch_size": 3, "device": "cpu"}


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory) -> Path:
    return write_reviews_csv(tmp_path_factory.mktemp("data") / "reviews.csv")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, reviews_csv) -> Path:
    """One tiny model folder, trained once on `reviews_csv` and shared; tests must not change it."""
    from rnncli.config import resolve
    from rnncli.train import train

    work = tmp_path_factory.mktemp("tiny-run")
    with inside(work):
        run = train(resolve(None, {**TINY, "dataset": str(reviews_csv), "out": "tiny"}))
    return (work / run.out).resolve()


@pytest.fixture
def tiny_model_copy(tiny_model, tmp_path) -> Path:
    """A copy of the shared tiny model folder that a test may damage."""
    import shutil

    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


# 35 words + <pad> + <unk>: a vocabulary of 37, as in the model tests.
WORDS = [f"w{i}" for i in range(35)]


@pytest.fixture
def model_folder(tmp_path):
    """`make(**model options)` saves an untrained classifier as a model folder and returns
    (folder, model): loading can be tested without training."""
    from rnncli import checkpoint
    from rnncli.config import resolve
    from rnncli.model import RNNClassifier
    from rnncli.tokenizer import train_tokenizer

    def make(name="model", labels=("negative", "neutral", "positive"), **model_options):
        tokenizer = train_tokenizer([" ".join(WORDS)])
        assert tokenizer.get_vocab_size() == 37
        config = resolve(None, {"embed": 11, "hidden": 13, "dropout": 0.0, **model_options})
        torch.manual_seed(0)
        model = RNNClassifier(config.model, vocab_size=37, num_classes=len(labels)).eval()
        meta = {"format_version": checkpoint.FORMAT_VERSION, "config": config.to_dict(),
                "labels": list(labels), "vocab_size": 37}
        checkpoint.create_folder(tmp_path / name, model, tokenizer, meta, [])
        return tmp_path / name, model

    return make


def one_line_error(p, code=2) -> str:
    """The single stderr line of a refused command."""
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr + p.stdout, p.stderr
    return lines[0]


def run_without(module: str, argv: list[str]):
    """`rnncli ARGV` in a fresh interpreter that cannot import `module`, as where an extra is not
    installed; the finished process."""
    import subprocess
    import sys

    code = f"import sys; sys.modules[{module!r}] = None; from rnncli.cli import main; main({argv!r})"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                          capture_output=True, text=True, timeout=120, check=False)
