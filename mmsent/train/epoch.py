"""One epoch of training: AdamW with warm-up and linear decay, class weights, modality dropout,
gradient clipping, mixed precision on CUDA, a progress bar. `mmsent.train.loop` calls
`train_epoch` once per epoch, in one process or in every Ray Train worker.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import MODALITIES, TrainCfg
from ..models.model import MultimodalClassifier
from ..preprocess import Preprocessor, to_tensors
from .batches import batches
from .data import Posts


def make_optimizer(
    model: MultimodalClassifier, cfg: TrainCfg, total_steps: int, tower_start: int = 0
):
    """AdamW over the trainable parameters; linear warm-up then linear decay to 0 at `total_steps`.

    Towers unfrozen later (`tower_start`: the first step they train) warm up from that step.
    Towers with nothing pretrained train with the head, at its rate (`scratch_towers`).
    """
    scratch = scratch_towers(model)
    tower_params, head_params = [], [p for p in model.head.parameters() if p.requires_grad]
    for m, tower in model.towers.items():
        (head_params if m in scratch else tower_params).extend(
            p for p in tower.parameters() if p.requires_grad
        )
    groups = [{"params": head_params, "lr": cfg.head_lr}]
    if tower_params:
        groups.append({"params": tower_params, "lr": cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)

    def schedule(start: int) -> Callable[[int], float]:
        warm = max(1, int(cfg.warmup_ratio * (total_steps - start)))

        def factor(step: int) -> float:
            if step < start + warm:
                return max(0, step - start + 1) / warm
            return max(0.0, (total_steps - step) / max(1, total_steps - start - warm))

        return factor

    lambdas = [schedule(0), schedule(tower_start)][: len(groups)]
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambdas)


def scratch_towers(model: MultimodalClassifier) -> set[str]:
    """Towers with no pretrained weights (tabular_mlp, audio_cnn): they train like the head, from
    the first epoch at head_lr. Freezing protects pretrained features from a fresh head's first
    gradients; a tower trained from scratch has none, and frozen it would feed the head noise."""
    return {m for m, tower in model.towers.items() if not tower.base_keys}


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=k).astype(float)
    return torch.tensor(len(labels) / (k * np.maximum(counts, 1.0)), dtype=torch.float32)


def modality_dropout(
    batch: dict[str, torch.Tensor], p: float, gen: torch.Generator
) -> dict[str, torch.Tensor] | None:
    """Hide one of the modalities of posts that have two or more, at rate p (which one: uniform
    over those present), so the model learns to decide without each."""
    names = [m for m in MODALITIES if f"has_{m}" in batch]
    if p <= 0 or len(names) < 2:
        return None
    present = torch.stack([batch[f"has_{m}"].bool() for m in names], 1)  # (B, M)
    n = present.sum(1)
    hit = (n >= 2) & (torch.rand(n.shape, generator=gen) < p).to(n.device)
    # the k-th present modality, k uniform in 0..n-1 (with text and image: the same draws as ever)
    k = (torch.rand(n.shape, generator=gen).to(n.device) * n).long()
    which = (present.cumsum(1) == (k + 1)[:, None]) & present  # (B, M): one True per post
    return {m: hit & which[:, j] for j, m in enumerate(names)}


class Amp:
    """Mixed precision where CUDA exists (bf16 autocast, else fp16 with loss scaling); off on CPU."""

    def __init__(self, enabled: bool, device: torch.device):
        self.on = enabled and device.type == "cuda"
        bf16 = self.on and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.on and not bf16)

    def autocast(self):
        return torch.autocast("cuda", dtype=self.dtype) if self.on else contextlib.nullcontext()


@dataclass
class EpochStats:
    loss_sum: float = 0.0  # summed over posts: all-reduced as is by multi-worker training
    correct: int = 0
    n: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.n, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.n, 1)


def train_epoch(
    model: MultimodalClassifier,
    pre: Preprocessor,
    posts: Posts,
    cfg: TrainCfg,
    opt,
    sched,
    rng: np.random.Generator,
    loss_fn: nn.Module,
    desc: str = "train",
    *,
    net: nn.Module | None = None,
    amp: Amp | None = None,
    progress: bool = True,
) -> EpochStats:
    """One pass over `posts`. `net`: what runs the batches (a DDP wrapper of `model`, or `model`)."""
    net = net or model
    net.train()
    amp = amp or Amp(False, model.device)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    stats = EpochStats()
    steps = math.ceil(len(posts) / cfg.batch_size)
    bar = tqdm(
        batches(posts, pre, cfg.batch_size, rng, cfg.length_buckets),
        total=steps,
        desc=desc,
        mininterval=5,
        disable=not progress,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    for batch, labels in bar:
        t = to_tensors(batch, model.device)
        y = torch.from_numpy(labels).to(model.device)
        with amp.autocast():
            out = net(t, drop=modality_dropout(t, model.cfg.fusion.modality_dropout, gen))
            loss = loss_fn(out.logits.float(), y)
        opt.zero_grad(set_to_none=True)
        amp.scaler.scale(loss).backward()
        amp.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        amp.scaler.step(opt)
        amp.scaler.update()
        sched.step()
        stats.loss_sum += loss.item() * len(labels)
        stats.correct += int((out.logits.argmax(1) == y).sum())
        stats.n += len(labels)
        bar.set_postfix(loss=f"{stats.loss:.4f}", acc=f"{stats.accuracy:.3f}", refresh=False)
    return stats
