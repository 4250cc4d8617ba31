"""A hostile image host for tests, on 127.0.0.1 only: it trickles, hangs, redirects to malformed
URLs and lies about Content-Length. Every route is bounded in time (HOLD_S at most), so a test that
regressed fails instead of hanging. Raw sockets, so it can send what a well-behaved server never would.

    with HostileServer({"cat": jpeg}) as h:
        h.url("/img/cat")                       # 200, the bytes
        h.url("/trickle-headers?every=0.2")     # status line and headers one byte at a time
        h.url("/trickle-body?n=4000&every=0.01")  # a body one byte at a time
        h.url("/hang")                          # accepts, reads the request, never answers
        h.url("/redirect?to=http://[::1")       # 302 to whatever `to` says, unchecked
        h.url("/lie-length?claim=5000&send=10") # Content-Length 5000, 10 bytes, then close
        h.url("/lie-length?claim=10&send=5000") # Content-Length 10, 5000 bytes
        h.url("/no-length?n=N")                 # no Content-Length, N bytes, close
        h.url("/gzip-bomb?n=N")                 # Content-Encoding: gzip of N zero bytes
        h.url("/status/503")                    # that status, empty body
        h.url("/garbage")                       # not HTTP at all
    h.hits: Counter of paths asked for
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

HOLD_S = 20.0  # the longest any route keeps a connection


class HostileServer:
    def __init__(self, files: dict[str, bytes] | None = None, host: str = "127.0.0.1"):
        self.files, self.hits = files or {}, Counter()
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def __enter__(self) -> HostileServer:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sock.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(HOLD_S)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            target = head.split(b" ", 2)[1].decode("latin-1")
            with self._lock:
                self.hits[target] += 1
            self._route(conn, target)
        except (OSError, ValueError, LookupError):
            pass  # the client gave up, or asked for nonsense (a fuzzed query): fine
        finally:
            conn.close()

    def _route(self, conn: socket.socket, target: str) -> None:
        parts = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path, every = parts.path, float(q.get("every", 0.0))
        n = int(q.get("n", 1000))
        end = time.monotonic() + HOLD_S

        def slowly(data: bytes) -> None:
            for i in range(len(data)):
                if time.monotonic() > end or self.stop.is_set():
                    return
                conn.sendall(data[i : i + 1])
                time.sleep(every)

        if path.startswith("/img/") and path[5:] in self.files:
            conn.sendall(_response(200, self.files[path[5:]]))
        elif path == "/trickle-headers":
            slowly(_response(200, b"x" * 100))
        elif path == "/trickle-body":
            conn.sendall(_head(200, {"Content-Length": str(n)}))
            slowly(b"x" * n)
        elif path == "/hang":
            self.stop.wait(HOLD_S)
        elif path == "/redirect":
            conn.sendall(_head(302, {"Location": q.get("to", ""), "Content-Length": "0"}))
        elif path == "/lie-length":
            conn.sendall(_head(200, {"Content-Length": q["claim"]}) + b"x" * int(q["send"]))
        elif path == "/no-length":
            conn.sendall(_head(200, {"Connection": "close"}) + b"x" * n)
        elif path == "/gzip-bomb":
            body = gzip.compress(b"\0" * n, compresslevel=9)
            conn.sendall(_response(200, body, {"Content-Encoding": "gzip"}))
        elif path.startswith("/status/"):
            conn.sendall(_response(int(path[8:]), b""))
        elif path == "/garbage":
            conn.sendall(b"\x00\xffthis is not HTTP\r\n\r\n" * 4)
        else:
            conn.sendall(_response(404, b"not here"))


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    return (
        _head(status, {"Content-Length": str(len(body)), "Connection": "close", **(headers or {})})
        + body
    )
