"""Train / validation / test splits of a run, written once into `<run>/data/` so that every worker,
a resumed run and `mmsent evaluate` read exactly the same rows.

    meta = prepare_splits(cfg, run_dir)   # {"labels", "label_map", "sizes", "stats"}
    fit_statistics(cfg, run_dir, meta)    # the tabular tower's statistics, from data/train.jsonl
    train, val, weights = worker_posts(cfg, config, session)   # one worker's share, media in

Splits not given as files (data.val, data.test) are cut from data.train, stratified by
(group, label) and seeded (data.split_seed). With data.unrelated_photos, that share of the
training posts without an image gets a bundled photo (mmsent.sample_data) drawn with the same
seed. Image and audio references are written resolved (absolute paths or URLs), the model's
tabular columns as they were read; labels as class names.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from .. import codes
from ..config import ConfigError, DataCfg, TrainRunCfg
from ..tabular import check_fitted, fit_tabular
from .data import Posts, stratified_split
from .epoch import class_weights
from .labelled import fetch_media, read_posts

SPLITS = ("train", "val", "test")


def make_splits(cfg: TrainRunCfg) -> tuple[dict[str, Posts], dict]:
    """The posts of every split (no image bytes yet) and their meta, as `prepare_splits` writes."""
    d = cfg.data
    if not d.train:
        raise ConfigError("no training data: set data.train (a file or folder, local or s3://)")
    if len(d.split) != 3 or min(d.split) < 0 or d.split[0] <= 0:
        raise ConfigError(f"data.split {d.split}: give 3 fractions (train > 0, val, test)")
    tab = cfg.model.tabular_columns()
    first = read_posts(d.train, d, model_labels=cfg.model.labels, tabular=tab)
    labels, label_map = first.labels, first.label_map
    given = {
        s: read_posts(getattr(d, s), d, labels, label_map, tabular=tab)
        for s in SPLITS[1:]
        if getattr(d, s)
    }
    fractions = dict(zip(SPLITS, d.split, strict=True))
    cut = ["train"] + [s for s in SPLITS[1:] if s not in given and fractions[s] > 0]
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
    if d.unrelated_photos:
        attach_photos(splits["train"], d.unrelated_photos, np.random.default_rng(d.split_seed))
    sizes = {s: len(splits.get(s, ())) for s in SPLITS}
    stats = {"train": first.stats, **{s: r.stats for s, r in given.items()}}
    return splits, {"labels": labels, "label_map": label_map, "sizes": sizes, "stats": stats}


def attach_photos(posts: Posts, rate: float, rng: np.random.Generator) -> None:
    """Give `rate` of the posts without an image a random bundled photo (a reference to its file)."""
    from ..sample_data import photo_files

    photos = [str(f) for f in photo_files() if _side(f) >= 128]  # as real_photos() keeps them
    for i in range(len(posts)):
        ref = photos[rng.integers(len(photos))] if rng.random() < rate else None
        if posts.image_refs[i] is None and posts.image_status[i] == codes.MISSING:
            posts.image_refs[i] = ref


def _side(path) -> int:
    try:
        with Image.open(path) as im:
            return min(im.size)
    except OSError:
        return 0


def prepare_splits(cfg: TrainRunCfg, run_dir: Path) -> dict:
    splits, meta = make_splits(cfg)
    out = run_dir / "data"
    out.mkdir(parents=True, exist_ok=True)
    empty = splits["train"].take(np.array([], dtype=np.int64))
    for s in SPLITS:
        write_posts(splits.get(s) or empty, out / f"{s}.jsonl", cfg.data, meta["labels"])
    (out / "labels.json").write_text(json.dumps(meta, indent=2) + "\n")
    k = len(meta["labels"])
    counts = {s: np.bincount(p.labels, minlength=k).tolist() for s, p in splits.items()}
    print(
        f"labels {meta['labels']}; posts per class {counts}; read {json.dumps(meta['stats'])}",
        flush=True,
    )
    return meta


def write_posts(posts: Posts, path, cfg: DataCfg, labels: list[str]) -> None:
    """The rows of a split as JSONL, in the columns of `cfg`, labels as class names."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(len(posts)):
            row = dict(posts.tabular[i] or {})  # the model's tabular columns, raw
            row.update({cfg.text_column: posts.texts[i], cfg.label_column: labels[posts.labels[i]]})
            if cfg.id_column:
                row[cfg.id_column] = posts.ids[i]
            if cfg.image_column:
                row[cfg.image_column] = posts.image_refs[i]
            if cfg.audio_column:
                row[cfg.audio_column] = posts.audio_refs[i]
            if cfg.group_column:
                row[cfg.group_column] = posts.sources[i]
            f.write(json.dumps(row, default=str) + "\n")


def split_cfg(data: DataCfg) -> DataCfg:
    """How the split files in `<run>/data/` are read: the same columns, JSONL, labels as names."""
    return dataclasses.replace(
        data, train=None, val=None, test=None, format="jsonl", limit=0, label_map=None
    )


def read_split(run_dir: Path, split: str, cfg: TrainRunCfg, meta: dict) -> Posts:
    path = str(run_dir / "data" / f"{split}.jsonl")
    tab = cfg.model.tabular_columns()
    return read_posts(
        path, split_cfg(cfg.data), meta["labels"], meta["label_map"], tabular=tab
    ).posts


def fit_statistics(cfg: TrainRunCfg, run_dir: Path, meta: dict) -> None:
    """Training-split statistics the model's config keeps (the tabular tower's mean, std and
    vocabularies: mmsent.tabular.fit_tabular), filled in before the model is built, so that every
    checkpoint carries them. A config that has them (a resumed run's config.yaml, an init_from
    checkpoint's model) keeps them: its weights were trained on that normalisation."""
    tab = cfg.model.tabular
    if tab is None:
        return
    try:
        check_fitted(tab)
    except ValueError:
        cfg.model.tabular = fit_tabular(read_split(run_dir, "train", cfg, meta).tabular, tab)


def shard(n: int, rank: int, world: int, pad: bool) -> np.ndarray:
    """Row indices of one worker; padded (DistributedSampler-style) so every shard has as many
    batches as the others: DDP workers must take the same number of steps."""
    idx = np.arange(n)
    if pad and world > 1 and n % world:
        idx = np.concatenate([idx, idx[: world - n % world]])
    return idx[rank::world]


def worker_posts(cfg: TrainRunCfg, config: dict, session):
    """This worker's share of the split files, images fetched; class weights from all of train."""
    run_dir, rank, world = Path(config["run_dir"]), session.rank, session.world
    train, val = (read_split(run_dir, s, cfg, config) for s in ("train", "val"))
    k = len(config["labels"])
    weights = class_weights(train.labels, k) if cfg.train.class_weights else None
    n_real = len(range(rank, len(train), world))  # padded rows come last in a shard
    train = train.take(shard(len(train), rank, world, pad=True))
    val = val.take(shard(len(val), rank, world, pad=False))
    fetch_media(train, cfg.fetch, cfg.model)
    fetch_media(val, cfg.fetch, cfg.model)
    media = {"images": "image_status"} | ({"audio": "audio_status"} if cfg.model.audio else {})
    for name, attr in media.items():
        counts = session.gather(
            {"train": Counter(getattr(train, attr)[:n_real]), "val": Counter(getattr(val, attr))}
        )
        if rank == 0:
            status = {s: dict(sum((c[s] for c in counts), Counter())) for s in ("train", "val")}
            (run_dir / "data" / f"{name}.json").write_text(json.dumps(status, indent=2) + "\n")
            print(
                f"{name} status (a post with a bad one trains without it): {json.dumps(status)}",
                flush=True,
            )
    return train, val, weights
