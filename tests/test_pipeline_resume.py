"""A scoring job killed mid-way (driver, local Ray and all, SIGKILL) and re-run on the same output
finishes the rest: every row once, the first run's files kept, a cut-short file redone. The
re-run takes over the killed job's lease at once (its pid is gone) and releases it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pyarrow.parquet as pq
import yaml
from pipeline_support import ImageServer, kill, write_held_dump

from mmsent.config import ScoreCfg, load_config
from mmsent.pipeline.job import run

MODEL = None  # the shipped default model: the real one


def complete_files(out) -> list:
    done = []
    for f in sorted(out.glob("*.parquet")):
        try:
            pq.read_metadata(f)
            done.append(f)
        except Exception:  # being written
            pass
    return done


def test_killed_job_rerun_finishes_the_rest_without_duplicates(ray_local, tmp_path):
    from mmsent.sample_data import real_photos

    photo = dict(real_photos(max_side=128))["coffee"]
    config = tmp_path / "score.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_dir": MODEL,
                "preprocess_batch_size": 4,
                "preprocess_num_cpus": 0.5,
                "model_batch_size": 4,
                "model_num_cpus": 0.5,
                "max_rows_per_file": 4,
                "fetch": {
                    "timeout_s": 150,
                    "retries": 0,
                },  # the gated rows wait: the job cannot end
            }
        )
    )
    out = tmp_path / "out"
    with ImageServer({"coffee": photo}, hold_s=170) as srv:
        write_held_dump(tmp_path / "in", srv)
        ray_tmp = tempfile.mkdtemp(prefix="mmr", dir="/tmp")  # short: Ray's socket paths
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_tmp}
        cmd = [
            sys.executable,
            "-m",
            "mmsent.cli",
            "score",
            str(tmp_path / "in"),
            str(out),
            "--config",
            str(config),
        ]
        with open(tmp_path / "first.log", "wb") as log:
            first = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.time() + 240
            while len(complete_files(out)) < 2:
                assert first.poll() is None and time.time() < deadline, (
                    tmp_path / "first.log"
                ).read_text()[-3000:]
                time.sleep(0.2)
        finally:
            ours = psutil.Process(first.pid).children(recursive=True)  # its local Ray, workers
            os.killpg(first.pid, signal.SIGKILL)
            kill(ours)
            first.wait()
        assert (out / "_lease.json").exists()  # the killed job's: its pid is gone, taken over
        kept = {f.name: pq.read_metadata(f).num_rows for f in complete_files(out)}
        # a write the kill cut short: no footer
        data = (out / next(iter(kept))).read_bytes()
        (out / "zz-cut-short.parquet").write_bytes(data[: len(data) // 2])
        srv.gate.set()
        summary = run(str(tmp_path / "in"), str(out), load_config(ScoreCfg, str(config)))

    rows = pq.ParquetDataset(sorted(map(str, out.glob("*.parquet")))).read().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(
        [f"a{i}" for i in range(16)] + [f"b{i}" for i in range(4)]
    )
    assert set(kept) <= {f.name for f in out.glob("*.parquet")}  # nothing written was redone
    assert summary["rows_before"] == sum(kept.values()) > 0
    assert summary["rows_this_run"] == 20 - summary["rows_before"]
    assert summary["cut_short_files_removed"] >= 1  # ours, and any the kill cut short
    assert summary["missing"] == summary["duplicates"] == 0
    assert not (out / "_lease.json").exists()  # released
    job = json.loads((out / "_job.json").read_text())
    assert sorted(job["inputs"]) == [str(tmp_path / "in/a.jsonl"), str(tmp_path / "in/b.jsonl")]
