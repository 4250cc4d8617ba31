"""int8 for the text encoder, chosen per layer on calibration texts.

    plan = calibrate(encoder, run)            # run(): the encoder over the calibration texts
    smooth(encoder, plan)                     # in place; the same function in fp32
    plan.quantize                             # names of the Linear layers to make int8

ONNX Runtime's dynamic int8 quantizes a MatMul's input with one scale per call (per tensor) and
its weights with one per output channel. A transformer's activations have outlier channels, so
one scale per tensor leaves the other channels few levels: quantized as is, the default model
flipped 2-3 % of its labels (docs/runtime.md). Here each Linear first gets SmoothQuant's
per-channel scales (Xiao et al. 2023: x / s, W * s, exact in fp32) with the alpha that keeps its
simulated int8 output closest to fp32 on the calibration texts, and only the layers whose error
stays under `max_error` are quantized; the rest stay fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

ALPHAS = (None, 0.5, 0.75, 0.9, 1.0)  # None: no smoothing
SAMPLE_ROWS = 128  # rows of each calibration call the error is measured on
MAX_ERROR = 0.05  # relative L2 error of a layer's simulated int8 output; above it: fp32


class SmoothedLinear(nn.Module):
    """x -> linear(x / s) with the linear's input columns multiplied by s: the same function,
    with the outlier channels of x scaled down before ONNX Runtime quantizes it."""

    def __init__(self, linear: nn.Linear, s: torch.Tensor):
        super().__init__()
        with torch.no_grad():
            linear.weight *= s
        self.linear = linear
        self.register_buffer("inv_s", 1.0 / s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_s)


@dataclass
class Plan:
    scales: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> s (smoothed ones)
    quantize: list[str] = field(default_factory=list)  # layers to quantize (module names)
    errors: dict[str, float] = field(default_factory=dict)  # layer -> simulated int8 error
    bias: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> bias correction


def _int8_weight(w: torch.Tensor) -> torch.Tensor:
    """w as ONNX Runtime stores it: int8, symmetric, one scale per output channel."""
    sw = w.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
    return (w / sw).round().clamp(-127, 127) * sw


def _fake_int8_input(x: torch.Tensor) -> torch.Tensor:
    """x as ONNX Runtime's dynamic int8 sees it: uint8, asymmetric, one scale for the tensor."""
    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)
    sx = ((hi - lo) / 255).clamp(min=1e-12)
    zp = (-lo / sx).round()
    return ((x / sx).round() + zp).clamp(0, 255).sub(zp) * sx


def _error(calls: list[torch.Tensor], w: torch.Tensor, s: torch.Tensor | None) -> float:
    """Relative L2 error of the layer's simulated int8 output over the calibration calls. Each
    call's input is quantized whole (its scale is the whole tensor's); the products are taken on
    up to SAMPLE_ROWS of its rows, which is all an estimate of the error needs."""
    wq = _int8_weight(w if s is None else w * s).T
    num = den = 0.0
    for x in calls:
        xq = _fake_int8_input(x if s is None else x / s)
        rows = slice(None, None, max(1, len(x) // SAMPLE_ROWS))
        ref = x[rows] @ w.T
        num += float((xq[rows] @ wq - ref).pow(2).sum())
        den += float(ref.pow(2).sum())
    return (num / max(den, 1e-12)) ** 0.5


@torch.no_grad()
def calibrate(encoder: nn.Module, run, max_error: float = MAX_ERROR) -> Plan:
    """`run()` feeds `encoder` (adapters merged) the calibration texts as inference does (the same
    windows and groups: one quantization scale per call); each Linear's inputs are kept per call,
    then each layer's alpha is picked and whether it is quantized."""
    calls: dict[str, list[torch.Tensor]] = {}
    names = {m: n for n, m in encoder.named_modules() if isinstance(m, nn.Linear)}

    def keep(module, inputs, _):
        x = inputs[0]
        calls.setdefault(names[module], []).append(x.reshape(-1, x.shape[-1]).float())

    hooks = [m.register_forward_hook(keep) for m in names]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    plan = Plan()
    for module, name in names.items():
        w = module.weight.float()
        act = torch.stack([x.abs().amax(0) for x in calls[name]]).amax(0).clamp(min=1e-5)
        wmax = w.abs().amax(0).clamp(min=1e-5)
        best = (float("inf"), None)
        for alpha in ALPHAS:
            s = None if alpha is None else (act**alpha / wmax ** (1 - alpha)).clamp(1e-4, 1e4)
            err = _error(calls[name], w, s)
            best = min(best, (err, s), key=lambda t: t[0])
        plan.errors[name] = round(best[0], 5)
        if best[1] is not None:
            plan.scales[name] = best[1]
        if best[0] <= max_error:
            plan.quantize.append(name)
            s = best[1] if best[1] is not None else torch.ones_like(act)
            mean_x = torch.cat(calls[name]).mean(0) / s  # in the smoothed layer's input space
            # the systematic part of the weights' rounding error (Nagel et al. 2019)
            plan.bias[name] = -(_int8_weight(w * s) - w * s) @ mean_x
    return plan


def smooth(encoder: nn.Module, plan: Plan) -> None:
    """Wrap the layers the plan smooths (in place): the same function in fp32."""
    for name in plan.quantize:
        layer = encoder.get_submodule(name)
        with torch.no_grad():
            layer.bias += plan.bias[name]
    for name, s in plan.scales.items():
        parent_name, _, child = name.rpartition(".")
        parent = encoder.get_submodule(parent_name) if parent_name else encoder
        setattr(parent, child, SmoothedLinear(getattr(parent, child), s))
