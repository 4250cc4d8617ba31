"""`mmsent train` / `mmsent evaluate` end to end on a small demo dump, with a tiny random BERT and
EfficientNet-Lite0 at 64 px (both offline): the run folder, resume, evaluation, the schedule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from mmsent import cli, codes
from mmsent.models.checkpoint import DEFAULT_MODEL_DIR, load
from mmsent.testing import tiny_text_encoder
from mmsent.train import evaluate, trainer

ARTEFACTS = [
    "config.yaml",
    "metrics.json",
    "per_class.md",
    "ablation.md",
    "confusion.png",
    "curves.png",
    "samples.png",
    "history.json",
    "best/config.json",
    "best/model.safetensors",
    "checkpoints/epoch_001/train_state.pt",
    "checkpoints/epoch_002/model.safetensors",
    "data/train.jsonl",
    "data/val.jsonl",
    "data/test.jsonl",
]


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "dump"
    argv = [
        str(out),
        "--real",
        "120",
        "--slice",
        "240",
        "--max-side",
        "96",
        "--broken-rate",
        "0.08",
    ]
    assert cli.main(["make-demo-data", *argv]) == 0
    return out


@pytest.fixture(scope="module")
def config(tmp_path_factory, dump) -> Path:
    """A tiny model on the dump, written as a config file like mmsent/presets/train/*.yaml."""
    root = tmp_path_factory.mktemp("train")
    cfg = {
        "model": {"name": "tiny", "fusion": {"head": "gated", "hidden": 32, "num_heads": 2, "modality_dropout": 0.1},
                  "text": {"pretrained": tiny_text_encoder(root / "bert"), "max_length": 32, "max_chunks": 2,
                           "stride": 8, "trainable_layers": -1},
                  "image": {"kind": "efficientnet_lite0", "image_size": 64}},
        "data": {"train": str(dump / "posts.jsonl"), "group_column": "slice", "split": [0.6, 0.2, 0.2]},
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "head_lr": 3e-3, "seed": 0, "num_threads": 1},
        "out_dir": str(root / "runs"),
    }  # fmt: skip
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def run(config) -> Path:
    assert cli.main(["train", "--config", str(config), "name=two-epochs"]) == 0
    return Path(yaml.safe_load(config.read_text())["out_dir"]) / "two-epochs"


def test_demo_dump_is_what_its_readme_says(dump):
    from mmsent.demo_data import slice_label
    from mmsent.train.default_model import splits

    rows = [json.loads(line) for line in (dump / "posts.jsonl").read_text().splitlines()]
    real = [r for r in rows if r["slice"] == "real_text"]
    carries = [r for r in rows if r["slice"] == "image_carries"]
    assert len(real) == 120 and len(carries) == 240
    assert {r["text"] for r in real} <= set(
        splits()[2].texts
    )  # never the default model's training texts
    assert all(
        r["label"] == slice_label(r["caption_reads"], r["photo_stands_for"]) and r["image"]
        for r in carries
    )
    assert {r["caption_reads"] for r in carries} == {"negative", "neutral", "positive"}
    for r in rows:
        if r["image"] and r.get("broken_image") != "missing":
            assert (dump / r["image"]).stat().st_size > 0
    readme = (dump / "README.md").read_text()
    for part in ("real_text", "image_carries", "convention of this demo", "Broken images", "VADER"):
        assert part in readme


def test_two_epoch_run_writes_every_artefact(run, dump):
    for name in ARTEFACTS:
        assert (run / name).exists(), name
    for png in ("confusion.png", "curves.png", "samples.png"):
        with Image.open(run / png) as im:
            assert im.size[0] > 200 and im.size[1] > 200
    m = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    best = max(h["val_macro_f1"] for h in m["history"])
    assert best > 0.45, m["history"]  # chance: ~0.33 (uniform), ~0.2 (majority class)
    assert m["test"]["n"] == m["posts"] > 0 and set(m["test"]["per_class"]) == {
        "negative",
        "neutral",
        "positive",
    }
    for group in ("all", "real_text", "image_carries"):
        assert set(m["ablation"][group]) >= {"fused", "text_only", "image_only"}
    assert "| negative |" in (run / "per_class.md").read_text()
    assert "image_carries" in (run / "ablation.md").read_text()
    # every damaged image of the dump is counted (those rows trained text-only), none is lost
    rows = [json.loads(line) for line in (dump / "posts.jsonl").read_text().splitlines()]
    images = m["data"]["images"]
    bad = sum(n for split in images.values() for code, n in split.items() if codes.is_error(code))
    assert bad == sum("broken_image" in r for r in rows) > 0
    assert sum(sum(split.values()) for split in images.values()) == len(rows)
    model = load(run / "best")
    assert model.cfg.labels == ["negative", "neutral", "positive"]


def test_resume_continues_from_the_saved_epoch(run, tmp_path):
    """Cut the run back to epoch 1, resume: epoch 2 comes out exactly as in the straight run."""
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    shutil.rmtree(cut / "checkpoints" / "epoch_002")
    shutil.rmtree(cut / "best")
    assert trainer.main(["--resume", str(cut)]) == 0
    straight = json.loads((run / "history.json").read_text())["history"]
    resumed = json.loads((cut / "history.json").read_text())["history"]
    for h in straight + resumed:
        h.pop("seconds")
    assert resumed == straight
    a, b = (
        load_file(str(run / "best/model.safetensors")),
        load_file(str(cut / "best/model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_reproduces_metrics_json(run, tmp_path):
    out = tmp_path / "eval"
    assert (
        cli.main(["evaluate", str(run / "best"), str(run / "data/test.jsonl"), "--out", str(out)])
        == 0
    )
    trained, evaluated = (json.loads((d / "metrics.json").read_text()) for d in (run, out))
    assert evaluated["test"] == trained["test"]
    assert evaluated["ablation"] == trained["ablation"]
    assert (out / "confusion.png").exists() and (out / "samples.png").exists()


def test_head_first_then_unfreeze_and_early_stop(config, tmp_path):
    """Epoch 1 trains the head only (towers bit-identical to their source), epoch 2 the towers too;
    with learning rates of 0 nothing improves and patience 1 stops the run at epoch 2 of 5."""
    bert = Path(yaml.safe_load(config.read_text())["model"]["text"]["pretrained"])
    overrides = ["train.freeze_epochs=1", f"out_dir={tmp_path}", "data.limit=150"]
    assert trainer.main(["--config", str(config), "name=freeze", "train.epochs=1", *overrides]) == 0
    base = load_file(str(bert / "model.safetensors"))
    saved = load_file(str(tmp_path / "freeze/checkpoints/epoch_001/model.safetensors"))
    text = {
        k.removeprefix("towers.text.encoder."): v
        for k, v in saved.items()
        if k.startswith("towers.text.")
    }
    assert text and all(torch.equal(v, base[k]) for k, v in text.items())
    assert (
        trainer.main(
            [
                "--config",
                str(config),
                "name=stop",
                "train.epochs=5",
                "train.patience=1",
                "train.lr=0",
                "train.head_lr=0",
                *overrides,
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "stop/metrics.json").read_text())
    assert [h["phase"] for h in m["history"]] == ["head", "all"]
    assert m["stopped_early"] and m["best_epoch"] == 1


def test_evaluate_the_shipped_default_model(dump, tmp_path):
    assert (DEFAULT_MODEL_DIR / "config.json").exists()  # shipped in the package
    out = tmp_path / "default"
    argv = [
        "default",
        str(dump / "posts.jsonl"),
        "--group-column",
        "slice",
        "--limit",
        "24",
        "--out",
        str(out),
    ]
    assert evaluate.main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"]["name"] == "mmsent-default" and m["posts"] == 24
    assert np.isfinite(m["test"]["macro_f1"]) and (out / "curves.png").exists()
