"""Resume cannot mix runs: every refusal of a resume, --overwrite only of an mmsent output, the
lease on OUTPUT (local and S3), and no complete file deleted on a transient read error. No Ray:
each refusal happens before Ray starts (run() and the CLI are checked to refuse without it)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_support import write_jsonl

from mmsent.config import ScoreCfg, load_config
from mmsent.io.dumps import filesystem
from mmsent.models.checkpoint import DEFAULT_MODEL_DIR
from mmsent.pipeline import lease, ray_compat, resume
from mmsent.pipeline.cli import main as score_main
from mmsent.pipeline.job import job_manifest, model_config, run
from mmsent.pipeline.lease import LEASE, LeaseError
from mmsent.pipeline.output import output_fields
from mmsent.pipeline.plan import make_plan


def manifest_of(inp, cfg: ScoreCfg) -> dict:
    """The manifest run() would write for this input and config (the same functions)."""
    model_cfg = model_config(cfg.model_dir)
    plan = make_plan(str(inp), cfg, reserved={n for n, _ in output_fields(model_cfg)})
    return job_manifest(str(inp), plan, cfg, model_cfg)


@pytest.fixture
def job(tmp_path):
    """A dump of two files and an OUTPUT that a first run prepared and wrote one file into."""
    inp, out = tmp_path / "in", tmp_path / "out"
    write_jsonl(inp / "a.jsonl", [{"id": f"a{i}", "text": "good"} for i in range(3)])
    write_jsonl(inp / "b.jsonl", [{"id": "b0", "text": "bad"}])
    cfg = load_config(ScoreCfg, "local", kind="score")
    assert resume.prepare(str(out), manifest_of(inp, cfg)) == []
    pq.write_table(
        pa.table({"input_file": [str(inp / "a.jsonl")], "input_row": [0]}), out / "part-0.parquet"
    )
    return inp, out, cfg


def test_an_unchanged_resume_goes_on(job):
    inp, out, cfg = job
    assert resume.prepare(str(out), manifest_of(inp, cfg)) == []
    saved = json.loads((out / resume.MANIFEST).read_text())
    assert set(saved["inputs"]) == {str(inp / "a.jsonl"), str(inp / "b.jsonl")}
    assert saved["inputs"][str(inp / "b.jsonl")]["size"] == len((inp / "b.jsonl").read_bytes())
    assert saved["checkpoint"]["path"] == "default"
    assert set(saved["checkpoint"]["files"]) == {"config.json", "model.safetensors"}


def rewrite(inp):
    write_jsonl(inp / "b.jsonl", [{"id": "b0", "text": "bad"}, {"id": "b1", "text": "worse"}])


def touch(inp):
    st = (inp / "b.jsonl").stat()
    os.utime(inp / "b.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # same bytes


def add(inp):
    write_jsonl(inp / "c.jsonl", [{"id": "c0", "text": "new"}])


def remove(inp):
    (inp / "b.jsonl").unlink()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (rewrite, r"input file changed: \S+b\.jsonl \(size (\d+) -> (?!\1 )\d+ bytes, mtime "),
        (touch, r"input file changed: \S+b\.jsonl \(size (\d+) -> \1 bytes, mtime \S+Z -> \S+Z\)"),
        (add, r"input file added: \S+c\.jsonl"),
        (remove, r"input file removed: \S+b\.jsonl"),
    ],
    ids=["rewritten", "touched", "added", "removed"],
)
def test_resume_refused_when_the_input_files_changed(job, change, says):
    inp, out, cfg = job
    change(inp)
    with pytest.raises(resume.ResumeError, match=says) as e:
        resume.prepare(str(out), manifest_of(inp, cfg))
    assert "new OUTPUT, or --overwrite" in str(e.value)
    assert (out / "part-0.parquet").exists()  # nothing deleted


def test_s3_inputs_are_fingerprinted_by_etag(s3_server, tmp_path):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="dump")
    s3.put_object(Bucket="dump", Key="in/a.jsonl", Body=b'{"id": "a0", "text": "good"}\n')
    cfg = load_config(ScoreCfg, "local", kind="score")
    out = str(tmp_path / "out")
    first = manifest_of("s3://dump/in", cfg)
    assert first["inputs"]["s3://dump/in/a.jsonl"]["etag"]
    resume.prepare(out, first)
    time.sleep(1.1)  # S3 times have seconds
    s3.put_object(Bucket="dump", Key="in/a.jsonl", Body=b'{"id": "a0", "text": "good"}\n')
    again = manifest_of("s3://dump/in", cfg)  # the same bytes uploaded again: a new mtime
    assert again["inputs"] != first["inputs"]
    assert resume.prepare(out, again) == []  # ... and the same ETag: goes on
    s3.put_object(Bucket="dump", Key="in/a.jsonl", Body=b'{"id": "a0", "text": "bad!"}\n')
    with pytest.raises(resume.ResumeError, match=r"in/a\.jsonl \(size 29 -> 29 bytes, .*ETag"):
        resume.prepare(out, manifest_of("s3://dump/in", cfg))


def test_resume_refused_when_the_checkpoint_changed(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    write_jsonl(tmp_path / "in/a.jsonl", [{"id": "a0", "text": "good"}])
    cfg = load_config(ScoreCfg, "local", [f"model_dir={model}"], kind="score")
    out = str(tmp_path / "out")
    resume.prepare(out, manifest_of(tmp_path / "in", cfg))
    meta = json.loads((model / "config.json").read_text())
    meta["model"]["description"] += "!"  # the same model name and version: only the bytes differ
    (model / "config.json").write_text(json.dumps(meta, indent=2))
    with pytest.raises(resume.ResumeError, match=r"checkpoint changed: \S+model \(.*config\.json"):
        resume.prepare(out, manifest_of(tmp_path / "in", cfg))


def test_resume_refused_on_a_job_json_without_fingerprints(job):
    inp, out, cfg = job
    old = json.loads((out / resume.MANIFEST).read_text())
    del old["inputs"], old["checkpoint"]  # what mmsent wrote before fingerprints
    (out / resume.MANIFEST).write_text(json.dumps(old))
    with pytest.raises(resume.ResumeError, match="cannot be verified"):
        resume.prepare(str(out), manifest_of(inp, cfg))


def no_ray(monkeypatch) -> None:
    """Ray (session-wide in a full run) must not even be joined: a refusal comes first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the job reached Ray")

    monkeypatch.setattr(ray_compat, "connect", refuse)


def test_the_cli_refuses_a_changed_input_before_ray_starts(job, capsys, monkeypatch):
    inp, out, cfg = job
    add(inp)
    no_ray(monkeypatch)
    assert score_main([str(inp), str(out)]) == 2
    assert "input file added" in capsys.readouterr().err
    assert not (out / LEASE).exists()  # released on the way out
    assert (out / "part-0.parquet").exists()


def test_overwrite_refuses_a_folder_that_is_not_an_mmsent_output(tmp_path, capsys):
    write_jsonl(tmp_path / "in/a.jsonl", [{"id": "a0", "text": "good"}])
    out = tmp_path / "thesis"
    (out / "chapters").mkdir(parents=True)
    (out / "chapters/1.tex").write_text("...")
    (out / "notes.txt").write_text("do not delete")
    assert score_main([str(tmp_path / "in"), str(out), "--overwrite"]) == 2
    assert "--overwrite refused" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == ["1.tex", "chapters", "notes.txt"]
    (out / resume.MANIFEST).write_text('{"name": "someone else\'s job"}')  # not mmsent's
    with pytest.raises(resume.ResumeError, match="--overwrite refused"):
        resume.prepare(str(out), {"input": "x"}, overwrite=True)
    assert (out / "notes.txt").exists()


def test_overwrite_empties_an_mmsent_output_or_an_empty_folder(job, tmp_path):
    inp, out, cfg = job
    (out / "_summary.json").write_text("{}")
    (out / "sub").mkdir()
    manifest = manifest_of(inp, cfg)
    with lease.hold(str(out)):  # as in run(): the job's own lease survives the wipe
        assert resume.prepare(str(out), manifest, overwrite=True) == []
        assert sorted(p.name for p in out.iterdir()) == [resume.MANIFEST, LEASE]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resume.prepare(str(empty), manifest, overwrite=True) == []
    assert [p.name for p in empty.iterdir()] == [resume.MANIFEST]


def test_a_second_job_on_a_held_output_is_refused_before_ray_starts(job, monkeypatch):
    inp, out, cfg = job
    held = lease.acquire(str(out))
    no_ray(monkeypatch)
    try:
        with pytest.raises(LeaseError, match=f"in use by another mmsent job .*pid {os.getpid()}"):
            run(str(inp), str(out), cfg)
        assert (out / LEASE).exists()  # still the first one's
    finally:
        held.release()
    assert not (out / LEASE).exists()


def test_a_live_holder_keeps_its_lease_and_a_killed_one_loses_it_at_once(tmp_path):
    out = str(tmp_path / "out")
    code = (
        "import sys, time; from mmsent.pipeline import lease; lease.acquire(sys.argv[1]); "
        "print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, out], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(LeaseError, match=f"pid {holder.pid}"):
            lease.acquire(out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    started = time.monotonic()
    taken = lease.acquire(out)  # its pid is gone: no wait for the TTL
    assert time.monotonic() - started < 5
    assert json.loads((tmp_path / "out" / LEASE).read_text())["pid"] == os.getpid()
    taken.release()


def test_a_lease_without_heartbeat_for_its_ttl_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    other = {**lease.holder_info("elsewhere"), "host": "another-node", "pid": 1}
    (out / LEASE).write_text(json.dumps(other))
    with pytest.raises(LeaseError, match="another-node"):  # beating recently: alive
        lease.acquire(str(out), ttl_s=60)
    old = time.time() - 61
    os.utime(out / LEASE, (old, old))
    lease.acquire(str(out), ttl_s=60).release()


def test_the_heartbeat_refreshes_the_lease_and_a_lost_lease_stops_the_job(tmp_path):
    out = tmp_path / "out"
    lost = pytest.raises(LeaseError, match="another job took it over")
    with lost, lease.hold(str(out), heartbeat_s=0.1):
        written = (out / LEASE).read_bytes()
        first = json.loads(written)
        deadline = time.time() + 10
        while (out / LEASE).read_bytes() == written and time.time() < deadline:
            time.sleep(0.05)
        beat = json.loads((out / LEASE).read_text())
        assert beat["job_id"] == first["job_id"] and beat["heartbeat"] > first["heartbeat"]
        (out / LEASE).write_text(json.dumps({**first, "job_id": "thief"}))
        time.sleep(10)  # interrupted by the heartbeat thread
    assert time.time() < deadline  # well before the sleep's end
    assert json.loads((out / LEASE).read_text())["job_id"] == "thief"  # not deleted: not ours


def test_the_lease_on_s3(s3_server):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="lease")
    out = "s3://lease/out"
    with lease.hold(out, heartbeat_s=0.1) as held:
        with pytest.raises(LeaseError, match="in use by another mmsent job"):
            lease.acquire(out)
        etag = held.token
        deadline = time.time() + 10
        while s3.head_object(Bucket="lease", Key=f"out/{LEASE}")["ETag"] == etag:
            assert time.time() < deadline, "no heartbeat"
            time.sleep(0.05)
    assert "Contents" not in s3.list_objects_v2(Bucket="lease", Prefix="out/")  # released
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    stale = {**lease.holder_info("killed"), "pid": int(dead.stdout)}
    s3.put_object(Bucket="lease", Key=f"out/{LEASE}", Body=json.dumps(stale).encode())
    taken = lease.acquire(out)
    body = s3.get_object(Bucket="lease", Key=f"out/{LEASE}")["Body"].read()
    assert json.loads(body)["job_id"] == taken.info["job_id"]
    s3.put_object(Bucket="lease", Key=f"out/{LEASE}", Body=body + b" ")  # someone else's write
    taken.release()  # a conditional delete: that write is not ours to delete
    assert s3.get_object(Bucket="lease", Key=f"out/{LEASE}")["Body"].read() == body + b" "


class FlakyS3Proxy:
    """A forwarding proxy on 127.0.0.1 in front of the S3 server that answers 503 to the next
    `fail` GETs of .parquet keys (fail < 0: all of them), and counts those GETs per key."""

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream).netloc
        self.fail, self.gets, self.lock = 0, Counter(), threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = urlsplit(self.path).path
                if self.command == "GET" and key.endswith(".parquet"):
                    with proxy.lock:
                        proxy.gets[key] += 1
                        failing, proxy.fail = proxy.fail != 0, proxy.fail - (proxy.fail > 0)
                    if failing:
                        return self._send(503, [], b"<Error><Code>SlowDown</Code></Error>")
                up = http.client.HTTPConnection(proxy.upstream, timeout=10)
                up.request(self.command, self.path, body, dict(self.headers))
                r = up.getresponse()
                data = r.read()
                skip = ("transfer-encoding", "connection", "content-length")
                self._send(
                    r.status,
                    [(k, v) for k, v in r.getheaders() if k.lower() not in skip],
                    data,
                    r.getheader("Content-Length"),
                )
                up.close()

            def _send(self, status, headers, data, length=None):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

            def log_message(self, *args):
                pass

        return Handler

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_read_error_on_resume_deletes_nothing(s3_server, monkeypatch):
    import boto3

    boto3.client("s3").create_bucket(Bucket="flaky")
    out = "s3://flaky/out"
    manifest = {"input": "/in", "model": {"name": "m", "version": "1"}, "columns": {}}
    resume.prepare(out, manifest)
    fs, root = filesystem(out)
    pq.write_table(
        pa.table({"input_file": ["/in"], "input_row": [3]}), f"{root}/a.parquet", filesystem=fs
    )
    whole = fs.open_input_file(f"{root}/a.parquet").readall()
    with fs.open_output_stream(f"{root}/b.parquet") as f:
        f.write(whole[:-9])  # a write cut short: no footer
    proxy = FlakyS3Proxy(s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        proxy.fail = -1
        via, _ = filesystem(out)
        with pytest.raises(OSError):  # one try of the footer check: pyarrow's own retries
            via.open_input_file(f"{root}/a.parquet").read_at(8, len(whole) - 8)
        per_try, proxy.gets = proxy.gets[f"/{root}/a.parquet"], Counter()
        with pytest.raises(resume.ReadError, match=r"a\.parquet .*Nothing was deleted"):
            resume.prepare(out, manifest)
        assert fs.get_file_info(f"{root}/a.parquet").size == len(whole)
        assert fs.get_file_info(f"{root}/b.parquet").is_file  # no verdict without its bytes
        assert proxy.gets[f"/{root}/a.parquet"] == resume.READ_TRIES * per_try  # ours, retried

        proxy.fail = 2 * per_try  # fails two of our tries, then the store answers again
        assert resume.prepare(out, manifest) == [f"{root}/b.parquet"]
        assert fs.get_file_info(f"{root}/a.parquet").is_file
        assert [k.tolist() for k in resume.read_keys(out).values()] == [[3]]
    finally:
        proxy.close()
