"""The fused classifier: one tower per modality -> a fusion head -> logits over the labels.

    model = build_model(ModelCfg())          # towers load their pretrained weights locally
    out = model(batch)                       # batch: tensors from preprocess.to_tensors
    out.logits (B, K), out.weights (B, M) or None

Rows where a modality is absent (`has_<modality>` False) never run through that tower.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelCfg
from .fusion import FusionOut, build_head
from .towers import Tower, TowerOut, build_tower


def _call(tower: Tower, inputs: dict[str, torch.Tensor]) -> TowerOut:
    """The tower on `inputs`; in CPU inference, `tower.cpu_chunk` posts at a time."""
    x = next(iter(inputs.values()))
    size = tower.cpu_chunk
    if not size or len(x) <= size or x.device.type != "cpu" or torch.is_grad_enabled():
        return tower(inputs)
    parts = [tower({k: v[i : i + size] for k, v in inputs.items()}) for i in range(0, len(x), size)]
    T = max(p.tokens.shape[1] for p in parts)  # pad token axes to the longest part's
    return TowerOut(
        torch.cat([p.pooled for p in parts]),
        torch.cat([nn.functional.pad(p.tokens, (0, 0, 0, T - p.tokens.shape[1])) for p in parts]),
        torch.cat([nn.functional.pad(p.token_mask, (0, T - p.token_mask.shape[1])) for p in parts]),
    )


class MultimodalClassifier(nn.Module):
    runtime = "torch"
    precision = "fp32"  # what inference runs at: models.runtime sets bf16/fp16 (autocast)

    def __init__(self, cfg: ModelCfg, load_pretrained: bool = True):
        super().__init__()
        if not cfg.modalities():
            raise ValueError("a model needs at least one tower")
        self.cfg = cfg
        self.towers = nn.ModuleDict(
            {m: build_tower(getattr(cfg, m), load_pretrained) for m in cfg.modalities()}
        )
        self.head = build_head(
            cfg.fusion, {m: t.out_dim for m, t in self.towers.items()}, len(cfg.labels)
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(
        self, batch: dict[str, torch.Tensor], drop: dict[str, torch.Tensor] | None = None
    ) -> FusionOut:
        """`drop`: optional (B,) bool per modality, hiding it from the model (ablations, modality dropout)."""
        return fuse(self.towers, self.head, batch, drop)

    def set_trainable(self, layers: dict[str, int]) -> None:
        """Freeze/unfreeze towers: {"text": 2, "image": 0} leaves the top 2 text layers trainable."""
        for m, n in layers.items():
            self.towers[m].set_trainable(n)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The state that differs from the towers' pretrained sources: all a checkpoint must store."""
        skip = set()
        for m, tower in self.towers.items():
            skip |= {f"towers.{m}.{k}" for k in tower.base_keys - tower.trained_keys}
        return {k: v for k, v in self.state_dict().items() if k not in skip}

    def base_state_keys(self) -> set[str]:
        return {f"towers.{m}.{k}" for m, t in self.towers.items() for k in t.base_keys}


def fuse(towers, head, batch: dict[str, torch.Tensor], drop=None) -> FusionOut:
    """Towers (any callables with a Tower's `input_keys`, `out_dim`, `cpu_chunk`: torch modules
    or ONNX Runtime sessions) on the rows where their modality is present -> the fusion head."""
    present = {m: batch[f"has_{m}"].bool() for m in towers}
    for m, d in (drop or {}).items():
        present[m] = present[m] & ~d
    feats = {m: run_tower(tower, batch, present[m]) for m, tower in towers.items()}
    return head(feats, present)


def run_tower(tower: Tower, batch: dict[str, torch.Tensor], present: torch.Tensor) -> TowerOut:
    """The tower on the present rows only; absent rows get zeros (the heads mask them out)."""
    B = present.shape[0]
    idx = present.nonzero().squeeze(1)
    if len(idx) == B:
        return _call(tower, {k: batch[k] for k in tower.input_keys})
    device = present.device
    if len(idx) == 0:
        z = torch.zeros(B, 1, tower.out_dim, device=device)
        return TowerOut(z[:, 0], z, torch.zeros(B, 1, dtype=torch.bool, device=device))
    sub = _call(tower, {k: batch[k][idx] for k in tower.input_keys})
    pooled = sub.pooled.new_zeros(B, tower.out_dim).index_copy(0, idx, sub.pooled)
    tokens = sub.tokens.new_zeros(B, *sub.tokens.shape[1:]).index_copy(0, idx, sub.tokens)
    mask = sub.token_mask.new_zeros(B, sub.token_mask.shape[1]).index_copy(0, idx, sub.token_mask)
    return TowerOut(pooled, tokens, mask)


def build_model(cfg: ModelCfg, load_pretrained: bool = True) -> MultimodalClassifier:
    return MultimodalClassifier(cfg, load_pretrained)
