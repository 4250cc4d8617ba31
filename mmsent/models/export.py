"""A checkpoint as ONNX: one graph per tower and one for the fusion head, beside its config.

    mmsent export runs/x/best out/x-onnx --format onnx --quantize int8
    export_onnx(load("runs/x/best"), "out/x-onnx", precision="int8")   # -> the manifest

One graph per part, not one graph in all, so a post without an image never runs the image graph
and a text-only model has none; what joins them (text windows, length-sorted groups, the rows
where each modality is present) is the torch glue the torch runtime runs too (models/model.py).

    text.onnx     input_ids, attention_mask (N, L) int64 -> hidden (N, L, D)   adapters merged in
    image.onnx    pixels (B, S, S, 3) uint8 -> pooled (B, D), tokens (B, T, D)   all tokens real
    tabular.onnx  tab_num (B, N) float32, tab_cat (B, C) int32, tab_missing (B, N + C) bool
                  -> pooled (B, D), tokens (B, N + C, D), mask (B, N + C) bool
    audio.onnx    mel (B, n_mels, T) float16, mel_mask (B, T) bool -> pooled (B, D),
                  tokens (B, T', D), mask (B, T') bool   T = AudioCfg.frames(), T' = T / 2**blocks
    head.onnx     <m>_pooled, <m>_tokens, <m>_mask, <m>_present per modality -> logits [, weights
                  [, attention]]

A tower graph takes its inputs in the dtypes the Preprocessor gives them and casts inside; the
audio graph's time axis is fixed (audio.py's max_pool1d of the mask specialises it in export).

int8: the text encoder's MatMuls are dynamically quantized (int8 weights per channel, activations
per call), smoothed and bias-corrected per layer on calibration texts (models/int8.py); a post
whose int8 labels are close (RECHECK_MARGIN) is scored again with the fp32 text graph, which the
folder also holds (text-fp32.onnx). The other towers and the head stay fp32 (docs/runtime.md has
the image tower's measurements). The folder is self-describing: config.json (the checkpoint's,
preprocessing included), onnx.json (the manifest: graphs, versions, the checkpoint's fingerprint,
the parity report) and tokenizer/.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..config import to_dict
from . import int8
from .lora import merge_lora
from .towers import TowerOut

EXPORT_FORMAT = 1  # bump when the graphs change: cached exports of older ones are rebuilt
PRECISIONS = ("fp32", "int8")
MANIFEST = "onnx.json"
# int8: a post whose two likeliest labels are closer than this is scored again with the fp32 text
# graph. On the default model's held-out posts every int8/fp32 label flip had a margin under
# 0.09; 0.15 rechecks ~10 % of posts (docs/runtime.md).
RECHECK_MARGIN = 0.15
_EXAMPLE_B, _EXAMPLE_T = 3, 7  # example sizes other than 0/1, which torch.export specialises
_HEAD_OUTPUTS = ("logits", "weights", "attention")  # FusionOut's fields, None ones left out


class _TextGraph(nn.Module):
    def __init__(self, tower: nn.Module):
        super().__init__()
        self.encoder = merge_lora(copy.deepcopy(tower.encoder))
        self.plan = None  # int8: set by _plan_int8

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _TowerGraph(nn.Module):
    """A non-text tower on its `input_keys` -> pooled, tokens [, mask]."""

    def __init__(self, tower: nn.Module, mask: bool):
        super().__init__()
        self.tower, self.mask = tower, mask

    def forward(self, *inputs):
        out = self.tower(dict(zip(self.tower.input_keys, inputs, strict=True)))
        return (out.pooled, out.tokens, out.token_mask) if self.mask else (out.pooled, out.tokens)


class _HeadGraph(nn.Module):
    def __init__(self, head: nn.Module, modalities: list[str]):
        super().__init__()
        self.head, self.modalities = head, modalities

    def unflatten(self, flat):
        feats, present = {}, {}
        for i, m in enumerate(self.modalities):
            pooled, tokens, mask, has = flat[4 * i : 4 * i + 4]
            feats[m], present[m] = TowerOut(pooled, tokens, mask), has
        return feats, present

    def forward(self, *flat):
        out = self.head(*self.unflatten(flat))
        return tuple(x for x in (out.logits, out.weights, out.attention) if x is not None)


# towers whose tokens are all real (a grid of patches): their graphs give no mask, the runtime
# makes an all-true one
_FULL_MASK = ("image",)


def _tower_inputs(m: str, cfg, rng: torch.Generator) -> dict[str, torch.Tensor]:
    """Example inputs of a non-text tower in the dtypes the Preprocessor gives them (the graph
    takes those and casts inside), some rows padded or missing so that masks are not all true."""
    B = _EXAMPLE_B
    if m == "image":
        S = cfg.image.image_size
        return {"pixels": torch.randint(0, 255, (B, S, S, 3), dtype=torch.uint8, generator=rng)}
    if m == "tabular":
        n, c = len(cfg.tabular.numeric), len(cfg.tabular.categorical)
        return {
            "tab_num": torch.randn(B, n, generator=rng),
            "tab_cat": torch.randint(0, 3, (B, c), dtype=torch.int32, generator=rng),
            "tab_missing": torch.rand(B, n + c, generator=rng) < 0.3,
        }
    if m == "audio":
        f = cfg.audio.features
        T = f.frames()
        mask = torch.arange(T) < torch.tensor([T, T // 2, 5])[:, None]  # (B, T): three lengths
        return {"mel": torch.randn(B, f.n_mels, T, generator=rng).half(), "mel_mask": mask}
    raise ValueError(f"no ONNX export for a {m!r} tower")


def fingerprint(checkpoint: str | Path) -> str:
    """What an export depends on: the checkpoint's model config and weights, and this exporter
    (its source: a cached export made by other export code is rebuilt, not trusted)."""
    path = Path(checkpoint)
    h = hashlib.sha256(f"{EXPORT_FORMAT}:{__version__}:".encode())
    for module in (__file__, int8.__file__):
        h.update(Path(module).read_bytes())
    h.update(json.dumps(json.loads((path / "config.json").read_text())["model"]).encode())
    with open(path / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def export_onnx(
    model,
    out: str | Path,
    precision: str = "int8",
    checkpoint: str | Path | None = None,
    calibration: list[str] | None = None,
) -> dict[str, Any]:
    """Write the graphs of `model` (a loaded MultimodalClassifier) into `out`, swapped in whole;
    the manifest. `checkpoint`: the folder it was loaded from (config.json and fingerprint);
    `calibration`: texts for int8 (default: `calibration_texts()`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: ONNX exports are {PRECISIONS}")
    import onnx
    import onnxruntime

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would keep other users (a serving account) out
    try:
        model = model.cpu().eval()
        graphs = _export_graphs(model, tmp, precision, calibration)
        for path in tmp.glob("*.onnx"):
            _strip(path)
        if checkpoint is not None:
            shutil.copy(Path(checkpoint) / "config.json", tmp / "config.json")
        else:
            meta = {"format": 1, "mmsent_version": __version__, "model": to_dict(model.cfg)}
            (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        _save_tokenizer(model, tmp / "tokenizer")
        manifest = {
            "format": EXPORT_FORMAT,
            "precision": precision,
            "fingerprint": fingerprint(checkpoint) if checkpoint is not None else None,
            "modalities": model.cfg.modalities(),
            "graphs": graphs,
            "versions": {
                "mmsent": __version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _export_graphs(model, out: Path, precision: str, calibration) -> dict[str, dict]:
    graphs: dict[str, dict] = {}
    B, T = torch.export.Dim("batch"), torch.export.Dim("tokens")
    examples: dict[str, TowerOut] = {}
    rng = torch.Generator().manual_seed(
        0
    )  # example inputs: the caller's random state stays as it is
    with torch.no_grad():
        for m, tower in model.towers.items():
            if m == "text":
                ids = torch.randint(1, 100, (_EXAMPLE_B, _EXAMPLE_T), generator=rng)
                mask = torch.ones_like(ids)
                mask[0, -2:] = 0
                axes = {"input_ids": {0: B, 1: T}, "attention_mask": {0: B, 1: T}}
                graph = _TextGraph(tower)
                graphs[m] = {"file": "text.onnx", "out_dim": tower.out_dim}
                if precision == "int8":  # the fp32 graph too: the recheck of uncertain posts
                    _export(graph, (ids, mask), out / "text-fp32.onnx", axes, ["hidden"])
                    graphs[m]["fp32_file"] = "text-fp32.onnx"
                    graphs[m]["recheck_margin"] = RECHECK_MARGIN
                    graph.plan = _plan_int8(graph.encoder, model.cfg, calibration)
                _export(graph, (ids, mask), out / "text.onnx", axes, ["hidden"])
                if precision == "int8":
                    graphs[m]["int8"] = _quantize_text(out / "text.onnx", graph.plan)
                examples[m] = tower({"input_ids": ids[:, None], "attention_mask": mask[:, None]})
            else:
                inputs, keys = _tower_inputs(m, model.cfg, rng), list(tower.input_keys)
                outputs = ["pooled", "tokens"] + ([] if m in _FULL_MASK else ["mask"])
                graph, path = _TowerGraph(tower, "mask" in outputs), out / f"{m}.onnx"
                args, axes = tuple(inputs[k] for k in keys), {"inputs": ({0: B},) * len(keys)}
                _export(graph, args, path, axes, outputs, keys)
                graphs[m] = {"file": path.name, "out_dim": tower.out_dim}
                graphs[m]["cpu_chunk"] = tower.cpu_chunk
                examples[m] = tower(inputs)
        mods = model.cfg.modalities()
        flat, names, shapes = [], [], []
        for m in mods:
            e = examples[m]
            has = torch.ones(_EXAMPLE_B, dtype=torch.bool)
            has[1] = False
            flat += [e.pooled, e.tokens, e.token_mask, has]
            names += [f"{m}_pooled", f"{m}_tokens", f"{m}_mask", f"{m}_present"]
            tok = {0: B, 1: T} if m == "text" else {0: B}
            shapes += [{0: B}, tok, tok, {0: B}]
        head = _HeadGraph(model.head, mods)
        example = model.head(*head.unflatten(flat))
        values = (example.logits, example.weights, example.attention)
        outputs = [n for n, v in zip(_HEAD_OUTPUTS, values, strict=True) if v is not None]
        _export(head, tuple(flat), out / "head.onnx", {"flat": tuple(shapes)}, outputs, names)
    graphs["head"] = {"file": "head.onnx", "inputs": names, "outputs": outputs}
    return graphs


def _export(module, args, path: Path, axes: dict, outputs: list[str], inputs=None) -> None:
    """`axes`: torch.export dynamic shapes by forward() argument; input names default to them."""
    # the exporter's chatter (deprecations, "torchvision is not installed") is not the user's
    quiet = logging.getLogger("torch.onnx")
    level, _ = quiet.level, quiet.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs or list(axes),
            output_names=outputs,
            dynamic_shapes=axes,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    quiet.setLevel(level)


def calibration_texts(n: int = 512, seed: int = 0) -> list[str]:
    """The default int8 calibration set: bundled VADER texts from the default model's training
    split (never its held-out posts, on which the quality guard measures int8)."""
    import numpy as np

    from ..train.default_model import splits

    texts = [t for t in splits()[0].texts if t]
    pick = np.random.default_rng(seed).permutation(len(texts))[:n]
    return [texts[i] for i in sorted(pick)]


def _plan_int8(encoder: nn.Module, cfg, texts: list[str] | None) -> int8.Plan:
    """Calibrate `encoder` on `texts` fed as inference feeds it, then smooth it in place."""
    from ..preprocess import Preprocessor
    from .towers.text import encode_grouped

    texts = texts if texts is not None else calibration_texts()
    pre = Preprocessor(cfg)

    def encode(ids, mask):
        return encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    def run():
        for i in range(0, len(texts), 32):
            b = pre(texts[i : i + 32])
            L = b["input_ids"].shape[-1]
            ids = torch.from_numpy(b["input_ids"]).long().reshape(-1, L)
            mask = torch.from_numpy(b["attention_mask"]).long().reshape(-1, L)
            keep = mask.any(1)
            encode_grouped(encode, ids[keep], mask[keep])

    plan = int8.calibrate(encoder, run)
    int8.smooth(encoder, plan)
    return plan


def _quantize_text(path: Path, plan: int8.Plan) -> dict[str, Any]:
    """Dynamic int8 on the MatMuls of the layers the plan quantizes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(path))
    nodes = [
        n.name for n in graph.graph.node if n.op_type == "MatMul" and _layer(n) in plan.quantize
    ]
    root = logging.getLogger()
    level, _ = root.level, root.setLevel(logging.ERROR)  # its "consider pre-processing" advice
    try:
        quantize_dynamic(
            str(path),
            str(path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=nodes,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)
    return {
        "scheme": "dynamic int8 (activations per tensor, weights per channel), SmoothQuant per layer",
        "int8_layers": len(plan.quantize),
        "fp32_layers": sorted(set(plan.errors) - set(plan.quantize)),
        "layer_errors": plan.errors,
    }


def _strip(path: Path) -> None:
    """Drop the exporter's node metadata: it holds this machine's file paths (stack traces), and
    an export is to be the same bytes wherever it is made."""
    import onnx

    graph = onnx.load(str(path))
    for node in graph.graph.node:
        del node.metadata_props[:]
    onnx.save(graph, str(path))


def _layer(node) -> str | None:
    """The encoder's Linear a MatMul node came from (its torch module path), from the exporter's
    name scopes: ["", "encoder", ..., "encoder.encoder.layer.0.attention.self.query", "linear"]."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            scopes = json.loads(p.value.replace("'", '"'))
            path = scopes[-2] if len(scopes) >= 2 else ""
            path = path.removeprefix("encoder.").removesuffix(".linear")
            return path
    return None


def _save_tokenizer(model, out: Path) -> None:
    if model.cfg.text is None:
        return
    from transformers import AutoTokenizer

    from ..preprocess import resolve_text_path

    path = resolve_text_path(model.cfg.text.pretrained)
    AutoTokenizer.from_pretrained(path, local_files_only=True).save_pretrained(str(out))
