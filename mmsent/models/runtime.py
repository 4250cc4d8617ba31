"""Which runtime runs a checkpoint: torch, or ONNX Runtime on its export (built on first use).

    model = load_runtime("runs/x/best", runtime="onnx", precision="auto")  # int8 on a CPU
    model = load_runtime(None, runtime="torch", precision="auto")          # bf16/fp16 on CUDA

precision: auto | fp32 | bf16 | fp16 | int8
    torch: auto is bf16 (fp16 where the GPU has no bf16) under autocast on CUDA, fp32 on a CPU;
           bf16 runs under CPU autocast too; fp16 needs CUDA; int8 is ONNX Runtime's.
    onnx:  auto is int8 on a CPU (the export that passed the quality guard, docs/runtime.md) and
           fp32 on CUDA (dynamic int8 has no CUDA kernels); bf16/fp16 are torch's.

The ONNX export of a checkpoint is looked for, then built, in `<checkpoint>/onnx-<precision>/`
(or, where the checkpoint's folder is read-only, in ~/.cache/mmsent/onnx/<fingerprint>-<precision>)
under a file lock, so actors starting together build it once; a stale one (another checkpoint's
fingerprint, another exporter) is rebuilt. A folder written by `mmsent export` is used as it is.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from ..config import PRECISIONS, RUNTIMES, ConfigError
from .checkpoint import DEFAULT_MODEL_DIR, load


def resolve_precision(runtime: str, precision: str, cuda: bool) -> str:
    """The precision a runtime will run at on this machine; ConfigError if it cannot."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r}: one of {RUNTIMES}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: one of {PRECISIONS}")
    if runtime == "onnx":
        if precision in ("bf16", "fp16"):
            raise ConfigError(f"precision {precision} is the torch runtime's (runtime: torch)")
        return precision if precision != "auto" else ("fp32" if cuda else "int8")
    if precision == "int8":
        raise ConfigError("precision int8 is ONNX Runtime's (runtime: onnx)")
    if precision == "fp16" and not cuda:
        raise ConfigError("precision fp16 needs CUDA; on a CPU use fp32 or bf16")
    if precision != "auto":
        return precision
    if not cuda:
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def onnx_cuda() -> bool:
    from .ort import providers

    return "CUDAExecutionProvider" in providers()


def load_runtime(
    model_dir: str | Path | None,
    runtime: str = "torch",
    precision: str = "auto",
    device: str | None = None,
):
    """A model with the torch model's interface (cfg, device, eval(), __call__(batch, drop)) and
    `precision` set to what it runs at."""
    path = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    if runtime == "onnx" or (path / "onnx.json").exists():
        from .ort import OrtClassifier

        return OrtClassifier(onnx_dir(path, precision))
    model = load(path, device)
    model.precision = resolve_precision("torch", precision, model.device.type == "cuda")
    return model


def onnx_dir(model_dir: str | Path | None, precision: str, cuda: bool | None = None) -> Path:
    """The folder the onnx runtime loads: `model_dir` itself when it is an export, else the
    checkpoint's export at the precision `precision` resolves to (found or built). `cuda`: whether
    the CUDA provider is to be used (default: whether this onnxruntime has it)."""
    path = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    if (path / "onnx.json").exists():  # an export: it is what it is
        return path
    cuda = onnx_cuda() if cuda is None else cuda
    return ensure_onnx(path, resolve_precision("onnx", precision, cuda))


def ensure_onnx(checkpoint: str | Path, precision: str) -> Path:
    """The checkpoint's ONNX export at `precision`: found, or built (and cached)."""
    from .export import EXPORT_FORMAT, MANIFEST, export_onnx, fingerprint

    checkpoint = Path(checkpoint)
    want = fingerprint(checkpoint)
    beside, cache = checkpoint / f"onnx-{precision}", _user_cache() / f"{want}-{precision}"

    def fresh(out: Path) -> bool:
        try:
            m = json.loads((out / MANIFEST).read_text())
        except (OSError, ValueError):
            return False
        return m.get("fingerprint") == want and m.get("format") == EXPORT_FORMAT

    for out in (beside, cache):  # one baked into a read-only image counts too
        if fresh(out):
            return out
    out = beside if os.access(checkpoint, os.W_OK) else cache
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.with_name(out.name + ".lock")):
        if not fresh(out):  # another process may have built it while this one waited
            _say(f"building the ONNX {precision} model of {checkpoint} in {out} (once)")
            export_onnx(load(checkpoint, "cpu"), out, precision, checkpoint)
    return out


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmsent" / "onnx"


@contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _say(msg: str) -> None:
    print(f"mmsent: {msg}", file=sys.stderr, flush=True)
