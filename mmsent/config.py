"""Typed configs: one dataclass per component, nested in `ModelCfg`, saved in every checkpoint.

Configs are read from YAML/JSON and dotted overrides (`fusion.head=attention`); unknown keys are
errors, and overrides that are `None` are dropped rather than applied.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class TextTowerCfg:
    kind: str = "hf_text"  # registered tower name
    pretrained: str = "minilm"  # bundled encoder name or a local transformers directory
    max_length: int = 128  # tokens per window
    max_chunks: int = 8  # windows per text: longer texts are scored by chunks, pooled
    stride: int = 16  # tokens shared by consecutive windows
    pooling: str = "mean"  # mean | cls
    trainable_layers: int = 0  # top encoder layers left trainable
    lora_rank: int = 0  # low-rank adapters on the linear layers of the encoder (0: none)
    lora_alpha: float = 16.0
    lora_layers: int = -1  # adapters on the top N encoder layers only (-1: all)


@dataclass
class ImageTowerCfg:
    kind: str = "efficientnet_lite0"  # efficientnet_lite0 | hf_vision | torchvision_resnet
    pretrained: str | None = "imagenet"  # bundled weights name, a local directory, or None (random)
    image_size: int = 224
    trainable_layers: int = 0  # top blocks left trainable (0: frozen)
    mean: list[float] | None = None  # normalisation; None: the tower's own
    std: list[float] | None = None


@dataclass
class FusionCfg:
    head: str = "gated"  # concat | attention | cross_attention | gated | late
    hidden: int = 256
    num_heads: int = 4
    dropout: float = 0.1
    modality_dropout: float = 0.0  # training only: drop a whole modality of a post at this rate


@dataclass
class PreprocessCfg:
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000  # decoded width x height; guards against decompression bombs
    max_text_chars: int = 20_000


@dataclass
class ModelCfg:
    name: str = "mmsent-default"
    version: str = "0.1.0"
    labels: list[str] = field(default_factory=lambda: ["negative", "neutral", "positive"])
    text: TextTowerCfg | None = field(default_factory=TextTowerCfg)
    image: ImageTowerCfg | None = field(default_factory=ImageTowerCfg)
    fusion: FusionCfg = field(default_factory=FusionCfg)
    preprocess: PreprocessCfg = field(default_factory=PreprocessCfg)
    description: str = ""

    def modalities(self) -> list[str]:
        """Modalities this model reads, in a fixed order (the order of fusion weights)."""
        return [m for m in ("text", "image") if getattr(self, m) is not None]


@dataclass
class FetchCfg:
    timeout_s: float = 10.0  # per attempt: connect and each read
    retries: int = 2  # extra attempts on transient errors (timeouts, 429, 5xx, resets)
    backoff_s: float = 0.5  # doubled after every attempt, with jitter
    max_bytes: int = 20 * 1024 * 1024
    concurrency: int = 16  # parallel fetches per batch
    schemes: list[str] = field(default_factory=lambda: ["s3", "http", "https", "file"])
    block_private_networks: bool = False  # SSRF guard: refuse loopback/private/link-local targets
    max_redirects: int = 3


@dataclass
class TrainCfg:
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 3e-4  # towers' trainable parts (adapters, unfrozen layers)
    head_lr: float = 1e-3  # fusion head
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06  # linear warm-up, then linear decay to 0
    grad_clip: float = 1.0
    class_weights: bool = True  # inverse class frequency in the loss
    seed: int = 0
    length_buckets: bool = True  # batch texts of similar length together (less padding)


class ConfigError(ValueError):
    pass


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, recursing into nested config dataclasses."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown keys {unknown}; known: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_in(hints[name])
        if sub is not None and value is not None:
            value = from_dict(sub, value, f"{where}{name}.")
        kwargs[name] = value
    return cls(**kwargs)


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply `a.b=value` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        value = yaml.safe_load(raw)
        if value is None and raw.strip().lower() not in ("null", "none", "~"):
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[leaf] = None if raw.strip().lower() in ("null", "none", "~") else value
    return data


def read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return data or {}


def resolve_preset(name_or_path: str, kind: str) -> Path:
    """A preset name (`configs/<kind>/<name>.yaml`) or a path to a YAML/JSON file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") or p.exists():
        return p
    candidate = CONFIG_DIR / kind / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(x.stem for x in (CONFIG_DIR / kind).glob("*.yaml"))
        raise ConfigError(f"no {kind} preset named {name_or_path!r}; known: {known}")
    return candidate


def load_config(
    cls: type, source: str | Path | dict | None, overrides: list[str] | None = None, kind: str = ""
):
    """Typed config from a preset name, a file, or a dict, with dotted overrides applied."""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = json.loads(json.dumps(source))
    else:
        data = read_file(resolve_preset(str(source), kind))
    return from_dict(cls, apply_overrides(data, overrides))
