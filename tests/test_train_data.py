"""Training data readers: JSONL / Parquet / CSV, local and s3:// (moto on 127.0.0.1), column names,
label maps, bad rows counted, images through the fetcher and the preprocessing path's decoder."""

from __future__ import annotations

import json

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmsent import cli, codes
from mmsent.config import ConfigError, DataCfg, FetchCfg, ImageTowerCfg, ModelCfg
from mmsent.sample_data import real_photos
from mmsent.train.data import make_label_map
from mmsent.train.labelled import fetch_images, read_posts

ROWS = [  # a dump with its own column names and integer labels
    {"post_id": 7, "body": "love it", "pic": "img/a.jpg", "stars": 4},
    {"post_id": 8, "body": "meh", "pic": None, "stars": 2},
    {"post_id": 9, "body": "awful", "pic": "img/missing.jpg", "stars": 0},
    {"post_id": 10, "body": "no label", "pic": None, "stars": None},
    {"post_id": 11, "body": "odd label", "pic": None, "stars": 3},
]
CFG = DataCfg(
    text_column="body",
    image_column="pic",
    label_column="stars",
    id_column="post_id",
    labels=["negative", "neutral", "positive"],
    label_map={"0": "negative", "2": "neutral", "4": "positive"},
)
MODEL = ModelCfg(text=None, image=ImageTowerCfg(pretrained=None, image_size=32))


def write(folder, fmt: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img").mkdir(exist_ok=True)
    (folder / "img" / "a.jpg").write_bytes(real_photos(max_side=64)[0][1])
    path = folder / f"posts.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif fmt == "csv":
        lines = ["post_id,body,pic,stars"] + [
            ",".join("" if r[k] is None else str(r[k]) for k in r) for r in ROWS
        ]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "{broken json\n[1, 2]\n")
    return str(path)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_every_format_reads_the_same_posts(tmp_path, fmt):
    read = read_posts(write(tmp_path, fmt), CFG)
    p = read.posts
    assert p.texts == ["love it", "meh", "awful"]
    assert p.labels.tolist() == [2, 1, 0]
    assert [str(i) for i in p.ids] == ["7", "8", "9"]
    assert p.image_refs == [str(tmp_path / "img/a.jpg"), None, str(tmp_path / "img/missing.jpg")]
    assert read.stats["skipped"] == {"label_missing": 1, "label_unknown": 1}
    assert read.stats["unreadable_rows"] == (
        2 if fmt == "jsonl" else 0
    )  # counted, never silently lost
    assert read.stats["rows"] == len(ROWS) + read.stats["unreadable_rows"]
    counts = fetch_images(p, FetchCfg(), MODEL)
    assert counts == {codes.OK: 1, codes.MISSING: 1, codes.IMAGE_NOT_FOUND: 1}
    assert p.images[0] is not None and p.images[2] is None


def test_label_maps():
    names = ["negative", "neutral", "positive"]
    assert make_label_map({"positive", "negative"}, None, None, names) == (
        names,
        {n: n for n in names},
    )
    assert make_label_map({"0", "2"}, names, None, names)[1]["2"] == "positive"  # class indices
    assert make_label_map({"pos", "neg"}, None, None, names)[0] == ["neg", "pos"]  # the data's own
    assert make_label_map({"1", "10", "2"}, None, None, names)[0] == ["1", "2", "10"]
    labels, mapping = make_label_map({"4", "0"}, None, {"0": "bad", "4": "good"}, names)
    assert labels == ["bad", "good"] and mapping["4"] == "good"
    with pytest.raises(ConfigError, match="label_map"):
        make_label_map({"7"}, names, None, names)


def test_s3_dump_and_relative_images(s3_server, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="train-data")
    local = write(tmp_path, "jsonl")
    s3.upload_file(local, "train-data", "dump/posts.jsonl")
    s3.upload_file(str(tmp_path / "img/a.jpg"), "train-data", "dump/img/a.jpg")
    read = read_posts("s3://train-data/dump/posts.jsonl", CFG)
    assert read.posts.image_refs[0] == "s3://train-data/dump/img/a.jpg"
    assert fetch_images(read.posts, FetchCfg(retries=0), MODEL) == {
        codes.OK: 1,
        codes.MISSING: 1,
        codes.IMAGE_NOT_FOUND: 1,
    }


def test_make_demo_data_to_s3(s3_server):
    boto3.client("s3").create_bucket(Bucket="demo-dump")
    assert (
        cli.main(
            [
                "make-demo-data",
                "s3://demo-dump/d1",
                "--real",
                "8",
                "--slice",
                "8",
                "--max-side",
                "64",
            ]
        )
        == 0
    )
    read = read_posts("s3://demo-dump/d1/posts.jsonl", DataCfg(group_column="slice"))
    assert len(read.posts) == 16 and set(read.posts.sources) == {"real_text", "image_carries"}
    counts = fetch_images(read.posts, FetchCfg(retries=0), MODEL)
    assert counts[codes.OK] >= 8  # every image_carries post has its photo on S3


def test_train_presets_parse():
    from pathlib import Path

    from mmsent.config import CONFIG_DIR
    from mmsent.train.run import resolve

    presets = sorted(Path(CONFIG_DIR, "train").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"default", "demo", "demo-cross-attention", "gpu"}
    for p in presets:
        # model presets and init_from merged, as `mmsent train` does
        cfg, stem = resolve(p.stem, [])
        assert stem == p.stem and cfg.model.text and cfg.model.image
        assert cfg.train.epochs > cfg.train.freeze_epochs >= 0
