"""Bulk scoring: throughput against a plain loop, and memory against input size, in one run.

    .venv/bin/python bench/pipeline.py [--seconds 70] [--mem-posts 500] [--model DIR] [--set KEY=VALUE ...]
    .venv/bin/python bench/pipeline.py --runtimes torch,onnx --repeats 3 --mem-posts 0

1. Steady-state posts/s of the Ray pipeline (mmsent/presets/score/local.yaml: the graph `mmsent score`
   runs, read -> preprocess tasks -> model actors, drained by the driver instead of written) vs.
   the same UDFs (read_unit -> preprocess -> ModelStage) in a plain single-process loop with
   torch on every core, in batches of model_batch_size, on the
   same posts: text-only, text+image, and all four modalities ("four": text, a photo, tabular
   columns and a 5 s 44.1 kHz voice-like clip on every post, scored by the default model's towers
   plus a tabular and an audio tower, weights random: the cost, not the labels, is measured).
   The loop runs --seconds past its first batch; the Ray
   pipeline then scores exactly those posts. Both rates count from the first scored batch on, so
   cluster start and model load are left out.
2. Peak memory (PSS of a `mmsent score` process and of every process of its local Ray) of whole
   jobs on N and 10xN text+image posts: a streaming job's memory does not grow with its input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mmsent.config import ScoreCfg, load_config  # noqa: E402
from mmsent.pipeline import ray_compat  # noqa: E402
from mmsent.pipeline.job import build_dataset, model_config  # noqa: E402
from mmsent.pipeline.output import output_fields  # noqa: E402
from mmsent.pipeline.plan import make_plan  # noqa: E402
from mmsent.pipeline.stages import ModelStage, preprocess, read_unit  # noqa: E402

PLATFORMS = ["x", "instagram", "tiktok", "reddit"]


def write_dump(folder: Path, n: int, images: bool, four: bool = False) -> str:
    from mmsent.sample_data import real_photos
    from mmsent.train.data import read_vader

    texts = read_vader().texts
    names = []
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for name, data in real_photos(max_side=512):
        (folder / "img" / f"{name}.jpg").write_bytes(data)
        names.append(name)
    clips = write_clips(folder / "audio") if four else []
    with open(folder / "posts.jsonl", "w") as f:
        for i in range(n):
            row = {"id": f"p{i}", "text": texts[(i * 7919) % len(texts)]}
            if images or four:
                row["image_url"] = f"img/{names[i % len(names)]}.jpg"
            if four:
                row["audio_url"] = clips[i % len(clips)]
                row.update(likes=i * 37 % 5000, hour=i % 24, platform=PLATFORMS[i % 4])
                row["verified"] = i % 5 == 0
            f.write(json.dumps(row) + "\n")
    return str(folder / "posts.jsonl")


def write_clips(folder: Path, n: int = 8) -> list[str]:
    """n different 5 s, 44.1 kHz mono WAVs: a voice-like buzz (harmonics of a gliding pitch)
    in noise, the sample rate phones record at, so decoding includes resampling."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng, rate = np.random.default_rng(0), 44_100
    t = np.arange(5 * rate) / rate
    out = []
    for k in range(n):
        pitch = 120 + 40 * k / n + 20 * np.sin(2 * np.pi * 0.5 * t)
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        x = sum(np.sin(h * phase) / h for h in range(1, 8)) * 0.2 + rng.normal(0, 0.02, len(t))
        sf.write(folder / f"clip{k}.wav", x.astype(np.float32), rate)
        out.append(f"audio/clip{k}.wav")
    return out


def four_modality_model(folder: Path) -> str:
    """The default model's text and image towers with a tabular and an audio tower and a fresh
    fusion head, saved as a checkpoint (random head and new towers: a cost benchmark)."""
    import torch

    from mmsent.config import AudioTowerCfg, TabularTowerCfg
    from mmsent.models.checkpoint import save
    from mmsent.models.model import build_model

    tab = TabularTowerCfg(
        numeric=["likes", "hour"],
        categorical=["platform", "verified"],
        log_numeric=["likes"],
        mean={"likes": 6.0, "hour": 11.5},
        std={"likes": 2.0, "hour": 6.9},
        vocab={"platform": PLATFORMS, "verified": ["false", "true"]},
    )
    cfg = dataclasses.replace(model_config(None), tabular=tab, audio=AudioTowerCfg())
    torch.manual_seed(0)
    return str(save(build_model(cfg), folder))


def setup(path: str, cfg: ScoreCfg):
    model_cfg = model_config(cfg.model_dir)
    reserved = {name for name, _ in output_fields(model_cfg)}
    plan = make_plan(path, cfg, reserved, model_cfg.tabular_columns())
    return plan, model_cfg, [{"file": plan.files[0], "skip": []}]


def plain_loop(path: str, cfg: ScoreCfg, seconds: float) -> tuple[float, int]:
    """The same UDFs, one process, no Ray, torch on every core; stops `seconds` past the first
    batch."""
    import numpy as np

    plan, model_cfg, units = setup(path, cfg)
    stage = ModelStage(cfg.model_dir, os.cpu_count(), plan.passthrough, cfg.runtime, cfg.precision)
    unit = {"unit": np.array([json.dumps(units[0])])}
    n = first_n = 0
    first = None
    for block in read_unit(unit, plan=plan, block_rows=cfg.model_batch_size):
        n += stage(preprocess(block, model_cfg=model_cfg, fetch_cfg=cfg.fetch)).num_rows
        now = time.perf_counter()
        if first is None:
            first, first_n = now, n
        elif now - first >= seconds:
            break
    return (n - first_n) / (time.perf_counter() - first), n


def ray_pipeline(path: str, cfg: ScoreCfg) -> float:
    import ray

    ray_compat.connect()
    plan, model_cfg, units = setup(path, cfg)
    ds = build_dataset(plan, units, cfg, model_cfg)
    n = first_n = 0
    first = None
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        n += batch.num_rows
        if first is None:
            first, first_n = time.perf_counter(), n
    rate = (n - first_n) / (time.perf_counter() - first)
    ray.shutdown()
    return rate


def peak_memory(path: str, out: str, overrides: list[str]) -> float:
    """Peak summed PSS (shared pages split fairly) of a `mmsent score` process and of every
    process under it (its local Ray: GCS, raylet, workers, the model actor), in MiB."""
    cmd = [sys.executable, "-m", "mmsent.cli", "score", path, out, "--overwrite"]
    proc = subprocess.Popen(
        cmd + ["--set", *overrides], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        total = 0
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # gone meanwhile
                total += p.memory_full_info().pss
        peak = max(peak, total)
        time.sleep(0.25)
    assert proc.returncode == 0, f"{cmd} failed"
    return peak / 2**20


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=70.0, help="plain-loop time per case")
    ap.add_argument("--mem-posts", type=int, default=500, help="N of the memory figure")
    ap.add_argument("--model", default=None, help="checkpoint directory (default: shipped model)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--kinds", default="text-only,text+image,four", help="which posts to time")
    ap.add_argument(
        "--runtimes",
        default=None,
        help="e.g. torch,onnx: the Ray pipeline under each runtime on the same posts, in this run "
        "(medians of --repeats runs), and the ratio of the last to the first",
    )
    ap.add_argument("--repeats", type=int, default=1, help="runs per runtime (--runtimes)")
    args = ap.parse_args(argv)
    overrides = [f"model_dir={args.model}"] * bool(args.model) + args.set
    cfg = load_config(ScoreCfg, "local", overrides, "score")
    tmp = Path(tempfile.mkdtemp(prefix="mmsent-bench-"))
    print(
        f"cores: {os.cpu_count()}; config: mmsent/presets/score/local.yaml {' '.join(args.set)}; "
        f"model: {args.model or 'default'}"
    )
    print(
        f"{'posts':12s} {'N':>6s} {'plain loop':>11s} {'Ray pipeline':>13s} {'ratio':>6s}  (posts/s)"
    )
    cases = (("text-only", False, 40_000), ("text+image", True, 10_000), ("four", True, 10_000))
    for kind, images, pool in cases:
        if kind not in args.kinds.split(","):
            continue
        four = kind == "four"
        base = cfg
        if four and not args.model:
            cfg = dataclasses.replace(cfg, model_dir=four_modality_model(tmp / "four-model"))
        path = write_dump(tmp / kind, pool, images, four)
        plain, n = plain_loop(path, cfg, args.seconds)
        path = write_dump(tmp / f"{kind}-{n}", n, images, four)  # exactly the posts the loop scored
        piped = ray_pipeline(path, cfg)
        print(f"{kind:12s} {n:6d} {plain:11.1f} {piped:13.1f} {piped / plain:6.2f}", flush=True)
        if args.runtimes:
            rates = {}
            for _ in range(args.repeats):  # interleaved: a drifting machine moves both alike
                for rt in args.runtimes.split(","):
                    rates.setdefault(rt, []).append(
                        ray_pipeline(path, dataclasses.replace(cfg, runtime=rt))
                    )
            med = {rt: statistics.median(r) for rt, r in rates.items()}
            first, last = list(med)[0], list(med)[-1]
            runs = "; ".join(f"{rt} {m:.1f} ({', '.join(f'{x:.1f}' for x in rates[rt])})" for rt, m in med.items())  # fmt: skip
            print(f"{kind:12s} {n:6d} Ray pipeline by runtime, posts/s: {runs}; {last}/{first} {med[last] / med[first]:.2f}", flush=True)  # fmt: skip
        cfg = base
    n = args.mem_posts
    if not n:
        return
    small = peak_memory(write_dump(tmp / "mem-1", n, True), str(tmp / "out-1"), overrides)
    large = peak_memory(write_dump(tmp / "mem-10", 10 * n, True), str(tmp / "out-10"), overrides)
    print(
        f"peak memory (PSS, all processes): {n} posts {small:.0f} MiB, {10 * n} posts "
        f"{large:.0f} MiB, ratio {large / small:.2f}"
    )


if __name__ == "__main__":
    main()
