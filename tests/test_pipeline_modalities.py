"""Bulk scoring with all four modalities on a tiny random model: audio by path, URL and inline,
tabular columns as JSONL and CSV values, broken clips and junk values contained per row; then
the same dump through a real local Ray job."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_support import ImageServer, write_jsonl

from mmsent import codes
from mmsent.config import FetchCfg, ScoreCfg, ScoreColumnsCfg
from mmsent.models.checkpoint import save
from mmsent.models.model import build_model
from mmsent.pipeline.job import model_config, run
from mmsent.pipeline.output import output_fields
from mmsent.pipeline.plan import make_plan, read_rows
from mmsent.pipeline.rows import read_block
from mmsent.pipeline.stages import FetchStage, ModelStage, preprocess
from mmsent.testing import tiny_model_cfg, tone

FETCH = FetchCfg(timeout_s=0.5, retries=0, backoff_s=0.01)


def checkpoint(root, encoders, **kw):
    torch.manual_seed(0)
    return str(save(build_model(tiny_model_cfg(*encoders, **kw)), root))


@pytest.fixture(scope="module")
def four(tmp_path_factory, encoders):
    """A tiny checkpoint reading text, image, tabular and audio."""
    return checkpoint(tmp_path_factory.mktemp("ck") / "four", encoders, tabular=True, audio=True)


def dump(folder, srv, photo):
    """Posts covering each audio source and failure, tabular values good and junk; returns
    {id: (audio_status, tabular_status)} expected."""
    (folder / "audio").mkdir(parents=True)
    (folder / "img").mkdir()
    (folder / "img" / "p.jpg").write_bytes(photo)
    for fmt in ("WAV", "FLAC", "OGG"):
        (folder / "audio" / f"a.{fmt.lower()}").write_bytes(tone(330, 1.0, fmt))
    (folder / "audio" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (folder / "audio" / "long.wav").write_bytes(tone(330, 3.0))  # the tiny model caps at 2 s
    (folder / "audio" / "blip.wav").write_bytes(tone(330, 0.02))
    ok, tab = codes.OK, {"likes": 40, "hour": "13", "platform": "insta", "verified": True}
    posts = {
        "all-four": ({"text": "lovely", "image_url": "img/p.jpg", "audio_url": "audio/a.wav", **tab}, ok, ok),
        "flac": ({"text": "fine", "audio_url": "audio/a.flac"}, ok, codes.MISSING),
        "ogg-only": ({"audio_url": "audio/a.ogg"}, ok, codes.MISSING),
        "http": ({"audio_url": srv.url("img/clip"), "platform": "tiktok"}, ok, ok),
        "http-404": ({"text": "hm", "audio_url": srv.url("404/clip")}, codes.AUDIO_NOT_FOUND, codes.MISSING),
        "broken": ({"text": "so sad", "audio_url": "audio/broken.wav", **tab}, codes.AUDIO_DECODE_ERROR, ok),
        "too-long": ({"text": "x", "audio_url": "audio/long.wav"}, codes.AUDIO_TOO_LONG, codes.MISSING),
        "too-short": ({"text": "x", "audio_url": "audio/blip.wav"}, codes.AUDIO_TOO_SHORT, codes.MISSING),
        "no-file": ({"text": "x", "audio_url": "audio/none.wav"}, codes.AUDIO_NOT_FOUND, codes.MISSING),
        "escape": ({"text": "x", "audio_url": "../../etc/passwd"}, codes.AUDIO_URL_FORBIDDEN, codes.MISSING),
        "device": ({"text": "x", "audio_url": "/dev/zero"}, codes.AUDIO_NOT_A_FILE, codes.MISSING),
        "not-a-url": ({"text": "x", "audio_url": 17}, codes.AUDIO_URL_INVALID, codes.MISSING),
        "tab-only": ({"likes": "1e3", "platform": "myspace"}, codes.MISSING, ok),
        "tab-junk": ({"text": "meh", "likes": "lots", "hour": [1]}, codes.MISSING, codes.TABULAR_INVALID),
        "nothing": ({"likes": None, "hour": "n/a"}, codes.MISSING, codes.MISSING),
    }  # fmt: skip
    rows = [{"id": k, **post} for k, (post, _, _) in posts.items()]
    write_jsonl(folder / "posts.jsonl", rows)
    return {k: (a, t) for k, (_, a, t) in posts.items()}


def score_by_hand(path, model_dir):
    """The three UDFs of the graph on one file, without Ray."""
    model_cfg = model_config(model_dir)
    cfg = ScoreCfg(model_dir=model_dir)
    reserved = {n for n, _ in output_fields(model_cfg)}
    plan = make_plan(str(path), cfg, reserved, model_cfg.tabular_columns())
    block = read_block(plan.files[0], list(read_rows(plan.files[0], plan)), plan)
    media = tuple(m for m in ("image", "audio") if getattr(model_cfg, m) is not None)
    block = pa.concat_tables(FetchStage(FETCH, 2, media=media)(block))
    table = preprocess(block, model_cfg=model_cfg, fetch_cfg=FETCH)
    out = ModelStage(model_dir, 1, plan.passthrough)(table)
    return {r["id"]: r for r in out.to_pylist()}


def test_four_modalities_every_row_contained(four, tmp_path, photos):
    with ImageServer({"clip": tone(500, 1.5, "FLAC")}) as srv:
        expected = dump(tmp_path, srv, photos[0])
        got = score_by_hand(tmp_path / "posts.jsonl", four)
    assert set(got) == set(expected)  # one output row per input row
    for k, (audio, tab) in expected.items():
        assert (k, got[k]["audio_status"], got[k]["tabular_status"]) == (k, audio, tab)
    r = got["all-four"]
    assert r["modalities"] == "text+image+tabular+audio" and r["error"] is None
    weights = [r[f"weight_{m}"] for m in ("text", "image", "tabular", "audio")]
    assert min(weights) > 0 and abs(sum(weights) - 1) < 1e-5
    # a broken clip: its code, and a label from the text and tabular values
    assert got["broken"]["error"] == codes.AUDIO_DECODE_ERROR and got["broken"]["label"]
    assert got["broken"]["modalities"] == "text+tabular" and got["broken"]["weight_audio"] == 0
    assert got["ogg-only"]["modalities"] == "audio" and got["ogg-only"]["label"]
    assert got["tab-only"]["modalities"] == "tabular"  # an unknown platform: its own bucket
    assert got["tab-junk"]["modalities"] == "text" and "likes" in got["tab-junk"]["error_detail"]
    assert got["nothing"]["label"] is None and got["nothing"]["error"] == codes.NO_USABLE_INPUT
    assert got["escape"]["error_detail"] and got["http"]["modalities"] == "tabular+audio"
    assert got["all-four"]["likes"] == "40"  # tabular columns pass through too


def test_model_without_audio_or_tabular_ignores_them(tmp_path, encoders, photos):
    text_image = checkpoint(tmp_path / "ti", encoders)
    with ImageServer({}) as srv:
        dump(tmp_path / "d", srv, photos[0])
        got = score_by_hand(tmp_path / "d" / "posts.jsonl", text_image)
        assert srv.hits == {}  # no clip fetched
    assert "tabular_status" not in got["all-four"] and "weight_audio" not in got["all-four"]
    assert got["all-four"]["audio_status"] == codes.UNUSED
    assert got["all-four"]["modalities"] == "text+image" and got["all-four"]["error"] is None
    assert got["ogg-only"]["error"] == codes.NO_USABLE_INPUT  # its clip is not read
    assert got["flac"]["error"] is None and got["nothing"]["audio_status"] == codes.MISSING


def test_csv_cells_are_tabular_values(four, tmp_path):
    (tmp_path / "a.wav").write_bytes(tone())
    with open(tmp_path / "posts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "audio_url", "likes", "hour", "platform", "verified"])
        w.writerow(["1", "ok", "a.wav", "12", "", "x", "true"])
        w.writerow(["2", "ok", "", "NA", "25.5", "", "false"])
        w.writerow(["3", "ok", "", "abc", "", "", ""])
    got = score_by_hand(tmp_path / "posts.csv", four)
    assert [got[i]["tabular_status"] for i in "123"] == [codes.OK, codes.OK, codes.TABULAR_INVALID]
    assert got["1"]["modalities"] == "text+tabular+audio" and got["3"]["modalities"] == "text"


def test_ray_job_four_modalities(ray_local, four, tmp_path, photos):
    with ImageServer({"clip": tone(500, 1.0, "OGG")}) as srv:
        expected = dump(tmp_path / "in", srv, photos[0])
        cfg = ScoreCfg(
            model_dir=four,
            fetch=FETCH,
            preprocess_batch_size=4,
            model_batch_size=8,
            model_num_cpus=0.5,
        )
        summary = run(str(tmp_path / "in" / "posts.jsonl"), str(tmp_path / "out"), cfg)
    assert summary["rows"] == len(expected) and summary["missing"] == 0
    t = pq.read_table(tmp_path / "out")
    rows = {r["id"]: r for r in t.to_pylist()}
    assert {k: (r["audio_status"], r["tabular_status"]) for k, r in rows.items()} == expected
    assert rows["broken"]["label"] and rows["broken"]["error"] == codes.AUDIO_DECODE_ERROR
    assert t.schema.field("weight_audio").type == pa.float32()
    assert np.isclose(
        sum(rows["all-four"][f"weight_{m}"] for m in ("text", "image", "tabular", "audio")), 1
    )
    assert json.loads((tmp_path / "out" / "_job.json").read_text())["model"]["name"] == "tiny"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
KEYS = ("text", "image_url", "audio_url", "likes", "hour", "platform", "verified")
ALL_CODES = {v for k, v in vars(codes).items() if k.isupper() and isinstance(v, str)}


@pytest.fixture(scope="module")
def stage(four):
    return ModelStage(four, 1, [])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.dictionaries(st.sampled_from(KEYS), JSON), min_size=1, max_size=6))
def test_fuzz_any_values_in_every_input_column_one_row_each_with_codes(
    four, stage, records, tmp_path_factory
):
    """Whatever JSON values sit in the text, image, audio and tabular columns: no exception, one
    output row per record, every status a known code (no network: only file:// is fetched)."""
    folder = tmp_path_factory.mktemp("fz")
    path = write_jsonl(folder / "d.jsonl", [{"id": i, **r} for i, r in enumerate(records)])
    model_cfg = model_config(four)
    cfg = ScoreCfg(columns=ScoreColumnsCfg(passthrough=[]))
    plan = make_plan(str(path), cfg, set(), model_cfg.tabular_columns())
    block = read_block(plan.files[0], list(read_rows(plan.files[0], plan)), plan)
    fetch_cfg = FetchCfg(schemes=["file"], retries=0)
    out = stage(preprocess(block, model_cfg=model_cfg, fetch_cfg=fetch_cfg)).to_pylist()
    assert [r["id"] for r in out] == [str(i) for i in range(len(records))]
    for r in out:
        statuses = [r[f"{m}_status"] for m in ("text", "image", "tabular", "audio")]
        assert set(statuses) <= ALL_CODES and (r["error"] is None or r["error"] in ALL_CODES)
        assert (r["label"] is None) == (r["modalities"] == "")
