"""Bulk scoring without Ray: readers, row keys, pass-through types, resume, and the three UDFs run
by hand on real files with the real model."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_support import texts, write_jsonl

from mmsent import codes
from mmsent.config import PreprocessCfg, ScoreCfg
from mmsent.io.dumps import list_inputs
from mmsent.pipeline import resume
from mmsent.pipeline.plan import make_plan, read_rows
from mmsent.pipeline.rows import normalize_id, read_block, to_row
from mmsent.preprocess import clean_text

RESERVED = {"id", "label", "error"}


def rows_of(path, cfg=None):
    plan = make_plan(str(path), cfg or ScoreCfg(), RESERVED)
    return plan, list(read_rows(plan.files[0], plan))


def test_jsonl_rows_keys_and_bad_lines(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            b'\xef\xbb\xbf{"id": "a", "text": "hi", "label": "pos", "n": 1}',  # byte-order mark
            b"",
            b"   ",  # blank lines are not rows
            b"{not json",
            b"[1, 2]",
            b'{"id": "b", "text": "caf\xe9"}',  # Latin-1 byte inside a JSON string
            {"id": 7, "text": None, "extra": {"k": [1]}},
        ],
    )
    plan, rows = rows_of(path)
    assert [n for n, *_ in rows] == [0, 3, 4, 5, 6]  # line numbers: stable keys
    assert rows[1][1] is None and rows[2][1] is None
    assert [i.error for i in rows[1:3]] == [codes.INVALID_RECORD] * 2 and "not an object" in rows[
        2
    ][3]
    assert [p[:2] for p in plan.passthrough] == [
        ("label", "input_label"),
        ("n", "n"),
        ("extra", "extra"),
    ]
    ids = [to_row(r, plan, "/base", e) for _, r, e, _ in rows]
    assert [i.get("id") for i in ids] == ["a", None, None, "b", "7"]
    assert [i["record_error"] for i in ids] == [
        None,
        codes.INVALID_RECORD,
        codes.INVALID_RECORD,
        None,
        None,
    ]
    assert [ids[4][p.out] for p in plan.passthrough] == [None, None, '{"k": [1]}']  # JSON text
    # a Latin-1 byte is no text a string column can hold: judged when read, as clean_text does
    assert clean_text(rows[3].record["text"], PreprocessCfg())[1] == codes.TEXT_NOT_UTF8
    assert (ids[3]["input_text"], ids[3]["text_status"]) == (None, codes.TEXT_NOT_UTF8)


def test_ids_are_strings():
    assert normalize_id(12.0) == "12" and normalize_id(True) == "true"
    assert normalize_id(float("nan")) is None and normalize_id("  ") is None
    assert normalize_id(2**63 - 1) == str(2**63 - 1)


def test_csv_quoted_newlines_short_rows_gzip(tmp_path):
    path = tmp_path / "d.csv.gz"
    path.write_bytes(
        gzip.compress(b'\xef\xbb\xbfid,text,image_url,lang\n1,"two\nlines",,en\n\n2,short\n3\n')
    )
    plan, rows = rows_of(path)
    # keys are first physical lines, as in JSONL (the header is line 0); empty cells are null
    # (both changed with the one reader of mmsent.io.dumps: record numbers and "" before)
    assert [n for n, *_ in rows] == [1, 4, 5]
    assert rows[0][1] == {"id": "1", "text": "two\nlines", "image_url": None, "lang": "en"}
    assert [to_row(r, plan, "/b")["record_error"] for _, r, *_ in rows] == [
        None,
        None,
        codes.MISSING_COLUMN,
    ]
    assert [p[0] for p in plan.passthrough] == ["lang"]


def test_parquet_types_survive(tmp_path):
    big = 1_400_000_000_000_000_001  # not representable as float64
    t = pa.table(
        {
            "id": pa.array([big, None], pa.int64()),
            "text": ["x", "y"],
            "likes": pa.array([big, None], pa.int64()),
            "tags": [["a"], None],
        }
    )
    pq.write_table(t, tmp_path / "d.parquet")
    plan, rows = rows_of(tmp_path / "d.parquet")
    assert dict((p[1], p[2]) for p in plan.passthrough) == {
        "likes": pa.int64(),
        "tags": pa.list_(pa.string()),
    }
    r0, r1 = (to_row(r, plan, "/b") for _, r, *_ in rows)
    assert r0["id"] == str(big) and (r0["likes"], r0["tags"]) == (big, ["a"])
    assert r0["record_error"] is None
    assert r1["record_error"] == codes.MISSING_COLUMN  # null id
    block = read_block(plan.files[0], rows, plan)  # the read stage's block: exact, by name
    assert block.column("likes").to_pylist() == [big, None]
    assert block.schema.field("tags").type == pa.list_(pa.string())


def test_list_inputs(tmp_path):
    for name in ("a/1.jsonl", "a/2.jsonl.gz", "a/_SUCCESS", "a/.hidden.jsonl", "a/notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    assert [p.rsplit("/", 1)[1] for p in list_inputs(str(tmp_path / "a"))] == [
        "1.jsonl",
        "2.jsonl.gz",
    ]
    assert len(list_inputs(str(tmp_path / "a/*.jsonl*"))) == 2
    with pytest.raises(FileNotFoundError):
        list_inputs(str(tmp_path / "nothing/*.csv"))
    with pytest.raises(ValueError, match="format"):
        list_inputs(str(tmp_path / "a/notes.txt"))


def test_ranges_and_skip():
    rows = np.array([0, 1, 2, 5, 7, 8])
    assert resume.to_ranges(rows) == [[0, 3], [5, 6], [7, 9]]
    skip = resume.Skip(resume.to_ranges(rows))
    assert [n for n in range(11) if n not in skip] == [3, 4, 6, 9, 10]


def test_prepare_drops_cut_short_files_and_refuses_other_jobs(tmp_path):
    out = tmp_path / "out"
    manifest = {"input": "/in", "model": {"name": "m", "version": "1"}, "columns": {}}
    assert resume.prepare(str(out), manifest) == []
    pq.write_table(pa.table({"input_file": ["/in"], "input_row": [3]}), out / "a.parquet")
    whole = (out / "a.parquet").read_bytes()
    (out / "b.parquet").write_bytes(whole[: len(whole) - 9])  # no footer: a write cut short
    assert resume.prepare(str(out), manifest) == [str(out / "b.parquet")]
    assert [k.tolist() for k in resume.read_keys(str(out)).values()] == [[3]]
    with pytest.raises(resume.ResumeError, match="model"):
        resume.prepare(str(out), {**manifest, "model": {"name": "other", "version": "1"}})
    (out / resume.MANIFEST).unlink()
    with pytest.raises(resume.ResumeError, match="not an mmsent output"):
        resume.prepare(str(out), manifest)


def test_udfs_by_hand(tmp_path, photos):
    """read_unit -> preprocess -> ModelStage on real files with the real model, without Ray."""
    from mmsent.pipeline.job import model_config
    from mmsent.pipeline.output import output_fields
    from mmsent.pipeline.stages import ModelStage, preprocess, read_unit

    (tmp_path / "img").mkdir()
    (tmp_path / "img/ok.jpg").write_bytes(photos[0])
    (tmp_path / "img/cut.jpg").write_bytes(photos[0][:200])
    (tmp_path / "img/zero.jpg").write_bytes(b"")
    t = texts(4)
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "ok", "text": t[0], "image_url": "img/ok.jpg", "label": "gold"},
            {"id": "404", "text": t[1], "image_url": "img/none.jpg"},
            {"id": "cut", "text": t[2], "image_url": "img/cut.jpg"},
            {"id": "zero", "text": "", "image_url": "img/zero.jpg"},
            {"id": "img-only", "image_url": str(tmp_path / "img/ok.jpg")},
            {"text": t[3]},
            b"oops",
        ],
    )
    cfg = ScoreCfg()
    model_cfg = model_config(None)
    plan = make_plan(str(path), cfg, {n for n, _ in output_fields(model_cfg)})
    unit = {"file": plan.files[0], "skip": [[1, 2]]}  # row 1 was written by an earlier run
    blocks = list(read_unit({"unit": np.array([json.dumps(unit)])}, plan=plan, block_rows=4))
    assert [b["input_row"].to_pylist() for b in blocks] == [[0, 2, 3, 4], [5, 6]]
    stage = ModelStage(None, 0, plan.passthrough)
    tables = [stage(preprocess(b, model_cfg=model_cfg, fetch_cfg=cfg.fetch)) for b in blocks]
    out = pa.concat_tables(tables).to_pylist()
    assert [r["error"] for r in out] == [
        None,
        codes.IMAGE_TRUNCATED,
        codes.EMPTY_TEXT,
        None,
        codes.MISSING_COLUMN,
        codes.INVALID_RECORD,
    ]
    assert [r["modalities"] for r in out] == ["text+image", "text", "", "image", "text", ""]
    assert out[0]["input_label"] == "gold" and out[0]["label"] in model_cfg.labels
    assert out[2]["label"] is None and out[2]["score_positive"] is None
    assert out[3]["image_status"] == codes.OK and out[3]["text_status"] == codes.MISSING
    assert tables[0].schema.equals(tables[1].schema)  # same types whatever the rows hold


@pytest.fixture(scope="module")
def photos():
    from mmsent.sample_data import real_photos

    return [b for _, b in real_photos(max_side=256)]


def test_output_table_from_ray_shaped_columns():
    """A column of nulls may come back as NaN floats; the rows' own columns go on in Arrow."""
    from mmsent.config import ModelCfg
    from mmsent.pipeline.output import output_schema, to_table

    cfg = ModelCfg()
    schema = output_schema(cfg, [("likes", "likes", pa.int64())])
    nan2 = np.full(2, np.nan, dtype=np.float32)
    out = {
        "record_error": nan2,
        "label": np.array(["positive", None], dtype=object),
        **{f"score_{k}": np.array([0.5, np.nan], np.float32) for k in cfg.labels},
        "confidence": np.array([0.5, np.nan], np.float32),
        "modalities": np.array(["text", ""], dtype=object),
        "weight_text": nan2,
        "weight_image": nan2,
        "text_status": np.array(["ok", "empty_text"], dtype=object),
        "image_status": np.array(["missing", "missing"], dtype=object),
        "audio_status": np.array(["missing", "missing"], dtype=object),
        "error": np.array([None, "empty_text"], dtype=object),
        "error_detail": nan2,
        "model_name": np.array(["m", "m"], dtype=object),
        "model_version": np.array(["1", "1"], dtype=object),
    }
    rows = pa.table(
        {
            "input_file": ["/f", "/f"],
            "input_row": pa.array([0, 1], pa.int64()),
            "id": pa.array([None, None], pa.string()),
            "likes": pa.array([2**62, None], pa.int64()),
        }
    )
    t = to_table(out, rows, schema)
    assert t.schema.equals(schema)
    got = t.to_pylist()
    assert [r["id"] for r in got] == [None, None] and [r["error"] for r in got] == [
        None,
        codes.EMPTY_TEXT,
    ]
    assert got[1]["score_positive"] is None  # null, not NaN
    assert [r["error_detail"] for r in got] == [None, None]
    assert [r["likes"] for r in got] == [2**62, None]  # exact


def test_read_block_pass_through_values_that_do_not_fit_are_null(tmp_path):
    from mmsent.io.dumps import Item

    plan = make_plan(str(write_jsonl(tmp_path / "d.jsonl", [{"id": 1}])), ScoreCfg(), set())
    plan.passthrough = [("likes", "likes", pa.int64())]
    items = [Item(0, {"id": 1, "likes": 2**62}), Item(1, {"id": 2, "likes": "many"})]
    block = read_block("/f", items, plan)
    assert block.column("likes").to_pylist() == [2**62, None]  # exact; a string: null
