"""Tiny random encoders for tests and smoke runs, built offline from configs (no downloads).

    text_dir = tiny_text_encoder(tmp_path / "bert")      # BERT, 2 layers, 32-d, MiniLM's tokenizer
    vision_dir = tiny_vision_encoder(tmp_path / "clip")  # CLIPVisionModel, 2 layers, 32-d, 32 px
    cfg = tiny_model_cfg(text_dir, vision_dir, head="cross_attention")
    cfg = tiny_model_cfg(text_dir, vision_dir, tabular=True, audio=True)  # all four modalities

Lives in the package (not tests/) so that Ray workers can import it too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import (
    AudioCfg,
    AudioTowerCfg,
    FusionCfg,
    ImageTowerCfg,
    ModelCfg,
    TabularTowerCfg,
    TextTowerCfg,
)

# the tiny model's tabular columns, with training statistics as fit_tabular would give them
TINY_TABULAR = TabularTowerCfg(
    numeric=["likes", "hour"],
    categorical=["platform", "verified"],
    log_numeric=["likes"],
    embed_dim=4,
    hidden=16,
    dropout=0.0,
    mean={"likes": 3.0, "hour": 12.0},
    std={"likes": 2.0, "hour": 7.0},
    vocab={"platform": ["x", "insta", "tiktok"], "verified": ["false", "true"]},
)
# 2 s clips, 16 mel bands, two conv blocks
TINY_AUDIO = AudioTowerCfg(
    channels=[4, 8], out_dim=16, dropout=0.0, features=AudioCfg(max_seconds=2.0, n_mels=16)
)


def tiny_text_encoder(path: str | Path, seed: int = 0) -> str:
    import torch
    from transformers import BertConfig, BertModel

    from .preprocess import resolve_text_path

    path = Path(path)
    if not (path / "config.json").exists():
        torch.manual_seed(seed)
        conf = BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
        BertModel(conf).save_pretrained(path)
        src = Path(resolve_text_path("minilm"))
        for name in (
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
            "special_tokens_map.json",
        ):
            shutil.copy(src / name, path / name)
    return str(path)


def tiny_vision_encoder(path: str | Path, seed: int = 0, image_size: int = 32) -> str:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    path = Path(path)
    if not (path / "config.json").exists():
        torch.manual_seed(seed)
        conf = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=8,
        )
        CLIPVisionModel(conf).save_pretrained(path)
    return str(path)


def tiny_model_cfg(
    text_dir: str | None,
    vision_dir: str | None,
    head: str = "gated",
    image_size: int = 32,
    tabular: bool = False,
    audio: bool = False,
) -> ModelCfg:
    return ModelCfg(
        name="tiny",
        text=TextTowerCfg(pretrained=text_dir, max_length=16, max_chunks=3, stride=4)
        if text_dir
        else None,
        image=ImageTowerCfg(kind="hf_vision", pretrained=vision_dir, image_size=image_size)
        if vision_dir
        else None,
        tabular=TINY_TABULAR if tabular else None,
        audio=TINY_AUDIO if audio else None,
        fusion=FusionCfg(head=head, hidden=16, num_heads=2, dropout=0.0),
    )


def tone(freq: float = 440.0, seconds: float = 1.0, fmt: str = "WAV", rate: int = 16_000) -> bytes:
    """A sine clip encoded by soundfile (WAV, FLAC, OGG, ...): test audio made offline."""
    import io

    import numpy as np
    import soundfile as sf

    x = 0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt)
    return buf.getvalue()
