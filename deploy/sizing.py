"""How many CPU cores of decoding keep one accelerator busy: measure both sides, print the ratio.

    python deploy/sizing.py [--posts 256] [--batch-size 64] [--model DIR] [--images DIR --texts F]

Run it where it counts, on a sample of your posts: in a gpu-infer pod for the GPU figure, in a
cpu-decode pod for the CPU figure (the image holds this file at /home/ray/mmsent/deploy/). Without
--texts, the tweets shipped in the package; without --images, real photos of scikit-image & co
(the train extra, which the image does not have: give --images there). Measured in one run:
- preprocess: posts per CPU-second of what a decode task does (JPEG decode + resize + tokenise,
  mmsent.preprocess.Preprocessor, one thread) on real tweets and real photos (<= 1024 px);
- model: posts/s of ModelRunner on already-preprocessed batches, on this machine's device.
Image fetching is I/O-bound (threads, FetchCfg.concurrency) and left out; keep ~20% CPU headroom.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch

from mmsent.predictor import ModelRunner
from mmsent.preprocess import Preprocessor


def posts(n: int, images_dir: str | None, texts_file: str | None) -> tuple[list, list]:
    """n posts: your own sample (--images DIR of image files, --texts FILE one post per line) or,
    the tweets shipped in the package and the real photos of installed packages."""
    if texts_file:
        texts = [t for t in Path(texts_file).read_text().splitlines() if t.strip()]
    else:
        from mmsent.train.data import read_vader  # package data: in the wheel and the image

        vader = read_vader()
        texts = [t for t, s in zip(vader.texts, vader.sources, strict=True) if s == "tweets"]
    if images_dir:
        photos = [f.read_bytes() for f in sorted(Path(images_dir).iterdir()) if f.is_file()]
    else:
        from mmsent.sample_data import real_photos  # photos of scikit-image & co (train extra)

        photos = [b for _, b in real_photos(max_side=1024)]
    if not texts or not photos:
        raise SystemExit("no sample: give --texts FILE and --images DIR (a few hundred of each)")
    return [texts[i % len(texts)] for i in range(n)], [photos[i % len(photos)] for i in range(n)]


def rate(fn, batches, clock=time.perf_counter) -> float:
    """Posts per second of `clock`: wall time for the model, this process's CPU time for decoding
    (posts per CPU-second is what sizing needs, and other load on the machine does not skew it)."""
    fn(batches[0])  # warm-up (lazy init, CUDA kernels)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, rows = clock(), 0
    for b in batches:
        rows += len(fn(b)["text_status"])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return rows / (clock() - start)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--posts", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--model", default=None, help="checkpoint directory (default: shipped model)")
    ap.add_argument("--cores-per-pod", type=int, default=8, help="Ray CPUs of one decode pod")
    ap.add_argument("--images", default=None, help="folder of sample images (default: repo's)")
    ap.add_argument("--texts", default=None, help="file of sample texts, one per line")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one decode task = one core; the model gets all threads back below
    runner = ModelRunner(args.model)
    pre = Preprocessor(runner.cfg)
    texts, images = posts(args.posts, args.images, args.texts)
    bs = args.batch_size
    raw = [(texts[i : i + bs], images[i : i + bs]) for i in range(0, len(texts), bs)]
    per_core = rate(lambda b: pre(*b), raw, clock=time.process_time)
    batches = [pre(*b) for b in raw]
    torch.set_num_threads(os.cpu_count() or 1)
    device = runner.model.device
    model_rate = rate(runner, batches)
    cores = model_rate / per_core
    print(f"preprocess (1 core):         {per_core:8.1f} posts/s (per CPU-second)")
    print(f"model on {str(device):18s} {model_rate:8.1f} posts/s  (batch {bs})")
    print(f"cores to feed one {device.type}:      {cores:8.2f}  (+20% headroom: {cores * 1.2:.2f})")
    pods = math.ceil(cores * 1.2 / args.cores_per_pod)
    print(f"decode pods of {args.cores_per_pod} CPUs per {device.type}: {pods}")


if __name__ == "__main__":
    main()
