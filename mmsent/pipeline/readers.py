"""Input files -> (input_row, record) pairs, one reader per format. A row's key (input_file,
input_row) depends only on the file, never on how the job was split, retried or resumed:
input_row is the 0-based line number (JSONL), record number (CSV) or row number (Parquet).

    plan = make_plan("dump/*.jsonl", cfg, reserved={name for name, _ in output_fields(model_cfg)})
    for row, record in read_rows(plan.files[0], plan): ...    # record None: unreadable line

A line that is not a JSON object or a CSV row that cannot be parsed is still a row (record None);
blank lines are not rows. Bytes that are not UTF-8 survive as lone surrogates, so the text's
status says text_not_utf8 instead of the job failing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import ScoreCfg, ScoreColumnsCfg
from .files import file_format, filesystem, list_inputs

SAMPLE_RECORDS = 1000  # JSONL records read to find the columns of a dump
csv.field_size_limit(2**31 - 1)  # long posts are data, not a reason to fail


@dataclass
class Plan:
    files: list[str]  # sorted URIs
    fmt: str  # auto | jsonl | csv | parquet
    columns: ScoreColumnsCfg
    passthrough: list[tuple[str, str, pa.DataType]]  # (input column, output column, type)

    def wanted(self) -> list[str]:
        c = self.columns
        return list(dict.fromkeys([c.id, c.text, c.image] + [p[0] for p in self.passthrough]))


def make_plan(spec: str, cfg: ScoreCfg, reserved: set[str]) -> Plan:
    """Files and pass-through columns (found in the first file unless listed). Pass-through types:
    the first Parquet file's (nested ones kept); JSONL and CSV values are written as strings."""
    files = list_inputs(spec, cfg.format)
    c = cfg.columns
    first, fmt = files[0], file_format(files[0], cfg.format)
    types: dict[str, pa.DataType] = {}
    if fmt == "parquet":
        fs, path = filesystem(first)
        with fs.open_input_file(path) as f:
            schema = pq.read_schema(f)
        for field in schema:
            t = field.type
            types[field.name] = t.value_type if pa.types.is_dictionary(t) else t
    probe = Plan([first], cfg.format, c, [])
    names = c.passthrough
    if names is None:
        if fmt == "parquet":
            names = list(types)
        else:
            seen: dict[str, None] = {}
            for n, (_, rec) in enumerate(read_rows(first, probe, header_only=fmt == "csv")):
                seen.update(dict.fromkeys(rec or {}))
                if n >= SAMPLE_RECORDS:
                    break
            names = list(seen)
        names = [n for n in names if n not in (c.id, c.text, c.image)]
    passthrough = []
    for name in names:
        out = name
        while out in reserved:  # e.g. a ground-truth `label` column becomes `input_label`
            out = f"input_{out}"
        reserved = reserved | {out}
        passthrough.append((name, out, types.get(name, pa.string())))
    return Plan(files, cfg.format, c, passthrough)


def read_rows(
    uri: str, plan: Plan, parse: bool = True, header_only: bool = False
) -> Iterator[tuple[int, dict | None]]:
    fmt = file_format(uri, plan.fmt)
    fs, path = filesystem(uri)
    if fmt == "parquet":
        with fs.open_input_file(path) as f:
            yield from _parquet(pq.ParquetFile(f), plan.wanted())
        return
    with fs.open_input_stream(path, compression="detect") as raw:
        stream = io.BufferedReader(raw, 1 << 20)
        yield from (_jsonl(stream, parse) if fmt == "jsonl" else _csv(stream, header_only))


def count_rows(uri: str, plan: Plan) -> int:
    """Rows of one input file, counted the way read_rows yields them (for the job's accounting)."""
    if file_format(uri, plan.fmt) == "parquet":
        fs, path = filesystem(uri)
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f).metadata.num_rows
    return sum(1 for _ in read_rows(uri, plan, parse=False))


def _jsonl(stream, parse: bool) -> Iterator[tuple[int, dict | None]]:
    for n, line in enumerate(stream):
        if n == 0:
            line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        if not line.strip():
            continue
        yield n, _record(line) if parse else None


def _record(line: bytes) -> dict | None:
    try:
        rec = json.loads(line.decode("utf-8", "surrogateescape"))
    except ValueError:  # JSONDecodeError, or a number too long to convert
        return None
    return rec if isinstance(rec, dict) else None


def _csv(stream, header_only: bool) -> Iterator[tuple[int, dict | None]]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    header = next(reader, None) or []
    if header_only:
        yield 0, dict.fromkeys(header)
        return
    n = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:  # the reader has consumed the bad line: the rest still reads
            fields = None
        if fields == []:  # a blank line
            continue
        # a short row lacks the trailing columns: absent, not empty
        yield n, None if fields is None else dict(zip(header, fields, strict=False))
        n += 1


def _parquet(pf: pq.ParquetFile, wanted: list[str]) -> Iterator[tuple[int, dict]]:
    present = [c for c in wanted if c in pf.schema_arrow.names]
    n = 0
    for batch in pf.iter_batches(batch_size=1024, columns=present):
        cols = [batch.column(c).to_pylist() for c in present]
        for i in range(batch.num_rows):
            yield n, {c: col[i] for c, col in zip(present, cols, strict=True)}
            n += 1
    if not present:  # none of the wanted columns: rows still count
        for _ in range(pf.metadata.num_rows - n):
            yield n, {}
            n += 1
