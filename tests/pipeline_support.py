"""Test helpers of the bulk-scoring tests: a real HTTP image server on 127.0.0.1 with failure
routes, and small dumps. Only the test process uses them (Ray workers reach the server by HTTP).

    with ImageServer(photos) as srv:
        srv.url("img/chelsea")       # the photo          srv.url("404/x")     404
        srv.url("slow/chelsea")      # answers after slow_s (past a short fetch timeout)
        srv.url("flaky/chelsea")     # 503 the first time a path is asked for, then the photo
        srv.url("gate/chelsea")      # held until srv.gate.set()
        srv.url("corrupt") / ("zero") / ("html") / ("truncated/chelsea")
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil


class ImageServer:
    def __init__(self, photos: dict[str, bytes], slow_s: float = 3.0, hold_s: float = 20.0):
        self.photos, self.slow_s, self.hold_s = photos, slow_s, hold_s
        self.gate = threading.Event()
        self.hits: Counter = Counter()
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{path}"

    def __enter__(self) -> ImageServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def respond(self, path: str) -> tuple[int, str, bytes]:
        kind, _, name = path.split("?")[0].strip("/").partition("/")  # ?query: a distinct URL
        photo = self.photos.get(name)
        if kind == "gate":
            self.gate.wait(self.hold_s)  # bounded: a broken test fails instead of hanging
        if kind == "slow":
            time.sleep(self.slow_s)
        if kind == "flaky" and self.hits[path] == 1:
            return 503, "text/plain", b"busy"
        if kind == "pause":  # for concurrency counts
            time.sleep(0.3)
        if kind == "corrupt":
            return 200, "image/jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
        if kind == "zero":
            return 200, "image/jpeg", b""
        if kind == "html":
            return 200, "text/html", b"<!doctype html><html><body>Moved</body></html>"
        if kind == "truncated" and photo:
            return 200, "image/jpeg", photo[: len(photo) // 3]
        if photo and kind in ("img", "gate", "slow", "flaky", "pause"):
            return 200, "image/jpeg", photo
        return 404, "text/plain", b"not found"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with server._lock:
                    server.hits[self.path] += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, ctype, body = server.respond(self.path)
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): fine
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def log_message(self, *args):  # quiet
                pass

        return Handler


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows as JSONL; a `bytes` row is written as it is (for malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def write_held_dump(folder: Path, srv: ImageServer) -> None:
    """a.jsonl: 16 text posts; b.jsonl: 4 posts whose images the server holds until released, so a
    job on the folder cannot end before the test lets it."""
    write_jsonl(folder / "a.jsonl", [{"id": f"a{i}", "text": s} for i, s in enumerate(texts(16))])
    rows = [
        {"id": f"b{i}", "text": "x", "image_url": srv.url(f"gate/coffee?{i}")} for i in range(4)
    ]
    write_jsonl(folder / "b.jsonl", rows)


def texts(n: int, start: int = 0) -> list[str]:
    from mmsent.train.data import read_vader

    return read_vader().texts[start : start + n]


def kill(processes: list[psutil.Process]) -> None:
    """SIGKILL processes this test started (e.g. a Ray node's, listed before its parent died)."""
    for p in processes:
        with contextlib.suppress(psutil.Error):  # already gone
            p.kill()
