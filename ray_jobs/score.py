"""Bulk scoring as a Ray job: `ray job submit` runs this file as the job's driver on the cluster.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python ray_jobs/score.py s3://bucket/dump/ s3://bucket/scores/ --config gpu

Inside a job, RAY_ADDRESS (set by the job supervisor) points at the cluster. Run by hand, it
starts a local Ray on 127.0.0.1 unless --address or RAY_ADDRESS names one. The flags are those of
`mmsent score` (see mmsent/pipeline/cli.py); exit status 0 when every row is in OUTPUT once.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from mmsent.pipeline.cli import main as score

    return score(argv, prog="ray_jobs/score.py")


if __name__ == "__main__":
    sys.exit(main())
