"""Training state on disk and per-epoch sums: what `loop.train_loop` saves, restores and reduces.

An epoch checkpoint `<run>/checkpoints/epoch_NNN/` is an ordinary mmsent checkpoint
(`config.json` + `model.safetensors`, loadable by `mmsent.models.checkpoint.load`) plus
`train_state.pt` (optimiser, LR schedule, loss scaler, history, early-stopping counters).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..config import ConfigError
from ..models.checkpoint import DEFAULT_MODEL_DIR, save
from ..models.model import MultimodalClassifier
from .batches import predict_posts
from .epoch import EpochStats
from .metrics import confusion, report_from_confusion

TRAIN_STATE = "train_state.pt"


def init_weights(
    model: MultimodalClassifier, path: str, exclude: list[str] = (), log: bool = True
) -> None:
    """Start from a checkpoint's weights wherever names and shapes match (a new head or new labels
    start fresh), except names starting with an `exclude` prefix; weights taken into a tower
    count as trained, so checkpoints store them."""
    path = DEFAULT_MODEL_DIR if path == "default" else Path(path)
    state, own = load_file(str(Path(path) / "model.safetensors")), model.state_dict()
    fit = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and not any(k.startswith(p) for p in exclude)
    }
    model.load_state_dict(fit, strict=False)
    for m, tower in model.towers.items():
        tower.trained_keys |= {
            k[len(f"towers.{m}.") :] for k in fit if k.startswith(f"towers.{m}.")
        }
    if log:
        print(
            f"init_from {path}: {len(fit)} tensors loaded, {len(state) - len(fit)} left out "
            f"(excluded, or names or shapes differ)",
            flush=True,
        )


def save_epoch(model, opt, sched, amp, state: dict, path: Path, extra: dict) -> Path:
    """Write a checkpoint next to its final place, then swap it in (a crash leaves the old one)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    history = state["history"]
    save(model, tmp, extra={**extra, "val": history[-1] if history else None, "history": history})
    if opt is not None:
        torch.save(
            {
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": amp.scaler.state_dict(),
                "state": state,
            },
            tmp / TRAIN_STATE,
        )
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def load_state(model, opt, sched, amp, path: Path) -> dict:
    weights = load_file(str(path / "model.safetensors"))
    unexpected = set(weights) - set(model.state_dict())
    if unexpected:
        raise ConfigError(f"{path}: weights do not match the model: {sorted(unexpected)[:5]}")
    model.load_state_dict(weights, strict=False)
    saved = torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=True)
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    amp.scaler.load_state_dict(saved["scaler"])
    return saved["state"]


def restore_best(run_dir: Path, state: dict) -> None:
    """best/ as the state says (a run stopped between writing an epoch and best/ may lack it)."""
    best, src = run_dir / "best", run_dir / "checkpoints" / f"epoch_{state['best_epoch']:03d}"
    meta = best / "config.json"
    if state["best_epoch"] and (
        not meta.exists() or json.loads(meta.read_text()).get("epoch") != state["best_epoch"]
    ):
        tmp = best.with_name("best.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(TRAIN_STATE))
        shutil.rmtree(best, ignore_errors=True)
        tmp.rename(best)


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete epoch checkpoint (`epoch_NNN.tmp` is one a crash left half-written)."""
    done = [p.parent for p in (run_dir / "checkpoints").glob(f"epoch_*/{TRAIN_STATE}")]
    done = [d for d in done if re.fullmatch(r"epoch_\d+", d.name)]
    return max(done, key=lambda d: int(d.name[6:])) if done else None


def epoch_sums(
    model, pre, val, stats: EpochStats, weights: torch.Tensor | None, batch_size: int
) -> list[float]:
    """Train sums and validation sums (loss weighted as in training, confusion) of one worker."""
    k = len(model.cfg.labels)
    if len(val):
        probs, _ = predict_posts(model, pre, val, batch_size)
        w = np.ones(len(val)) if weights is None else weights.numpy()[val.labels]
        nll = -np.log(np.clip(probs[np.arange(len(val)), val.labels], 1e-12, None))
        val_sums, m = (
            [float((w * nll).sum()), float(w.sum())],
            confusion(val.labels, probs.argmax(1), k),
        )
    else:
        val_sums, m = [0.0, 0.0], np.zeros((k, k), dtype=np.int64)
    return [stats.loss_sum, stats.correct, stats.n, *val_sums, *m.ravel().tolist()]


def record_epoch(epoch: int, sums: list[float], k: int, **info) -> dict:
    """One line of the history, from sums all-reduced over the workers."""
    r = report_from_confusion(
        np.round(np.array(sums[5:]).reshape(k, k)).astype(np.int64), [str(i) for i in range(k)]
    )
    return {
        "epoch": epoch,
        "train_loss": round(sums[0] / max(sums[2], 1), 5),
        "train_accuracy": round(sums[1] / max(sums[2], 1), 5),
        "val_loss": round(sums[3] / max(sums[4], 1e-12), 5),
        "val_accuracy": round(r["accuracy"], 5),
        "val_macro_f1": round(r["macro_f1"], 5),
        **{k: round(v, 6) if isinstance(v, float) else v for k, v in info.items()},
    }
