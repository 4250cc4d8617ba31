"""Audio tower: a small CNN over the log-mel spectrogram of mmsent.audio, trained from scratch.

    tower = build_tower(AudioTowerCfg())
    out = tower({"mel": mel, "mel_mask": mask})  # mel (B, n_mels, T) float, mask (B, T) bool
    out.pooled (B, D)   out.tokens (B, T // 2**k, D) over time, for cross-attention

Each block (conv 3x3, batch norm, ReLU, 2x2 max-pool) halves frequency and time. After every block
the padding frames are zeroed again, so a clip's output does not depend on how much padding its
batch has: in eval mode the same clip gives the same tokens at any T.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import Tower, TowerOut, register_tower


def block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@register_tower("audio_cnn")
class AudioCNNTower(Tower):
    modality = "audio"
    input_keys = ("mel", "mel_mask")
    cpu_chunk = 16  # 64 x 1000 spectrograms: ~8 MB of activations each in the first block

    def __init__(self, cfg, load_pretrained: bool = True):  # nothing pretrained to load
        super().__init__()
        if cfg.features.n_mels < 2 ** len(cfg.channels):
            raise ValueError(
                "audio_cnn: n_mels must be >= 2 ** len(channels) (each block halves it)"
            )
        widths = [1, *cfg.channels]
        self.blocks = nn.ModuleList(block(a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(widths[-1], cfg.out_dim))
        self.out_dim = cfg.out_dim
        self.set_trainable(cfg.trainable_layers)

    def set_trainable(self, layers: int) -> None:
        """layers = N: the projection and the top N - 1 blocks (-1: all; 0: frozen)."""
        parts = [*self.blocks, self.proj]
        self._unfreeze(parts if layers < 0 else parts[len(parts) - layers :] if layers else [])

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():  # frozen batch norms keep their statistics
            if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad:
                m.eval()
        return self

    def forward(self, inputs: dict[str, torch.Tensor]) -> TowerOut:
        x = inputs["mel"].float().unsqueeze(1)  # (B, 1, n_mels, T)
        mask = inputs["mel_mask"].bool()  # (B, T)
        x = x * mask[:, None, None, :]
        for blk in self.blocks:
            x = blk(x)  # (B, C, F / 2, T / 2)
            # a pooled frame is real when any frame under it was (floor, as MaxPool2d)
            mask = F.max_pool1d(mask[:, None].float(), 2).squeeze(1) > 0
            x = x * mask[:, None, None, :]
        tokens = self.proj(x.mean(2).transpose(1, 2))  # (B, T', D): frequency averaged out
        w = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * w).sum(1) / w.sum(1).clamp(min=1.0)  # 0 for a row with no frames
        return TowerOut(pooled, tokens * w, mask)
