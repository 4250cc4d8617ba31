"""The UDFs of the Ray Data graph. Each is plain Python on a pyarrow.Table and reads its columns by
name; each is testable on a hand-built batch without Ray. The columns of every stage are in
docs/bulk-scoring.md ("Stage columns").

read_unit({"unit": [json.dumps({"file": uri, "skip": [[0, 10]]})]}, plan=plan, block_rows=32)
    -> yields rows.read_block tables: input_file, input_row, id, input_text, input_image, ...
FetchStage(fetch_cfg, blocks_in_flight, media=("image", "audio"))(table)
    -> the table with image_data, audio_data (+ fetch status)
preprocess(table, model_cfg=cfg, fetch_cfg=FetchCfg())
    -> the batch of docs/ARCHITECTURE.md (as Arrow) + id, record_error, input_*, pass-through
ModelStage(model_dir, torch_threads, passthrough, runtime, precision)(table) -> pyarrow.Table
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import pyarrow as pa

from .. import codes
from ..boundary import concat_columns, describe, isolate
from ..config import FetchCfg, ModelCfg, to_dict
from ..io.fetch import fetch, fetch_many
from ..preprocess import Preprocessor, pack_batch
from .plan import Plan, read_rows
from .resume import Skip
from .rows import FETCHED, READ_FIELDS, read_block

_PREPROCESSORS: dict[str, Any] = {}  # one Preprocessor per worker process (tokenizer load ~0.3 s)
# what the preprocess stage reads and does not hand on; every other column goes on as it is
_CONSUMED = frozenset(n for n, _ in READ_FIELDS) - {"input_file", "input_row", "id"}


def read_unit(batch: dict[str, np.ndarray], *, plan: Plan, block_rows: int):
    """Rows of whole input files, minus the rows a previous run wrote, in blocks of `block_rows`
    (the graph re-cuts them into blocks of that size: one CPU task each, spread over the CPUs)."""
    for unit in batch["unit"]:
        unit = json.loads(unit)
        uri, skip = unit["file"], Skip(unit["skip"])
        items = []
        for item in read_rows(uri, plan):  # an unreadable row is a row too (dumps.Item)
            if item.row in skip:
                continue
            items.append(item)
            if len(items) == block_rows:
                yield read_block(uri, items, plan)
                items = []
        if items:
            yield read_block(uri, items, plan)


class FetchStage:
    """The actor of the fetch stage. Fetching waits on the network, not on a CPU, so it runs apart
    from decoding: blocks are fetched many at once (concurrent calls of this actor, and threads),
    and a call yields the rows whose images and clips (`media`: those the model reads) came within
    `patience_s` at once, the rest when they come. A slow or hanging host then holds one thread
    for up to fetch.deadline_s, not a decode task's CPU, and the other rows of its block stream
    on. One thread pool serves every call: made per call (or per row), threads come and go and
    each new one grows the heap (malloc arenas)."""

    def __init__(
        self,
        fetch_cfg: FetchCfg,
        blocks_in_flight: int,
        patience_s: float = 1.0,
        media: tuple[str, ...] = ("image",),
    ):
        self.fetch_cfg, self.patience_s, self.media = fetch_cfg, patience_s, media
        workers = max(1, fetch_cfg.concurrency * blocks_in_flight)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="fetch")

    def __call__(self, batch: pa.Table):
        jobs = {}  # medium -> per row: (bytes, status, detail) known, or a Future
        for m in self.media:
            refs = batch.column(f"input_{m}").to_pylist()
            jobs[m] = [
                k if k is not None else self.pool.submit(_fetch_one, ref, self.fetch_cfg, m)
                for ref, k in zip(refs, _known(batch, m), strict=True)
            ]
        pending = [f for rows in jobs.values() for f in rows if isinstance(f, Future)]
        done, _ = wait(pending, timeout=self.patience_s)
        ready = [
            all(not isinstance(r[i], Future) or r[i] in done for r in jobs.values())
            for i in range(batch.num_rows)
        ]
        for part in (
            [i for i, r in enumerate(ready) if r],
            [i for i, r in enumerate(ready) if not r],
        ):
            if part:
                table = batch.take(part)
                for m, rows in jobs.items():
                    got = [
                        rows[i].result() if isinstance(rows[i], Future) else rows[i] for i in part
                    ]
                    table = _with_fetched(table, m, got)
                yield table


def _known(batch: pa.Table, medium: str) -> list[tuple | None]:
    """Per row (bytes, status, detail) where nothing is left to fetch: inline bytes, a fetch
    outcome known from reading, no reference at all; None where the reference is to be fetched."""
    refs, data, status, detail = _columns(batch, (f"input_{medium}", *FETCHED[medium]))
    return [
        (d, s, t) if d is not None or s is not None or r is None else None
        for r, d, s, t in zip(refs, data, status, detail, strict=True)
    ]


def _fetch_one(ref: str, cfg: FetchCfg, medium: str) -> tuple[bytes | None, str | None, str | None]:
    return _outcome(fetch(ref, cfg), medium)


def _outcome(got, medium: str) -> tuple[bytes | None, str | None, str | None]:
    """A Fetched as (bytes, fetch error or None, detail); the fetcher's codes are image_*."""
    status = None if got.status == codes.OK else got.status
    return got.data, codes.fetch_code(status, medium), got.detail


def _with_fetched(batch: pa.Table, medium: str, got: list[tuple]) -> pa.Table:
    for j, name in enumerate(FETCHED[medium]):
        i = batch.schema.get_field_index(name)
        batch = batch.set_column(i, name, pa.array([g[j] for g in got], batch.schema.field(i).type))
    return batch


def preprocess(batch: pa.Table, *, model_cfg: ModelCfg, fetch_cfg: FetchCfg) -> pa.Table:
    """Images and clips not fetched yet (no fetch stage: tests, the bench's loop) are fetched here
    (fetch_many: bounded concurrency, retries, byte cap), then THE preprocessing. Inside the error
    boundary: a row that makes this raise is that row's internal_error; every row keeps its id,
    key and pass-through columns."""
    pre = _preprocessor(model_cfg)

    def work(lo: int, hi: int) -> dict[str, np.ndarray]:
        return _preprocess(batch.slice(lo, hi - lo), pre, model_cfg, fetch_cfg)

    def failed(lo: int, hi: int, exc: Exception) -> dict[str, np.ndarray]:
        out = pack_batch(pre([None] * (hi - lo)))
        out["record_error"] = np.full(hi - lo, codes.INTERNAL_ERROR, dtype=object)
        out["error_detail"][:] = describe(exc)
        return out

    out = isolate(work, batch.num_rows, concat_columns, failed)
    carried = [n for n in batch.column_names if n not in _CONSUMED]
    table = batch.select(carried)
    for name, values in out.items():
        table = table.append_column(name, _arrow_column(name, values))
    return table


def _preprocess(batch: pa.Table, pre, model_cfg: ModelCfg, fetch_cfg: FetchCfg) -> dict:
    names = ("input_text", "record_error", "error_detail", "text_status", "input_tabular")
    texts, record_errors, read_details, read_text_status, tabular = _columns(batch, names)
    media = {m: _media(batch, m, getattr(model_cfg, m) is not None, fetch_cfg) for m in FETCHED}
    (images, image_known, image_details), (audio, audio_known, audio_details) = media.values()
    tabular = [None if t is None else json.loads(t) for t in tabular]
    out = pack_batch(
        pre(texts, images, image_known, audio=audio, audio_status=audio_known, tabular=tabular)
    )
    # a text that no string column can hold was judged when read (rows.text_cell); it reaches
    # the Preprocessor as no text, so its code replaces "missing"
    out["text_status"] = np.array(
        [
            r if r and s == codes.MISSING else s
            for r, s in zip(read_text_status, out["text_status"], strict=True)
        ],
        dtype=object,
    )
    out["record_error"] = np.array(record_errors, dtype=object)
    details = zip(read_details, image_details, audio_details, out["error_detail"], strict=True)
    out["error_detail"] = np.array([next(filter(None, d), None) for d in details], dtype=object)
    return out


def _media(
    batch: pa.Table, medium: str, read: bool, fetch_cfg: FetchCfg
) -> tuple[list, list, list]:
    """Per row: the image's (or clip's) bytes, its known error (from reading or fetching) and the
    error's detail; what the fetch stage left to fetch (all references when there is no fetch
    stage) is fetched here. A model that does not read the medium gets no bytes: b"" where the
    post has one (it reads "unused"), None where not."""
    refs, data, status, detail = _columns(batch, (f"input_{medium}", *FETCHED[medium]))
    read_status = batch.column(f"{medium}_status").to_pylist()
    if not read:
        present = [d is not None or _present(r) for r, d in zip(refs, data, strict=True)]
        return [b"" if p else None for p in present], read_status, [None] * len(refs)
    todo = [i for i, k in enumerate(_known(batch, medium)) if k is None]
    for i, got in zip(todo, fetch_many([refs[i] for i in todo], fetch_cfg), strict=True):
        data[i], status[i], detail[i] = _outcome(got, medium)
    return data, [r or s for r, s in zip(read_status, status, strict=True)], detail


def _columns(batch: pa.Table, names) -> list[list]:
    return [batch.column(n).to_pylist() for n in names]


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, str) and not v.strip())


# the preprocess stage's columns that numpy cannot type: the rest are strings, or numpy's type
_OBJECT_TYPES = {"pixels": pa.binary(), "mel": pa.binary()}


def _arrow_column(name: str, values: np.ndarray) -> pa.Array:
    """A preprocessed numpy column as Arrow: (B, ...) arrays as fixed-shape tensors, object
    columns as strings (pixels: bytes), so a block of nulls is still a string column."""
    if values.ndim > 1:
        typ = pa.fixed_shape_tensor(pa.from_numpy_dtype(values.dtype), values.shape[1:])
        flat = pa.array(np.ascontiguousarray(values).reshape(-1))
        storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:])))
        return pa.ExtensionArray.from_storage(typ, storage)
    if values.dtype == object:
        return pa.array(values.tolist(), _OBJECT_TYPES.get(name, pa.string()))
    return pa.array(values)


def to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """`_arrow_column` undone: the numpy batch that ModelRunner reads."""
    out = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if isinstance(col.type, pa.FixedShapeTensorType):
            out[name] = col.combine_chunks().to_numpy_ndarray()
        elif pa.types.is_boolean(col.type) or pa.types.is_integer(col.type):
            out[name] = col.to_numpy()
        else:
            out[name] = np.array(col.to_pylist(), dtype=object)
    return out


def _preprocessor(cfg: ModelCfg):
    key = json.dumps(to_dict(cfg), sort_keys=True)
    if key not in _PREPROCESSORS:
        # one task per CPU already: the tokenizer's own thread pool would oversubscribe them
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _PREPROCESSORS[key] = Preprocessor(cfg)
    return _PREPROCESSORS[key]


class ModelStage:
    """The actor of the model stage: loads the checkpoint once, then scores batches. The model
    reads the preprocessed columns; a row's key, id and pass-through columns go on in Arrow."""

    def __init__(
        self,
        model_dir: str | None,
        torch_threads: int,
        passthrough: list,
        runtime: str = "torch",
        precision: str = "auto",
    ):
        import torch

        from ..predictor import ModelRunner
        from .output import KEY, output_schema

        if torch_threads:  # ONNX Runtime sessions take the same number of threads
            torch.set_num_threads(torch_threads)
        self.runner = ModelRunner(model_dir, runtime=runtime, precision=precision)
        self.schema = output_schema(self.runner.cfg, passthrough)
        self.carried = [*KEY, "id", *(out for _, out, _ in passthrough)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .output import to_table

        inputs = batch.drop_columns(self.carried)
        return to_table(self.runner(to_numpy(inputs)), batch.select(self.carried), self.schema)
