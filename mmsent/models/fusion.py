"""Fusion heads, registered by name. Every head takes the towers' outputs keyed by modality and a
presence mask per modality, and returns logits plus, where it has them, per-modality weights.

An absent modality (no image, an image that could not be read) never reaches a head as zeros:
heads either skip it (attention masks, renormalised gates, averaged logits) or stand a learned
"missing" embedding in its place (concat), so its feature values cannot change the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .towers import TowerOut


@dataclass
class FusionOut:
    logits: torch.Tensor  # (B, K)
    weights: torch.Tensor | None = None  # (B, M) share of each modality, 0 where absent
    attention: torch.Tensor | None = None  # cross_attention: (B, T_text, T_other) weights


HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        HEADS[name] = cls
        return cls

    return deco


def build_head(cfg, dims: dict[str, int], num_classes: int) -> nn.Module:
    if cfg.head not in HEADS:
        raise ValueError(f"unknown fusion head {cfg.head!r}; registered: {sorted(HEADS)}")
    return HEADS[cfg.head](cfg, dims, num_classes)


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(d_in),
        nn.Dropout(dropout),
        nn.Linear(d_in, d_hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(d_hidden, d_out),
    )


class Head(nn.Module):
    def __init__(self, cfg, dims: dict[str, int], num_classes: int):
        super().__init__()
        self.modalities = list(dims)
        self.proj = nn.ModuleDict({m: nn.Linear(d, cfg.hidden) for m, d in dims.items()})

    def present_matrix(self, present: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([present[m] for m in self.modalities], 1)  # (B, M) bool


@register_head("concat")
class ConcatHead(Head):
    """Concatenate projected pooled vectors (a learned embedding for an absent one) -> MLP."""

    def __init__(self, cfg, dims, num_classes):
        super().__init__(cfg, dims, num_classes)
        self.missing = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(cfg.hidden) * 0.02) for m in dims}
        )
        self.mlp = mlp(cfg.hidden * len(dims), cfg.hidden, num_classes, cfg.dropout)

    def forward(self, feats: dict[str, TowerOut], present: dict[str, torch.Tensor]) -> FusionOut:
        parts = []
        for m in self.modalities:
            h = self.proj[m](feats[m].pooled)  # (B, H)
            parts.append(torch.where(present[m].unsqueeze(1), h, self.missing[m].expand_as(h)))
        return FusionOut(self.mlp(torch.cat(parts, 1)))


@register_head("attention")
class AttentionHead(Head):
    """Self-attention over one token per modality plus a [CLS] token; [CLS] is classified.

    Weights: the [CLS] query's attention over the present modality tokens (heads averaged).
    """

    def __init__(self, cfg, dims, num_classes):
        super().__init__(cfg, dims, num_classes)
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.hidden) * 0.02)
        self.type_emb = nn.Parameter(torch.randn(1, len(dims), cfg.hidden) * 0.02)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.attn = nn.MultiheadAttention(
            cfg.hidden, cfg.num_heads, dropout=cfg.dropout, batch_first=True
        )
        self.out = mlp(cfg.hidden, cfg.hidden, num_classes, cfg.dropout)

    def forward(self, feats, present):
        tokens = torch.stack(
            [self.proj[m](feats[m].pooled) for m in self.modalities], 1
        )  # (B, M, H)
        B = tokens.shape[0]
        x = self.norm(
            torch.cat([self.cls.expand(B, -1, -1), tokens + self.type_emb], 1)
        )  # (B, 1+M, H)
        absent = torch.cat(
            [torch.zeros(B, 1, dtype=torch.bool, device=x.device), ~self.present_matrix(present)], 1
        )
        out, attn = self.attn(x[:, :1], x, x, key_padding_mask=absent)  # attn: (B, 1, 1+M)
        w = attn[:, 0, 1:]
        weights = w / w.sum(1, keepdim=True).clamp(min=1e-9)
        return FusionOut(self.out(out[:, 0] + x[:, 0]), weights)


@register_head("cross_attention")
class CrossAttentionHead(Head):
    """Text tokens query the tokens of the other modalities (image patches, ...).

    A learned null key lets a text attend to nothing; a post without text queries with a learned
    token. Weights: the attention mass on other modalities' tokens vs. the text's own pooled vector.
    """

    def __init__(self, cfg, dims, num_classes):
        super().__init__(cfg, dims, num_classes)
        if "text" not in dims or len(dims) < 2:
            raise ValueError("cross_attention needs a text tower and at least one other tower")
        self.others = [m for m in self.modalities if m != "text"]
        self.query = nn.Parameter(torch.randn(1, 1, cfg.hidden) * 0.02)
        self.null = nn.Parameter(torch.randn(1, 1, cfg.hidden) * 0.02)
        self.type_emb = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(cfg.hidden) * 0.02) for m in self.others}
        )
        self.norm_q, self.norm_kv = nn.LayerNorm(cfg.hidden), nn.LayerNorm(cfg.hidden)
        self.attn = nn.MultiheadAttention(
            cfg.hidden, cfg.num_heads, dropout=cfg.dropout, batch_first=True
        )
        self.out = mlp(2 * cfg.hidden, cfg.hidden, num_classes, cfg.dropout)

    def forward(self, feats, present):
        text = feats["text"]
        B = text.pooled.shape[0]
        has_text = present["text"]
        # queries: the text's tokens, or one learned query for a post without text
        q = torch.where(has_text[:, None, None], self.proj["text"](text.tokens), self.query)
        q_mask = text.token_mask & has_text[:, None]
        q_mask[:, 0] |= ~has_text  # the learned query sits in slot 0
        kv, kv_valid, spans = (
            [self.null.expand(B, -1, -1)],
            [torch.ones(B, 1, dtype=torch.bool, device=q.device)],
            [],
        )
        for m in self.others:
            t = self.proj[m](feats[m].tokens) + self.type_emb[m]
            spans.append((m, sum(x.shape[1] for x in kv), t.shape[1]))
            kv.append(t)
            kv_valid.append(feats[m].token_mask & present[m][:, None])
        kv, kv_valid = self.norm_kv(torch.cat(kv, 1)), torch.cat(kv_valid, 1)  # (B, 1+P, H)
        attended, attn = self.attn(
            self.norm_q(q), kv, kv, key_padding_mask=~kv_valid
        )  # attn (B, T, 1+P)
        qw = q_mask.unsqueeze(-1).to(q.dtype)
        n_q = qw.sum(1).clamp(min=1.0)
        pooled_q = (q * qw).sum(1) / n_q
        pooled_att = (attended * qw).sum(1) / n_q
        mass = {
            m: ((attn[:, :, s : s + n].sum(-1, keepdim=True) * qw).sum(1) / n_q).squeeze(1)
            for m, s, n in spans
        }
        text_w = torch.where(
            has_text, 1.0 - sum(mass.values()), torch.zeros_like(mass[self.others[0]])
        )
        weights = torch.stack([text_w if m == "text" else mass[m] for m in self.modalities], 1)
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-9)
        return FusionOut(self.out(torch.cat([pooled_q, pooled_att], 1)), weights, attn[:, :, 1:])


@register_head("gated")
class GatedHead(Head):
    """A learned per-post gate: softmax over the present modalities of a score of each one's vector."""

    def __init__(self, cfg, dims, num_classes):
        super().__init__(cfg, dims, num_classes)
        self.gate = nn.ModuleDict(
            {m: nn.Sequential(nn.Tanh(), nn.Linear(cfg.hidden, 1)) for m in dims}
        )
        self.empty = nn.Parameter(torch.zeros(cfg.hidden))
        self.out = mlp(cfg.hidden, cfg.hidden, num_classes, cfg.dropout)

    def forward(self, feats, present):
        h = torch.stack([self.proj[m](feats[m].pooled) for m in self.modalities], 1)  # (B, M, H)
        scores = torch.cat(
            [self.gate[m](h[:, i]) for i, m in enumerate(self.modalities)], 1
        )  # (B, M)
        mask = self.present_matrix(present)
        # a finite fill keeps gradients finite; weights of absent modalities are then exactly 0
        weights = torch.softmax(scores.masked_fill(~mask, -1e4), 1) * mask
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-9)  # nothing present: all 0
        fused = (weights.unsqueeze(-1) * torch.where(mask.unsqueeze(-1), h, 0.0)).sum(1)
        fused = torch.where(mask.any(1, keepdim=True), fused, self.empty.expand_as(fused))
        return FusionOut(self.out(fused), weights)


@register_head("late")
class LateHead(Head):
    """Baseline: a classifier per modality, logits averaged over the present ones."""

    def __init__(self, cfg, dims, num_classes):
        super().__init__(cfg, dims, num_classes)
        self.out = nn.ModuleDict(
            {m: mlp(cfg.hidden, cfg.hidden, num_classes, cfg.dropout) for m in dims}
        )

    def forward(self, feats, present):
        logits = torch.stack(
            [self.out[m](self.proj[m](feats[m].pooled)) for m in self.modalities], 1
        )
        mask = self.present_matrix(present).to(logits.dtype)  # (B, M)
        weights = mask / mask.sum(1, keepdim=True).clamp(min=1.0)
        return FusionOut((logits * weights.unsqueeze(-1)).sum(1), weights)
