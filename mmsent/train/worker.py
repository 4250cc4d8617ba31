"""The per-worker training loop of `mmsent train`: the same function runs in one process or in
every Ray Train worker (DDP), reading the split files that the trainer wrote into the run folder.

    train_loop(config)                                  # one process (LocalSession)
    TorchTrainer(train_loop, train_loop_config={**config, "ray": True}, ...)   # see trainer.py

Every epoch: shuffled batches of this worker's shard -> validation on a shard, sums all-reduced so
every worker sees the same metrics (and stops at the same epoch) -> rank 0 writes
`<run>/checkpoints/epoch_NNN/` (model + optimiser state) and `<run>/best/` when validation
macro-F1 improves. Shuffling and dropout are seeded by (seed, epoch, rank), so a resumed run
continues exactly where the saved epoch ended.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..config import TrainRunCfg, from_dict
from ..models.model import build_model
from ..preprocess import Preprocessor
from .labelled import fetch_images, read_posts
from .loop import Amp, class_weights, make_optimizer, train_epoch
from .session import LocalSession
from .state import (
    epoch_sums,
    init_weights,
    load_state,
    record_epoch,
    restore_best,
    save_epoch,
    split_cfg,
)


def shard(n: int, rank: int, world: int, pad: bool) -> np.ndarray:
    """Row indices of one worker; padded (DistributedSampler-style) so every shard has as many
    batches as the others: DDP workers must take the same number of steps."""
    idx = np.arange(n)
    if pad and world > 1 and n % world:
        idx = np.concatenate([idx, idx[: world - n % world]])
    return idx[rank::world]


@contextmanager
def torch_threads(n: int):
    """`n` torch threads for a while (0: leave as is); a one-process run gives them back after."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_loop(config: dict) -> None:
    cfg: TrainRunCfg = from_dict(TrainRunCfg, config["cfg"])
    with torch_threads(cfg.train.num_threads):
        _train(config, cfg)


def _train(config: dict, cfg: TrainRunCfg) -> None:
    if config.get("ray"):
        from .ray_train import RaySession

        session = RaySession()
    else:
        session = LocalSession(config["run_dir"])
    tc, run_dir, rank = cfg.train, Path(config["run_dir"]), session.rank
    torch.manual_seed(tc.seed)
    device = session.device()
    model = build_model(cfg.model)
    if config.get("init_from") and not config.get("resume_dir"):
        init_weights(model, config["init_from"], cfg.init_exclude, log=rank == 0)
    model.to(device)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}  # after unfreezing
    labels, pre = config["labels"], Preprocessor(cfg.model)
    train, val, weights = _shards(cfg, config, session)
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    steps = math.ceil(len(train) / tc.batch_size)
    opt, sched = make_optimizer(model, tc, tc.epochs * steps, tower_start=tc.freeze_epochs * steps)
    amp = Amp(tc.amp, device)
    state = {"epoch": 0, "history": [], "best_f1": -1.0, "best_epoch": 0, "bad_epochs": 0}
    with session.restored() as restored:
        resume = restored or config.get("resume_dir")
        if resume:
            state = load_state(model, opt, sched, amp, Path(resume))
            if rank == 0:
                restore_best(run_dir, state)
                print(f"resumed from {resume} after epoch {state['epoch']}", flush=True)
    extra = {"labels": labels, "label_map": config["label_map"], "data": data_columns(cfg)}
    net, frozen = None, None
    for epoch in range(state["epoch"] + 1, tc.epochs + 1):
        if frozen != (epoch <= tc.freeze_epochs):  # DDP is rebuilt when trainable params change
            frozen = epoch <= tc.freeze_epochs
            for name, p in model.named_parameters():
                p.requires_grad_(name in trainable and not (frozen and name.startswith("towers.")))
            net = session.wrap(model)
        t0 = time.time()
        rng = np.random.default_rng([tc.seed, epoch, rank])
        torch.manual_seed(tc.seed * 100_003 + epoch * 101 + rank)
        stats = train_epoch(model, pre, train, tc, opt, sched, rng, loss_fn, desc=f"epoch {epoch}/{tc.epochs}",
                            net=net, amp=amp, progress=rank == 0)  # fmt: skip
        sums = session.all_sum(
            epoch_sums(model, pre, val, stats, weights, tc.eval_batch_size), device
        )
        record = record_epoch(epoch, sums, len(labels), phase="head" if frozen else "all",
                              lr=sched.get_last_lr()[0], seconds=time.time() - t0)  # fmt: skip
        improved, stop = _bookkeep(state, record, tc)
        name, ckpt = f"epoch_{epoch:03d}", None
        if rank == 0:
            print(json.dumps(record), flush=True)
            extra["epoch"] = epoch
            ckpt = save_epoch(model, opt, sched, amp, state, session.checkpoint_dir(name), extra)
            if improved:
                save_epoch(model, None, None, None, state, run_dir / "best", extra)
            (run_dir / "history.json").write_text(json.dumps(state, indent=2) + "\n")
        session.report(record, ckpt, name)
        if stop:
            if rank == 0:
                print(
                    f"early stop: validation macro-F1 not better for {tc.patience} epochs",
                    flush=True,
                )
            break


def _shards(cfg: TrainRunCfg, config: dict, session):
    """This worker's share of the split files, images fetched; class weights from all of train."""
    run_dir, rank, world = Path(config["run_dir"]), session.rank, session.world
    data, labels, label_map = split_cfg(cfg.data), config["labels"], config["label_map"]
    train = read_posts(str(run_dir / "data" / "train.jsonl"), data, labels, label_map).posts
    val = read_posts(str(run_dir / "data" / "val.jsonl"), data, labels, label_map).posts
    weights = class_weights(train.labels, len(labels)) if cfg.train.class_weights else None
    n_real = len(range(rank, len(train), world))  # padded rows come last in a shard
    train, val = (
        train.take(shard(len(train), rank, world, pad=True)),
        val.take(shard(len(val), rank, world, pad=False)),
    )
    fetch_images(train, cfg.fetch, cfg.model)
    fetch_images(val, cfg.fetch, cfg.model)
    counts = session.gather(
        {"train": Counter(train.image_status[:n_real]), "val": Counter(val.image_status)}
    )
    if rank == 0:
        images = {s: dict(sum((c[s] for c in counts), Counter())) for s in ("train", "val")}
        (run_dir / "data" / "images.json").write_text(json.dumps(images, indent=2) + "\n")
        print(
            f"image status (posts with a bad image train text-only): {json.dumps(images)}",
            flush=True,
        )
    return train, val, weights


def _bookkeep(state: dict, record: dict, tc) -> tuple[bool, bool]:
    """Add the epoch to the state; (better than the best so far, stop now)."""
    state["history"].append(record)
    state["epoch"] = record["epoch"]
    improved = record["val_macro_f1"] > state["best_f1"] + tc.min_delta
    if improved:
        state.update(best_f1=record["val_macro_f1"], best_epoch=record["epoch"], bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    stop = tc.patience > 0 and state["bad_epochs"] >= tc.patience
    state["stopped_early"] = stop and record["epoch"] < tc.epochs
    return improved, stop


def data_columns(cfg: TrainRunCfg) -> dict:
    d = cfg.data
    return {"text_column": d.text_column, "image_column": d.image_column, "label_column": d.label_column,
            "group_column": d.group_column, "id_column": d.id_column}  # fmt: skip
