"""A model folder's `model.onnx`, run by onnxruntime: probabilities for texts without importing torch.

`rnncli export` writes the file and names in it the weights it was made from (their sha256), so a
file left over from other weights is refused rather than answering for them. Everything else the
folder holds (config.json, the weights' shapes, tokenizer.json) passes the same checks as for torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnncli.checkpoint import ONNX
from rnncli.errors import RnncliError, first_line
from rnncli.tokenizer import Encoded

EXTRA = 'pip install "rnncli[onnx]"'
RUNTIMES = ("auto", "torch", "onnx")
INPUTS, OUTPUTS = ["ids", "lengths"], ["logits", "probabilities"]
WEIGHTS_KEY, LABELS_KEY, QUANTIZE_KEY = "rnncli.weights_sha256", "rnncli.labels", "rnncli.quantize"


def require_onnxruntime():
    """The onnxruntime module, or a one-line error naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise RnncliError(f"the onnx runtime needs onnxruntime: {EXTRA}") from None
    return onnxruntime


def installed() -> bool:
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None


def weights_digest(path: Path) -> str:
    """sha256 of a weights file: an exported graph names the weights it was made from."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_runtime(runtime: str, folder: str | Path, device: str = "cpu") -> str:
    """"torch" or "onnx" for `--runtime auto|torch|onnx`: auto takes the folder's model.onnx when
    there is one, onnxruntime is installed and the device is the CPU (the file runs on the CPU)."""
    if runtime not in RUNTIMES:
        raise RnncliError(f"unknown runtime {runtime!r}: use {', '.join(RUNTIMES)}")
    on_cpu = device.strip().lower() == "cpu"
    if runtime == "auto":
        return "onnx" if on_cpu and (Path(folder) / ONNX).is_file() and installed() else "torch"
    if runtime == "onnx" and not on_cpu:
        raise RnncliError(f"--runtime onnx runs on the CPU; use --device cpu, or --runtime torch for {device}")
    return runtime


@dataclass
class OnnxModel:
    """An exported classifier in an onnxruntime session; `quantize` is "none" or "int8"."""

    session: object  # onnxruntime.InferenceSession
    path: Path
    quantize: str
    runtime = "onnx"

    @property
    def precision(self) -> str:
        return "fp32" if self.quantize == "none" else self.quantize

    @classmethod
    def open(cls, folder: Path, labels: list[str], weights: Path) -> OnnxModel:
        """The folder's model.onnx, refused in one line if missing, truncated, not rnncli's, or made
        from other weights than `weights`."""
        ort = require_onnxruntime()
        path = folder / ONNX
        if not path.is_file():
            raise RnncliError(f"{path}: missing; write it with `rnncli export --model {folder}`")
        limit = 2 * weights.stat().st_size + (16 << 20)  # the weights once, the graph, and room to spare
        if path.stat().st_size > limit:  # refused before onnxruntime reads a byte of it
            raise RnncliError(f"{path}: {path.stat().st_size:,} bytes, more than an export of "
                              f"{weights.name} can be ({limit:,}); export it again")
        session = _session(ort, path)
        meta = session.get_modelmeta().custom_metadata_map
        _check(path, session, meta, labels, weights)
        return cls(session=session, path=path, quantize=meta.get(QUANTIZE_KEY, "none"))

    def logits(self, enc: Encoded, batch_size: int = 128) -> np.ndarray:
        """Logits for every text, in input order: (texts, classes) float32."""
        return self._run(enc, batch_size, 0)

    def probabilities(self, enc: Encoded, batch_size: int = 128) -> np.ndarray:
        """Class probabilities for every text, in input order: (texts, classes) float32."""
        return self._run(enc, batch_size, 1)

    def _run(self, enc: Encoded, batch_size: int, output: int) -> np.ndarray:
        from rnncli.batching import sorted_padded_batches

        classes = self.session.get_outputs()[0].shape[1]
        out = np.empty((len(enc), classes), dtype=np.float32)
        for idx, ids, lengths in sorted_padded_batches(enc, batch_size):
            out[idx] = self.session.run(None, {"ids": ids, "lengths": lengths})[output]  # (batch, classes)
        return out


def _session(ort, path: Path):
    """An onnxruntime session for the file at `path`, from its bytes: a crafted file's "external
    data" can name no other file (they are looked for in an empty folder), so nothing but these
    bytes, bounded already, is read."""
    import tempfile

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    options.enable_mem_pattern = False  # it plans memory for one input shape; every batch has its own
    with tempfile.TemporaryDirectory(prefix="rnncli-no-external-data-") as empty:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
        try:
            return ort.InferenceSession(path.read_bytes(), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise RnncliError(f"{path}: unreadable or truncated ({first_line(e)})") from None


def _check(path: Path, session, meta: dict, labels: list[str], weights: Path) -> None:
    """model.onnx is rnncli's export of these weights, for these labels."""
    names = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if names != (INPUTS, OUTPUTS) or WEIGHTS_KEY not in meta:
        raise RnncliError(f"{path}: not an rnncli export (inputs {names[0]}, outputs {names[1]}); "
                          f"write it with `rnncli export`")
    if meta[WEIGHTS_KEY] != weights_digest(weights):
        raise RnncliError(f"{path}: exported from other weights than {weights.name}; export it again, "
                          f"or use --runtime torch")
    classes = session.get_outputs()[0].shape[1]
    if classes != len(labels) or meta.get(LABELS_KEY) != json.dumps(labels):
        raise RnncliError(f"{path}: its classes do not match config.json's labels; export it again")


def load(folder: str | Path, inspected=None):
    """The folder as a `checkpoint.Loaded` whose model is its model.onnx, checked as `checkpoint.load`
    checks a folder (config.json, the weights' shapes, the tokenizer), without torch."""
    from rnncli.checkpoint import WEIGHTS, Loaded, folder_tokenizer, inspect

    folder = Path(folder)
    meta, config = inspected or inspect(folder)
    model = OnnxModel.open(folder, meta["labels"], folder / WEIGHTS)
    tokenizer = folder_tokenizer(folder, meta)
    return Loaded(model=model, tokenizer=tokenizer, config=config, meta=meta, path=folder, runtime="onnx")
