"""Text tower: any transformers encoder (BERT, DistilBERT, RoBERTa, MiniLM ...) from a local folder.

Inputs are windows of a text, (B, C, L): a text longer than one window is encoded window by
window and pooled over all its tokens, rather than cut off.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...preprocess import resolve_text_path
from ..lora import add_lora
from . import Tower, TowerOut, register_tower

CPU_GROUP = 16  # windows per encoder call on CPU


def _layers(encoder: nn.Module, n: int) -> nn.ModuleList:
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} layers of {type(encoder).__name__}")


@register_tower("hf_text")
class HFTextTower(Tower):
    modality = "text"
    input_keys = ("input_ids", "attention_mask")

    def __init__(self, cfg, load_pretrained: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        path = resolve_text_path(cfg.pretrained)
        if load_pretrained:
            self.encoder = AutoModel.from_pretrained(path, local_files_only=True)
        else:
            self.encoder = AutoModel.from_config(
                AutoConfig.from_pretrained(path, local_files_only=True)
            )
        self.cfg = cfg
        self.out_dim = self.encoder.config.hidden_size
        n_lora = len(self.layers) if cfg.lora_layers < 0 else cfg.lora_layers
        self.adapters = []
        for layer in list(self.layers)[len(self.layers) - n_lora :] if cfg.lora_rank else []:
            self.adapters += add_lora(layer, cfg.lora_rank, cfg.lora_alpha)
        self.base_keys = (
            {f"encoder.{k}" for k in self.encoder.state_dict() if ".lora_" not in k}
            if load_pretrained
            else set()
        )
        self.set_trainable(cfg.trainable_layers)

    @property
    def layers(self) -> nn.ModuleList:  # not an attribute: the encoder already registers them
        return _layers(self.encoder, self.encoder.config.num_hidden_layers)

    def set_trainable(self, layers: int) -> None:
        top = list(self.layers) if layers < 0 else list(self.layers)[len(self.layers) - layers :]
        self._unfreeze([self.encoder] if layers < 0 else top)
        names = {id(m): n for n, m in self.named_modules()}
        for adapter in self.adapters:
            for pname in ("lora_a", "lora_b"):
                getattr(adapter, pname).requires_grad_(True)
                self.trained_keys.add(f"{names[id(adapter)]}.{pname}")

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    def forward(self, inputs: dict[str, torch.Tensor]) -> TowerOut:
        return encode_windows(self._encode, inputs, self.out_dim, self.cfg.pooling)


Encoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (N, L) ids, mask -> (N, L, D)


def encode_grouped(encode: Encoder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, L) windows -> (N, L, D). On CPU, windows go in length-sorted groups, each trimmed to
    its own longest, so a batch of short posts is not all padded to its longest one."""
    if ids.device.type != "cpu" or len(ids) <= CPU_GROUP:
        return encode(ids, mask)
    lengths = mask.sum(1)
    parts, order = [], lengths.argsort()
    for group in order.split(CPU_GROUP):
        n = int(lengths[group].max())
        h = encode(ids[group, :n], mask[group, :n])
        parts.append(torch.nn.functional.pad(h, (0, 0, 0, ids.shape[1] - n)))
    return torch.cat(parts)[order.argsort()]  # back to input order


def encode_windows(
    encode: Encoder, inputs: dict[str, torch.Tensor], out_dim: int, pooling: str
) -> TowerOut:
    """The text tower around any encoder (torch, or an ONNX Runtime session): windows (B, C, L)
    trimmed to what is used, empty windows skipped, tokens pooled over every real token."""
    ids, mask = inputs["input_ids"].long(), inputs["attention_mask"].long()  # (B, C, L)
    B, C, L = ids.shape
    used = mask.sum(-1)  # (B, C) tokens per window
    C_used = max(int((used > 0).sum(1).max()), 1)
    L_used = max(int(used.max()), 1)
    ids, mask = ids[:, :C_used, :L_used], mask[:, :C_used, :L_used]
    flat_ids, flat_mask = ids.reshape(-1, L_used), mask.reshape(-1, L_used)
    keep = flat_mask.any(-1)  # only non-empty windows go through the encoder
    hidden = encode_grouped(encode, flat_ids[keep], flat_mask[keep])
    tokens = hidden.new_zeros(B * C_used, L_used, out_dim)
    tokens[keep] = hidden
    if pooling == "cls":  # first token of each window
        tokens = tokens[:, :1]
        flat_mask = flat_mask[:, :1]
    tokens = tokens.reshape(B, -1, out_dim)  # (B, C*L, D)
    token_mask = flat_mask.reshape(B, -1).bool()  # (B, C*L)
    w = token_mask.unsqueeze(-1).to(tokens.dtype)
    pooled = (tokens * w).sum(1) / w.sum(1).clamp(min=1.0)  # mean over every real token
    return TowerOut(pooled, tokens, token_mask)
