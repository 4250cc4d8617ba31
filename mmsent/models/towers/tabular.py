"""Tabular tower: one embedding per column (a feature token), then an MLP; trained from scratch.

    cfg = fit_tabular(train_rows, TabularTowerCfg(numeric=["likes"], categorical=["platform"]))
    tower = build_tower(cfg)
    out = tower(to_tensors(encode_tabular(rows, cfg)))  # tab_num, tab_cat, tab_missing
    out.pooled (B, hidden)   out.tokens (B, N + C, hidden), one per column; token_mask: present

A numeric column's token is value * w + b; a categorical column's is its category's embedding
(row 0: missing, row 1: unknown). A missing numeric value stands in a learned per-column
"missing" token, so neither its zero value nor its absence by accident reads as a number. The
training statistics are in the config (mmsent.tabular.fit_tabular): the tables' sizes come from it.
"""

from __future__ import annotations

import torch
from torch import nn

from ...tabular import check_fitted
from . import Tower, TowerOut, register_tower


class FeatureTokens(nn.Module):
    def __init__(self, n_numeric: int, vocab_sizes: list[int], dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_numeric, dim) * 0.02)
        self.bias = nn.Parameter(torch.randn(n_numeric, dim) * 0.02)
        self.missing = nn.Parameter(torch.randn(n_numeric, dim) * 0.02)
        # one table for every categorical column; column j's ids start at offsets[j]
        self.categories = nn.Embedding(max(1, sum(vocab_sizes)), dim)
        nn.init.normal_(self.categories.weight, std=0.02)
        starts = [sum(vocab_sizes[:j]) for j in range(len(vocab_sizes))]
        self.register_buffer("offsets", torch.tensor(starts, dtype=torch.long), persistent=False)

    def forward(self, num: torch.Tensor, cat: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        n = num.shape[1]
        t_num = num.float().unsqueeze(-1) * self.weight + self.bias  # (B, N, E)
        t_num = torch.where(missing[:, :n, None], self.missing, t_num)
        t_cat = self.categories(cat.long() + self.offsets)  # (B, C, E); id 0: missing
        return torch.cat([t_num, t_cat], 1)  # (B, N + C, E)


@register_tower("tabular_mlp")
class TabularTower(Tower):
    modality = "tabular"
    input_keys = ("tab_num", "tab_cat", "tab_missing")

    def __init__(self, cfg, load_pretrained: bool = True):  # nothing pretrained to load
        super().__init__()
        check_fitted(cfg)
        sizes = [len(cfg.vocab[c]) + 2 for c in cfg.categorical]  # + missing, unknown
        n_feat, E, H = len(cfg.numeric) + len(sizes), cfg.embed_dim, cfg.hidden
        self.features = FeatureTokens(len(cfg.numeric), sizes, E)
        self.mlp = nn.Sequential(
            nn.LayerNorm(n_feat * E),
            nn.Linear(n_feat * E, H),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(H, H),
        )
        self.token_proj = nn.Linear(E, H)
        self.out_dim = H
        self.set_trainable(cfg.trainable_layers)

    def set_trainable(self, layers: int) -> None:
        """layers = 1: the MLP and the token projection; 2 or -1: the embeddings too; 0: frozen."""
        head = [self.mlp, self.token_proj]
        self._unfreeze([] if layers == 0 else head if layers == 1 else [self.features, *head])

    def forward(self, inputs: dict[str, torch.Tensor]) -> TowerOut:
        missing = inputs["tab_missing"].bool()  # (B, N + C)
        tok = self.features(inputs["tab_num"], inputs["tab_cat"], missing)  # (B, N + C, E)
        pooled = self.mlp(tok.flatten(1))  # (B, H): missing tokens included, they tell absence
        return TowerOut(pooled, self.token_proj(tok), ~missing)
