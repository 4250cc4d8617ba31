"""`mmsent train` with 2 Ray Train workers on CPU (DDP over gloo, local Ray on 127.0.0.1): the same
loop as a one-process run, through TorchTrainer; the run yields a loadable checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from mmsent import cli
from mmsent.models.checkpoint import load
from mmsent.predictor import Predictor
from mmsent.testing import tiny_text_encoder


def test_two_ray_train_workers_yield_a_loadable_checkpoint(ray_local, tmp_path):
    dump = tmp_path / "dump"
    assert (
        cli.main(["make-demo-data", str(dump), "--real", "40", "--slice", "60", "--max-side", "96"])
        == 0
    )
    cfg = {
        "model": {"name": "tiny-ddp", "fusion": {"head": "gated", "hidden": 16, "num_heads": 2},
                  "text": {"pretrained": tiny_text_encoder(tmp_path / "bert"), "max_length": 24, "max_chunks": 1,
                           "stride": 8, "trainable_layers": 1},
                  "image": {"kind": "efficientnet_lite0", "image_size": 64}},
        "data": {"train": str(dump / "posts.jsonl"), "group_column": "slice", "split": [0.6, 0.2, 0.2]},
        # epoch 1 trains the head only, epoch 2 unfreezes a text layer: DDP is rebuilt in between
        "train": {"epochs": 2, "freeze_epochs": 1, "batch_size": 8, "workers": 2, "cpus_per_worker": 1},
        "out_dir": str(tmp_path / "runs"), "name": "ddp",
    }  # fmt: skip
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["train", "--config", str(tmp_path / "ddp.yaml")]) == 0
    run = Path(cfg["out_dir"]) / "ddp"
    state = json.loads((run / "history.json").read_text())
    assert [h["phase"] for h in state["history"]] == ["head", "all"]
    # both epochs went through Ray Train's checkpoint manager into the run folder
    snapshot = (run / "checkpoints" / "checkpoint_manager_snapshot.json").read_text()
    assert "epoch_001" in snapshot and "epoch_002" in snapshot
    # epoch 1 left the text tower as it was; epoch 2 trained its top layer (DDP rebuilt after unfreezing)
    base = load_file(str(tmp_path / "bert" / "model.safetensors"))
    top = [k for k in base if k.startswith("encoder.layer.1.")]
    for epoch, changed in (("epoch_001", False), ("epoch_002", True)):
        saved = load_file(str(run / "checkpoints" / epoch / "model.safetensors"))
        diff = [not torch.equal(saved[f"towers.text.encoder.{k}"], base[k]) for k in top]
        assert any(diff) == changed, epoch
    model = load(run / "best")
    assert model.cfg.name == "tiny-ddp" and model.cfg.labels == ["negative", "neutral", "positive"]
    [out] = Predictor(run / "best").predict([{"text": "what a lovely day"}])
    assert out["label"] in model.cfg.labels and out["error"] is None
    assert json.loads((run / "metrics.json").read_text())["test"]["n"] > 0
