"""The columns between the stages, on a real local Ray: the read stage and the output stage of the
job's own graph (job.read_dataset, preprocessed_dataset, build_dataset) have typed columns, pass-through columns by
name with their own types, and rows a person can read with Ray's own tools (schema, show)."""

from __future__ import annotations

import pyarrow as pa
from pipeline_support import texts, write_jsonl

from mmsent import codes
from mmsent.config import ScoreCfg
from mmsent.pipeline.job import build_dataset, model_config, preprocessed_dataset, read_dataset
from mmsent.pipeline.output import output_fields, output_schema
from mmsent.pipeline.plan import make_plan
from mmsent.pipeline.rows import READ_FIELDS


def test_read_and_output_stages_have_readable_typed_columns(ray_local, tmp_path, capsys):
    t = texts(3)
    path = write_jsonl(
        tmp_path / "in/posts.jsonl",
        [
            {"id": 1, "text": t[0], "label": "pos", "likes": 3, "tags": ["a"]},
            {"id": "list-text", "text": ["a", "list"], "image_url": ["not", "a", "url"]},
            b'{"id": "latin1", "text": "caf\xe9", "label": "neg"}',
            {"id": "img", "text": t[1], "image_url": "no-such.jpg", "text_status": "mine"},
            b"{not json",
            {"text": t[2]},
        ],
    )
    cfg = ScoreCfg(preprocess_batch_size=2, model_batch_size=4, model_num_cpus=0.5)
    model_cfg = model_config(None)
    plan = make_plan(str(path), cfg, {n for n, _ in output_fields(model_cfg)})
    units = [{"file": plan.files[0], "skip": []}]
    # a pass-through column named like an output or a stage column is input_<name>
    assert [(p.out, p.type) for p in plan.passthrough] == [
        ("input_label", pa.string()),
        ("likes", pa.string()),  # JSONL values are written as strings (JSON text)
        ("tags", pa.string()),
        ("input_text_status", pa.string()),
    ]

    read = read_dataset(plan, units, cfg)
    schema = read.schema()
    want = READ_FIELDS + [(p.out, p.type) for p in plan.passthrough]
    assert list(zip(schema.names, schema.types, strict=True)) == want
    rows = {r["input_row"]: r for r in read.take_all()}
    assert sorted(rows) == list(range(6))  # one row per input row, keyed by its line
    assert rows[0]["id"] == "1" and rows[0]["input_text"] == t[0] and rows[0]["tags"] == '["a"]'
    assert (rows[1]["input_text"], rows[1]["text_status"]) == (None, codes.TEXT_INVALID)
    assert (rows[1]["input_image"], rows[1]["image_fetch_status"]) == (
        '["not", "a", "url"]',
        codes.IMAGE_URL_INVALID,
    )
    assert (rows[2]["input_text"], rows[2]["text_status"]) == (None, codes.TEXT_NOT_UTF8)
    assert rows[3]["input_image"] == f"{tmp_path}/in/no-such.jpg"
    assert rows[3]["input_text_status"] == "mine"
    assert rows[4]["record_error"] == codes.INVALID_RECORD and rows[4]["error_detail"]
    assert rows[5]["record_error"] == codes.MISSING_COLUMN
    read.show(2)
    shown = capsys.readouterr().out
    assert "'input_text':" in shown and "'input_label': 'pos'" in shown

    pre = preprocessed_dataset(plan, units, cfg, model_cfg).schema()
    types = dict(zip(pre.names, pre.types, strict=True))
    size, text = model_cfg.image.image_size, model_cfg.text
    assert types["input_ids"] == pa.fixed_shape_tensor(
        pa.int32(), [text.max_chunks, text.max_length]
    )
    assert types["attention_mask"] == pa.fixed_shape_tensor(
        pa.int8(), [text.max_chunks, text.max_length]
    )
    assert types["pixels"] == pa.binary() and size  # packed: b"" where a post has no image
    assert types["has_text"] == types["has_image"] == pa.bool_()
    for name in ("id", "record_error", "text_status", "image_status", "error_detail"):
        assert types[name] == pa.string(), name
    assert types["input_row"] == pa.int64() and types["input_label"] == pa.string()
    assert "input_text" not in types and "image_data" not in types  # consumed by preprocessing

    scored = build_dataset(plan, units, cfg, model_cfg)
    expected = output_schema(model_cfg, plan.passthrough)
    schema = scored.schema()
    assert list(zip(schema.names, schema.types, strict=True)) == list(
        zip(expected.names, expected.types, strict=True)
    )
    out = {r["input_row"]: r for r in scored.take_all()}
    assert sorted(out) == list(range(6))
    assert [out[i]["error"] for i in range(6)] == [
        None,
        codes.TEXT_INVALID,
        codes.TEXT_NOT_UTF8,
        codes.IMAGE_NOT_FOUND,
        codes.INVALID_RECORD,
        codes.MISSING_COLUMN,
    ]
    assert out[0]["input_label"] == "pos" and out[0]["likes"] == "3"
    assert out[3]["input_text_status"] == "mine" and out[3]["text_status"] == codes.OK
