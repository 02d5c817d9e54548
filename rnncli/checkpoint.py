"""The model folder: `model.safetensors`, `config.json`, `tokenizer.json`, `metrics.jsonl`.

Only tensors and JSON, so loading a folder someone sent you never runs code from it. Every write
goes to a temporary name and is renamed into place, so a killed process never leaves a folder that
half-loads. While a run trains, its `RunFolder` is the one writer of the folder.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rnncli.config import Config, from_dict
from rnncli.errors import RnncliError, first_line

FORMAT_VERSION = 1
WEIGHTS, CONFIG, TOKENIZER, METRICS = "model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl"
RESUME = "resume.safetensors"  # only while a run is interrupted
ONNX = "model.onnx"  # written by `rnncli export`
LANGUAGE_MODEL = "language-model"  # config.json's `kind` in a folder `rnncli pretrain` wrote
MAX_VOCAB = 100_000_000  # a config.json's vocab_size beyond this is refused before anything loads


@dataclass
class Loaded:
    model: Any  # RNNClassifier, in eval mode
    tokenizer: Any  # tokenizers.Tokenizer
    config: Config
    meta: dict  # everything in config.json
    path: Path
    runtime: str = "torch"  # what runs `model`: "torch" (an RNNClassifier) or "onnx" (an OnnxModel)

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]


def atomic_write(path: Path, write) -> None:
    """`write(tmp_path)` fills a temporary file beside `path`, which then replaces `path` at once."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def save_weights(folder: Path, model) -> None:
    """New weights; an exported model.onnx of the old ones goes, so nothing answers for them."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    (folder / ONNX).unlink(missing_ok=True)


def create_folder(out: Path, model, tokenizer, meta: dict, metrics: list[dict]) -> None:
    """Write a complete folder under a temporary name, then rename it to `out` in one step."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        tokenizer.save(str(tmp / TOKENIZER))
        write_json(tmp / CONFIG, meta)
        (tmp / METRICS).write_text("".join(json.dumps(m) + "\n" for m in metrics))
        save_weights(tmp, model)
        os.rename(tmp, out)
    except BaseException:
        for p in tmp.glob("*"):
            p.unlink()
        tmp.rmdir()
        raise


def append_metrics(folder: Path, record: dict) -> None:
    with open(folder / METRICS, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def point_latest(out: Path, runs: Path = Path("runs")) -> None:
    """Make `runs/latest` a link to the newest model folder (replaced in one step)."""
    runs.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(out.resolve(), runs.resolve())
    tmp = runs / f".latest.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, runs / "latest")


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.exists():
        raise RnncliError(f"{folder}: no model here; train one with `rnncli train`")
    if not path.is_file():
        raise RnncliError(f"{path}: missing; {folder} is not a model folder (train one with `rnncli train`)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RnncliError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise RnncliError(f"{path}: not an rnncli model config (no format_version)")
    if not isinstance(meta["format_version"], int) or meta["format_version"] > FORMAT_VERSION:
        raise RnncliError(f"{path}: format version {meta['format_version']} is newer than this rnncli "
                          f"reads ({FORMAT_VERSION}); upgrade rnncli")
    for key in ("config", "vocab_size") if meta.get("kind") == LANGUAGE_MODEL else ("config", "labels", "vocab_size"):
        if key not in meta:
            raise RnncliError(f"{path}: `{key}` is missing")
    return meta


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{name: shape} from a safetensors file's header; the tensors themselves are not read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise RnncliError(f"{path}: unreadable or truncated ({first_line(e)})") from None


def inspect(folder: str | Path) -> tuple[dict, Config]:
    """config.json, checked against the shapes in the weights' header before torch is imported or
    anything allocated: a config that promises larger weights than the file holds is refused here."""
    from rnncli.layout import weight_shapes as expected_shapes

    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("kind") == LANGUAGE_MODEL:
        raise RnncliError(f"{folder}: a language model (rnncli pretrain), which predicts words, not labels; "
                          f"train a classifier from it with: rnncli train --init-from {folder}")
    path = folder / CONFIG
    config = from_dict(meta["config"], where=str(path))
    labels = meta["labels"]
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise RnncliError(f"{path}: `labels` must be a list of two or more names")
    check_shapes(folder, expected_shapes(config.model, _vocab_size(meta, path), len(labels)))
    return meta, config


def _vocab_size(meta: dict, path: Path) -> int:
    vocab = meta["vocab_size"]
    if not isinstance(vocab, int) or isinstance(vocab, bool) or not 3 <= vocab <= MAX_VOCAB:
        raise RnncliError(f"{path}: `vocab_size` must be an integer between 3 and {MAX_VOCAB:,}, not {vocab!r}")
    return vocab


def check_shapes(folder: Path, wanted: dict[str, tuple[int, ...]]) -> None:
    """The weights file holds exactly the tensors `wanted` names, of those shapes."""
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise RnncliError(f"{weights}: missing")
    found = weight_shapes(weights)
    for name in sorted(found.keys() | wanted.keys()):
        if found.get(name) != wanted.get(name):
            held = found.get(name, "absent")
            said = wanted.get(name, "no such weight")
            raise RnncliError(f"{weights}: does not match {CONFIG}: {name} is {held} in the weights, "
                              f"{said} by the config")


def inspect_lm(folder: str | Path) -> tuple[dict, Config]:
    """A language model's folder (`rnncli pretrain`), checked as `inspect` checks a classifier's."""
    from rnncli.layout import lm_weight_shapes

    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("kind") != LANGUAGE_MODEL:
        raise RnncliError(f"{folder}: a classifier, not a language model (rnncli pretrain writes those)")
    path = folder / CONFIG
    config = from_dict(meta["config"], where=str(path))
    check_shapes(folder, lm_weight_shapes(config.model, _vocab_size(meta, path)))
    return meta, config


def load_any(folder: str | Path) -> Loaded:
    """A classifier's folder or a language model's, as its config.json says, on the CPU."""
    return (load_lm if read_meta(folder).get("kind") == LANGUAGE_MODEL else load)(folder)


def _read_weights(folder: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = folder / WEIGHTS
    try:
        return load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise RnncliError(f"{weights}: unreadable or truncated ({first_line(e)})") from None


def _fill(model, state: dict, folder: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:200]
        raise RnncliError(f"{folder / WEIGHTS}: does not match {CONFIG} ({detail})") from None


def load_lm(folder: str | Path, device: str = "cpu") -> Loaded:
    """A language model from its folder, in eval mode; reads safetensors and JSON only."""
    meta, config = inspect_lm(folder)
    import torch

    from rnncli.lm import LanguageModel

    folder = Path(folder)
    model = LanguageModel(config.model, vocab_size=meta["vocab_size"])
    _fill(model, _read_weights(folder), folder)
    model.to(torch.device(device)).eval()
    return Loaded(model=model, tokenizer=folder_tokenizer(folder, meta), config=config, meta=meta, path=folder)


def load(folder: str | Path = "runs/latest", device: str = "cpu", inspected: tuple[dict, Config] | None = None
         ) -> Loaded:
    """Rebuild a trained model from its folder. Reads safetensors and JSON only; never unpickles.
    `inspected` is what `inspect(folder)` returned, when the caller checked the folder already."""
    meta, config = inspected or inspect(folder)
    import torch

    from rnncli.model import RNNClassifier

    folder = Path(folder)
    model = RNNClassifier(config.model, vocab_size=meta["vocab_size"], num_classes=len(meta["labels"]))
    _fill(model, _read_weights(folder), folder)
    tokenizer = folder_tokenizer(folder, meta)
    model.to(torch.device(device)).eval()
    return Loaded(model=model, tokenizer=tokenizer, config=config, meta=meta, path=folder)


def folder_tokenizer(folder: Path, meta: dict):
    """The folder's tokenizer.json, which must know as many words as config.json says."""
    from rnncli.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(folder / TOKENIZER)
    if tokenizer.get_vocab_size() != meta["vocab_size"]:
        raise RnncliError(f"{folder / TOKENIZER}: {tokenizer.get_vocab_size()} words, but {CONFIG} "
                          f"says {meta['vocab_size']}")
    return tokenizer


def open_model(folder: str | Path, device: str = "cpu", inspected: tuple[dict, Config] | None = None,
               runtime: str = "torch") -> Loaded:
    """The folder loaded for the runtime `--runtime auto|torch|onnx` picks (see
    `onnxmodel.resolve_runtime`): its weights in torch, or its model.onnx in onnxruntime."""
    from rnncli import onnxmodel

    if onnxmodel.resolve_runtime(runtime, folder, device) == "onnx":
        return onnxmodel.load(folder, inspected)
    from rnncli.device import resolve_device

    return load(folder, device=str(resolve_device(device)), inspected=inspected)


def save_resume(folder: Path, model, optimizer, state: dict) -> None:
    """What continuing after the last finished epoch needs, in one file replaced at once:
    the current (not best) weights, the optimizer's moments, torch's RNG state, and counters."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for i, moments in opt["state"].items():
        for name, v in moments.items():
            tensors[f"optim.{i}.{name}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt["param_groups"])}
    atomic_write(folder / RESUME, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def write_problem(folder: Path) -> str | None:
    """Why a file cannot be written in `folder` (None when it can), found by writing one:
    permissions, a read-only disk or an immutable flag all show, even for root."""
    probe = folder / f".rnncli-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        return e.strerror
    return None


def check_writable(folder: Path) -> None:
    """A folder that `--resume` will write into, tried before any data is read."""
    if not folder.is_dir():
        raise RnncliError(f"{folder}: no such model folder")
    problem = write_problem(folder)
    if problem:
        raise RnncliError(f"{folder}: cannot write here ({problem}); --resume saves into the folder")


@dataclass
class Resumed:
    """An interrupted run, as `save_resume` kept it after its last finished epoch."""
    path: Path  # its model folder
    meta: dict  # the folder's config.json
    model: dict  # the weights after that epoch (not the best ones)
    optimizer: dict  # the optimizer's state dict
    rng: Any  # torch's RNG state
    epoch: int  # the last finished epoch
    stale: int  # epochs since the best one
    best_epoch: int
    best_accuracy: float  # a classifier's; nan in a language model's
    state: dict = field(default_factory=dict)  # every counter saved, a language model's best perplexity too


def run_config(config: Config | None, resume, language_model: bool) -> tuple[Config, Resumed | None]:
    """The config a run trains with: the given one, or the interrupted run's own in folder
    `resume`, which must be a run of the same command (pretrain for a language model, else train)."""
    command, other = ("pretrain", "train") if language_model else ("train", "pretrain")
    if resume is not None and config is not None:
        raise RnncliError("resume= continues with the folder's own config; pass no config with it")
    if resume is None:
        if config is None:
            raise RnncliError(f"{command}() needs a config, or resume= a folder to continue")
        return config, None
    resumed = read_resume(Path(resume))
    if (resumed.meta.get("kind") == LANGUAGE_MODEL) != language_model:
        what = "a classifier's" if language_model else "a language model's"
        raise RnncliError(f"{resume}: {what} run; continue it with: rnncli {other} --resume {resume}")
    return from_dict(resumed.meta["config"], where=str(resumed.path / CONFIG)), resumed


def read_resume(folder: Path) -> Resumed:
    """The interrupted run in `folder`, checked writable first, since training saves into it."""
    check_writable(folder)
    meta = read_meta(folder)
    return Resumed(folder, meta, *load_resume(folder))


def load_resume(folder: Path) -> tuple:
    """(model state, optimizer state, RNG state, and the counters epoch, stale, best_epoch,
    best_accuracy) saved by `save_resume`; never unpickles."""
    from safetensors import SafetensorError, safe_open

    path = folder / RESUME
    if not path.is_file():
        raise RnncliError(f"{path}: missing; {folder} holds no interrupted training to resume")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
        state, groups = json.loads(meta["state"]), json.loads(meta["param_groups"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise RnncliError(f"{path}: unreadable or truncated ({first_line(e)})") from None
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    moments: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            moments.setdefault(int(i), {})[name] = v
    counters = (state["epoch"], state["stale"], state["best_epoch"], state.get("best_accuracy", float("nan")))
    return model_state, {"state": moments, "param_groups": groups}, tensors["rng.torch"], *counters, state


def read_metrics(folder: Path) -> list[dict]:
    path = folder / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def rewrite_metrics(folder: Path, records: list[dict]) -> None:
    atomic_write(folder / METRICS, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in records)))


def default_out(dataset: str) -> Path:
    """runs/<dataset>-<timestamp>, with a number added if that folder exists."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(dataset.rstrip("/")).name or dataset).strip("-.") or "data"
    base = Path("runs") / f"{slug}-{datetime.now():%Y%m%d-%H%M%S}"
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


def check_out(out: Path) -> None:
    """Refuse to overwrite anything, and find an unwritable place before training, not after.
    Nothing is created here: the folders appear with the first saved epoch."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RnncliError(f"{out}: already exists; choose another --out or remove it")
    base = out.parent.absolute()
    while not base.exists():  # the nearest folder that exists is where writing starts
        base = base.parent
    if not base.is_dir():
        raise RnncliError(f"{out.parent}: cannot write the model folder here ({base} is a file)")
    problem = write_problem(base)
    if problem:
        raise RnncliError(f"{out.parent}: cannot write the model folder here ({problem})")
    if out.exists():
        out.rmdir()  # an empty folder is replaced by the renamed, complete one


def new_folder_path(out: str, dataset: str) -> Path:
    """Where a new run writes: `out`, or runs/<dataset>-<timestamp>; checked before training."""
    path = Path(out) if out else default_out(dataset)
    check_out(path)
    return path


def versions(*extra: str) -> dict[str, str]:
    """Package versions (rnncli's own and `extra` ones), torch's as the build names itself
    (2.14.1+cu130, 2.13.0+cpu) where it is imported: the build, not only the release, decides
    which kernels ran."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("rnncli", "torch", "datasets", "tokenizers", "safetensors", *extra):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover
            out[pkg] = "unknown"
    torch = sys.modules.get("torch")  # not imported where model.onnx runs the model
    if torch is not None:
        out["torch"] = torch.__version__
    return out


def run_meta(config: Config, corpus, vocab_size: int, processes: int, device) -> dict:
    """config.json: what `load` needs to rebuild the model, and where and how it was trained."""
    import torch

    return {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "labels": corpus.labels,
        "vocab_size": vocab_size,
        "dataset": {"name": corpus.name, "source": corpus.source, "fingerprint": corpus.fingerprint},
        "versions": versions(),
        "distributed": {"processes": processes, "batch_size_per_process": config.train.batch_size},
        "determinism": {"device": str(device), "torch_threads": torch.get_num_threads(),
                        "deterministic": device.type == "cpu",
                        "note": "CPU runs with the same seed and threads usually repeat bit for bit; "
                                "on large data an occasional run has been seen to differ (see README); "
                                "CUDA kernels (cuDNN RNNs) may differ in the last bits."},
        "best": {},
    }


@dataclass
class RunFolder:
    """A training run's model folder and its one writer: config.json (`meta`), metrics.jsonl, the
    best weights, the resume state and the runs/latest link. Under torchrun every process holds
    one and only the main process's writes anything (`writes`)."""

    path: Path
    writes: bool = True
    meta: dict = field(default_factory=dict)
    latest: bool = True  # whether the first save points runs/latest here (a language model's does not)

    def save_best(self, model, tokenizer, record: dict, best: dict) -> None:
        """A new best epoch: its weights, its scores in config.json, and its metrics record. The
        first one creates the folder, complete, in one rename."""
        self.meta["best"] = best
        if not self.writes:
            return
        if self.path.exists():
            save_weights(self.path, model)
            write_json(self.path / CONFIG, self.meta)
            append_metrics(self.path, record)
        else:
            create_folder(self.path, model, tokenizer, self.meta, [record])
            if self.latest:
                point_latest(self.path)

    def add_record(self, record: dict) -> None:
        if self.writes:
            append_metrics(self.path, record)

    def save_resume(self, model, optimizer, epoch: int, stale: int, best_epoch: int, **counters: float) -> None:
        """`counters`: the best epoch's score (best_accuracy= for a classifier) and the run's others."""
        if self.writes:
            save_resume(self.path, model, optimizer, {"epoch": epoch, "stale": stale, "best_epoch": best_epoch,
                                                      **counters})

    def finish(self) -> None:
        """The run is over: nothing is left to resume."""
        if self.writes:
            (self.path / RESUME).unlink(missing_ok=True)

    def records_upto(self, epoch: int) -> list[dict]:
        """The validation records of epochs 1..`epoch`; later ones belong to the epoch being redone
        and are dropped from the file."""
        records = [r for r in read_metrics(self.path) if r["split"] == "validation" and r["epoch"] <= epoch]
        if self.writes:
            rewrite_metrics(self.path, records)
        return records

    def best_weights(self) -> dict:
        return load_any(self.path).model.state_dict()

    def tokenizer(self):
        from rnncli.tokenizer import load_tokenizer

        return load_tokenizer(self.path / TOKENIZER)
