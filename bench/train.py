"""The training demo end to end, measured in one run: `mmsent make-demo-data` then
`mmsent train --config demo`, and the figures of its test split.

    .venv/bin/python bench/train.py                         # ~15 min on 2 CPU cores
    .venv/bin/python bench/train.py --config demo-cross-attention train.epochs=3
    .venv/bin/python bench/train.py --run runs/demo-x       # the figures of a finished run only

Prints per slice of the dump (real_text: real human-rated texts; image_carries: the photo decides)
the macro-F1 of the fused model and of the same model scored text-only and image-only, the gap
fused - text-only, and the training speed (train posts/s per epoch) and wall time of each stage.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def figures(run: Path) -> None:
    m = json.loads((run / "metrics.json").read_text())
    print(
        f"run {run}  model {m['model']['name']} ({m['model']['head']} head)  best epoch {m['best_epoch']}"
    )
    print(
        f"{'slice':15s} {'posts':>6s} {'w/ image':>8s} {'fused':>7s} {'text':>7s} {'image':>7s} {'fused-text':>10s}"
    )
    for group, row in m["ablation"].items():
        f, t, i = (row[k]["macro_f1"] for k in ("fused", "text_only", "image_only"))
        print(
            f"{group:15s} {row['posts']:6d} {row['with_image']:8d} {f:7.3f} {t:7.3f} {i:7.3f} {f - t:+10.3f}"
        )
    print("(macro-F1 on the test split; image-only over the posts with a usable image)")
    n_train = m["data"]["sizes"]["train"]
    for h in m["history"]:
        print(f"epoch {h['epoch']} ({h['phase']}): {h['seconds']:.0f} s, {n_train / h['seconds']:.1f} train posts/s (with validation), "
              f"val macro-F1 {h['val_macro_f1']:.3f}, val loss {h['val_loss']:.3f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="/tmp/mmsent-bench-train")
    ap.add_argument("--config", default="demo")
    ap.add_argument("--run", help="only print the figures of this finished run")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    if args.run:
        figures(Path(args.run))
        return 0
    from mmsent import demo_data
    from mmsent.train import trainer

    out, t0 = Path(args.out), time.perf_counter()
    dump = out / "dump"
    if not (dump / "posts.jsonl").exists():
        demo_data.main([str(dump)])
    t1 = time.perf_counter()
    name = f"{Path(args.config).stem}-{time.strftime('%H%M%S')}"
    overrides = [
        f"data.train={dump / 'posts.jsonl'}",
        f"out_dir={out / 'runs'}",
        f"name={name}",
        *args.overrides,
    ]
    trainer.main(["--config", args.config, *overrides])
    t2 = time.perf_counter()
    print(f"\nmake-demo-data {t1 - t0:.0f} s, train + report {t2 - t1:.0f} s")
    figures(out / "runs" / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
