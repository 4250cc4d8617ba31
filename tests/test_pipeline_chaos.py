"""Chaos: during one scoring job on a real local Ray, SIGKILL preprocessing workers and model
actors again and again. Ray retries the lost tasks and restarts the actors; the output must still
hold every input row exactly once, each with the result it would have had."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pyarrow.parquet as pq
from pipeline_support import ImageServer, texts, write_jsonl

from mmsent.config import FetchCfg, ScoreCfg
from mmsent.pipeline.job import run

KILLS = 3  # of each kind


def workers(title: str) -> list[psutil.Process]:
    """This test process's own Ray workers whose process title contains `title`."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if title in p.cmdline()[0]:
                found.append(p)
        except (psutil.Error, IndexError):  # gone meanwhile
            pass
    return found


class Chaos(threading.Thread):
    """Kills a running preprocessing task's worker, then a model actor, KILLS times each."""

    def __init__(self):
        super().__init__(daemon=True)
        self.killed: list[str] = []
        self.done = threading.Event()

    def run(self):
        for kind in ["ray::MapBatches(preprocess)", "ModelStage"] * KILLS:
            deadline = time.monotonic() + 60
            while not self.done.is_set() and time.monotonic() < deadline:
                if victims := workers(kind):
                    os.kill(victims[0].pid, signal.SIGKILL)
                    self.killed.append(kind)
                    break
                time.sleep(0.05)
            self.done.wait(1.5)  # let Ray notice, retry and restart before the next kill


def test_workers_and_actors_killed_again_and_again_every_row_once(ray_local, tmp_path):
    from mmsent.sample_data import real_photos

    photo = dict(real_photos(max_side=128))["coffee"]
    with ImageServer({"coffee": photo}) as srv:  # "pause": 0.3 s per image, tasks last a while
        rows = [{"id": f"t{i}", "text": s} for i, s in enumerate(texts(120))]
        rows += [
            {"id": f"i{i}", "text": "a photo", "image_url": srv.url(f"pause/coffee?{i}")}
            for i in range(120)  # a job long enough for 4 kills on a warm cluster (~20 s was not)
        ]
        write_jsonl(tmp_path / "in/posts.jsonl", rows[::2] + rows[1::2])  # images spread out
        cfg = ScoreCfg(
            fetch=FetchCfg(timeout_s=10, concurrency=2),
            preprocess_batch_size=6,
            model_batch_size=6,
            model_num_cpus=0.5,
            max_rows_per_file=20,
        )
        chaos = Chaos()
        chaos.start()
        summary = run(str(tmp_path / "in"), str(tmp_path / "out"), cfg)
        chaos.done.set()
        chaos.join()
    assert chaos.killed.count("ModelStage") >= 2 and len(chaos.killed) >= 4, chaos.killed
    out = pq.ParquetDataset(sorted(map(str, (tmp_path / "out").glob("*.parquet")))).read()
    ids = out.column("id").to_pylist()
    assert sorted(ids) == sorted(r["id"] for r in rows) and len(set(ids)) == len(ids)
    assert out.column("error").null_count == len(rows)  # every row scored, none lost to a kill
    assert summary["missing"] == summary["duplicates"] == 0
