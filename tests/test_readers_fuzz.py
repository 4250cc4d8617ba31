"""Property-based fuzzing of THE reader of dumps (mmsent.io.dumps) on random and mutated bytes of
real small JSONL, CSV and Parquet files (flipped, inserted and deleted bytes, truncation; plain
and gzipped), and on pure random bytes. Each property: no exception escapes the reader, one row
per input row (JSONL: per non-blank physical line, counted here by the test's own split; CSV:
keys are distinct non-blank lines; Parquet: the footer's count unless the file breaks), the same
rows and codes on a re-read, and the parser-free count (count_file) agreeing with the rows.

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_readers_fuzz.py   # ~30x longer
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mmsent import codes
from mmsent.config import ReadCfg
from mmsent.io.dumps import count_file, read_records

settings.register_profile("long", max_examples=20_000, deadline=None)
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"  # random (not derandomized) and longer
FUZZ = settings(
    max_examples=20_000 if LONG else 600,
    deadline=None,
    derandomize=not LONG,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CFG = ReadCfg(max_record_bytes=300, max_record_lines=4)  # small caps: every branch is reached

POSTS = [
    {"id": i, "text": t, "image_url": f"img/{i}.jpg", "tags": ["a", "b"][: i % 3]}
    for i, t in enumerate(
        [
            "great day",
            'she said "hi"',
            "two\nlines",
            "",
            "caf\u00e9 \U0001f600",
            "x" * 320,
            "a,b",
            None,
        ]
    )
]


def _csv_bytes() -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["id", "text", "image_url"])
    w.writerows([[p["id"], p["text"] or "", p["image_url"]] for p in POSTS])
    return buf.getvalue().encode()


def _parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(POSTS), sink, row_group_size=3)
    return sink.getvalue().to_pybytes()


SEEDS = {
    "jsonl": b"".join(json.dumps(p).encode() + b"\n" for p in POSTS) + b"\n[1]\n{bad\n",
    "csv": _csv_bytes(),
    "parquet": _parquet_bytes(),
}


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """`seed` with a few flips, insertions, deletions, and maybe cut short."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        op, at = draw(st.sampled_from("fid")), draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "f" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "i":
            data[at:at] = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=8),
                    st.sampled_from([b'"', b"\n", b"[" * 70, b",", b"\r"]),
                )
            )
        elif data:
            del data[at : at + draw(st.integers(1, 16))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def body_flips(draw, seed: bytes) -> bytes:
    """`seed` with bytes flipped before its footer (a Parquet file whose footer still reads)."""
    data = bytearray(seed)
    footer = len(seed) - 8 - int.from_bytes(seed[-8:-4], "little")
    for at in draw(st.lists(st.integers(4, footer - 1), min_size=1, max_size=4)):
        data[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def inputs(kind: str):
    extra = [body_flips(SEEDS[kind])] if kind == "parquet" else []
    return st.one_of(mutated(SEEDS[kind]), st.binary(max_size=400), *extra)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def read_twice(path, fmt: str = "auto") -> list:
    """The rows (no exception may escape), checked to be the same on a re-read."""
    items = list(read_records(str(path), fmt, CFG))
    assert list(read_records(str(path), fmt, CFG)) == items
    keys = [i.row for i in items]
    assert keys == sorted(set(keys))  # distinct, in file order
    assert all((i.record is None) == (i.error is not None) for i in items)
    return items


def nonblank_lines(data: bytes) -> list[int]:
    """The test's own count: numbers of the physical lines with a non-whitespace byte."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    return [n for n, line in enumerate(data.split(b"\n")) if line.strip()]


@FUZZ
@given(data=inputs("jsonl"))
def test_jsonl(folder, data):
    path = folder / "f.jsonl"
    path.write_bytes(data)
    items = read_twice(path)
    assert [i.row for i in items] == nonblank_lines(data)  # one row per non-blank line
    assert count_file(str(path), cfg=CFG) == (len(items), len(items))


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
@FUZZ
@given(data=inputs("jsonl"), gz=st.booleans())
def test_gzip_broken_streams(folder, kind, data, gz):
    """Mutated gzip streams: rows up to the break, then at most one input_read_error row."""
    path = folder / f"f.{kind}.gz"
    raw = gzip.compress(SEEDS[kind], mtime=0)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else mutated_bytes(raw, data))
    items = read_twice(path)
    broken = [i for i in items if i.error == codes.INPUT_READ_ERROR]
    assert broken in ([], items[-1:])
    count = count_file(str(path), cfg=CFG)
    assert count.rows == len(items) and (kind == "csv" or count.lines == len(items))
    if gz and kind == "jsonl":
        assert [i.row for i in items] == nonblank_lines(data)


def mutated_bytes(seed: bytes, noise: bytes) -> bytes:
    """Deterministic damage to `seed` driven by `noise` (hypothesis shrinks `noise`)."""
    data = bytearray(seed)
    for j in range(0, len(noise) - 1, 2):
        at = noise[j] * len(data) // 256
        if noise[j + 1] % 3 == 0 and data:
            data[at] ^= noise[j + 1] | 1
        elif noise[j + 1] % 3 == 1:
            data[at:at] = noise[j : j + 2]
        else:
            del data[at : at + 4]
    return bytes(data[: len(data) - (noise[-1] % 8 if noise else 0)])


WIDE = ",".join(f"{i}" for i in range(96)).encode() + b"\n"  # more columns than fields, < cap


@FUZZ
@given(data=inputs("csv"), wide=st.booleans())
def test_csv(folder, data, wide):
    """Keys are data lines; with a header wider than any record (no field dropped), every
    non-blank line is covered by exactly one row: its first line, or a line inside its quoted
    fields (one "\n" each): no line is lost or read twice, whatever the parser restarts."""
    path = folder / "f.csv"
    data = WIDE + data if wide else data
    path.write_bytes(data)
    items = read_twice(path)
    lines = nonblank_lines(data)
    assert set(i.row for i in items) <= set(lines) - set(lines[:1])  # keys: data lines
    count = count_file(str(path), cfg=CFG)
    assert count == (len(items), max(len(lines) - 1, 0))  # the header is no data line
    if wide:
        spans = [
            range(i.row, i.row + 1 + sum(v.count("\n") for v in (i.record or {}).values() if v))
            for i in items
        ]
        covered = [n for span in spans for n in span]
        assert covered == sorted(set(covered)) and set(lines[1:]) <= set(covered)
        assert count.lines - count.rows == sum(n in lines for span in spans for n in span[1:])


@FUZZ
@given(
    text=st.lists(
        st.sampled_from(["a", "b", ",", '"', '""', "\n", "\r\n", " ", "é"]), max_size=40
    ).map("".join)
)
def test_csv_fields_as_csv_reader_strict(folder, text):
    """On every input csv.reader(strict=True) reads without error, the same records."""
    try:
        expected = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r]
    except csv.Error:
        event("csv.reader refuses it")
        return
    if any(line.strip() == "" and line != "" for line in text.replace("\r\n", "\n").split("\n")):
        return  # a whitespace-only line: csv makes it a record, these readers a blank line
    path = folder / "g.csv"
    header = ",".join(f"h{i}" for i in range(64))  # more columns than any record has fields
    path.write_bytes(header.encode() + b"\n" + text.encode())
    event("compared with csv.reader")
    got = list(read_records(str(path), "auto", ReadCfg()))
    assert [i.error for i in got] == [None] * len(got)
    assert [list(i.record.values()) for i in got] == [[v or None for v in r] for r in expected]


@FUZZ
@given(data=inputs("parquet"))
def test_parquet(folder, data):
    path = folder / "f.parquet"
    path.write_bytes(data)
    items = read_twice(path)
    count = count_file(str(path), cfg=CFG)
    broken = [i for i in items if i.error == codes.INPUT_READ_ERROR]
    assert broken in ([], items[-1:])
    event("broken at row 0" if items == broken else "broken after rows" if broken else "whole")
    if not broken:  # every row of the footer, once
        assert [i.row for i in items] == list(range(count.rows))
    assert count.lines is None and (len(items) == count.rows or broken)
