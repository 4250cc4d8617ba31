"""Tower registry. A tower turns one modality's model inputs into a pooled vector and tokens.

Adding a modality is adding a registered tower (and its preprocessing): fusion heads only see
`TowerOut`s keyed by modality.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TowerOut:
    pooled: torch.Tensor  # (B, D)
    tokens: torch.Tensor  # (B, T, D); pooled-only towers give T = 1
    token_mask: torch.Tensor  # (B, T) bool, True where a token is real


class Tower(nn.Module):
    modality: str = ""
    input_keys: tuple[str, ...] = ()
    out_dim: int = 0
    # posts per call in CPU inference (None: the whole batch): activation memory then stays the
    # same whatever the batch size
    cpu_chunk: int | None = None

    def __init__(self) -> None:
        super().__init__()
        # Keys of the state dict loaded from pretrained weights. Those that stayed frozen are not
        # written to checkpoints: they are loaded again from the same source.
        self.base_keys: set[str] = set()
        self.trained_keys: set[str] = set()

    def set_trainable(self, layers: int) -> None:
        """Freeze the tower except its top `layers` layers (-1: all of it)."""
        raise NotImplementedError

    def _unfreeze(self, modules: list[nn.Module]) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        names = {id(m): n for n, m in self.named_modules()}
        for m in modules:
            prefix = names[id(m)]
            for p in m.parameters():
                p.requires_grad_(True)
            self.trained_keys |= {f"{prefix}.{k}" if prefix else k for k in m.state_dict()}


TOWERS: dict[str, type[Tower]] = {}


def register_tower(name: str) -> Callable[[type[Tower]], type[Tower]]:
    def deco(cls: type[Tower]) -> type[Tower]:
        TOWERS[name] = cls
        return cls

    return deco


def build_tower(cfg, load_pretrained: bool = True) -> Tower:
    from transformers.utils import logging as hf_logging

    from . import audio, image, tabular, text  # noqa: F401  (register the built-in towers)

    hf_logging.disable_progress_bar()  # no per-weight "Loading weights" bars in job logs

    if cfg.kind not in TOWERS:
        raise ValueError(f"unknown tower {cfg.kind!r}; registered: {sorted(TOWERS)}")
    return TOWERS[cfg.kind](cfg, load_pretrained=load_pretrained)
