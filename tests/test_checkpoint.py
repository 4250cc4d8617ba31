"""Checkpoints round-trip exactly and store only what changed over the pretrained towers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mmsent.models.checkpoint import CheckpointError, load, save
from mmsent.models.model import build_model
from mmsent.preprocess import Preprocessor, to_tensors
from mmsent.testing import tiny_model_cfg, tiny_text_encoder, tiny_vision_encoder


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    cfg = tiny_model_cfg(
        tiny_text_encoder(root / "bert"), tiny_vision_encoder(root / "clip"), head="cross_attention"
    )
    cfg.text.lora_rank, cfg.text.trainable_layers = 4, 1
    return cfg


def train_a_little(model, batch):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        loss = model(batch).logits.logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_round_trip_is_exact(cfg, tmp_path):
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = to_tensors(Preprocessor(cfg)(["nice one", "meh " * 20], [None, None]))
    train_a_little(model.train(), batch)
    model.eval()
    save(model, tmp_path / "ck", extra={"note": "x"})
    loaded = load(tmp_path / "ck", device="cpu")
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, loaded(batch).logits)
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["note"] == "x"


def test_only_changed_weights_are_stored(cfg, tmp_path):
    model = build_model(cfg)
    save(model, tmp_path / "ck")
    stored = set(load_file(str(tmp_path / "ck" / "model.safetensors")))
    assert any(".lora_a" in k for k in stored)  # adapters
    assert any(k.startswith("head.") for k in stored)  # fusion head
    assert any(
        "encoder.encoder.layer.1." in k and ".base." in k for k in stored
    )  # the unfrozen top layer
    assert not any(
        "encoder.encoder.layer.0." in k and ".base." in k for k in stored
    )  # frozen: referenced
    assert not any(k.startswith("towers.image.") for k in stored)  # frozen image tower: referenced
    assert not any("word_embeddings" in k for k in stored)


def test_bad_checkpoints_are_clear_errors(cfg, tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load(tmp_path / "nothing")
    model = build_model(cfg)
    save(model, tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    meta["model"]["fusion"]["hidden"] = 8  # weights no longer fit the config
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises((CheckpointError, RuntimeError)):
        load(tmp_path / "ck")
