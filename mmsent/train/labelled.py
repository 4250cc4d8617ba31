"""Labelled posts from JSONL, JSON, CSV or Parquet files (a file, a folder, a glob), local or s3://,
read by THE reader of dumps (mmsent.io.dumps: the same formats, compression, caps, error codes
and image-path rule as bulk scoring, so one file cannot be read two ways).

    rows, bases, unreadable = read_table("s3://bucket/dump/")  # records, each one's folder, codes
    read = read_posts("dump/posts.jsonl", DataCfg(label_column="stars"),
                      tabular=model_cfg.tabular_columns())      # posts (no image or audio bytes
    read.posts, read.stats, read.labels, read.label_map        # yet), counts, label map
    counts = fetch_media(read.posts, FetchCfg(), model_cfg)    # {"images": {"ok": 950, ...},
                                                               #  "audio": {"audio_not_found": 2, ...}}

Unreadable rows are counted (`stats["unreadable_rows"]`, and by code in `stats["unreadable"]`),
never silently lost. Image and audio references (`data.image_column`, `data.audio_column`) are
read through `mmsent.io.fetch` (its codes as audio_* for clips: `codes.fetch_code`) and checked
with the preprocessing path's own decoders; a post whose image or clip cannot be used keeps its
other modalities and trains on those. A relative path that leaves its data file's folder is
refused (`stats["image_errors"]`, `stats["audio_errors"]`, and image_url_forbidden /
audio_url_forbidden in the counts). Tabular values are the columns the model's tabular tower
names, kept raw per post (mmsent.tabular encodes them). S3 settings come from the usual AWS_*
variables (pyarrow and boto3 both read them).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import NamedTuple

import numpy as np

from .. import codes
from ..audio import decode_audio
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
    tabular: list[str] = (),
) -> Read:
    """Posts of `uri`, labels as class indices; rows without a known label are counted, not kept.
    `tabular`: the columns kept per post as its tabular mapping (`model_cfg.tabular_columns()`).

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

    def refs(column: str | None) -> list[tuple]:  # (ref, code, detail): the one path rule
        none = (None, None, None)
        return [
            resolve_image(rows[i].get(column), bases[i], cfg.read) if column else none for i in keep
        ]

    group, images, audio = cfg.group_column, refs(cfg.image_column), refs(cfg.audio_column)
    posts = Posts(
        texts=[rows[i].get(cfg.text_column) for i in keep],
        labels=np.array(classes, dtype=np.int64),
        sources=[str(rows[i].get(group) or "") if group else "" for i in keep],
        image_refs=[r[0] for r in images],
        ids=[rows[i].get(cfg.id_column, i) if cfg.id_column else i for i in keep],
        audio_refs=[r[0] for r in audio],
        tabular=[{c: rows[i].get(c) for c in tabular} if tabular else None for i in keep],
    )
    for j, (image_ref, audio_ref) in enumerate(zip(images, audio, strict=True)):
        # refused when reading: fetching keeps it (the split files hold no ref)
        posts.image_status[j] = image_ref[1] or posts.image_status[j]
        posts.audio_status[j] = codes.fetch_code(audio_ref[1], "audio") or posts.audio_status[j]
    stats = {
        "rows": len(rows) + sum(unreadable.values()),
        "posts": len(keep),
        "unreadable_rows": sum(unreadable.values()),
        "unreadable": dict(unreadable),
        "skipped": dict(skipped),
        "image_errors": dict(Counter(r[1] for r in images if r[1])),
    }
    if cfg.audio_column:
        stats["audio_errors"] = dict(
            Counter(codes.fetch_code(r[1], "audio") for r in audio if r[1])
        )
    return Read(posts, stats, list(labels), label_map)


def fetch_media(posts: Posts, fetch_cfg: FetchCfg, model_cfg: ModelCfg) -> dict[str, dict]:
    """Images and audio clips of `posts` fetched: {"images": counts, "audio": counts} by status
    (audio only for a model that reads it)."""
    counts = {"images": fetch_images(posts, fetch_cfg, model_cfg)}
    if model_cfg.audio is not None:
        counts["audio"] = fetch_audio(posts, fetch_cfg, model_cfg)
    return counts


def fetch_images(
    posts: Posts, fetch_cfg: FetchCfg, model_cfg: ModelCfg, chunk: int = 256
) -> dict[str, int]:
    """Fill `posts.images` through the fetcher; bytes that do not decode are dropped (status kept)."""
    if model_cfg.image is None:
        posts.image_status = _unused(posts.image_refs, posts.image_status)
        return dict(Counter(posts.image_status))
    size, pre = model_cfg.image.image_size, model_cfg.preprocess
    return _fetch(posts, "image", fetch_cfg, lambda data: decode_image(data, size, pre)[1], chunk)


def fetch_audio(
    posts: Posts, fetch_cfg: FetchCfg, model_cfg: ModelCfg, chunk: int = 256
) -> dict[str, int]:
    """Fill `posts.audio` through the same fetcher (its codes as audio_*: codes.fetch_code);
    clips that do not decode are dropped (status kept)."""
    if model_cfg.audio is None:
        posts.audio_status = _unused(posts.audio_refs, posts.audio_status)
        return dict(Counter(posts.audio_status))
    feats = model_cfg.audio.features
    return _fetch(posts, "audio", fetch_cfg, lambda data: decode_audio(data, feats)[1], chunk)


def _unused(refs: list, status: list[str]) -> list[str]:
    """The statuses of a modality the model does not read; errors found when reading are kept."""
    return [
        s if codes.is_error(s) else codes.MISSING if r is None else codes.UNUSED
        for r, s in zip(refs, status, strict=True)
    ]


def _fetch(posts: Posts, m: str, fetch_cfg: FetchCfg, check, chunk: int) -> dict[str, int]:
    """Fetch modality `m` ("image" or "audio") of every post; `check(bytes)`: the decoder's status,
    run once now so that bad bytes cost nothing per epoch."""
    data = posts.images if m == "image" else posts.audio
    all_refs, status = getattr(posts, f"{m}_refs"), getattr(posts, f"{m}_status")
    for start in range(0, len(posts), chunk):
        refs = all_refs[start : start + chunk]
        for j, (got, st, _) in enumerate(fetch_many(refs, fetch_cfg)):
            if refs[j] is None and codes.is_error(status[start + j]):
                continue  # refused when reading (read_posts): nothing was fetched
            st = codes.fetch_code(st, m)
            if st == codes.OK:
                st = check(got)
            data[start + j] = got if st == codes.OK else None
            status[start + j] = st
    return dict(Counter(status))
