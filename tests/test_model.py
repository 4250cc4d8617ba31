"""Every fusion head, forward and backward on tiny random towers, with and without images."""

from __future__ import annotations

import pytest
import torch

from mmsent.config import ConfigError, FusionCfg, ModelCfg, load_config
from mmsent.models.fusion import HEADS, build_head
from mmsent.models.model import build_model
from mmsent.models.towers import TowerOut
from mmsent.preprocess import Preprocessor, to_tensors
from mmsent.testing import tiny_model_cfg

HEAD_NAMES = ["concat", "attention", "cross_attention", "gated", "late"]


def test_all_heads_registered():
    assert set(HEAD_NAMES) <= set(HEADS)


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_head_forward_backward_every_presence_pattern(encoders, photos, head):
    torch.manual_seed(0)
    cfg = tiny_model_cfg(*encoders, head=head)
    model, pre = build_model(cfg), Preprocessor(cfg)
    for p in model.parameters():  # train everything so every gradient is checked
        p.requires_grad_(True)
    # both, text only, image only, nothing usable, a long text (several windows) with an image
    batch = pre(
        ["good day", "bad " * 5, None, "", "so long " * 30],
        [photos[0], None, photos[1], None, photos[2]],
    )
    assert batch["has_text"].tolist() == [True, True, False, False, True]
    assert batch["has_image"].tolist() == [True, False, True, False, True]
    assert batch["text_chunks"][4] > 1
    out = model(to_tensors(batch))
    assert out.logits.shape == (5, 3)
    assert torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if out.weights is not None:
        w = out.weights.detach()
        assert torch.allclose(w[[0, 1, 2, 4]].sum(1), torch.ones(4), atol=1e-5)
        assert w[1, 1] == 0 and w[2, 0] == 0  # an absent modality weighs nothing
        assert (w[3] == 0).all()  # nothing present: no weights
    if head == "cross_attention":
        assert out.attention is not None and out.attention.shape[0] == 5


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_masked_modality_has_no_effect_on_head(head):
    """Whatever sits in an absent modality's features, the head's output does not change."""
    torch.manual_seed(0)
    dims = {"text": 12, "image": 20}
    h = build_head(FusionCfg(head=head, hidden=16, num_heads=2, dropout=0.0), dims, 3).eval()
    B = 4
    present = {
        "text": torch.tensor([True, True, False, False]),
        "image": torch.tensor([True, False, True, False]),
    }

    def feats(seed):
        g = torch.Generator().manual_seed(seed)
        return {
            m: TowerOut(
                torch.randn(B, d, generator=g),
                torch.randn(B, 5, d, generator=g),
                torch.ones(B, 5, dtype=torch.bool),
            )
            for m, d in dims.items()
        }

    a, b = feats(1), feats(2)
    for m in dims:  # keep the present rows' features equal; absent rows differ
        for field in ("pooled", "tokens"):
            keep = present[m]
            getattr(b[m], field)[keep] = getattr(a[m], field)[keep]
    out_a, out_b = h(a, present), h(b, present)
    assert torch.allclose(out_a.logits, out_b.logits, atol=1e-6)
    assert not torch.allclose(
        h(feats(3), present).logits[0], out_a.logits[0]
    )  # present ones do matter


def test_absent_image_pixels_never_reach_the_model(encoders, photos):
    cfg = tiny_model_cfg(*encoders, head="gated")
    model, pre = build_model(cfg).eval(), Preprocessor(cfg)
    batch = to_tensors(pre(["fine", "fine"], [photos[0], None]))
    noisy = dict(batch, pixels=batch["pixels"].clone())
    noisy["pixels"][1] = torch.randint(0, 255, noisy["pixels"][1].shape, dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(model(batch).logits[1], model(noisy).logits[1])


def test_any_subset_of_modalities(encoders):
    text_only = build_model(tiny_model_cfg(encoders[0], None, head="gated"))
    image_only = build_model(tiny_model_cfg(None, encoders[1], head="attention"))
    assert list(text_only.towers) == ["text"] and list(image_only.towers) == ["image"]
    with pytest.raises(ValueError, match="cross_attention needs a text tower"):
        build_model(tiny_model_cfg(None, encoders[1], head="cross_attention"))


def test_freeze_and_unfreeze(encoders):
    model = build_model(tiny_model_cfg(*encoders))
    text = model.towers["text"]
    assert not any(p.requires_grad for p in text.parameters())
    model.set_trainable({"text": 1})
    trainable = {n.split(".")[3] for n, p in text.named_parameters() if p.requires_grad}
    assert trainable == {"1"}  # only the top layer of encoder.encoder.layer.{0,1}
    model.set_trainable({"text": 0})
    assert not any(p.requires_grad for p in text.parameters())


def test_unknown_names_are_clear_errors(encoders):
    with pytest.raises(ValueError, match="unknown fusion head 'nope'"):
        build_model(tiny_model_cfg(*encoders, head="nope"))
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(ModelCfg, {"fusion": {"heed": "gated"}})
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_model(
            load_config(ModelCfg, {"text": {"pretrained": "bert-base-uncased"}, "image": None})
        )
    cfg = load_config(ModelCfg, {}, ["fusion.head=attention", "image=null", "text.max_chunks=2"])
    assert cfg.fusion.head == "attention" and cfg.image is None and cfg.text.max_chunks == 2


def test_every_model_preset_loads():
    from mmsent.config import CONFIG_DIR

    presets = sorted((CONFIG_DIR / "models").glob("*.yaml"))
    assert presets
    for p in presets:
        cfg = load_config(ModelCfg, p.stem, kind="models")
        assert cfg.modalities() and cfg.fusion.head in HEADS, p


def test_other_transformers_towers_from_local_dirs(tmp_path, encoders, photos):
    """DistilBERT for text; ViT and ResNet for images: any local transformers folder works."""
    import shutil

    from transformers import (
        DistilBertConfig,
        DistilBertModel,
        ResNetConfig,
        ResNetModel,
        ViTConfig,
        ViTModel,
    )

    distil = tmp_path / "distil"
    DistilBertModel(
        DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    ).save_pretrained(distil)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(f"{encoders[0]}/{f}", distil / f)
    ViTModel(
        ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(tmp_path / "vit")
    ResNetModel(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ).save_pretrained(tmp_path / "resnet")
    for text_dir, vision_dir in (
        (str(distil), str(tmp_path / "vit")),
        (encoders[0], str(tmp_path / "resnet")),
    ):
        cfg = tiny_model_cfg(text_dir, vision_dir, head="cross_attention")
        model = build_model(cfg)
        model.set_trainable({"text": 1, "image": 1})
        out = model(to_tensors(Preprocessor(cfg)(["a fine day", None], [photos[0], photos[1]])))
        assert torch.isfinite(out.logits).all() and out.attention.shape[2] > 1
        out.logits.sum().backward()


@pytest.mark.parametrize("head", ["gated", "cross_attention"])
def test_image_tower_in_cpu_chunks_scores_the_same(encoders, photos, head, monkeypatch):
    """CPU inference runs the image tower `cpu_chunk` posts at a time (bounded activation memory):
    the same logits and image weights as one call on the whole batch."""
    cfg = tiny_model_cfg(*encoders, head=head)
    model, pre = build_model(cfg).eval(), Preprocessor(cfg)
    n = 11
    texts = [f"post {i} " + "words " * i for i in range(n)]
    images = [photos[i % len(photos)] if i % 4 else None for i in range(n)]
    batch = to_tensors(pre(texts, images))
    tower = type(model.towers["image"])
    with torch.no_grad():
        monkeypatch.setattr(tower, "cpu_chunk", None)
        whole = model(batch)
        monkeypatch.setattr(tower, "cpu_chunk", 3)
        chunked = model(batch)
    assert torch.allclose(whole.logits, chunked.logits, atol=1e-5)
    if whole.weights is not None:
        assert torch.allclose(whole.weights, chunked.weights, atol=1e-5)
