"""Low-rank adapters (Hu et al. 2021): W x + (alpha / r) B A x, with W frozen and B zero at start."""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def add_lora(module: nn.Module, rank: int, alpha: float) -> list[nn.Module]:
    """Wrap every nn.Linear inside `module` with an adapter; returns the adapters."""
    adapters = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                adapter = LoRALinear(child, rank, alpha)
                setattr(parent, name, adapter)
                adapters.append(adapter)
    return adapters


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer in place (W + scale B A): the same function with
    plain nn.Linear layers, for export and int8 quantization."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                base = child.base
                with torch.no_grad():
                    base.weight += child.scale * (child.lora_b @ child.lora_a)
                setattr(parent, name, base)
    return module
