"""Helpers of the serving tests: free ports, a local web server that records every hit, the network
guard of the test process, a tiny checkpoint. Everything listens on and talks to loopback only."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

NETGUARD_DIR = Path(__file__).resolve().parent / "netguard"
_spec = importlib.util.spec_from_file_location("mmsent_netguard", NETGUARD_DIR / "sitecustomize.py")
netguard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(netguard)
_LOG = Path(tempfile.gettempdir()) / f"mmsent-netguard-{os.getpid()}.log"
_armed = threading.Event()
# audit hooks stay for good: this one acts only while a test arms it
netguard.install(str(_LOG), _armed.is_set)


@contextlib.contextmanager
def connect_attempts():
    """Yields a list filled, on exit, with the (host, port) of every connect() the test process
    attempted inside the block; connects off loopback are refused (never reach the network)."""
    _LOG.touch()
    start, attempts = _LOG.stat().st_size, []
    _armed.set()
    try:
        yield attempts
    finally:
        _armed.clear()
        with _LOG.open() as f:
            f.seek(start)
            attempts += [(h, int(p)) for h, p in (line.split() for line in f if line.strip())]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class WebServer:
    """A threaded HTTP server on `host` (127.0.0.x): /img/<name> serves `files[name]`,
    /redirect?to=URL answers 302, /big?n=N sends N bytes (no Content-Length with chunked=1),
    /trickle?n=N&every=S sends N bytes one at a time; anything else 404. `hits` records
    (path, Host header) of every request."""

    def __init__(self, host: str = "127.0.0.1", files: dict[str, bytes] | None = None):
        self.files, self.hits = files or {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.hits.append((self.path, self.headers.get("Host")))
                parts = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", q["to"])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts.path.startswith("/img/") and parts.path[5:] in outer.files:
                    self._send(outer.files[parts.path[5:]])
                elif parts.path in ("/big", "/trickle"):
                    n = int(q.get("n", 1))
                    self.send_response(200)
                    length = "X-No-Length" if "chunked" in q else "Content-Length"
                    self.send_header(length, str(n))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    step = 1 if parts.path == "/trickle" else 65536
                    for i in range(0, n, step):
                        with contextlib.suppress(OSError):
                            self.wfile.write(b"x" * min(step, n - i))
                            self.wfile.flush()
                        time.sleep(float(q.get("every", 0)))
                    self.close_connection = True
                else:
                    self._send(b"not here", 404)

            def _send(self, body: bytes, status: int = 200):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def tiny_checkpoint(path: Path) -> str:
    """A small random text + image model saved as a checkpoint (built offline in seconds; built
    once under `path`, so modules that pass the same path share it)."""
    import torch

    from mmsent.models.checkpoint import save
    from mmsent.models.model import build_model
    from mmsent.testing import tiny_model_cfg, tiny_text_encoder, tiny_vision_encoder

    if (path / "model" / "config.json").exists():
        return str(path / "model")
    cfg = tiny_model_cfg(tiny_text_encoder(path / "bert"), tiny_vision_encoder(path / "clip"))
    torch.manual_seed(0)
    return str(save(build_model(cfg), path / "model"))
