"""`ray job submit` of ray_jobs/score.py to a head started with `ray start --head` (127.0.0.1,
free ports, its own temp dir, token auth with a token of its own), stopped alone afterwards."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from pipeline_support import kill, texts, write_jsonl

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
MODEL = None  # the shipped default model: the real one


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture()
def head(tmp_path):
    """A one-node cluster; `ray start --block` ties its processes to this one child, so ending
    it ends them (kernel fate sharing) without touching anyone else's Ray. On a slow machine the
    raylet can give up waiting for the dashboard agent and abort the start after the dashboard
    already answered (seen once in CI): a start that dies before the node is up is retried once."""
    for attempt in (1, 2):
        proc, url, env, log = _start_head(tmp_path / f"head-{attempt}.log")
        try:
            if _node_up(proc, url, env):
                yield url, env
                return
            assert attempt == 1, (tmp_path / f"head-{attempt}.log").read_text()[-5000:]
        finally:
            _stop(proc, log)


def _start_head(log_path: Path):
    gcs, dash, client, agent, agent_grpc, env_agent, metrics, node, obj = free_ports(9)
    temp = tempfile.mkdtemp(prefix="mmh", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),  # this cluster's own, not ~/.ray/auth_token
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={env_agent}",
        f"--metrics-export-port={metrics}",
        f"--node-manager-port={node}",
        f"--object-manager-port={obj}",
        f"--temp-dir={temp}",
        "--num-cpus=2",
        "--num-gpus=0",
        "--disable-usage-stats",
    ]
    log = open(log_path, "wb")  # noqa: SIM115 - closed by _stop
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    return proc, f"http://127.0.0.1:{dash}", env, log


def _node_up(proc, url: str, env: dict) -> bool:
    """True once the dashboard answers and the GCS lists a live node; False if the start died."""
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if _answers(url + "/api/version"):
            status = subprocess.run(
                [RAY, "list", "nodes", "--address", url, "--filter", "state=ALIVE"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if status.returncode == 0 and "ALIVE" in status.stdout and proc.poll() is None:
                return True
        time.sleep(1)
    assert proc.poll() is not None, "the head did not come up within 180 s"
    return False


def _stop(proc, log) -> None:
    ours = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()  # its processes die with it (fate sharing), the list below catches any
    kill(ours)  # anything that outlived it is still ours
    log.close()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except urllib.error.HTTPError:  # 401 without a token: up all the same
        return True
    except OSError:
        return False


def test_ray_job_submit_runs_the_entrypoint(head, tmp_path):
    url, env = head
    write_jsonl(
        tmp_path / "in/posts.jsonl",
        [{"id": f"p{i}", "text": t} for i, t in enumerate(texts(6))] + [b"{oops"],
    )
    (tmp_path / "score.yaml").write_text(
        yaml.safe_dump({"model_dir": MODEL, "preprocess_batch_size": 4, "model_batch_size": 4})
    )
    out = tmp_path / "out"
    # a fixed submission id: a retry can never start the job twice
    submit = [
        RAY,
        "job",
        "submit",
        "--address",
        url,
        "--submission-id",
        "mmsent-score-test",
        "--",
        sys.executable,
        str(REPO / "ray_jobs/score.py"),
        str(tmp_path / "in"),
        str(out),
        "--config",
        str(tmp_path / "score.yaml"),
    ]
    for _ in range(30):  # the dashboard answers before the head's job agent has registered
        res = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
        if "No available agent" not in res.stdout + res.stderr:
            break
        time.sleep(2)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in res.stdout + res.stderr
    assert "output rows 7 | input rows 7 | missing 0" in res.stdout
    rows = pq.ParquetDataset(sorted(map(str, out.glob("*.parquet")))).read().to_pylist()
    assert sorted(r["id"] or "-" for r in rows) == ["-"] + [f"p{i}" for i in range(6)]
    # the cluster checks the token: another one is refused by the dashboard (403)
    wrong = env | {"RAY_AUTH_TOKEN": secrets.token_hex(16)}
    res = subprocess.run(
        [RAY, "job", "list", "--address", url],
        env=wrong,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0 and "Authentication failed" in res.stdout + res.stderr
