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
    it ends them (kernel fate sharing) without touching anyone else's Ray."""
    gcs, dash, client, agent, agent_grpc, env_agent, metrics, node, obj = free_ports(9)
    temp = tempfile.mkdtemp(prefix="mmh", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),  # this cluster's own, not ~/.ray/auth_token
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
           f"--metrics-export-port={metrics}", f"--node-manager-port={node}",
           f"--object-manager-port={obj}", f"--temp-dir={temp}", "--num-cpus=2", "--num-gpus=0",
           "--disable-usage-stats"]  # fmt: skip
    log = open(tmp_path / "head.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while not _answers(url + "/api/version"):
            assert proc.poll() is None and time.time() < deadline, (
                tmp_path / "head.log"
            ).read_text()
            time.sleep(0.5)
        yield url, env
    finally:
        ours = psutil.Process(proc.pid).children(recursive=True)
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
    write_jsonl(tmp_path / "in/posts.jsonl",
                [{"id": f"p{i}", "text": t} for i, t in enumerate(texts(6))] + [b"{oops"])  # fmt: skip
    (tmp_path / "score.yaml").write_text(yaml.safe_dump(
        {"model_dir": MODEL, "preprocess_batch_size": 4, "model_batch_size": 4}))  # fmt: skip
    out = tmp_path / "out"
    # a fixed submission id: a retry can never start the job twice
    submit = [RAY, "job", "submit", "--address", url, "--submission-id", "mmsent-score-test", "--",
              sys.executable, str(REPO / "ray_jobs/score.py"), str(tmp_path / "in"), str(out),
              "--config", str(tmp_path / "score.yaml")]  # fmt: skip
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
    res = subprocess.run([RAY, "job", "list", "--address", url], env=wrong, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode != 0 and "Authentication failed" in res.stdout + res.stderr
