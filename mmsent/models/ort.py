"""The ONNX Runtime model: the graphs of models/export.py behind the torch model's interface.

    model = OrtClassifier("out/x-onnx")     # a folder written by export_onnx / `mmsent export`
    out = model(batch)                      # the tensors of preprocess.to_tensors -> FusionOut

It joins the graphs with the same glue as the torch model (`fuse`, `encode_windows`): the same
rows reach the same towers, so output columns, error semantics and the presence mask are the
torch runtime's. Sessions use the CPU, or CUDA where onnxruntime-gpu provides it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import ModelCfg, from_dict
from .export import MANIFEST
from .fusion import FusionOut
from .model import fuse
from .towers import TowerOut
from .towers.text import encode_windows


def providers() -> list[str]:
    """CUDA where this onnxruntime has it (the onnxruntime-gpu package), then the CPU."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # the actor's share of the CPUs, as torch is given
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # warnings about unused initializers are not the user's
    return ort.InferenceSession(str(path), opts, providers=providers())


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy())


class _TextGraph:
    input_keys = ("input_ids", "attention_mask")
    cpu_chunk = None

    def __init__(self, session, out_dim: int, pooling: str):
        self.session, self.out_dim, self.pooling = session, out_dim, pooling

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        feed = {"input_ids": _np(ids), "attention_mask": _np(mask)}
        return torch.from_numpy(self.session.run(["hidden"], feed)[0])

    def __call__(self, inputs: dict[str, torch.Tensor]) -> TowerOut:
        return encode_windows(self._encode, inputs, self.out_dim, self.pooling)


# ONNX Runtime's type names -> numpy's, for the tower graphs' inputs
_DTYPES = {
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
}


class _TowerGraph:
    """A non-text tower's graph: its inputs as the graph declares them (uint8 masks of a packed
    batch become bool) -> pooled, tokens [, mask]; a graph without a mask has only real tokens."""

    def __init__(self, session, out_dim: int, cpu_chunk: int | None):
        self.session, self.out_dim, self.cpu_chunk = session, out_dim, cpu_chunk
        self.dtypes = {i.name: _DTYPES[i.type] for i in session.get_inputs()}
        self.input_keys = tuple(self.dtypes)
        self.outputs = [o.name for o in session.get_outputs()]

    def __call__(self, inputs: dict[str, torch.Tensor]) -> TowerOut:
        feed = {k: _np(inputs[k]).astype(t, copy=False) for k, t in self.dtypes.items()}
        pooled, tokens, *mask = map(torch.from_numpy, self.session.run(self.outputs, feed))
        mask = mask[0] if mask else torch.ones(tokens.shape[:2], dtype=torch.bool)
        return TowerOut(pooled, tokens, mask)


class _HeadGraph:
    def __init__(self, session, outputs: list[str]):
        self.session, self.outputs = session, outputs
        # name -> token count where the graph fixed it (image, tabular, audio); the exporter drops
        # unused inputs
        self.inputs = {
            i.name: i.shape[1] if len(i.shape) > 1 else None for i in session.get_inputs()
        }

    def __call__(self, feats: dict[str, TowerOut], present: dict[str, torch.Tensor]) -> FusionOut:
        feed = {}
        for m, f in feats.items():
            T = self.inputs.get(f"{m}_tokens")
            if isinstance(T, int) and f.tokens.shape[1] != T:  # no row has it: zeros of 1 token
                f = TowerOut(f.pooled, _pad(f.tokens, T), _pad(f.token_mask, T))
            values = (f.pooled, f.tokens, f.token_mask, present[m])
            for name, v in zip(("pooled", "tokens", "mask", "present"), values, strict=True):
                if f"{m}_{name}" in self.inputs:
                    feed[f"{m}_{name}"] = _np(v)
        got = dict(zip(self.outputs, self.session.run(self.outputs, feed), strict=True))
        as_tensor = {k: torch.from_numpy(v) for k, v in got.items()}
        return FusionOut(as_tensor["logits"], as_tensor.get("weights"), as_tensor.get("attention"))


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, t, ...) -> (B, n, ...) with zeros (False) after the first t."""
    out = x.new_zeros((x.shape[0], n, *x.shape[2:]))
    out[:, : x.shape[1]] = x[:, :n]
    return out


class OrtClassifier:
    """What ModelRunner, predict_posts and the reports read of a model: cfg, device, eval(),
    __call__(batch, drop) -> FusionOut. Only the graphs of the model's modalities are loaded."""

    runtime = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None):
        path = Path(path)
        self.manifest = json.loads((path / MANIFEST).read_text())
        self.cfg = from_dict(ModelCfg, json.loads((path / "config.json").read_text())["model"])
        self.precision = self.manifest["precision"]
        threads = threads or torch.get_num_threads()
        graphs = self.manifest["graphs"]
        self.towers, self.recheck_towers, self.recheck_margin = {}, None, 0.0
        for m in self.cfg.modalities():
            g, session = graphs[m], _session(path / graphs[m]["file"], threads)
            if m == "text":
                self.towers[m] = _TextGraph(session, g["out_dim"], self.cfg.text.pooling)
                if g.get("fp32_file"):
                    fp32 = _session(path / g["fp32_file"], threads)
                    self.recheck_towers = {m: _TextGraph(fp32, g["out_dim"], self.cfg.text.pooling)}
                    self.recheck_margin = g["recheck_margin"]
            else:
                self.towers[m] = _TowerGraph(session, g["out_dim"], g.get("cpu_chunk"))
        self.posts = self.rechecked = 0  # counts: how many posts the fp32 recheck took
        head = graphs["head"]
        self.head = _HeadGraph(_session(path / head["file"], threads), head["outputs"])
        self.device = torch.device("cpu")  # where its inputs and outputs live

    def eval(self) -> OrtClassifier:
        return self

    def __call__(self, batch: dict[str, torch.Tensor], drop=None) -> FusionOut:
        out = fuse(self.towers, self.head, batch, drop)
        if self.recheck_towers is None or out.logits.shape[1] < 2:
            return out
        top2 = out.logits.float().softmax(-1).topk(2, -1).values
        idx = ((top2[:, 0] - top2[:, 1]) < self.recheck_margin).nonzero().squeeze(1)
        self.posts, self.rechecked = self.posts + len(out.logits), self.rechecked + len(idx)
        if len(idx) == 0:
            return out
        sub = {k: v[idx] for k, v in batch.items()}
        towers = {**self.towers, **self.recheck_towers}
        again = fuse(towers, self.head, sub, {m: d[idx] for m, d in (drop or {}).items()})
        out.logits[idx] = again.logits
        if out.weights is not None:
            out.weights[idx] = again.weights
        if out.attention is not None:  # (B, T_text, T_other): the subset's T_text may be shorter
            out.attention[idx] = _pad(again.attention, out.attention.shape[1])
        return out
