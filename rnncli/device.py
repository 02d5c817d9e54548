"""Turn `--device auto|cpu|cuda|cuda:N` into a torch.device, or a one-line error."""

from __future__ import annotations

import re

from rnncli.errors import RnncliError


def resolve_device(spec: str = "auto"):
    import torch

    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not m:
        raise RnncliError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise RnncliError(f"device {spec!r} asked for, but CUDA is not available here (use --device cpu)")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise RnncliError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)
