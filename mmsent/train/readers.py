"""Labelled posts from JSONL, Parquet or CSV files (a file or a folder of them), local or s3://.

    rows, bases, bad = read_table("s3://bucket/dump/")   # dicts, the folder of each row's file, bad lines
    read = read_posts("dump/posts.jsonl", DataCfg(label_column="stars"))   # posts (no image bytes
    read.posts, read.stats, read.labels, read.label_map                    # yet), counts, label map
    counts = fetch_images(read.posts, FetchCfg(), model_cfg)   # {"ok": 950, "image_not_found": 3}

Image references are read through `mmsent.io.fetch` and checked with the preprocessing path's own
decoder; a row whose image cannot be used keeps its text and trains text-only. S3 settings come
from the usual AWS_* variables (pyarrow and boto3 both read them).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from typing import NamedTuple

import numpy as np

from .. import schema as S
from ..config import ConfigError, DataCfg, FetchCfg, ModelCfg
from ..io.fetch import fetch_many
from ..preprocess import decode_image
from .data import Posts, label_key, make_label_map

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
            ".pq": "parquet", ".csv": "csv"}  # fmt: skip


def filesystem(uri: str):
    """(pyarrow filesystem, path, scheme) for a local path, file:// or a remote URI (s3://)."""
    from pyarrow import fs

    if "://" in uri and not uri.startswith("file://"):
        filesys, path = fs.FileSystem.from_uri(uri)
        return filesys, path, uri.split("://", 1)[0]
    return fs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://")), ""


def file_format(path: str, fmt: str) -> str | None:
    name = path.lower().removesuffix(".gz")
    return fmt if fmt != "auto" else SUFFIXES.get(os.path.splitext(name)[1])


def read_table(uri: str, fmt: str = "auto", limit: int = 0) -> tuple[list[dict], list[str], int]:
    """Rows of every data file at `uri`, the folder (URI) of each row's file, unreadable lines."""
    from pyarrow import fs

    filesys, path, scheme = filesystem(uri)
    info = filesys.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"no data at {uri}")
    files = [path]
    if info.type == fs.FileType.Directory:
        found = filesys.get_file_info(fs.FileSelector(path, recursive=True))
        files = sorted(
            f.path for f in found if f.type == fs.FileType.File and file_format(f.path, fmt)
        )
    rows, bases, bad = [], [], 0
    for f in files:
        kind = file_format(f, fmt)
        if kind is None:
            raise ConfigError(f"{f}: unknown data format; set data.format to jsonl, parquet or csv")
        got, n_bad = _read_file(filesys, f, kind, limit)
        folder = os.path.dirname(f)
        rows += got
        bases += [f"{scheme}://{folder}" if scheme else folder] * len(got)
        bad += n_bad
    return rows, bases, bad


def _read_file(filesys, path: str, kind: str, limit: int) -> tuple[list[dict], int]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, filesystem=filesys)
        return table.slice(0, limit or None).to_pylist(), 0
    with filesys.open_input_stream(path, compression="detect") as f:
        text = f.read().decode("utf-8", errors="replace")
    if kind == "csv":
        rows = [
            {k: (v if v != "" else None) for k, v in r.items()}
            for r in csv.DictReader(io.StringIO(text))
        ]
        return rows[: limit or None], 0
    if text.lstrip().startswith("["):  # a .json file holding one array of records
        try:
            records = json.loads(text)
            return [r for r in records if isinstance(r, dict)][: limit or None], sum(
                not isinstance(r, dict) for r in records
            )
        except ValueError:
            pass
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1  # counted in the report: a broken line is never silently lost
        if limit and len(rows) >= limit:
            break
    return rows, bad


def resolve_ref(ref, base: str):
    """An image reference relative to its data file's folder -> a path or URL that fetch reads."""
    if not isinstance(ref, str) or not ref.strip() or "://" in ref or os.path.isabs(ref):
        return ref
    return f"{base.rstrip('/')}/{ref}"


class Read(NamedTuple):
    posts: Posts
    stats: dict  # rows read, posts kept, unreadable rows, rows skipped by reason
    labels: list[str]  # class names, in class-index order
    label_map: dict[str, str]  # raw label text -> class name


def read_posts(uri: str, cfg: DataCfg, labels: list[str] | None = None,
               label_map: dict[str, str] | None = None, model_labels: list[str] = ()) -> Read:  # fmt: skip
    """Posts of `uri`, labels as class indices; rows without a known label are counted, not kept.

    Without `label_map`, the label map is made from this data (`data.make_label_map`).
    """
    rows, bases, bad = read_table(uri, cfg.format, cfg.limit)
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
    posts = Posts(
        texts=[rows[i].get(cfg.text_column) for i in keep],
        labels=np.array(classes, dtype=np.int64),
        sources=[str(rows[i].get(group) or "") if group else "" for i in keep],
        image_refs=[resolve_ref(rows[i].get(image), bases[i]) if image else None for i in keep],
        ids=[rows[i].get(cfg.id_column, i) if cfg.id_column else i for i in keep],
    )
    stats = {"rows": len(rows) + bad, "posts": len(keep), "unreadable_rows": bad,
             "skipped": dict(skipped)}  # fmt: skip
    return Read(posts, stats, list(labels), label_map)


def fetch_images(
    posts: Posts, fetch_cfg: FetchCfg, model_cfg: ModelCfg, chunk: int = 256
) -> dict[str, int]:
    """Fill `posts.images` through the fetcher; bytes that do not decode are dropped (status kept)."""
    if model_cfg.image is None:
        posts.image_status = [S.MISSING if r is None else S.UNUSED for r in posts.image_refs]
        return dict(Counter(posts.image_status))
    for start in range(0, len(posts), chunk):
        refs = posts.image_refs[start : start + chunk]
        for j, (data, status, _) in enumerate(fetch_many(refs, fetch_cfg)):
            if status == S.OK:  # decode once now: a bad image then costs nothing per epoch
                _, status = decode_image(data, model_cfg.image.image_size, model_cfg.preprocess)
            posts.images[start + j] = data if status == S.OK else None
            posts.image_status[start + j] = status
    return dict(Counter(posts.image_status))
