"""Train / validation / test splits of a run, written once into `<run>/data/` so that every worker,
a resumed run and `mmsent evaluate` read exactly the same rows.

    meta = prepare_splits(cfg, run_dir)   # {"labels", "label_map", "sizes", "stats"}

Splits not given as files (data.val, data.test) are cut from data.train, stratified by
(group, label) and seeded (data.split_seed). Image references are written resolved (absolute
paths or URLs); labels are written as class names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import ConfigError, DataCfg, TrainRunCfg
from .data import Posts, stratified_split
from .labelled import read_posts


def prepare_splits(cfg: TrainRunCfg, run_dir: Path) -> dict:
    d = cfg.data
    if not d.train:
        raise ConfigError("no training data: set data.train (a file or folder, local or s3://)")
    if len(d.split) != 3 or min(d.split) < 0 or d.split[0] <= 0:
        raise ConfigError(f"data.split {d.split}: give 3 fractions (train > 0, val, test)")
    first = read_posts(d.train, d, model_labels=cfg.model.labels)
    labels, label_map = first.labels, first.label_map
    given = {
        s: read_posts(getattr(d, s), d, labels, label_map) for s in ("val", "test") if getattr(d, s)
    }
    fractions = dict(zip(("train", "val", "test"), d.split, strict=True))
    cut = ["train"] + [s for s in ("val", "test") if s not in given and fractions[s] > 0]
    posts = first.posts
    strata = list(zip(posts.sources, posts.labels.tolist(), strict=True))
    total = sum(fractions[c] for c in cut)
    parts = stratified_split(strata, tuple(fractions[c] / total for c in cut), d.split_seed)
    splits = {s: posts.take(idx) for s, idx in zip(cut, parts, strict=True)}
    splits.update({s: r.posts for s, r in given.items()})
    if not len(splits["train"]):
        raise ConfigError(f"no training posts with a known label in {d.train}: {first.stats}")
    if "val" not in splits:  # early stopping and best/ need a validation set
        raise ConfigError("data.split gives no validation posts and data.val is not set")
    out = run_dir / "data"
    out.mkdir(parents=True, exist_ok=True)
    for s in ("train", "val", "test"):
        write_posts(
            splits.get(s) or splits["train"].take(np.array([], dtype=np.int64)),
            out / f"{s}.jsonl",
            d,
            labels,
        )
    meta = {"labels": labels, "label_map": label_map, "sizes": {s: len(splits.get(s, ())) for s in ("train", "val", "test")},
            "stats": {"train": first.stats, **{s: r.stats for s, r in given.items()}}}  # fmt: skip
    (out / "labels.json").write_text(json.dumps(meta, indent=2) + "\n")
    counts = {s: np.bincount(p.labels, minlength=len(labels)).tolist() for s, p in splits.items()}
    print(
        f"labels {labels}; posts per class {counts}; read {json.dumps(meta['stats'])}", flush=True
    )
    return meta


def write_posts(posts: Posts, path, cfg: DataCfg, labels: list[str]) -> None:
    """The rows of a split as JSONL, in the columns of `cfg`, labels as class names."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(len(posts)):
            row = {cfg.text_column: posts.texts[i], cfg.label_column: labels[posts.labels[i]]}
            if cfg.id_column:
                row[cfg.id_column] = posts.ids[i]
            if cfg.image_column:
                row[cfg.image_column] = posts.image_refs[i]
            if cfg.group_column:
                row[cfg.group_column] = posts.sources[i]
            f.write(json.dumps(row, default=str) + "\n")
