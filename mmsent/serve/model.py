"""`SentimentModel`: the model deployment (CPU or a GPU fraction). `@serve.batch` gathers posts
across requests into one `ModelRunner` forward pass; the batching knobs are its `user_config`
(mmsent.config.ServeBatchCfg), applied in place by `reconfigure`. Options here are defaults that a
Serve config's `deployments:` entry overrides (mmsent/presets/serve/default.yaml).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import numpy as np
import torch
from pydantic import TypeAdapter
from ray import serve

from ..boundary import concat_columns
from ..config import ServeBatchCfg
from ..predictor import ModelRunner
from .loopback import keep_replica_grpc_on_loopback
from .metrics import ModelMetrics

BACKPRESSURE = {"status_code": 503, "retry_after_s": 1}


def num_rows(batch: dict[str, np.ndarray]) -> int:
    return len(batch["text_status"])


def total_rows(batches: list[dict[str, np.ndarray]]) -> int:
    return sum(num_rows(b) for b in batches)


@serve.deployment(
    max_ongoing_requests=64,
    max_queued_requests=256,
    backpressure_config=BACKPRESSURE,
    user_config={"max_batch_size": 32, "batch_wait_timeout_s": 0.01},
    ray_actor_options={"num_cpus": 1},
)
class SentimentModel:
    def __init__(
        self, model_dir: str | None = None, runtime: str = "torch", precision: str = "auto"
    ):
        keep_replica_grpc_on_loopback()
        # loads the checkpoint once per replica (runtime onnx: its export, built on first use)
        self.runner = ModelRunner(model_dir, runtime=runtime, precision=precision)
        self.meta = self.runner.meta
        self.batching = ServeBatchCfg()
        self.metrics = ModelMetrics()
        self.stats = {
            "pid": os.getpid(),
            "started": time.time(),
            "pings": 0,
            "device": str(self.runner.device),
            "runtime": self.runner.model.runtime,
            "precision": self.runner.model.precision,
            "torch_threads": torch.get_num_threads(),
        }

    def reconfigure(self, user_config: dict) -> None:
        """Applied at start and on every user_config change, without restarting the replica."""
        self.batching = TypeAdapter(ServeBatchCfg).validate_python(user_config)
        self._batched.set_max_batch_size(self.batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.batching.batch_wait_timeout_s)
        self.stats.update(batches=0, posts=0, largest_batch=0)  # counts since this config

    async def predict(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Preprocessed posts of one request (`pack_batch`: rows stay packed until the runner
        unpacks the merged batch) -> output columns; long ones go in slices."""
        n, size = num_rows(batch), self.batching.max_batch_size
        parts = [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, n, size)]
        return concat_columns(await asyncio.gather(*(self._batched(p) for p in parts)))

    # An item is one request's posts; batch_size_fn counts posts, so a batch holds at most
    # max_batch_size posts whatever the mix of single and list requests.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, batch_size_fn=total_rows)
    async def _batched(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        merged, start = concat_columns(items), time.perf_counter()
        # On this (user-code) event loop, not in a thread: a forward pass in a thread holds the GIL
        # for most of its small ops, starving the loop that takes in requests, so batches stayed
        # ~2 posts at concurrency 32 (bench/serve.py). Blocked, the replica's own loop keeps
        # queueing requests, and the next batch starts full.
        out = self.runner(merged)
        n = num_rows(merged)
        self.metrics.batch_size.observe(n)
        self.metrics.batch_latency.observe((time.perf_counter() - start) * 1000)
        self.stats.update(
            batches=self.stats["batches"] + 1,
            posts=self.stats["posts"] + n,
            largest_batch=max(self.stats["largest_batch"], n),
        )
        bounds = np.cumsum([0] + [num_rows(b) for b in items])
        return [
            {k: v[lo:hi] for k, v in out.items()}
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def ping(self) -> dict:
        """The ingress's health check (cached there: `pings` counts what reaches the model)."""
        self.stats["pings"] += 1
        return self._ref()

    def _ref(self) -> dict:
        return {"name": self.runner.cfg.name, "version": self.runner.cfg.version}

    def card(self) -> dict:
        cfg = self.runner.cfg
        return {
            **self._ref(),
            "labels": cfg.labels,
            "modalities": cfg.modalities(),
            "description": cfg.description,
            "card": self.meta.get("card", {}),
            "batching": {**dataclasses.asdict(self.batching), "replica": dict(self.stats)},
        }
