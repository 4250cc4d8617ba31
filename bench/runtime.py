"""The model stage under each runtime: posts/s and ratios to torch fp32, measured in one run.

    python bench/runtime.py                       # default model, 1 and 2 threads
    python bench/runtime.py --texts 256 --repeats 3 --threads 1

Posts are preprocessed once (tokenized, decoded); only ModelRunner's forward passes are timed, in
batches of --batch posts, as a model actor runs them. Runtimes: torch fp32, ONNX Runtime fp32,
ONNX Runtime int8 (with its fp32 recheck of close calls: what `precision: auto` runs on a CPU)
and int8 alone (the recheck off, for reference). Rounds interleave the runtimes and each figure is
the median of --repeats rounds, so a machine whose speed drifts moves them all alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from mmsent.models.runtime import ensure_onnx
from mmsent.predictor import ModelRunner
from mmsent.preprocess import Preprocessor
from mmsent.sample_data import real_photos
from mmsent.train.default_model import splits

RUNTIMES = {  # name -> (runtime, precision, recheck)
    "torch fp32": ("torch", "fp32", True),
    "onnx fp32": ("onnx", "fp32", True),
    "onnx int8": ("onnx", "int8", True),
    "onnx int8 alone": ("onnx", "int8", False),
}


def batches(pre: Preprocessor, texts: list[str], images: list[bytes | None], size: int):
    out = []
    for i in range(0, len(texts), size):
        out.append(pre(texts[i : i + size], images[i : i + size]))
    return out


def timed(runner: ModelRunner, prepared: list[dict]) -> float:
    start = time.perf_counter()
    for b in prepared:
        runner(dict(b))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--texts", type=int, default=512, help="text posts (held-out VADER texts)")
    ap.add_argument("--images", type=int, default=64, help="text+image posts (real photos)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from mmsent.models.checkpoint import DEFAULT_MODEL_DIR

    ckpt = args.model or DEFAULT_MODEL_DIR
    for precision in ("fp32", "int8"):
        ensure_onnx(ckpt, precision)  # built before anything is timed
    texts = [t for t in splits()[2].texts if t][: args.texts]
    photos = [b for _, b in real_photos(max_side=None)]
    with_images = [photos[i % len(photos)] for i in range(args.images)]
    results = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        runners = {}
        for name, (runtime, precision, recheck) in RUNTIMES.items():
            runners[name] = ModelRunner(ckpt, "cpu", runtime, precision)
            if not recheck:
                runners[name].model.recheck_margin = 0.0
        pre = Preprocessor(runners["torch fp32"].cfg)
        sets = {
            "text": (batches(pre, texts, [None] * len(texts), args.batch), len(texts)),
            "text+image": (
                batches(pre, texts[: args.images], with_images, args.batch),
                args.images,
            ),  # fmt: skip
        }
        for kind, (prepared, n) in sets.items():
            for r in runners.values():
                r(dict(prepared[0]))  # warm-up: first-call allocations are not the steady state
            seconds = {name: [] for name in runners}
            for _ in range(args.repeats):
                for name, r in runners.items():
                    seconds[name].append(timed(r, prepared))
            base = n / statistics.median(seconds["torch fp32"])
            for name, s in seconds.items():
                rate = n / statistics.median(s)
                key = f"{kind} | {threads} thread{'s' if threads > 1 else ''} | {name}"
                results[key] = {
                    "posts_per_s": round(rate, 1),
                    "x_torch_fp32": round(rate / base, 2),
                    "runs_s": [round(x, 2) for x in s],
                }
                print(f"{key:45s} {rate:8.1f} posts/s  {rate / base:5.2f}x", flush=True)
        int8 = runners["onnx int8"].model
        results[f"rechecked in fp32 ({threads} threads)"] = round(int8.rechecked / int8.posts, 4)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
