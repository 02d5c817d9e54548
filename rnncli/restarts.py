"""Restart an epoch whose loss exploded, from where it began, at half the learning rate.

A relu RNN read over long texts (identity W_hh, hundreds of steps) can blow up at one step of an
otherwise healthy run: one large update pushes the state's norm past where the next batch's
forward pass overflows. Stopping there throws the run away; the weights and optimizer state the
epoch began with are known good, and the same epoch at half the rate usually gets through. The
copies live on the CPU, so a CUDA run spends no device memory on them.
"""

from __future__ import annotations

import torch

from rnncli.errors import RnncliError


def _cpu_copy(value):
    """A deep copy of a state dict with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu_copy(v) for v in value)
    return value


class Restarts:
    """At most `limit` restarts in a run. `mark` at an epoch's start, `rewind` when its loss explodes."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, limit: int):
        self.model, self.optimizer, self.limit = model, optimizer, limit
        self.used = 0
        self._start: tuple[dict, dict] | None = None  # (model state, optimizer state) at the epoch's start

    def mark(self) -> None:
        """Keep the weights and optimizer state the epoch starts from (nothing once none are left)."""
        if self.used < self.limit:
            self._start = (_cpu_copy(self.model.state_dict()), _cpu_copy(self.optimizer.state_dict()))

    def rewind(self) -> bool:
        """Back to the epoch's start at half the rate; False when no restart is left."""
        if self._start is None or self.used >= self.limit:
            return False
        model_state, optimizer_state = self._start
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(_cpu_copy(optimizer_state))  # a copy: a second rewind needs the original
        self.used += 1
        return True

    @property
    def scale(self) -> float:
        """The learning rate's factor: halved by each restart so far."""
        return 0.5**self.used

    def note(self) -> str:
        """The restarts a divergence message mentions ("" when there were none)."""
        used = self.used
        return f", after {used} restart{'s' * (used != 1)} at half the rate" if used else ""

    def state(self) -> dict:
        """What `--resume` needs to go on at the same rate."""
        return {"restarts": self.used}

    def restore(self, state: dict, where) -> None:
        """The count a resumed run saved (none in a run that never restarted)."""
        used = state.get("restarts", 0)
        if not isinstance(used, int) or isinstance(used, bool) or not 0 <= used <= self.limit:
            raise RnncliError(f"{where}: its restart count {used!r} is not one this run's --restarts "
                              f"{self.limit} allows")
        self.used = used
