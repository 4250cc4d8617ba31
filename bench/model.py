"""Default model speed on this machine: posts/s at batch sizes 1 and 32, text-only and text+image,
and the share of time spent in preprocessing, the text tower, the image tower and fusion.

    .venv/bin/python bench/model.py [--posts 256] [--model DIR]

Posts are real: tweets from the held-out split and real photos (JPEG, up to 1024 px) shipped in
installed packages. Everything runs in one process on the CPU (or the GPU if torch sees one).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from mmsent.models.model import run_tower
from mmsent.predictor import Predictor
from mmsent.preprocess import to_tensors
from mmsent.sample_data import real_photos
from mmsent.train.data import read_vader


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.inference_mode()
def run(pred: Predictor, texts, images, batch_size: int) -> tuple[float, dict[str, float]]:
    model, t = pred.runner.model, defaultdict(float)
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        t0 = time.perf_counter()
        batch = pred.pre(texts[i : i + batch_size], images[i : i + batch_size])
        tensors = to_tensors(batch, model.device)
        t["preprocess"] += time.perf_counter() - t0
        present = {m: tensors[f"has_{m}"].bool() for m in model.towers}
        feats = {}
        for m, tower in model.towers.items():
            t0 = time.perf_counter()
            feats[m] = run_tower(tower, tensors, present[m])
            sync()
            t[f"{m} tower"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        model.head(feats, present).logits.softmax(-1).cpu()
        t["fusion"] += time.perf_counter() - t0
    return len(texts) / (time.perf_counter() - start), t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--posts", type=int, default=256)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    pred = Predictor(args.model)
    vader = read_vader()
    texts = [t for t, s in zip(vader.texts, vader.sources, strict=True) if s == "tweets"][
        : args.posts
    ]
    photos = [b for _, b in real_photos(max_side=1024)]
    with_images = [photos[i % len(photos)] for i in range(len(texts))]
    print(
        f"device: {pred.runner.model.device}, torch threads: {torch.get_num_threads()}, posts: {len(texts)}"
    )
    print(f"{'posts':12s} {'batch':>5s} {'posts/s':>8s}   time share")
    for kind, images in (("text-only", [None] * len(texts)), ("text+image", with_images)):
        run(pred, texts[:32], images[:32], 32)  # warm-up
        for bs in (1, 32):
            n = len(texts) if bs > 1 else min(len(texts), 64)
            rate, t = run(pred, texts[:n], images[:n], bs)
            total = sum(t.values())
            share = ", ".join(f"{k} {v / total:.0%}" for k, v in t.items())
            print(f"{kind:12s} {bs:5d} {rate:8.1f}   {share}")


if __name__ == "__main__":
    main()
