"""Data-parallel training under `torchrun`: which process this is, and the few collectives train needs.

torchrun starts one process per GPU (or per CPU group) and tells each its place through the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Without those variables rnncli runs
as one process and nothing here touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from rnncli.errors import RnncliError, first_line


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only the main process prints progress and writes the model folder."""
        return self.rank == 0


def from_env() -> Dist:
    """The place torchrun gave this process, or a single process when it was started directly."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise RnncliError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise RnncliError(f"RANK {rank} does not fit WORLD_SIZE {world}")
    return Dist(rank=rank, world=world, local_rank=local)


def device_spec(spec: str, dist: Dist) -> str:
    """Under torchrun every process takes the GPU of its local rank: `cuda` and `auto` become cuda:LOCAL_RANK."""
    if not dist.active:
        return spec
    import torch

    spec = spec.strip().lower()
    if spec.startswith("cuda:"):
        raise RnncliError(f"--device {spec} under torchrun: use --device cuda, and each process takes "
                          "the GPU of its LOCAL_RANK")
    if spec == "cuda" or (spec == "auto" and torch.cuda.is_available()):
        return f"cuda:{dist.local_rank}"
    return spec


def start(dist: Dist, device) -> None:
    """Join the process group: NCCL between GPUs, gloo between CPU processes."""
    import torch.distributed as td

    if not dist.active or td.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)  # NCCL's collectives (broadcast_object_list too) use the current GPU
    try:
        td.init_process_group(backend=backend, rank=dist.rank, world_size=dist.world)
    except (RuntimeError, ValueError) as e:
        raise RnncliError(f"cannot join the {backend} process group "
                          f"(MASTER_ADDR/MASTER_PORT from torchrun): {first_line(e, 10_000)}") from None


def stop(dist: Dist, finished: bool = True) -> None:
    """Leave the process group. After a finished run every process first waits for the others:
    one that tore its connections down while another was still writing the model folder could
    take that one down with it (gloo aborts the process: "terminate called without an active
    exception"). After an error the others may never arrive, so nobody waits."""
    import torch.distributed as td

    if dist.active and td.is_initialized():
        if finished:
            td.barrier()
        td.destroy_process_group()


def all_sum(values, dist: Dist, device) -> np.ndarray:
    """Element-wise sum of a small float64 array over every process (itself when alone)."""
    values = np.asarray(values, dtype=np.float64)
    if not dist.active:
        return values
    import torch
    import torch.distributed as td

    t = torch.from_numpy(values.copy()).to(device)
    td.all_reduce(t)
    return t.cpu().numpy()


def broadcast(obj, dist: Dist):
    """The main process's `obj` (any picklable value of our own making) on every process."""
    if not dist.active:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def raise_together(error: RnncliError | None, dist: Dist) -> None:
    """Raise on every process when the main process found a problem, so no process waits forever."""
    message = broadcast(str(error) if error is not None else None, dist)
    if message is not None:
        error = RnncliError(message)
        error.echo = not dist.main
        raise error
