"""`mmsent train`: fine-tune the fused model on labelled posts, in one process or on Ray Train.

    mmsent train --config demo data.train=/tmp/demo/posts.jsonl train.epochs=3
    mmsent train --config mmsent/presets/train/gpu.yaml train.workers=4 train.use_gpu=true
    mmsent train --resume runs/demo-20250101-120000 train.epochs=5   # continue after the last epoch

Run folder `<out_dir>/<name>/`: config.yaml (resolved), data/ (the exact rows of each split,
label map, image statuses), checkpoints/epoch_NNN/ (+ optimiser state), best/ (the checkpoint with
the best validation macro-F1), history.json, and the report of best/ on the test split
(metrics.json, per_class.md, ablation.md, confusion.png, curves.png, samples.png).
With train.workers > 1 the same loop (worker.train_loop) runs in Ray Train's TorchTrainer; the
run folder must then be on storage every worker sees (one node, or a shared file system).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from ..config import (
    ConfigError,
    TrainRunCfg,
    apply_overrides,
    from_dict,
    read_file,
    resolve_preset,
    to_dict,
)
from ..models.checkpoint import DEFAULT_MODEL_DIR, load, read_meta
from .labelled import fetch_images, read_posts
from .report import write_report
from .splits import prepare_splits
from .state import last_checkpoint, split_cfg
from .worker import torch_threads, train_loop


def resolve(source: str, overrides: list[str]) -> tuple[TrainRunCfg, str]:
    """The typed config of a preset or file; with `init_from`, the checkpoint's model config
    is the base and the file's `model:` section overrides it key by key."""
    path = resolve_preset(source, "train")
    raw = apply_overrides(read_file(path), overrides)
    if raw.get("init_from"):
        init = DEFAULT_MODEL_DIR if raw["init_from"] == "default" else Path(raw["init_from"])
        raw["model"] = _merge(read_meta(init)["model"], raw.get("model") or {})
    return from_dict(TrainRunCfg, raw), Path(path).stem


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def new_run_dir(cfg: TrainRunCfg, stem: str) -> Path:
    if cfg.name:
        run = Path(cfg.out_dir) / cfg.name
        if run.exists() and any(run.iterdir()):
            raise SystemExit(
                f"run folder {run} exists: resume it with --resume {run}, or pick another name"
            )
        return run
    run = Path(cfg.out_dir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    while run.exists():
        run = run.with_name(run.name + "-1")
    return run


def train(cfg: TrainRunCfg, run_dir: Path, resume: bool = False) -> dict:
    """Train into `run_dir` (a fresh one, or one to resume) and write the report of best/."""
    run_dir = run_dir.resolve()
    if resume:
        meta = json.loads((run_dir / "data" / "labels.json").read_text())
    else:
        meta = prepare_splits(cfg, run_dir)
    cfg.model.labels = meta["labels"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    last = last_checkpoint(run_dir) if resume else None
    init = cfg.init_from and str(
        DEFAULT_MODEL_DIR if cfg.init_from == "default" else Path(cfg.init_from).resolve()
    )
    config = {"run_dir": str(run_dir), "cfg": to_dict(cfg), "labels": meta["labels"], "label_map": meta["label_map"],
              "init_from": init, "resume_dir": str(last) if last else None}  # fmt: skip
    with torch_threads(cfg.train.num_threads):
        if cfg.train.workers > 1:
            from .ray_train import run_ray

            run_ray(cfg, config, run_dir)
        else:
            train_loop(config)
        return finish(cfg, run_dir, meta)


def finish(cfg: TrainRunCfg, run_dir: Path, meta: dict) -> dict:
    state = json.loads((run_dir / "history.json").read_text())
    data = split_cfg(cfg.data)
    split = "test" if meta["sizes"].get("test") else "val"
    read = read_posts(
        str(run_dir / "data" / f"{split}.jsonl"), data, meta["labels"], meta["label_map"]
    )
    images = fetch_images(read.posts, cfg.fetch, cfg.model)
    model = load(run_dir / "best")
    extra = {"evaluated_on": split, "best_epoch": state["best_epoch"], "stopped_early": state.get("stopped_early", False),
             "data": {**meta["stats"], "sizes": meta["sizes"], "images": {split: images}}}  # fmt: skip
    images_file = run_dir / "data" / "images.json"
    if images_file.exists():
        extra["data"]["images"] = {**json.loads(images_file.read_text()), split: images}
    metrics = write_report(
        run_dir, model, read.posts, state["history"], extra, cfg.train.eval_batch_size
    )
    t = metrics["test"]
    print(f"{split}: macro-F1 {t['macro_f1']:.4f}, accuracy {t['accuracy']:.4f} (best epoch {state['best_epoch']}); "
          f"report in {run_dir}", flush=True)  # fmt: skip
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmsent train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="preset name in mmsent/presets/train/ or a YAML/JSON file")
    src.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run after its last saved epoch"
    )
    ap.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.epochs=5 data.train=s3://b/x"
    )
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except (
        ConfigError,
        FileNotFoundError,
    ) as e:  # a bad config, data or path: say so, no traceback
        print(f"mmsent train: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        raw = apply_overrides(read_file(run_dir / "config.yaml"), args.overrides)
        train(from_dict(TrainRunCfg, raw), run_dir, resume=True)
    else:
        cfg, stem = resolve(args.config, args.overrides)
        train(cfg, new_run_dir(cfg, stem))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
