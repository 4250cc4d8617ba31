"""`mmsent score`: bulk-score a dump on a local Ray (127.0.0.1) or on a cluster.

    mmsent score INPUT OUTPUT [--config local|gpu|PATH.yaml] [--set model_batch_size=128 ...]
                 [--address ray://... | RAY_ADDRESS] [--overwrite] [--show 8]

INPUT: a JSONL / CSV / Parquet file, a folder, a glob or an s3:// prefix. OUTPUT: a folder or
s3:// prefix that receives Parquet files, _job.json and _summary.json. Re-running a killed job
on the same OUTPUT scores only the rest. Exit status: 0 when every input row is in OUTPUT
exactly once, 1 when not, 2 on a usage or input error (a resume refused: input files or
checkpoint changed since, --overwrite of a folder that is not an mmsent output), 3 when OUTPUT is
busy or did not answer (another job holds its lease, a read kept failing; nothing was deleted):
the same command may work later.
"""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, ScoreCfg, load_config


def parser(prog: str = "mmsent score") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Bulk-score a dump with Ray Data.")
    ap.add_argument("input", help="file, folder, glob or s3:// prefix (JSONL, CSV, Parquet)")
    ap.add_argument("output", help="folder or s3:// prefix for the Parquet output")
    ap.add_argument(
        "--config", default="local", help="preset in mmsent/presets/score/ or a YAML file"
    )
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--address", default=None, help="Ray cluster (default: RAY_ADDRESS, or local)")
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="empty OUTPUT first (only an mmsent output, or empty)",
    )
    ap.add_argument("--show", type=int, default=0, metavar="N", help="print N output rows")
    return ap


def main(argv: list[str] | None = None, prog: str = "mmsent score") -> int:
    args = parser(prog).parse_args(argv)
    from ..models.checkpoint import CheckpointError
    from .job import run
    from .lease import LeaseError
    from .resume import ReadError, ResumeError
    from .summary import format_summary, ok, sample_rows

    try:
        cfg = load_config(ScoreCfg, args.config, args.set, kind="score")
        summary = run(args.input, args.output, cfg, overwrite=args.overwrite, address=args.address)
    except (LeaseError, ReadError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 3
    except (ConfigError, CheckpointError, ResumeError, FileNotFoundError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    if args.show:
        print(sample_rows(summary["output"], args.show))
    return 0 if ok(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
