"""`mmsent evaluate MODEL_DIR DATA`: the report of `mmsent train` for any checkpoint on any labelled
posts (JSONL / Parquet / CSV, a file or folder, local or s3://).

    mmsent evaluate runs/demo-x/best runs/demo-x/data/test.jsonl      # reproduces metrics.json
    mmsent evaluate default /tmp/demo/posts.jsonl --group-column slice --out runs/eval-default
    mmsent evaluate runs/x/best s3://bucket/posts.parquet --label-map 0=negative 4=positive

Columns and the label map default to those the checkpoint was trained with (`mmsent train`
stores them); other checkpoints read `text`, `image`, `audio`, `label` with the model's class
names. Tabular values are read from the columns the model's tabular tower names.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..cli import add_runtime_args
from ..config import ConfigError, DataCfg, FetchCfg
from ..models.checkpoint import DEFAULT_MODEL_DIR, CheckpointError, read_meta
from ..models.runtime import load_runtime
from .labelled import fetch_media, read_posts
from .report import write_report

COLUMNS = ("text", "image", "audio", "label", "group", "id")  # --<name>-column flags


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mmsent evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("model_dir", help='checkpoint folder, or "default" for the shipped model')
    ap.add_argument("data", help="labelled posts: a file or folder, local or s3://")
    ap.add_argument("--out", help="report folder (default: runs/eval-<model>-<time>)")
    for col in COLUMNS:
        ap.add_argument(f"--{col}-column", default=None)
    ap.add_argument("--format", default="auto", choices=["auto", "jsonl", "parquet", "csv"])
    ap.add_argument("--label-map", nargs="*", default=None, metavar="RAW=CLASS")
    ap.add_argument("--limit", type=int, default=0, help="read at most this many rows per file")
    ap.add_argument("--batch-size", type=int, default=64)
    add_runtime_args(ap)
    args = ap.parse_args(argv)
    try:
        return _evaluate(args)
    except (
        ConfigError,
        CheckpointError,
        FileNotFoundError,
    ) as e:  # say what is wrong, no traceback
        print(f"mmsent evaluate: {e}", file=sys.stderr)
        return 2


def _evaluate(args) -> int:
    model_dir = DEFAULT_MODEL_DIR if args.model_dir == "default" else Path(args.model_dir)
    meta = read_meta(model_dir)
    model = load_runtime(model_dir, args.runtime, args.precision)
    labels = model.cfg.labels
    names = [f"{c}_column" for c in COLUMNS]
    columns = {**meta.get("data", {}), **{n: getattr(args, n) for n in names if getattr(args, n)}}
    label_map = {**{n: n for n in labels}, **meta.get("label_map", {})}
    if args.label_map:
        label_map.update(dict(x.split("=", 1) for x in args.label_map))
    data = DataCfg(format=args.format, limit=args.limit, **columns)
    read = read_posts(args.data, data, labels, label_map, tabular=model.cfg.tabular_columns())
    media = fetch_media(read.posts, FetchCfg(), model.cfg)
    out = Path(args.out or f"runs/eval-{model.cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    extra = {
        "checkpoint": str(model_dir),
        "runtime": {"runtime": model.runtime, "precision": model.precision},
        "data": {"path": args.data, **read.stats, **media},
    }
    history = meta.get("history") or meta.get("card", {}).get("history")
    metrics = write_report(out, model, read.posts, history, extra, args.batch_size)
    summary = {k: metrics["test"][k] for k in ("n", "accuracy", "macro_f1")}
    print(json.dumps({"report": str(out), **summary, "ablation": metrics["ablation"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
