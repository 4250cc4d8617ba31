"""Hostile input costs no more than its share: throughput of bulk scoring on a dump where 10% of
the rows are hostile, against the same dump clean, in one run.

    .venv/bin/python bench/hostile.py [--posts 3000] [--repeats 3] [--set KEY=VALUE ...]

The clean dump: N posts of real human-rated texts, half with a real photo (<= 512 px, local
files). The hostile dump: the same posts, with every 10th replaced by a case of the hostile corpus
(tests/hostile_corpus.py, cycled: poison JSON lines, malformed and hostile URLs on a local server
that trickles and hangs, device files, FIFOs, paths out of the dump, bombs, invisible texts).
Both go through the graph `mmsent score` runs (mmsent/presets/score/local.yaml, its fetch deadline
included), drained by the driver, on a fresh local Ray each time, clean and hostile alternating.

Figures: steady-state posts/s (from the first output batch until 95% of the rows are out: the
rate a long job runs at) and whole-job posts/s (first batch to last: includes the tail, where the
last slow hosts run out their deadline). The ratio hostile / clean is the median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the hostile corpus

from hostile_corpus import jsonl_cases  # noqa: E402
from hostile_http import HostileServer  # noqa: E402

from mmsent.config import ScoreCfg, load_config  # noqa: E402
from mmsent.pipeline import ray_compat  # noqa: E402
from mmsent.pipeline.job import build_dataset, model_config  # noqa: E402
from mmsent.pipeline.output import output_fields  # noqa: E402
from mmsent.pipeline.plan import make_plan  # noqa: E402


def clean_lines(folder: Path, n: int) -> list[bytes]:
    from mmsent.sample_data import real_photos
    from mmsent.train.data import read_vader

    texts = read_vader().texts
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for name, data in real_photos(max_side=512):
        (folder / "img" / f"{name}.jpg").write_bytes(data)
        names.append(name)
    lines = []
    for i in range(n):
        row = {"id": f"p{i}", "text": texts[(i * 7919) % len(texts)]}
        if i % 2 == 0:
            row["image_url"] = f"img/{names[i // 2 % len(names)]}.jpg"
        lines.append(json.dumps(row).encode())
    return lines


def write(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def rates(path: str, cfg: ScoreCfg) -> tuple[float, float, int]:
    """(steady-state posts/s, whole-job posts/s, rows) of one pipeline run on a fresh Ray."""
    import ray

    ray_compat.connect()
    model_cfg = model_config(cfg.model_dir)
    plan = make_plan(path, cfg, {name for name, _ in output_fields(model_cfg)})
    ds = build_dataset(plan, [{"file": plan.files[0], "skip": []}], cfg, model_cfg)
    times, counts = [], []
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        times.append(time.perf_counter())
        counts.append(batch.num_rows)
    ray.shutdown()
    total = sum(counts)
    done = [sum(counts[: i + 1]) for i in range(len(counts))]
    k = next(i for i, d in enumerate(done) if d >= 0.95 * total)
    steady = (done[k] - counts[0]) / (times[k] - times[0])
    whole = (total - counts[0]) / (times[-1] - times[0])
    return steady, whole, total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--posts", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--share", type=float, default=0.1, help="hostile share of the rows")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)
    cfg = load_config(ScoreCfg, "local", args.set, "score")
    tmp = Path(tempfile.mkdtemp(prefix="mmsent-bench-hostile-"))
    every = round(1 / args.share)
    print(
        f"cores: {os.cpu_count()}; config: mmsent/presets/score/local.yaml {' '.join(args.set)}; "
        f"fetch deadline {cfg.fetch.deadline_s} s; {args.posts} posts, 1 in {every} hostile"
    )
    with HostileServer() as server:
        clean = clean_lines(tmp, args.posts)
        cases = [line for line, _ in jsonl_cases(tmp, server)]
        hostile = [
            cases[i // every % len(cases)] if i % every == every - 1 else line
            for i, line in enumerate(clean)
        ]
        # side by side: relative image paths resolve in the same folder
        paths = {
            "clean": write(tmp / "clean.jsonl", clean),
            "hostile": write(tmp / "hostile.jsonl", hostile),
        }
        got: dict[str, list[tuple[float, float]]] = {"clean": [], "hostile": []}
        print(f"{'run':>3s} {'dump':8s} {'steady posts/s':>15s} {'whole-job posts/s':>18s} rows")
        for r in range(args.repeats):
            for kind in ("clean", "hostile"):
                steady, whole, rows = rates(paths[kind], cfg)
                got[kind].append((steady, whole))
                print(f"{r:3d} {kind:8s} {steady:15.1f} {whole:18.1f} {rows}", flush=True)
    ratios = [
        [h[j] / c[j] for c, h in zip(got["clean"], got["hostile"], strict=True)] for j in (0, 1)
    ]
    print(
        f"hostile / clean, median of {args.repeats}: steady {statistics.median(ratios[0]):.2f} "
        f"(runs {', '.join(f'{x:.2f}' for x in ratios[0])}), whole job "
        f"{statistics.median(ratios[1]):.2f} (target >= 0.8)"
    )


if __name__ == "__main__":
    main()
