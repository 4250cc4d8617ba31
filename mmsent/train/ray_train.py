"""Ray Train for `mmsent train` (train.workers > 1): the launcher and the worker-side session.
Every Ray Train call of mmsent is in this file (Ray 2.60, Train V2 API).

    run_ray(cfg, loop_config, run_dir)   # TorchTrainer(ray_worker, ...).fit()

Each worker runs the one loop, `mmsent.train.loop.train_loop`, with a `RaySession`: the model wrapped by
`prepare_model` (DDP), sums all-reduced, objects gathered, each epoch reported with
`ray.train.report(metrics, checkpoint, checkpoint_dir_name="epoch_NNN")` (rank 0 alone passes a
checkpoint; every rank calls report, it is a barrier), `ray.train.get_checkpoint()` after a
worker failure (FailureConfig.max_failures).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..config import TrainRunCfg
from .loop import train_loop


def run_ray(cfg: TrainRunCfg, config: dict, run_dir: Path) -> None:
    # before Ray starts: a local head listens on 127.0.0.1 only
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tc, started = cfg.train, not ray.is_initialized()
    if started:
        ray.init(
            address=tc.ray_address or os.environ.get("RAY_ADDRESS") or "local",
            include_dashboard=False,
        )
    try:
        per_worker = {"CPU": tc.cpus_per_worker}  # use_gpu adds one GPU per worker
        scaling = ScalingConfig(
            num_workers=tc.workers, use_gpu=tc.use_gpu, resources_per_worker=per_worker
        )
        # checkpoints land in <run>/checkpoints/epoch_NNN, as in a one-process run
        failures = FailureConfig(max_failures=tc.max_failures)
        run = RunConfig(storage_path=str(run_dir), name="checkpoints", failure_config=failures)
        trainer = TorchTrainer(
            ray_worker, train_loop_config=config, scaling_config=scaling, run_config=run
        )
        trainer.fit()
    finally:
        if started:
            ray.shutdown()


def ray_worker(config: dict) -> None:
    """What every TorchTrainer worker runs: the one loop, with the Ray Train session."""
    train_loop(config, RaySession())


class RaySession:
    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def device(self) -> torch.device:
        """Whether there is a GPU comes from torch (Ray may count pretend GPUs); which one from
        Ray Train: workers of a node all see the node's GPUs, and each takes its local rank's."""
        if not torch.cuda.is_available():
            return torch.device("cpu")
        from ray.train.torch import get_device

        return get_device()

    def wrap(self, model: nn.Module) -> nn.Module:
        from ray.train.torch import prepare_model

        # the model is already on self.device(); a post without an image leaves the image path
        # of the head unused in that batch, hence find_unused_parameters
        kwargs = {"find_unused_parameters": True}
        return prepare_model(model, move_to_device=False, parallel_strategy_kwargs=kwargs)

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def checkpoint_dir(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"mmsent-{name}-"))

    def report(self, metrics: dict, ckpt: Path | None, name: str) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(ckpt)) if ckpt else None
        # every worker calls report once per epoch (it is a barrier); only rank 0 has a checkpoint
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name if ckpt else None)
        if ckpt:
            shutil.rmtree(ckpt, ignore_errors=True)

    @contextmanager
    def restored(self):
        import ray.train

        ckpt = ray.train.get_checkpoint()  # set after a worker failure (FailureConfig.max_failures)
        if ckpt is None:
            yield None
        else:
            with ckpt.as_directory() as d:
                yield Path(d)
