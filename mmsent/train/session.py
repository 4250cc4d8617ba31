"""What differs between a one-process run and a Ray Train worker; the loop sees only this.

    session = LocalSession(run_dir)   # one process: checkpoints go straight into the run folder
    session = RaySession()            # in TorchTrainer (mmsent.train.ray_train): DDP, all-reduce,
                                      # ray.train.report

Both end with `<run>/checkpoints/epoch_NNN/`: Ray Train persists every reported checkpoint to
`RunConfig(storage_path=<run folder>, name="checkpoints")` under the name it is given.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..models.checkpoint import pick_device

CHECKPOINTS = "checkpoints"


class LocalSession:
    rank, world = 0, 1

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def device(self) -> torch.device:
        return pick_device()

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        return list(values)

    def gather(self, obj) -> list:
        return [obj]

    def checkpoint_dir(self, name: str) -> Path:
        """Where rank 0 writes this epoch's checkpoint before `report`."""
        return self.run_dir / CHECKPOINTS / name

    def report(self, metrics: dict, ckpt: Path | None, name: str) -> None:
        pass  # already in place

    @contextmanager
    def restored(self):
        """A checkpoint the framework itself kept for a restart (none without Ray)."""
        yield None
