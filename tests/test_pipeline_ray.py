"""Bulk scoring on a real local Ray: S3 (moto) in and out, images over HTTP from a real server
with failures, exact row accounting, fractional GPUs on a pretend GPU, an actor killed mid-job."""

from __future__ import annotations

import gzip
import json
import os
import signal
import threading
import time

import boto3
import psutil
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from pipeline_support import ImageServer, texts, write_held_dump, write_jsonl

from mmsent import codes
from mmsent.config import FetchCfg, ScoreCfg
from mmsent.pipeline.job import run

MODEL = None  # the shipped default model: the real one


@pytest.fixture(scope="module")
def photos():
    from mmsent.sample_data import real_photos

    return dict(real_photos(max_side=256))


def small_cfg(**kw) -> ScoreCfg:
    base = dict(
        model_dir=MODEL,
        fetch=FetchCfg(timeout_s=0.5, retries=1, backoff_s=0.01),
        preprocess_batch_size=4,
        model_batch_size=8,
        model_num_cpus=0.5,
    )
    return ScoreCfg(**{**base, **kw})


def test_s3_to_s3_every_row_once_with_its_error_code_on_shared_gpu(
    ray_local, s3_server, photos, tmp_path
):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="mm-score")
    s3.put_object(Bucket="mm-score", Key="dump/img/cat.jpg", Body=photos["chelsea"])
    s3.put_object(Bucket="mm-score", Key="dump/_SUCCESS", Body=b"")
    t = texts(30)
    with ImageServer({"coffee": photos["coffee"]}, slow_s=3.0) as srv:
        special = {
            "s3-rel": ("img/cat.jpg", None),  # relative to the input file's folder
            "s3-abs": ("s3://mm-score/dump/img/cat.jpg", None),
            "s3-404": ("s3://mm-score/dump/img/dog.jpg", codes.IMAGE_NOT_FOUND),
            "http-ok": (srv.url("img/coffee"), None),
            "http-flaky": (srv.url("flaky/coffee"), None),  # 503, retried
            "http-404": (srv.url("404/coffee"), codes.IMAGE_NOT_FOUND),
            "http-slow": (srv.url("slow/coffee"), codes.IMAGE_FETCH_TIMEOUT),
            "http-corrupt": (srv.url("corrupt"), codes.IMAGE_DECODE_ERROR),
            "http-html": (srv.url("html"), codes.NOT_AN_IMAGE),
            "http-zero": (srv.url("zero"), codes.IMAGE_EMPTY),
        }
        rows = [
            {"id": k, "text": t[i], "image_url": u, "n": i}
            for i, (k, (u, _)) in enumerate(special.items())
        ]
        rows += [{"id": f"t{i}", "text": t[i], "n": i} for i in range(10, 30)]
        rows += [
            {"id": "no-text", "text": ""},
            b'{"id": "bad-utf8", "text": "\xff\xfe"}',
            {"text": "no id"},
            b"not json",
        ]
        body = b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows)
        half = len(rows) // 2
        lines = body.split(b"\n")
        s3.put_object(Bucket="mm-score", Key="dump/a.jsonl", Body=b"\n".join(lines[:half]))
        s3.put_object(
            Bucket="mm-score", Key="dump/b.jsonl.gz", Body=gzip.compress(b"\n".join(lines[half:]))
        )

        # the CPU preset's runtime (ONNX Runtime int8; on a GPU actor without onnxruntime-gpu it
        # stays on the CPU): every code and every row as with torch
        cfg = small_cfg(
            max_rows_per_file=7,
            model_min_actors=2,
            model_max_actors=2,
            model_num_gpus=0.5,
            runtime="onnx",
        )
        watch = Watch(ray_local)
        watch.start()
        summary = run("s3://mm-score/dump/", "s3://mm-score/out/", cfg)
        watch.done.set()
    # two actors at 0.5 GPU each ran at once on the one (pretend) GPU, and took all of it
    assert (2, 0) in watch.samples and gpus_free(ray_local, 1)

    fs = pafs.S3FileSystem(
        endpoint_override=s3_server, access_key="testing", secret_key="testing", region="us-east-1"
    )
    files = [
        f for f in fs.get_file_info(pafs.FileSelector("mm-score/out")) if f.extension == "parquet"
    ]
    tables = [pq.read_table(f.path, filesystem=fs) for f in files]
    assert all(t.num_rows <= 7 for t in tables) and len(tables) >= -(-len(rows) // 7)
    out = [r for t in tables for r in t.to_pylist()]
    keys = sorted((r["input_file"].rsplit("/", 1)[1], r["input_row"]) for r in out)
    assert keys == sorted(
        [("a.jsonl", i) for i in range(half)] + [("b.jsonl.gz", i) for i in range(len(rows) - half)]
    )
    errors = {r["id"]: r["error"] for r in out}
    assert {k: errors[k] for k in special} == {k: e for k, (_, e) in special.items()}
    assert [errors[f"t{i}"] for i in range(10, 30)] == [None] * 20
    assert errors["no-text"] == codes.EMPTY_TEXT and errors["bad-utf8"] == codes.TEXT_NOT_UTF8
    assert sorted(r["error"] for r in out if r["id"] is None) == [
        codes.INVALID_RECORD,
        codes.MISSING_COLUMN,
    ]
    assert summary["rows"] == summary["input_rows"] == len(rows)
    assert summary["missing"] == summary["duplicates"] == 0
    assert json.loads(fs.open_input_stream("mm-score/out/_summary.json").read())["rows"] == len(
        rows
    )
    assert {r["modalities"] for r in out if r["id"] in ("s3-rel", "http-ok", "http-flaky")} == {
        "text+image"
    }
    job = json.loads(fs.open_input_stream("mm-score/out/_job.json").read())
    assert job["model"]["runtime"] == "onnx/auto"


def model_actors() -> list[psutil.Process]:
    """This test process's own Ray workers that run the model stage (never anyone else's)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "ModelStage" in p.cmdline()[0]:  # process title: ray::MapWorker(...ModelStage)
                found.append(p)
        except (psutil.Error, IndexError):  # gone meanwhile
            pass
    return found


def gpus_free(ray, want: float, wait_s: float = 30.0) -> bool:
    deadline = time.time() + wait_s  # actors are torn down asynchronously after a job
    while ray.available_resources().get("GPU", 0) != want and time.time() < deadline:
        time.sleep(0.2)
    return ray.available_resources().get("GPU", 0) == want


class Watch(threading.Thread):
    """Samples (model actors alive, GPUs free) while a job runs."""

    def __init__(self, ray):
        super().__init__(daemon=True)
        self.ray, self.samples, self.done = ray, [], threading.Event()

    def run(self):
        while not self.done.wait(0.2):
            self.samples.append((len(model_actors()), self.ray.available_resources().get("GPU", 0)))


def test_actor_killed_mid_job_every_row_once(ray_local, photos, tmp_path):
    with ImageServer({"coffee": photos["coffee"]}, hold_s=120) as srv:
        write_held_dump(tmp_path / "in", srv)
        out = tmp_path / "out"
        result = {}
        # a fetch deadline longer than the gate: the gated rows wait for it, the job cannot end
        cfg = small_cfg(
            max_rows_per_file=4, model_batch_size=4, fetch=FetchCfg(timeout_s=150, deadline_s=150)
        )
        job = threading.Thread(
            target=lambda: result.update(run(str(tmp_path / "in"), str(out), cfg))
        )
        job.start()
        deadline = time.time() + 180
        while not list(out.glob("*.parquet")) or not model_actors():
            assert time.time() < deadline and job.is_alive(), "no output before the deadline"
            time.sleep(0.2)
        [victim] = model_actors()
        os.kill(victim.pid, signal.SIGKILL)  # the gated rows are not scored yet: mid-job
        srv.gate.set()
        job.join(300)
    assert not job.is_alive()
    rows = pq.ParquetDataset(sorted(map(str, out.glob("*.parquet")))).read().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(
        [f"a{i}" for i in range(16)] + [f"b{i}" for i in range(4)]
    )
    assert result["missing"] == result["duplicates"] == 0
    assert all(r["image_status"] == codes.OK for r in rows if r["id"].startswith("b"))


def test_stages_that_hold_every_cpu_still_finish(ray_local, tmp_path):
    """Model actors and CPU tasks together reserve all 4 CPUs of the session's Ray: the graph's
    own re-cutting of blocks must not wait for a CPU (it used to, forever)."""
    write_jsonl(
        tmp_path / "in/a.jsonl", [{"id": f"a{i}", "text": s} for i, s in enumerate(texts(8))]
    )
    cfg = small_cfg(
        model_min_actors=2,
        model_max_actors=2,
        model_num_cpus=1.5,
        preprocess_num_cpus=1,
        read_num_cpus=0,
        write_num_cpus=0,
    )
    result = {}
    job = threading.Thread(
        target=lambda: result.update(run(str(tmp_path / "in"), str(tmp_path / "out"), cfg)),
        daemon=True,
    )
    job.start()
    job.join(240)
    assert not job.is_alive(), "the job waits for a CPU that never frees"
    assert result["rows"] == 8 and result["missing"] == result["duplicates"] == 0


def test_a_cap_smaller_than_one_block_still_streams_every_row(
    ray_local, photos, tmp_path, monkeypatch
):
    """object_store_mb bounds the blocks in flight between stages (decoding may not run ahead of
    the model); a cap below one block's size must slow the job down, never stall it."""
    import ray.data
    from ray.data._internal.execution.streaming_executor_state import IdleDetector

    # Under such a cap Ray lets one block through each stage per idle-detection interval (10 s):
    # a shorter interval tests the same path in a tenth of the time.
    monkeypatch.setattr(IdleDetector, "DETECTION_INTERVAL_S", 1.0)

    (tmp_path / "in").mkdir()
    (tmp_path / "in/cat.jpg").write_bytes(photos["chelsea"])
    write_jsonl(
        tmp_path / "in/a.jsonl",
        [{"id": f"a{i}", "text": s, "image_url": "cat.jpg"} for i, s in enumerate(texts(24))],
    )
    cfg = small_cfg(object_store_mb=0.001)  # 1 KiB: less than one 4-post block of pixels
    summary = run(str(tmp_path / "in"), str(tmp_path / "out"), cfg)
    limits = ray.data.DataContext.get_current().execution_options.resource_limits
    assert limits.object_store_memory == 1049  # MiB * 0.001, as Ray rounds it
    assert summary["rows"] == 24 and summary["missing"] == summary["duplicates"] == 0
    assert summary["errors"] == {}
    run(str(tmp_path / "in"), str(tmp_path / "out2"), small_cfg())  # None: Ray's default again
    assert (
        ray.data.DataContext.get_current().execution_options.resource_limits.object_store_memory
        == float("inf")
    )
