"""The SST-2 models and texts the bench scripts share: trained once (one epoch) into a models
folder and reused from there, and the validation sentences."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RNNCLI = [sys.executable, "-m", "rnncli"]


def model(models: Path, name: str, sst2: Path, *flags: str) -> Path:
    """models/name, trained for one epoch on `sst2` with `flags` unless it is there already."""
    out = models / name
    if not (out / "model.safetensors").is_file():
        print(f"training {name} on {sst2} ...", file=sys.stderr)
        subprocess.run([*RNNCLI, "train", "--dataset", str(sst2), "--epochs", "1", "--out", str(out), *flags],
                       check=True, stdout=subprocess.DEVNULL)
    return out


def validation_texts(sst2: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [str(t) for t in pq.read_table(sst2 / "validation.parquet").column("sentence").to_pylist()]
