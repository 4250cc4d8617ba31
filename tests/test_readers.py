"""THE reader of dumps (mmsent.io.dumps), without Ray: caps, error rows, row keys, compression,
broken files, the parser-free count, relative image paths, and the score and train readers
reading one file the same way. Real files in tmp_path; no mocks."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import tracemalloc
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmsent import codes
from mmsent.config import DataCfg, FetchCfg, ImageTowerCfg, ModelCfg, ReadCfg, ScoreCfg
from mmsent.io import dumps
from mmsent.io.dumps import Count, Item, StorageError, count_file, read_records, resolve_image
from mmsent.pipeline import summary
from mmsent.pipeline.plan import MAX_PASSTHROUGH, make_plan, read_rows
from mmsent.pipeline.rows import read_block
from mmsent.pipeline.stages import preprocess, read_unit
from mmsent.train.labelled import fetch_images, read_posts, read_table

MiB = 1 << 20


def read_codes(path, fmt="auto", **read) -> list[tuple[int, str | None]]:
    return [(i.row, i.error) for i in read_records(str(path), fmt, ReadCfg(**read))]


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def compressed(data: bytes, codec: str) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------- JSON lines


def test_deep_brackets_line_is_one_invalid_row_and_make_plan_survives(tmp_path):
    path = write(
        tmp_path / "d.jsonl",
        b'{"id": 1, "text": "a"}\n' + b"[" * 100_000 + b"\n" + b'{"id": 2, "text": "b", "x": 1}\n',
    )
    items = list(read_records(str(path)))
    assert [(i.row, i.error) for i in items] == [(0, None), (1, codes.INVALID_RECORD), (2, None)]
    assert "nested deeper" in items[1].detail
    plan = make_plan(str(path), ScoreCfg(), set())  # used to raise RecursionError
    assert [p[0] for p in plan.passthrough] == ["x"]
    assert count_file(str(path)) == Count(3, 3)


def test_nesting_cap_and_json_kinds(tmp_path):
    def nested(depth: int) -> bytes:
        return b'{"id": 1, "v": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"

    lines = [
        nested(dumps.MAX_DEPTH),
        nested(dumps.MAX_DEPTH + 1),
        b'"text"',
        b"17",
        b"null",
        b"1" * 5000,
        b'{"a": 1} trailing',
        b'{"id": "\\ud800"}',
    ]
    path = write(tmp_path / "d.jsonl", b"\n".join(lines) + b"\n")
    items = list(read_records(str(path)))
    assert [i.error for i in items] == [None] + [codes.INVALID_RECORD] * 6 + [None]
    assert [i.detail for i in items[2:5]] == [
        f"a JSON {k}, not an object" for k in ("string", "number", "null")
    ]
    assert "digits" in items[5].detail and items[6].detail.startswith("JSONDecodeError")


def test_line_cap_skips_a_long_line_in_bounded_memory(tmp_path):
    cap = 1 * MiB
    path = tmp_path / "d.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"id": 0}\n{"id": 1, "text": "')
        for _ in range(24):  # a 24 MiB line, never held whole
            f.write(b"x" * MiB)
        f.write(b'"}\n' + b" " * (3 * MiB) + b'\n{"id": 3}\n')  # a long blank line: no row
    tracemalloc.start()
    try:
        got = read_codes(path, max_record_bytes=cap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [(0, None), (1, codes.RECORD_TOO_LARGE), (3, None)]
    assert peak < 4 * cap  # the line was skipped in pieces
    assert count_file(str(path), cfg=ReadCfg(max_record_bytes=cap)) == Count(3, 3)
    assert read_codes(path)[1] == (1, None)  # under the default cap it is a record


def test_crlf_bom_and_bad_utf8_in_jsonl(tmp_path):
    path = write(tmp_path / "d.jsonl", b'\xef\xbb\xbf{"id": "a"}\r\n\r\n{"id": "caf\xe9"}\r\n')
    items = list(read_records(str(path)))
    assert [(i.row, i.record) for i in items] == [(0, {"id": "a"}), (2, {"id": "caf\udce9"})]


# ---------------------------------------------------------------- CSV


def csv_items(tmp_path, text: bytes, **read):
    return list(read_records(str(write(tmp_path / "d.csv", text)), "auto", ReadCfg(**read)))


def test_csv_unclosed_quote_mid_file_costs_one_row(tmp_path):
    items = csv_items(tmp_path, b'id,text\n1,a\n2,"unclosed\n3,b\n4,c\n')
    assert [(i.row, i.error) for i in items] == [
        (1, None),
        (2, codes.INVALID_RECORD),
        (3, None),
        (4, None),
    ]
    assert items[2].record == {"id": "3", "text": "b"} and "end of data" in items[1].detail
    assert count_file(str(tmp_path / "d.csv")) == Count(4, 4)


def test_csv_quote_closing_later_is_counted_or_capped(tmp_path):
    """A quote that closes lines later merges them: the parser-free count shows it, and
    max_record_lines bounds it (then the record is an error row and the lines read again)."""
    text = b'id,text\n1,a\n2,"unclosed\n3,b\n4,c"\n5,d\n'
    items = csv_items(tmp_path, text)
    assert [i.row for i in items] == [1, 2, 5] and items[1].record["text"] == "unclosed\n3,b\n4,c"
    count = count_file(str(tmp_path / "d.csv"))
    assert count == Count(3, 5)  # 5 data lines, 3 records: 2 lines inside quoted fields
    assert summary.input_counts({"f": count}, Counter(f=3))["lines_in_quoted_fields"] == 2
    capped = csv_items(tmp_path, text, max_record_lines=2)
    assert [(i.row, i.error) for i in capped] == [
        (1, None),
        (2, codes.RECORD_TOO_LARGE),
        (3, None),
        (4, None),
        (5, None),
    ]
    assert capped[3].record == {"id": "4", "text": 'c"'}  # a quote inside a bare field: literal


def test_csv_unclosed_quote_at_the_end(tmp_path):
    items = csv_items(tmp_path, b'id,text\n1,a\n2,b\n3,"no end')
    assert [(i.row, i.error) for i in items] == [(1, None), (2, None), (3, codes.INVALID_RECORD)]


def test_csv_crlf_bom_strictness_and_empty_cells(tmp_path):
    text = (
        b'\xef\xbb\xbfid,text,n\r\n1,"two\r\nlines",\r\n\r\n2,"a""b",x\r\n'
        b'3,"q"x,1\r\n4,bare\rcr,1\r\n5\r\n   \r\n6,caf\xe9,1,extra\r\n'
    )
    items = csv_items(tmp_path, text)
    assert [(i.row, i.error) for i in items] == [
        (1, None),
        (4, None),
        (5, codes.INVALID_RECORD),
        (6, codes.INVALID_RECORD),
        (7, None),
        (9, None),
    ]
    assert items[0].record == {"id": "1", "text": "two\r\nlines", "n": None}  # as csv keeps it
    assert items[1].record["text"] == 'a"b'
    assert items[4].record == {"id": "5"}  # short: the trailing columns are absent
    assert items[5].record == {"id": "6", "text": "caf\udce9", "n": "1"}  # extra field dropped
    good = [r for r in csv.reader(io.StringIO(text[3:].decode("latin-1"), newline=""))][:3]
    assert good[1] == ["1", "two\r\nlines", ""]  # what csv.reader makes of the same record


def test_csv_caps_bytes_and_lines(tmp_path):
    long = b"y" * 5000
    text = b'id,text\n1,"' + long + b'"\n2,"a\n' + long + b'"\n3,ok\n'
    items = csv_items(tmp_path, text, max_record_bytes=4096)
    assert [(i.row, i.error) for i in items] == [
        (1, codes.RECORD_TOO_LARGE),
        (2, codes.RECORD_TOO_LARGE),
        (3, codes.RECORD_TOO_LARGE),
        (4, None),
    ]
    # 2 reads its first line; its over-cap second line (3) is a row of its own when read again
    fields = csv_items(tmp_path, b"id,text\n1," + b"z" * 200_000 + b"\n")  # > csv's 131072 limit
    assert fields[0].error is None and len(fields[0].record["text"]) == 200_000
    assert csv.field_size_limit() == 131072  # csv's global limit is left alone


def test_csv_header_that_does_not_read(tmp_path):
    items = csv_items(tmp_path, b'id,"text\n1,a\n\n2,b\n')
    assert [(i.row, i.error) for i in items] == [
        (1, codes.INVALID_RECORD),
        (3, codes.INVALID_RECORD),
    ]
    assert "header (line 0)" in items[0].detail
    assert count_file(str(tmp_path / "d.csv")) == Count(2, 2)


# ---------------------------------------------------------------- compression, broken files

_RNG = random.Random(0)  # the same dump every run: where a test corrupts it is repeatable
JSONL = b"".join(
    b'{"id": %d, "text": "%s"}\n' % (i, _RNG.randbytes(24).hex().encode()) for i in range(4000)
)


@pytest.mark.parametrize("codec", ["gzip", "bz2", "zstd", "lz4"])
def test_every_compression_both_readers(tmp_path, codec):
    ext = {"gzip": "gz", "bz2": "bz2", "zstd": "zst", "lz4": "lz4"}[codec]
    data = compressed(b'id,text,label\n1,"a\nb",pos\n2,,neg\n', codec)
    path = write(tmp_path / f"d.csv.{ext}", data)
    assert [i.record for i in read_records(str(path))] == [
        {"id": "1", "text": "a\nb", "label": "pos"},
        {"id": "2", "text": None, "label": "neg"},
    ]
    assert read_table(str(path))[0] == [i.record for i in read_records(str(path))]
    jl = write(tmp_path / f"d.jsonl.{ext}", compressed(JSONL[:5000], codec))
    assert len(list(read_records(str(jl)))) == JSONL[:5000].count(b"\n") + 1  # last line cut


def test_corrupt_gzip_mid_file_keeps_what_was_read(tmp_path):
    gz = gzip.compress(JSONL, mtime=0)  # same bytes every run: the test is repeatable
    mid = len(gz) // 2
    path = write(
        tmp_path / "d.jsonl.gz",
        gz[:mid] + bytes(b ^ 0xFF for b in gz[mid : mid + 64]) + gz[mid + 64 :],
    )
    items = list(read_records(str(path)))
    *good, last = items
    assert 0 < len(good) < 4000 and all(i.error is None for i in good)
    assert [i.row for i in good] == list(range(len(good))) and good[-1].record["id"] == len(
        good
    ) - 1
    assert (last.row, last.error) == (len(good), codes.INPUT_READ_ERROR) and "zlib" in last.detail
    assert list(read_records(str(path))) == items  # the same on a re-read
    assert count_file(str(path)) == Count(len(items), len(items))
    cut = write(tmp_path / "t.jsonl.gz", gz[:mid])  # truncated
    assert read_codes(cut)[-1][1] == codes.INPUT_READ_ERROR
    assert read_table(str(cut))[2] == Counter({codes.INPUT_READ_ERROR: 1})


def test_truncated_and_corrupt_parquet(tmp_path):
    t = pa.table({"id": list(range(3000)), "text": [f"t{i}" for i in range(3000)]})
    pq.write_table(t, tmp_path / "ok.parquet", row_group_size=500)
    whole = (tmp_path / "ok.parquet").read_bytes()
    cut = write(tmp_path / "cut.parquet", whole[: len(whole) // 2])
    items = list(read_records(str(cut)))
    assert [(i.row, i.error) for i in items] == [(0, codes.INPUT_READ_ERROR)]
    assert count_file(str(cut)) == Count(1, None) and dumps.parquet_schema(str(cut)) is None
    write(tmp_path / "z.parquet", whole)  # make_plan takes the types from the next file
    plan = make_plan(str(tmp_path / "*.parquet"), ScoreCfg(), set())
    assert plan.files[0].endswith("cut.parquet") and plan.passthrough == []
    assert make_plan(str(cut), ScoreCfg(), set()).passthrough == []  # and never raises


def test_parquet_cell_cap(tmp_path):
    t = pa.table(
        {
            "id": ["a", "b", "c"],
            "text": ["x", "y" * 5000, None],
            "image_url": pa.array([b"", b"", b"z" * 3000], pa.binary()),
            "tag": pa.array(["u", "v", "w"]).dictionary_encode(),
        }
    )
    pq.write_table(t, tmp_path / "d.parquet")
    items = list(read_records(str(tmp_path / "d.parquet"), cfg=ReadCfg(max_record_bytes=4000)))
    assert [i.error for i in items] == [None, codes.RECORD_TOO_LARGE, None]
    assert items[2].record == {"id": "c", "text": None, "image_url": b"z" * 3000, "tag": "w"}


def test_json_array_files(tmp_path):
    path = write(tmp_path / "a.json", b' \n[{"id": 1}, {"id": 2}, 3, [4]]\n')
    assert read_codes(path) == [
        (0, None),
        (1, None),
        (2, codes.INVALID_RECORD),
        (3, codes.INVALID_RECORD),
    ]
    assert count_file(str(path)) == Count(4, None)
    assert read_codes(path, max_json_array_bytes=10) == [(0, codes.RECORD_TOO_LARGE)]
    lines = write(tmp_path / "l.json", b'[1]\n{"id": 1}\n\n{"id": 2}\n')  # JSON lines named .json
    assert read_codes(lines) == [(0, codes.INVALID_RECORD), (1, None), (3, None)]
    assert count_file(str(lines)) == Count(3, 3)
    assert read_codes(path, "jsonl")[0] == (1, codes.INVALID_RECORD)  # format: jsonl reads lines


def test_storage_errors_raise(tmp_path):
    os.symlink("/proc/self/mem", tmp_path / "mem.jsonl.gz")  # reading it is an I/O error (EIO)
    (tmp_path / "dir.jsonl").mkdir()
    for name in ("mem.jsonl.gz", "dir.jsonl"):
        with pytest.raises(StorageError, match=name):
            list(read_records(str(tmp_path / name)))
    with pytest.raises(StorageError, match="cannot read"):
        count_file(str(tmp_path / "mem.jsonl.gz"))


# ---------------------------------------------------------------- one reader, two callers


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_score_and_train_readers_agree(tmp_path, fmt):
    rows = [
        {"id": "1", "text": "caf\udce9", "label": "pos", "image": None},
        {"id": "2", "text": None, "label": "neg", "image": "img/a.jpg"},
    ]
    path = tmp_path / f"d.{fmt}"
    if fmt == "parquet":
        pq.write_table(
            pa.Table.from_pylist([{**r, "text": r["text"] and "café"} for r in rows]), path
        )
    elif fmt == "csv":
        write(path, b'id,text,label,image\n1,caf\xe9,pos,\n2,,neg,img/a.jpg\n3,"open\n')
    else:
        body = [json.dumps(r).encode() for r in rows] + [b"{bad", b"[" * 5000]
        write(path, b"\n".join(body) + b"\n" if fmt == "jsonl" else b"\n".join(body))
    plan = make_plan(str(path), ScoreCfg(), {"label"})
    scored = list(read_rows(str(path), plan))
    records, _, unreadable = read_table(str(path))
    assert records == [i.record for i in scored if i.record is not None]
    assert unreadable == Counter(i.error for i in scored if i.error)
    if fmt != "parquet":
        assert records[0]["text"] == "caf\udce9" and records[1]["text"] is None
        assert sum(unreadable.values()) == 1 if fmt == "csv" else 2
    read = read_posts(str(path), DataCfg(labels=["neg", "pos"]))
    assert read.stats["unreadable"] == dict(unreadable) and read.posts.texts == [
        records[0]["text"],
        None,
    ]


# ---------------------------------------------------------------- image paths


@pytest.fixture
def dump_dir(tmp_path):
    from mmsent.sample_data import real_photos

    photo = real_photos(max_side=64)[0][1]
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.jpg").write_bytes(photo)  # a real image: fetched if not refused
    (tmp_path / "dump/img").mkdir(parents=True)
    (tmp_path / "dump/img/ok.jpg").write_bytes(photo)
    os.symlink(tmp_path / "outside", tmp_path / "dump/img/link")
    os.symlink(tmp_path / "dump/img/ok.jpg", tmp_path / "dump/img/alias.jpg")  # inside: fine
    return tmp_path


def test_relative_image_paths_stay_in_the_folder(dump_dir):
    base = str(dump_dir / "dump")
    refs = [
        "img/ok.jpg",
        "img/./alias.jpg",
        "../outside/secret.jpg",
        "img/../../outside/secret.jpg",
        "img/link/secret.jpg",
        "a\x00b",
        str(dump_dir / "outside/secret.jpg"),
        "http://h/x",
    ]
    got = [resolve_image(r, base)[:2] for r in refs]
    assert got == [
        (f"{base}/img/ok.jpg", None),
        (f"{base}/img/alias.jpg", None),
        (None, codes.IMAGE_URL_FORBIDDEN),
        (None, codes.IMAGE_URL_FORBIDDEN),
        (None, codes.IMAGE_URL_FORBIDDEN),
        (None, codes.IMAGE_URL_INVALID),
        (refs[6], None),
        ("http://h/x", None),
    ]
    allow = ReadCfg(images_outside_input_dir=True)
    assert resolve_image("../outside/secret.jpg", base, allow)[1] is None
    assert resolve_image("../x.jpg", "s3://b/dump")[1] == codes.IMAGE_URL_FORBIDDEN
    assert resolve_image("a/../x.jpg", "s3://b/dump")[0] == "s3://b/dump/x.jpg"


def test_forbidden_images_through_score_and_train(dump_dir):
    """read_unit -> preprocess (hand-built batch, no Ray) and read_posts -> fetch_images: an image
    out of the dump's folder is image_url_forbidden and never read."""
    path = dump_dir / "dump/d.jsonl"
    refs = ["img/ok.jpg", "../outside/secret.jpg", "img/link/secret.jpg"]
    write(
        path,
        b"".join(
            json.dumps({"id": i, "text": "t", "image_url": r, "label": "pos"}).encode() + b"\n"
            for i, r in enumerate(refs)
        ),
    )
    plan = make_plan(str(path), ScoreCfg(), {"label"})
    unit = np.array([json.dumps({"file": plan.files[0], "skip": []})])
    (block,) = read_unit({"unit": unit}, plan=plan, block_rows=8)
    rows = block.to_pylist()
    assert [r["image_status"] for r in rows] == [
        None,
        codes.IMAGE_URL_FORBIDDEN,
        codes.IMAGE_URL_FORBIDDEN,
    ]
    assert rows[1]["input_image"] is None and "leaves" in rows[1]["error_detail"]
    model = ModelCfg(text=None, image=ImageTowerCfg(pretrained=None, image_size=32))
    out = preprocess(block, model_cfg=model, fetch_cfg=FetchCfg(retries=0)).to_pydict()
    assert out["image_status"] == [
        codes.OK,
        codes.IMAGE_URL_FORBIDDEN,
        codes.IMAGE_URL_FORBIDDEN,
    ]
    assert out["error_detail"][2].endswith("leads out of the input file's folder")
    read = read_posts(str(path), DataCfg(image_column="image_url", labels=["pos"]))
    assert read.stats["image_errors"] == {codes.IMAGE_URL_FORBIDDEN: 2}
    assert fetch_images(read.posts, FetchCfg(retries=0), model) == {
        codes.OK: 1,
        codes.IMAGE_URL_FORBIDDEN: 2,
    }


# ---------------------------------------------------------------- plan, rows, summary


def test_make_plan_writable_and_bounded_column_names(tmp_path):
    many = {f"c{i}": i for i in range(MAX_PASSTHROUGH + 10)}
    path = write(tmp_path / "d.jsonl", b'{"id": 1, "\\udc80bad": 1}\n' + json.dumps(many).encode())
    plan = make_plan(str(path), ScoreCfg(), set())
    name, out, _ = plan.passthrough[0]
    assert name == "\udc80bad" and out.endswith("bad") and out.encode("utf-8")  # writable
    assert len(plan.passthrough) == MAX_PASSTHROUGH


def test_rows_carry_read_errors_and_a_record_that_fails_is_internal_error(tmp_path):
    plan = make_plan(str(write(tmp_path / "d.jsonl", b'{"id": 1}\n')), ScoreCfg(), set())
    (bad,) = read_block(
        "/b/d.jsonl", [Item(4, None, codes.RECORD_TOO_LARGE, "a line over")], plan
    ).to_pylist()
    assert bad == {
        "input_file": "/b/d.jsonl",
        "input_row": 4,
        "id": None,
        "input_text": None,
        "input_image": None,
        "image_data": None,
        "image_fetch_status": None,
        "image_fetch_detail": None,
        "record_error": codes.RECORD_TOO_LARGE,
        "error_detail": "a line over",
        "text_status": None,
        "image_status": None,
        **dict.fromkeys(["input_audio", "audio_data", "audio_fetch_status", "audio_fetch_detail"]),
        "audio_status": None,
        "input_tabular": None,
    }
    loop: list = []
    loop.append(loop)  # a value no row can carry: json.dumps raises
    plan.passthrough = [("x", "x", pa.string())]
    (row,) = read_block("/b/d.jsonl", [Item(0, {"id": 1, "x": loop})], plan).to_pylist()
    assert row["record_error"] == codes.INTERNAL_ERROR and row["error_detail"].startswith(
        "ValueError"
    )
    assert row["input_row"] == 0 and row["x"] is None


def test_summary_counts_and_ok():
    counted = {"a.jsonl": Count(5, 5), "b.csv": Count(3, 7), "c.parquet": Count(4, None)}
    got = summary.input_counts(counted, Counter({"a.jsonl": 5, "b.csv": 3, "c.parquet": 2}))
    assert got == {"input_rows": 12, "input_lines": 12, "lines_in_quoted_fields": 4, "missing": 2}
    base = {"missing": 0, "duplicates": 0, "not_in_input": 0, "errors": {}}
    assert summary.ok(base)
    assert not summary.ok({**base, "errors": {codes.INPUT_READ_ERROR: 1}})  # a file cut short
