"""Training as a Ray job: `ray job submit` runs this file as the job's driver on the cluster, and
`mmsent train` hands the loop to Ray Train's TorchTrainer there (train.workers > 1).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python ray_jobs/train.py --config gpu data.train=s3://bucket/posts/ out_dir=/mnt/shared/runs

Inside a job, RAY_ADDRESS (set by the job supervisor) points at the cluster. The arguments are
those of `mmsent train` (see mmsent/train/trainer.py); the run folder must be on storage that
every worker sees.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from mmsent.train.trainer import main as train

    return train(argv)


if __name__ == "__main__":
    sys.exit(main())
