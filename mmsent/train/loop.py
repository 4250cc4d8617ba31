"""The training loop of `mmsent train`, the only one: the same function runs in one process or in
every Ray Train worker (DDP); only the session differs.

    train_loop(config, LocalSession(run_dir))    # one process (mmsent.train.trainer)
    train_loop(config, RaySession())             # each TorchTrainer worker (mmsent.train.ray_train)

Every epoch: the fusion head (with the towers that have nothing pretrained: epoch.scratch_towers)
alone for the first train.freeze_epochs, then the pretrained towers' trainable parts too ->
shuffled batches of this worker's shard of the split files -> validation on a shard, sums
all-reduced so every worker sees the same metrics (and stops at the same epoch) -> rank 0
writes `<run>/checkpoints/epoch_NNN/` (model + optimiser state) and `<run>/best/` when
validation macro-F1 improves. Shuffling and dropout are seeded by (seed, epoch, rank), so a
resumed run continues exactly where the saved epoch ended.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..config import TrainCfg, TrainRunCfg, from_dict
from ..models.model import build_model
from ..preprocess import Preprocessor
from .epoch import Amp, make_optimizer, scratch_towers, train_epoch
from .splits import worker_posts
from .state import epoch_sums, init_weights, load_state, record_epoch, restore_best, save_epoch


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


def train_loop(config: dict, session) -> None:
    cfg: TrainRunCfg = from_dict(TrainRunCfg, config["cfg"])
    with torch_threads(cfg.train.num_threads):
        _train(config, cfg, session)


def _train(config: dict, cfg: TrainRunCfg, session) -> None:
    tc, run_dir, rank = cfg.train, Path(config["run_dir"]), session.rank
    torch.manual_seed(tc.seed)
    device = session.device()
    model = build_model(cfg.model)
    if config.get("init_from") and not config.get("resume_dir"):
        init_weights(model, config["init_from"], cfg.init_exclude, log=rank == 0)
    model.to(device)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}  # after unfreezing
    pre = Preprocessor(cfg.model)
    train, val, weights = worker_posts(cfg, config, session)
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
    extra = {
        "labels": config["labels"],
        "label_map": config["label_map"],
        "data": data_columns(cfg),
    }
    net, frozen = None, None
    held = tuple(f"towers.{m}." for m in model.towers if m not in scratch_towers(model))
    for epoch in range(state["epoch"] + 1, tc.epochs + 1):
        if frozen != (epoch <= tc.freeze_epochs):  # DDP is rebuilt when trainable params change
            frozen = epoch <= tc.freeze_epochs
            for name, p in model.named_parameters():
                p.requires_grad_(name in trainable and not (frozen and name.startswith(held)))
            net = session.wrap(model)
        t0 = time.time()
        rng = np.random.default_rng([tc.seed, epoch, rank])
        torch.manual_seed(tc.seed * 100_003 + epoch * 101 + rank)
        desc = f"epoch {epoch}/{tc.epochs}"
        stats = train_epoch(
            model,
            pre,
            train,
            tc,
            opt,
            sched,
            rng,
            loss_fn,
            desc,
            net=net,
            amp=amp,
            progress=rank == 0,
        )
        sums = epoch_sums(model, pre, val, stats, weights, tc.eval_batch_size)
        info = {"phase": "head" if frozen else "all", "lr": sched.get_last_lr()[0]}
        info["seconds"] = time.time() - t0
        record = record_epoch(epoch, session.all_sum(sums, device), len(config["labels"]), **info)
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
                    f"early stop: no better validation macro-F1 in {tc.patience} epochs", flush=True
                )
            break


def _bookkeep(state: dict, record: dict, tc: TrainCfg) -> tuple[bool, bool]:
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
    names = ("text", "image", "audio", "label", "group", "id")
    return {f"{c}_column": getattr(cfg.data, f"{c}_column") for c in names}
