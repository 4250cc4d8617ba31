"""The UDFs of the Ray Data graph. Each is plain Python, testable on a hand-built batch without Ray.

read_unit({"unit": [json.dumps({"file": uri, "skip": [[0, 10]]})]}, plan=plan, block_rows=32)
    -> yields {input_file, input_row, record}        (record: rows.encode blob)
preprocess(batch, model_cfg=cfg, fetch_cfg=FetchCfg())
    -> the numpy batch of docs/ARCHITECTURE.md + id, record_error, passthrough, input_*
ModelStage(model_dir, torch_threads, passthrough)(batch) -> pyarrow.Table (the output schema)
"""

from __future__ import annotations

import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from .. import codes
from ..boundary import concat_columns, describe, isolate, take
from ..config import FetchCfg, ModelCfg, to_dict
from ..io.fetch import fetch, fetch_many
from ..preprocess import Preprocessor, pack_pixels
from .files import parent
from .plan import Plan, read_rows
from .resume import Skip
from .rows import encode

_PREPROCESSORS: dict[str, Any] = {}  # one Preprocessor per worker process (tokenizer load ~0.3 s)


def read_unit(batch: dict[str, np.ndarray], *, plan: Plan, block_rows: int):
    """Rows of whole input files, minus the rows a previous run wrote, in batches of `block_rows`
    (the graph re-cuts them into blocks of that size: one CPU task each, spread over the CPUs)."""
    for unit in batch["unit"]:
        unit = json.loads(unit)
        uri, skip, base = unit["file"], Skip(unit["skip"]), parent(unit["file"])
        rows: list[int] = []
        blobs: list[bytes] = []
        for item in read_rows(uri, plan):  # an unreadable row is a row too (dumps.Item)
            if item.row in skip:
                continue
            rows.append(item.row)
            blobs.append(encode(item, plan, base))
            if len(rows) == block_rows:
                yield _block(uri, rows, blobs)
                rows, blobs = [], []
        if rows:
            yield _block(uri, rows, blobs)


def _block(uri: str, rows: list[int], blobs: list[bytes]) -> dict[str, np.ndarray]:
    return {"input_file": np.full(len(rows), uri, dtype=object),
            "input_row": np.array(rows, dtype=np.int64),
            "record": np.array(blobs, dtype=object)}  # fmt: skip


def preprocess(
    batch: dict[str, np.ndarray], *, model_cfg: ModelCfg, fetch_cfg: FetchCfg
) -> dict[str, np.ndarray]:
    """Fetch images (fetch_many: bounded concurrency, retries, byte cap), then THE preprocessing.
    Inside the error boundary: a row that makes this raise is that row's internal_error."""
    pre = _preprocessor(model_cfg)

    def work(lo: int, hi: int) -> dict[str, np.ndarray]:
        return _preprocess(take(batch, lo, hi), pre, model_cfg, fetch_cfg)

    def failed(lo: int, hi: int, exc: Exception) -> dict[str, np.ndarray]:
        out = pack_pixels(pre([None] * (hi - lo)))
        out["record_error"] = np.full(hi - lo, codes.INTERNAL_ERROR, dtype=object)
        out["error_detail"][:] = describe(exc)
        ids, extras = zip(*map(_id_and_extras, batch["record"][lo:hi]), strict=True)
        out["id"] = np.array(ids, dtype=object)
        out["passthrough"] = np.array([pickle.dumps(e, protocol=5) for e in extras], dtype=object)
        out["input_file"], out["input_row"] = batch["input_file"][lo:hi], batch["input_row"][lo:hi]
        return out

    return isolate(work, len(batch["input_row"]), concat_columns, failed)


def _id_and_extras(blob: bytes) -> tuple:
    """What a failed row keeps of its record, if that much reads (else: no id, null columns)."""
    try:
        row = pickle.loads(blob)  # a rows.Row
        return row.id, row.extras
    except Exception:  # noqa: BLE001 - the record itself may be what failed
        return None, ()


def _preprocess(batch, pre, model_cfg: ModelCfg, fetch_cfg: FetchCfg) -> dict[str, np.ndarray]:
    ids, texts, images, errors, extras, read_details, image_status = zip(
        *map(pickle.loads, batch["record"]), strict=True
    )  # rows.Row
    if FETCHED[0] in batch:  # the fetch stage ran before (the graph); else fetch here (tests)
        # a column of nulls may come back from Ray's Arrow blocks as NaNs: only bytes are data
        data, known, details = ([v if isinstance(v, bytes | str) else None for v in batch[k]]
                                for k in FETCHED)  # fmt: skip
    else:
        data, known, details = _image_bytes(list(images), model_cfg, fetch_cfg)
    known = [s or k for s, k in zip(image_status, known, strict=True)]  # refused when reading
    out = pack_pixels(pre(list(texts), data, known))
    out["id"] = np.array(ids, dtype=object)
    out["record_error"] = np.array(errors, dtype=object)
    out["error_detail"] = np.array(
        [r or f or p for r, f, p in zip(read_details, details, out["error_detail"], strict=True)],
        dtype=object,
    )
    out["passthrough"] = np.array([pickle.dumps(e, protocol=5) for e in extras], dtype=object)
    out["input_file"], out["input_row"] = batch["input_file"], batch["input_row"]
    return out


def _image_bytes(refs: list, model_cfg: ModelCfg, fetch_cfg: FetchCfg) -> tuple[list, list, list]:
    """Per row: image bytes (inline bytes as they are, references fetched), fetch errors and their
    details (without the fetch stage: tests, the bench's plain loop)."""
    if model_cfg.image is None:  # not fetched; a post that has an image reads "unused"
        return [b"" if _present(v) else None for v in refs], [None] * len(refs), [None] * len(refs)
    fetched = iter(fetch_many([r for r in refs if not _inline(r)], fetch_cfg))
    got = [(bytes(r), None, None) if _inline(r) else _outcome(next(fetched)) for r in refs]
    return [g[0] for g in got], [g[1] for g in got], [g[2] for g in got]


def _inline(ref: Any) -> bool:
    return isinstance(ref, bytes | bytearray)


def _outcome(got) -> tuple[bytes | None, str | None, str | None]:
    """A Fetched as (bytes, fetch error or None, detail)."""
    return got.data, None if got.status == codes.OK else got.status, got.detail


FETCHED = ("image_data", "image_fetch_status", "image_fetch_detail")  # the fetch stage's columns


class FetchStage:
    """The actor of the fetch stage. Fetching waits on the network, not on a CPU, so it runs apart
    from decoding: blocks are fetched many at once (concurrent calls of this actor, and threads),
    and a call yields the rows whose images came within `patience_s` at once, the rest when they
    come. A slow or hanging host then holds one thread for up to fetch.deadline_s, not a decode
    task's CPU, and the other rows of its block stream on. One thread pool serves every call: made
    per call (or per row), threads come and go and each new one grows the heap (malloc arenas)."""

    def __init__(self, fetch_cfg: FetchCfg, blocks_in_flight: int, patience_s: float = 1.0):
        self.fetch_cfg, self.patience_s = fetch_cfg, patience_s
        workers = max(1, fetch_cfg.concurrency * blocks_in_flight)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="fetch")

    def __call__(self, batch: dict[str, np.ndarray]):
        refs = [_image_ref(blob) for blob in batch["record"]]
        futures = [self.pool.submit(_fetch_one, ref, self.fetch_cfg) for ref in refs]
        done, _ = wait(futures, timeout=self.patience_s)
        first = [i for i, f in enumerate(futures) if f in done]
        rest = [i for i, f in enumerate(futures) if f not in done]
        for part in (first, rest):
            if part:
                yield _with_images(batch, part, [futures[i].result() for i in part])


def _fetch_one(ref: Any, cfg: FetchCfg) -> tuple[bytes | None, str | None, str | None]:
    return (bytes(ref), None, None) if _inline(ref) else _outcome(fetch(ref, cfg))


def _image_ref(blob: bytes) -> Any:
    try:
        return pickle.loads(blob)[2]
    except Exception:  # noqa: BLE001 - a record that does not load is preprocess's to report
        return None


def _with_images(batch: dict[str, np.ndarray], rows: list[int], got: list[tuple]) -> dict:
    out = {k: v[rows] for k, v in batch.items()}
    for j, key in enumerate(FETCHED):
        out[key] = np.array([g[j] for g in got], dtype=object)
    return out


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, str) and not v.strip()) and v == v


def _preprocessor(cfg: ModelCfg):
    key = json.dumps(to_dict(cfg), sort_keys=True)
    if key not in _PREPROCESSORS:
        # one task per CPU already: the tokenizer's own thread pool would oversubscribe them
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _PREPROCESSORS[key] = Preprocessor(cfg)
    return _PREPROCESSORS[key]


class ModelStage:
    """The actor of the model stage: loads the checkpoint once, then scores batches."""

    def __init__(self, model_dir: str | None, torch_threads: int, passthrough: list):
        import torch

        from ..predictor import ModelRunner
        from .output import output_schema

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.runner = ModelRunner(model_dir)
        self.schema = output_schema(self.runner.cfg, passthrough)
        self.passthrough = passthrough

    def __call__(self, batch: dict[str, np.ndarray]):
        from .output import to_table

        return to_table(self.runner(batch), self.schema, len(self.passthrough))
