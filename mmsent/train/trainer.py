"""`mmsent train`: fine-tune the fused model on labelled posts, in one process or on Ray Train.

    mmsent train --config default                  # rebuild the shipped default model
    mmsent train --config demo data.train=/tmp/demo/posts.jsonl train.epochs=3
    mmsent train --config demo-multimodal           # text, image, tabular and audio towers
    mmsent train --config mmsent/presets/train/gpu.yaml train.workers=4 train.use_gpu=true
    mmsent train --resume runs/demo-20250101-120000 train.epochs=5   # continue after the last epoch

Run folder `<out_dir>/<name>/`: config.yaml (resolved; the tabular tower's statistics of the
training split filled in), data/ (the exact rows of each split, label map, image and audio
statuses), checkpoints/epoch_NNN/ (+ optimiser state), best/ (the checkpoint with the best
validation macro-F1), history.json, and the report of best/ on the test split (metrics.json,
per_class.md, ablation.md, confusion.png, curves.png, samples.png), then the preset's
evaluation steps and export (mmsent.train.finish). With train.workers > 1 the one loop
(mmsent.train.loop) runs in Ray Train's TorchTrainer; the run folder must then be on storage
every worker sees (one node, or a shared file system).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from ..config import ConfigError, TrainRunCfg, apply_overrides, from_dict, read_file, to_dict
from ..models.checkpoint import DEFAULT_MODEL_DIR
from .finish import check_evals, finish
from .loop import torch_threads, train_loop
from .run import new_run_dir, resolve
from .session import LocalSession
from .splits import fit_statistics, prepare_splits
from .state import last_checkpoint


def train(cfg: TrainRunCfg, run_dir: Path, resume: bool = False) -> dict:
    """Train into `run_dir` (a fresh one, or one to resume), then report, evaluate and export."""
    check_evals(cfg)
    run_dir = run_dir.resolve()
    if resume:
        meta = json.loads((run_dir / "data" / "labels.json").read_text())
    else:
        meta = prepare_splits(cfg, run_dir)
    cfg.model.labels = meta["labels"]
    fit_statistics(cfg, run_dir, meta)  # before any model is built: every checkpoint holds them
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    last = last_checkpoint(run_dir) if resume else None
    init = cfg.init_from and str(
        DEFAULT_MODEL_DIR if cfg.init_from == "default" else Path(cfg.init_from).resolve()
    )
    config = {
        "run_dir": str(run_dir),
        "cfg": to_dict(cfg),
        "labels": meta["labels"],
        "label_map": meta["label_map"],
        "init_from": init,
        "resume_dir": str(last) if last else None,
    }
    with torch_threads(cfg.train.num_threads):
        if cfg.train.workers > 1:
            from .ray_train import run_ray

            run_ray(cfg, config, run_dir)
        else:
            train_loop(config, LocalSession(run_dir))
        return finish(cfg, run_dir, meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mmsent train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    except (ConfigError, FileNotFoundError) as e:  # a bad config, data or path: no traceback
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
