"""Image towers. Inputs are uint8 pixels (B, S, S, 3) from preprocessing; each tower normalises
them its own way, on the model's device.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from . import Tower, TowerOut, register_tower
from .efficientnet_lite import EfficientNetLite0, imagenet_weights_path


class ImageTower(Tower):
    modality = "image"
    input_keys = ("pixels",)
    cpu_chunk = 8  # a CNN at 224 px holds ~10 MB of activations per image (16: +130 MB peak)
    mean: list[float] = [0.5, 0.5, 0.5]
    std: list[float] = [0.5, 0.5, 0.5]
    frozen_modules: list[nn.Module]

    def setup_norm(self, cfg) -> None:
        mean, std = cfg.mean or self.mean, cfg.std or self.std
        self.register_buffer("px_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("px_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, S, S) in [0, 1]
        return (x - self.px_mean) / self.px_std

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():  # frozen BatchNorm layers keep their ImageNet statistics
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.weight.requires_grad:
                m.eval()
        return self

    @staticmethod
    def grid_tokens(fmap: torch.Tensor) -> TowerOut:
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, H*W, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return TowerOut(tokens.mean(1), tokens, mask)


@register_tower("efficientnet_lite0")
class EfficientNetLiteTower(ImageTower):
    # (x * 255 - 127) / 128 on [0, 1] input, written as mean/std
    mean = [127 / 255] * 3
    std = [128 / 255] * 3

    def __init__(self, cfg, load_pretrained: bool = True):
        super().__init__()
        self.net = EfficientNetLite0()
        if cfg.pretrained and load_pretrained:
            path = imagenet_weights_path() if cfg.pretrained == "imagenet" else cfg.pretrained
            self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.base_keys = {f"net.{k}" for k in self.net.state_dict()}
        del self.net._fc  # the ImageNet classifier is not part of the tower
        self.base_keys = {k for k in self.base_keys if not k.startswith("net._fc.")}
        self.out_dim = EfficientNetLite0.out_dim
        self.setup_norm(cfg)
        self.set_trainable(cfg.trainable_layers if cfg.pretrained else -1)

    def set_trainable(self, layers: int) -> None:
        """layers = N: the head convolution and the top N - 1 blocks."""
        net, blocks = self.net, list(self.net._blocks)
        if layers < 0:
            self._unfreeze([net])
        else:
            top = (
                [net._conv_head, net._bn1] + blocks[len(blocks) - (layers - 1) :] if layers else []
            )
            self._unfreeze(top)

    def forward(self, inputs: dict[str, torch.Tensor]) -> TowerOut:
        return self.grid_tokens(self.net.features(self.normalise(inputs["pixels"])))  # 7x7 tokens


@register_tower("hf_vision")
class HFVisionTower(ImageTower):
    """CLIPVisionModel, ViT, ResNet, ... from a local transformers directory."""

    mean = [0.48145466, 0.4578275, 0.40821073]  # CLIP's, when the folder has no image processor
    std = [0.26862954, 0.26130258, 0.27577711]

    def __init__(self, cfg, load_pretrained: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if not cfg.pretrained or not Path(cfg.pretrained, "config.json").exists():
            raise FileNotFoundError(
                f"hf_vision needs a local transformers directory, got {cfg.pretrained!r}"
            )
        proc = Path(cfg.pretrained, "preprocessor_config.json")
        if proc.exists():
            spec = json.loads(proc.read_text())
            self.mean, self.std = spec.get("image_mean", self.mean), spec.get("image_std", self.std)
        if load_pretrained:
            self.encoder = AutoModel.from_pretrained(cfg.pretrained, local_files_only=True)
            self.base_keys = {f"encoder.{k}" for k in self.encoder.state_dict()}
        else:
            self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(cfg.pretrained))
        conf = self.encoder.config
        self.out_dim = getattr(conf, "hidden_size", None) or conf.hidden_sizes[-1]
        self.setup_norm(cfg)
        self.set_trainable(cfg.trainable_layers)

    def set_trainable(self, layers: int) -> None:
        if layers < 0:
            self._unfreeze([self.encoder])
            return
        lists = [m for m in self.encoder.modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
        blocks = list(lists[0]) if lists else []
        self._unfreeze(blocks[len(blocks) - layers :] if layers else [])

    def forward(self, inputs: dict[str, torch.Tensor]) -> TowerOut:
        out = self.encoder(pixel_values=self.normalise(inputs["pixels"]))
        hidden = out.last_hidden_state
        if hidden.dim() == 4:  # CNNs: (B, D, H, W)
            return self.grid_tokens(hidden)
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        pooled = getattr(out, "pooler_output", None)
        pooled = hidden.mean(1) if pooled is None else pooled.flatten(1)
        return TowerOut(pooled, hidden, mask)


try:  # torchvision is an optional extra (GPU images); it is never installed in CI
    import torchvision

    @register_tower("torchvision_resnet")
    class TorchvisionResNetTower(ImageTower):
        mean = [0.485, 0.456, 0.406]
        std = [0.229, 0.224, 0.225]

        def __init__(self, cfg, load_pretrained: bool = True):
            super().__init__()
            net = torchvision.models.resnet50()
            if cfg.pretrained and load_pretrained:
                net.load_state_dict(
                    torch.load(cfg.pretrained, map_location="cpu", weights_only=True)
                )
                self.base_keys = {f"net.{k}" for k in net.state_dict() if not k.startswith("fc.")}
            net.fc = nn.Identity()
            self.net, self.out_dim = net, 2048
            self.setup_norm(cfg)
            self.set_trainable(cfg.trainable_layers if cfg.pretrained else -1)

        def set_trainable(self, layers: int) -> None:
            stages = [self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4]
            self._unfreeze(
                [self.net] if layers < 0 else stages[4 - min(layers, 4) :] if layers else []
            )

        def forward(self, inputs: dict[str, torch.Tensor]) -> TowerOut:
            n = self.net
            x = n.maxpool(n.relu(n.bn1(n.conv1(self.normalise(inputs["pixels"])))))
            return self.grid_tokens(n.layer4(n.layer3(n.layer2(n.layer1(x)))))

except Exception:  # noqa: BLE001 - a CUDA-only torchvision fails in many ways on CPU
    pass
