"""Labelled posts from JSONL, JSON, CSV or Parquet files (a file, a folder, a glob), local or s3://,
read by THE reader of dumps (mmsent.io.dumps: the same formats, compression, caps, error codes
and image-path rule as bulk scoring, so one file cannot be read two ways).

    rows, bases, unreadable = read_table("s3://bucket/dump/")  # records, each one's folder, codes
    read = read_posts("dump/posts.jsonl", DataCfg(label_column="stars"))   # posts (no image bytes
    read.posts, read.stats, read.labels, read.label_map                    # yet), counts, label map
    counts = fetch_images(read.posts, FetchCfg(), model_cfg)   # {"ok": 950, "image_not_found": 3}

Unreadable rows are counted (`stats["unreadable_rows"]`, and by code in `stats["unreadable"]`),
never silently lost. Image references are read through `mmsent.io.fetch` and checked with the
preprocessing path's own decoder; a row whose image cannot be used keeps its text and trains
text-only. A relative image path that leaves its data file's folder is refused
(`stats["image_errors"]`, and image_url_forbidden in the image counts). S3 settings come from the
usual AWS_* variables (pyarrow and boto3 both read them).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import NamedTuple

import numpy as np

from .. import codes
from ..config import ConfigError, DataCfg, FetchCfg, ModelCfg, ReadCfg
from ..io.dumps import list_inputs, parent, read_records, resolve_image
from ..io.fetch import fetch_many
from ..preprocess import decode_image
from .data import BUNDLED, Posts, label_key, make_label_map


def filesystem(uri: str):
    """(pyarrow filesystem, path, scheme) for a local path, file:// or a remote URI (s3://)."""
    from pyarrow import fs

    if "://" in uri and not uri.startswith("file://"):
        filesys, path = fs.FileSystem.from_uri(uri)
        return filesys, path, uri.split("://", 1)[0]
    return fs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://")), ""


def read_table(
    uri: str, fmt: str = "auto", limit: int = 0, read: ReadCfg | None = None
) -> tuple[list[dict], list[str], Counter]:
    """Records of every data file at `uri` (at most `limit` per file; 0: all), the folder (URI)
    of each record's file, and the unreadable rows by error code. A name in `data.BUNDLED` that
    is no path here reads that data set of the package (e.g. vader-ground-truth)."""
    if uri in BUNDLED and not os.path.exists(uri):
        folder, rows_of = BUNDLED[uri]
        rows = rows_of(limit=limit)
        return rows, [str(folder)] * len(rows), Counter()
    try:
        files = list_inputs(uri, fmt)
    except FileNotFoundError:
        raise FileNotFoundError(f"no data at {uri}") from None
    rows, bases, unreadable = [], [], Counter()
    for f in files:
        got = 0
        for item in read_records(f, fmt, read):
            if item.record is None:
                unreadable[item.error] += 1  # counted in the report: never silently lost
                continue
            rows.append(item.record)
            bases.append(parent(f))
            got += 1
            if limit and got >= limit:
                break
    return rows, bases, unreadable


class Read(NamedTuple):
    posts: Posts
    stats: dict  # rows read, posts kept, unreadable rows, rows skipped by reason
    labels: list[str]  # class names, in class-index order
    label_map: dict[str, str]  # raw label text -> class name


def read_posts(
    uri: str,
    cfg: DataCfg,
    labels: list[str] | None = None,
    label_map: dict[str, str] | None = None,
    model_labels: list[str] = (),
) -> Read:
    """Posts of `uri`, labels as class indices; rows without a known label are counted, not kept.

    Without `label_map`, the label map is made from this data (`data.make_label_map`).
    """
    rows, bases, unreadable = read_table(uri, cfg.format, cfg.limit, cfg.read)
    col = cfg.label_column
    if rows and not any(col in r for r in rows):
        raise ConfigError(f"{uri}: no column {col!r}; columns: {sorted(rows[0])}")
    if label_map is None:
        keys = {k for r in rows if (k := label_key(r.get(col))) is not None}
        labels, label_map = make_label_map(keys, cfg.labels, cfg.label_map, list(model_labels))
    index = {name: i for i, name in enumerate(labels)}
    keep, classes, skipped = [], [], Counter()
    for i, r in enumerate(rows):
        key = label_key(r.get(col))
        if key is None:
            skipped["label_missing"] += 1
        elif label_map.get(key) not in index:
            skipped["label_unknown"] += 1
        else:
            keep.append(i)
            classes.append(index[label_map[key]])
    group, image = cfg.group_column, cfg.image_column
    refs = [
        resolve_image(rows[i].get(image), bases[i], cfg.read) if image else (None, None, None)
        for i in keep
    ]
    posts = Posts(
        texts=[rows[i].get(cfg.text_column) for i in keep],
        labels=np.array(classes, dtype=np.int64),
        sources=[str(rows[i].get(group) or "") if group else "" for i in keep],
        image_refs=[r[0] for r in refs],
        ids=[rows[i].get(cfg.id_column, i) if cfg.id_column else i for i in keep],
    )
    for j, (_, status, _) in enumerate(refs):
        if status:  # refused when reading: fetch_images keeps it (the split files hold no ref)
            posts.image_status[j] = status
    stats = {
        "rows": len(rows) + sum(unreadable.values()),
        "posts": len(keep),
        "unreadable_rows": sum(unreadable.values()),
        "unreadable": dict(unreadable),
        "skipped": dict(skipped),
        "image_errors": dict(Counter(r[1] for r in refs if r[1])),
    }
    return Read(posts, stats, list(labels), label_map)


def fetch_images(
    posts: Posts, fetch_cfg: FetchCfg, model_cfg: ModelCfg, chunk: int = 256
) -> dict[str, int]:
    """Fill `posts.images` through the fetcher; bytes that do not decode are dropped (status kept)."""
    if model_cfg.image is None:
        posts.image_status = [
            codes.MISSING if r is None else codes.UNUSED for r in posts.image_refs
        ]
        return dict(Counter(posts.image_status))
    for start in range(0, len(posts), chunk):
        refs = posts.image_refs[start : start + chunk]
        for j, (data, status, _) in enumerate(fetch_many(refs, fetch_cfg)):
            if refs[j] is None and codes.is_error(posts.image_status[start + j]):
                continue  # refused when reading (read_posts): nothing was fetched
            if status == codes.OK:  # decode once now: a bad image then costs nothing per epoch
                _, status = decode_image(data, model_cfg.image.image_size, model_cfg.preprocess)
            posts.images[start + j] = data if status == codes.OK else None
            posts.image_status[start + j] = status
    return dict(Counter(posts.image_status))
