"""Fetch image bytes by path or URL (file, http(s), s3), every fetch bounded in time and bytes, with
retries and, for serving, an SSRF guard. Failures are status codes (mmsent.codes), never exceptions.

    data, status, detail = fetch("s3://bucket/img.jpg", FetchCfg())   # a Fetched tuple
    results = fetch_many(urls, FetchCfg(concurrency=16))              # [Fetched], in order

What is bounded, and how:
- Time. One deadline per fetch (`deadline_s`) covers all of it: attempts, backoff, redirect hops,
  DNS, connect, TLS, headers and body. Each socket operation also waits at most `timeout_s`,
  clipped to what is left. getaddrinfo has no timeout: lookups run in a small resolver pool and a
  fetch waits for one at most the time left. A server that trickles its headers or body a byte at
  a time beats any per-read timeout, so one watchdog thread (a heap of deadlines) shuts down the
  sockets of every fetch whose deadline has passed, and the blocked read returns at once. S3: the
  client's timeouts are clipped to the time left and the body is read in chunks that check it.
- Bytes. `max_bytes` holds while reading, whatever Content-Length or st_size say (/proc files say
  0). A Content-Encoding (gzip, deflate, ...) is decoded and the cap counts decoded bytes, so a gzip
  bomb stops at the cap; decoding goes one bounded chunk at a time.
- Local files. Only regular files are read: a device, FIFO, socket or folder is image_not_a_file,
  judged before opening and again on the opened descriptor (O_NONBLOCK: a FIFO never blocks).
- URLs. Parsed once, strictly: bad brackets or ports, control characters (CR/LF: header
  injection), a host that is not a valid name or IP (IDNA errors), over MAX_URL_CHARS, are
  image_url_invalid, and so is a redirect to such a URL; too many redirects is image_fetch_error.

HTTP(S) has one path, guarded or not: the host is resolved, with `block_private_networks` every
address must be public, and the connection goes to that address (Host, SNI and the certificate
check use the name), so no second lookup can rebind. Connections are kept alive per (scheme,
address, port, name for TLS) in at most _POOLS pools shared by all threads.

Content-Length lies: a body that ends before its Content-Length is image_fetch_error (retried): the
transfer failed, the bytes are not the image, and a retry may get all of it. A body that goes on
past it is cut at Content-Length, as HTTP framing says (the connection is then not reused).
S3 endpoints come from the usual AWS settings (AWS_ENDPOINT_URL, ...): MinIO, moto and AWS work.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import http.client
import ipaddress
import itertools
import math
import os
import random
import re
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import NamedTuple
from urllib.parse import quote, unquote, urljoin, urlsplit

import urllib3

from .. import codes
from ..boundary import describe
from ..config import FetchCfg

TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
REDIRECTS = {301, 302, 303, 307, 308}
MAX_URL_CHARS = 8192  # longer is image_url_invalid (servers refuse ~8 KiB request lines anyway)
_CHUNK = 64 * 1024
_S3_MIN_TIMEOUT_S = 0.125  # S3 client timeouts: timeout_s or a power of two down to this
_POOLS, _POOL_CONNS = 64, 64  # kept-alive pools (LRU), idle connections kept per pool
_MAX_ADDRESSES = 3  # addresses of one name tried in turn when a connect is refused
_DNS_WORKERS = 8  # lookups in flight per process; a stuck one holds a worker, not a fetch
_DNS_TTL_S, _DNS_ENTRIES = 30.0, 1024  # resolved names kept briefly: one CDN, one lookup
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:]+)(:[0-9]*)?")  # after any userinfo@
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")
_local = threading.local()


class FetchFailure(Exception):
    def __init__(self, status: str, transient: bool = False):
        super().__init__(status)
        self.status, self.transient = status, transient


class Fetched(NamedTuple):
    data: bytes | None
    status: str  # mmsent.codes code: ok, missing or an image error
    detail: str | None = None  # what an internal_error was (boundary.describe)


def fetch(url: str | None, cfg: FetchCfg) -> Fetched:
    """Never raises: whatever a URL does becomes its status (the error boundary of fetching)."""
    try:
        return _fetch(url, cfg)
    except Exception as e:  # noqa: BLE001 - the last resort: one URL never fails a batch
        return Fetched(None, codes.INTERNAL_ERROR, describe(e))


def fetch_many(urls, cfg: FetchCfg) -> list[Fetched]:
    """Fetch a batch with at most `cfg.concurrency` requests in flight; results in input order."""
    urls = list(urls)
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(cfg.concurrency, len(urls)))) as pool:
        return list(pool.map(lambda u: fetch(u, cfg), urls))


def _fetch(url, cfg: FetchCfg) -> Fetched:
    if url is None or (isinstance(url, float) and url != url):
        return Fetched(None, codes.MISSING)
    if not isinstance(url, str):
        return Fetched(None, codes.IMAGE_URL_INVALID)
    url = url.strip()
    if not url:
        return Fetched(None, codes.MISSING)
    try:
        scheme = _scheme(url)
    except FetchFailure as e:
        return Fetched(None, e.status)
    if scheme not in cfg.schemes:
        return Fetched(None, codes.IMAGE_URL_INVALID)
    reader = {"s3": _read_s3, "http": _read_http, "https": _read_http, "file": _read_file}[scheme]
    deadline = _Deadline(cfg.deadline_s)
    _local.deadline = deadline  # the connections this thread opens are watched under it
    try:
        return _attempts(reader, url, cfg, deadline)
    finally:
        _local.deadline = None
        _watchdog().release(deadline)


def _attempts(reader, url: str, cfg: FetchCfg, deadline: _Deadline) -> Fetched:
    delay = cfg.backoff_s
    for attempt in range(cfg.retries + 1):
        try:
            return Fetched(reader(url, cfg, deadline), codes.OK)
        except FetchFailure as e:
            failure = e
        pause = delay * (0.5 + random.random())
        if not failure.transient or attempt == cfg.retries or pause >= deadline.left():
            break  # out of tries or out of time: the last failure stands
        time.sleep(pause)
        delay *= 2
    return Fetched(None, failure.status)


def _scheme(url: str) -> str:
    """The scheme of a URL, "file" for a plain path; raises FetchFailure(image_url_invalid) on
    what no reader may see: control characters, lone surrogates, over-long strings."""
    if len(url) > MAX_URL_CHARS or _CONTROL.search(url):
        raise FetchFailure(codes.IMAGE_URL_INVALID)
    try:
        url.encode("utf-8")
    except UnicodeError:  # lone surrogates (e.g. from a lenient JSON parser)
        raise FetchFailure(codes.IMAGE_URL_INVALID) from None
    if m := _SCHEME.match(url):
        return m.group(1).lower()
    if "://" in url:
        raise FetchFailure(codes.IMAGE_URL_INVALID)
    return "file"


# ---- time: one deadline per fetch, a watchdog that shuts the sockets of an expired one ----------


class _Deadline:
    """The deadline of one fetch and the sockets it uses (duplicated descriptors: a TLS wrap
    detaches the original socket object, a duplicate still reaches the connection)."""

    __slots__ = ("end", "socks", "expired", "done")

    def __init__(self, seconds: float | None):
        self.end = math.inf if seconds is None else time.monotonic() + seconds
        self.socks: list[socket.socket] = []
        self.expired = self.done = False

    def left(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.expired or self.left() <= 0

    def timeout(self, timeout_s: float) -> float:
        """`timeout_s` clipped to what is left; raises image_fetch_timeout when nothing is."""
        left = self.left()
        if left <= 0 or self.expired:
            raise FetchFailure(codes.IMAGE_FETCH_TIMEOUT)
        return min(timeout_s, left)


class _Watchdog:
    """One thread for all fetches: at each deadline, shut down that fetch's sockets so that a
    read blocked on a trickling server returns now (shutdown, not close: the fetch thread still
    owns the descriptor and closes it)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._seq = itertools.count()
        self._live = 0
        self._thread: threading.Thread | None = None

    def bind(self, deadline: _Deadline, sock: socket.socket) -> None:
        if deadline.end == math.inf:
            return
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:  # already closed: nothing to watch
            return
        with self._cv:
            if not deadline.socks and not deadline.done:  # first socket: start watching
                heapq.heappush(self._heap, (deadline.end, next(self._seq), deadline))
                self._live += 1
                self._compact()
                self._start()
                self._cv.notify()
            deadline.socks.append(dup)
            if deadline.expired:
                _shut(dup)

    def release(self, deadline: _Deadline) -> None:
        with self._cv:
            if deadline.socks and not deadline.done:
                self._live -= 1
            deadline.done = True
            socks, deadline.socks = deadline.socks, []
        for s in socks:
            s.close()

    def _compact(self) -> None:
        if len(self._heap) > 2 * self._live + 1024:  # finished fetches are dropped lazily
            self._heap = [e for e in self._heap if not e[2].done]
            heapq.heapify(self._heap)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="mmsent-fetch-watchdog", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        with self._cv:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                deadline = heapq.heappop(self._heap)[2]
                deadline.expired = True
                for s in deadline.socks:
                    _shut(s)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _bind(sock: socket.socket) -> None:
    deadline = getattr(_local, "deadline", None)
    if deadline is not None:
        _watchdog().bind(deadline, sock)


class _State:
    """Process-wide parts, made on first use and made anew in a forked child."""

    lock = threading.Lock()
    watchdog: _Watchdog | None = None
    resolver: ThreadPoolExecutor | None = None
    manager: urllib3.PoolManager | None = None
    names: dict[str, tuple[float, list[str]]] = {}  # the DNS cache: name -> (expiry, addresses)
    s3: dict[tuple, object] = {}  # boto3 clients (thread-safe), by timeouts
    s3_lock = threading.Lock()  # making a client: boto3 sessions are not thread-safe
    s3_loader = None  # botocore's loader of service models, shared by the clients


def _reset_state() -> None:
    _State.lock, _State.s3_lock = threading.Lock(), threading.Lock()
    _State.watchdog = _State.resolver = _State.manager = _State.s3_loader = None
    _State.names, _State.s3 = {}, {}


os.register_at_fork(after_in_child=_reset_state)


def _watchdog() -> _Watchdog:
    if _State.watchdog is None:
        with _State.lock:
            _State.watchdog = _State.watchdog or _Watchdog()
    return _State.watchdog


# ---- http(s) ------------------------------------------------------------------------------------


class _Watched:
    """A connection whose sockets the watchdog watches under the deadline of the fetch using it."""

    def _new_conn(self):
        sock = super()._new_conn()
        _bind(sock)
        return sock


class _WatchedPool:
    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        _local.reused = conn.sock is not None
        if _local.reused:  # a kept-alive connection now serves this thread's fetch
            _bind(conn.sock)
        return conn


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(_WatchedPool, urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_WatchedPool, urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _manager() -> urllib3.PoolManager:
    with _State.lock:
        if _State.manager is None:
            m = urllib3.PoolManager(num_pools=_POOLS, maxsize=_POOL_CONNS, retries=False)
            m.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
            _State.manager = m
        return _State.manager


class _Target(NamedTuple):
    scheme: str
    host: str  # ASCII: an IDNA name or an IP address, no brackets
    port: int
    target: str  # path and query, percent-encoded
    host_header: str


def _http_target(url: str, cfg: FetchCfg) -> _Target:
    """Parse an http(s) URL strictly; anything malformed is image_url_invalid."""
    scheme = _scheme(url)  # control characters, length (a redirect's URL is checked here)
    if scheme not in ("http", "https") or scheme not in cfg.schemes:
        raise FetchFailure(codes.IMAGE_URL_INVALID)
    try:
        parts = urlsplit(url)
        port, host = parts.port, parts.hostname  # raise on bad brackets, ports, IPv6 literals
        target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
        if parts.query:
            target += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=~")
    except ValueError:
        raise FetchFailure(codes.IMAGE_URL_INVALID) from None
    hostport = parts.netloc.rpartition("@")[2]  # urlsplit lets "[::1]]" and zones through
    if not host or port == 0 or not _HOSTPORT.fullmatch(hostport):
        raise FetchFailure(codes.IMAGE_URL_INVALID)
    host = _ascii_host(host, bracketed=hostport.startswith("["))
    bracketed = f"[{host}]" if ":" in host else host
    header = bracketed + (f":{port}" if port else "")
    return _Target(scheme, host, port or (443 if scheme == "https" else 80), target, header)


def _ascii_host(host: str, bracketed: bool) -> str:
    if bracketed:  # an IPv6 literal; no zone: link-local is no image host
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise FetchFailure(codes.IMAGE_URL_INVALID) from None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise FetchFailure(codes.IMAGE_URL_INVALID) from None
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise FetchFailure(codes.IMAGE_URL_INVALID)
    return host


def _read_http(url: str, cfg: FetchCfg, deadline: _Deadline) -> bytes:
    for _ in range(cfg.max_redirects + 1):
        t = _http_target(url, cfg)
        resp = _request(t, _addresses(t.host, t.port, cfg, deadline), cfg, deadline)
        reusable = False  # True once the response is read to its end
        try:
            if resp.status in REDIRECTS and resp.headers.get("Location"):
                url = _join(url, resp.headers["Location"])
                length = resp.headers.get("Content-Length", "")
                if length.isdigit() and int(length) <= _CHUNK:  # a small body: read, keep alive
                    resp.drain_conn()
                    reusable = True
                continue
            if resp.status in (404, 410):
                raise FetchFailure(codes.IMAGE_NOT_FOUND)
            if resp.status != 200:
                raise FetchFailure(codes.IMAGE_FETCH_ERROR, transient=resp.status in TRANSIENT_HTTP)
            with _network(deadline):
                data = _read_body(resp, cfg, deadline)
            reusable = True
            return data
        finally:
            if not reusable:  # unread body bytes: the connection cannot serve another request
                resp.close()
            resp.release_conn()
    raise FetchFailure(codes.IMAGE_FETCH_ERROR)  # too many redirects


def _join(url: str, location: str) -> str:
    with contextlib.suppress(UnicodeError):  # http.client decodes headers as latin-1; most
        location = location.encode("latin-1").decode("utf-8")  # non-ASCII Locations are UTF-8
    try:
        return urljoin(url, location)
    except ValueError:  # e.g. "http://[::1"
        raise FetchFailure(codes.IMAGE_URL_INVALID) from None


def _request(t: _Target, addrs: list[str], cfg: FetchCfg, deadline: _Deadline):
    """GET `t` from the first of `addrs` that takes a connection (a kept-alive one if pooled)."""
    tls = {"server_hostname": t.host, "assert_hostname": t.host} if t.scheme == "https" else None
    for ip in addrs[:_MAX_ADDRESSES]:
        with _network(deadline):
            pool = _manager().connection_from_host(ip, t.port, t.scheme, pool_kwargs=tls)
        for _ in range(2):
            per_op = deadline.timeout(cfg.timeout_s)
            _local.reused = False
            with _network(deadline):
                try:
                    return pool.urlopen(
                        "GET",
                        t.target,
                        headers={"Host": t.host_header, "Accept-Encoding": "identity"},
                        timeout=urllib3.Timeout(connect=per_op, read=per_op),
                        retries=False,
                        redirect=False,
                        assert_same_host=False,
                        preload_content=False,
                        decode_content=True,
                    )
                except urllib3.exceptions.NewConnectionError:
                    if deadline.passed():
                        raise
                    break  # refused or unreachable: the next address, if any
                except urllib3.exceptions.ProtocolError:
                    if not _local.reused or deadline.passed():
                        raise
                    # a kept-alive connection the server had closed meanwhile: the request
                    # goes once more, on a new connection (the failed one was closed)
    raise FetchFailure(codes.IMAGE_FETCH_ERROR, transient=True)


def _addresses(host: str, port: int, cfg: FetchCfg, deadline: _Deadline) -> list[str]:
    """The addresses to dial for `host`; with the SSRF guard, all must be public."""
    try:
        addrs = [ipaddress.ip_address(host).compressed]  # a literal: no lookup
    except ValueError:
        addrs = _resolve(host, port, deadline)
    if cfg.block_private_networks:
        allow = tuple(ipaddress.ip_network(n, strict=False) for n in cfg.allow_networks)
        if not all(is_public_address(a, allow) for a in addrs):
            raise FetchFailure(codes.IMAGE_URL_FORBIDDEN)
    return addrs


def _resolve(host: str, port: int, deadline: _Deadline) -> list[str]:
    """getaddrinfo in the resolver pool, waited for at most the time left; cached briefly."""
    now = time.monotonic()
    cached = _State.names.get(host)
    if cached and cached[0] > now:
        return cached[1]
    future = _resolver().submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        left = deadline.timeout(math.inf)
        infos = future.result(timeout=None if left == math.inf else left)
    except FutureTimeout:
        future.cancel()  # a lookup still queued never runs
        raise FetchFailure(codes.IMAGE_FETCH_TIMEOUT) from None
    except socket.gaierror as e:  # no such name (permanent) or a resolver failure (transient)
        raise FetchFailure(codes.IMAGE_FETCH_ERROR, transient=e.errno == socket.EAI_AGAIN) from None
    except (OSError, UnicodeError):
        raise FetchFailure(codes.IMAGE_FETCH_ERROR) from None
    addrs = list(dict.fromkeys(info[4][0] for info in infos))
    if not addrs:
        raise FetchFailure(codes.IMAGE_FETCH_ERROR)
    with _State.lock:
        if len(_State.names) >= _DNS_ENTRIES:
            _State.names.pop(next(iter(_State.names)))
        _State.names[host] = (now + _DNS_TTL_S, addrs)
    return addrs


def _resolver() -> ThreadPoolExecutor:
    with _State.lock:
        if _State.resolver is None:
            _State.resolver = ThreadPoolExecutor(_DNS_WORKERS, thread_name_prefix="mmsent-dns")
        return _State.resolver


def _read_body(resp, cfg: FetchCfg, deadline: _Deadline) -> bytes:
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > cfg.max_bytes:
        raise FetchFailure(codes.IMAGE_BYTES_TOO_LARGE)
    # read1: one socket read (or one bounded decoding step) per call, so the cap counts decoded
    # bytes as they come and the deadline is checked between reads
    data = _read_capped(resp.read1, cfg, deadline)
    if deadline.expired:  # the watchdog's shutdown looks like the end of a body without length
        raise FetchFailure(codes.IMAGE_FETCH_TIMEOUT)
    return data


def _read_capped(read, cfg: FetchCfg, deadline: _Deadline) -> bytes:
    """`read(n)` until it returns nothing: at most max_bytes in all (a declared size is never
    trusted), the deadline checked after every chunk."""
    chunks, size = [], 0
    while chunk := read(min(_CHUNK, cfg.max_bytes + 1 - size)):
        size += len(chunk)
        if size > cfg.max_bytes:
            raise FetchFailure(codes.IMAGE_BYTES_TOO_LARGE)
        if deadline.passed():
            raise FetchFailure(codes.IMAGE_FETCH_TIMEOUT)
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def _network(deadline: _Deadline):
    """What the network or the server did, as a FetchFailure. Anything after the deadline (the
    watchdog's shutdown surfaces as a reset or an early end) is image_fetch_timeout."""
    try:
        yield
    except FetchFailure:
        raise
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as e:
        if deadline.passed():
            raise FetchFailure(codes.IMAGE_FETCH_TIMEOUT) from None
        timed_out = isinstance(e, (urllib3.exceptions.TimeoutError, TimeoutError))
        if timed_out and not isinstance(e, urllib3.exceptions.NewConnectionError):  # (a subclass)
            raise FetchFailure(codes.IMAGE_FETCH_TIMEOUT, transient=True) from None
        # a certificate or a content encoding that is wrong now will be wrong on a retry
        permanent = isinstance(e, (urllib3.exceptions.SSLError, urllib3.exceptions.DecodeError))
        raise FetchFailure(codes.IMAGE_FETCH_ERROR, transient=not permanent) from None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def is_public_address(
    ip: str, allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
) -> bool:
    """A global unicast address, or one in `allow`. IPv6 forms that carry an IPv4 address
    (mapped, 6to4, NAT64, IPv4-compatible) are judged by that IPv4 address as well."""
    addr = ipaddress.ip_address(ip)
    if any(addr in net for net in allow):
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped:
            return is_public_address(str(addr.ipv4_mapped), allow)
        inner = addr.sixtofour or (
            ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
            if addr in _NAT64 or addr in _IPV4_COMPATIBLE
            else None
        )
        if inner is not None and not is_public_address(str(inner), allow):
            return False
    return addr.is_global and not addr.is_multicast


# ---- local files --------------------------------------------------------------------------------


def _read_file(url: str, cfg: FetchCfg, deadline: _Deadline) -> bytes:
    path = _file_path(url)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never open a device (opening may act)
            raise FetchFailure(codes.IMAGE_NOT_A_FILE)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FetchFailure(codes.IMAGE_NOT_FOUND) from None
    except OSError as e:
        raise FetchFailure(_FILE_ERRORS.get(e.errno, codes.IMAGE_FETCH_ERROR)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else since the stat
            raise FetchFailure(codes.IMAGE_NOT_A_FILE)
        return _read_capped(lambda n: os.read(fd, n), cfg, deadline)  # st_size: not trusted
    except OSError as e:
        raise FetchFailure(_FILE_ERRORS.get(e.errno, codes.IMAGE_FETCH_ERROR)) from None
    finally:
        os.close(fd)


_FILE_ERRORS = {
    errno.ENOTDIR: codes.IMAGE_NOT_FOUND,  # a path through a file
    errno.ENXIO: codes.IMAGE_NOT_A_FILE,  # a socket, a FIFO with no writer
    errno.EISDIR: codes.IMAGE_NOT_A_FILE,
    errno.ENAMETOOLONG: codes.IMAGE_URL_INVALID,
}


def _file_path(url: str) -> str:
    if not url.lower().startswith("file://"):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. file://[x]/a
        raise FetchFailure(codes.IMAGE_URL_INVALID) from None
    if parts.netloc.lower() not in ("", "localhost"):  # another machine's file
        raise FetchFailure(codes.IMAGE_URL_INVALID)
    path = unquote(parts.path)
    if not path or "\x00" in path:  # %00
        raise FetchFailure(codes.IMAGE_URL_INVALID)
    return path


# ---- s3 -----------------------------------------------------------------------------------------


def _s3_client(cfg: FetchCfg, deadline: _Deadline):
    """A shared (thread-safe) client whose connect and read timeouts are `timeout_s`, or the
    largest power of two below the time left: few clients, and no socket wait past the deadline.
    Clients share one loader of service models, so a new one takes ~15 ms, not ~0.3 s."""
    import boto3
    import botocore.session
    from botocore.config import Config

    for _ in range(2):  # the first client of a process loads the models: then choose again
        timeout = deadline.timeout(cfg.timeout_s)
        if timeout < cfg.timeout_s:  # clipped: to a power of two, so that clients are few
            timeout = 2.0 ** math.floor(math.log2(timeout))
        if timeout < _S3_MIN_TIMEOUT_S:
            raise FetchFailure(codes.IMAGE_FETCH_TIMEOUT)  # too little left for a request
        key = (timeout, max(10, cfg.concurrency), os.environ.get("AWS_ENDPOINT_URL"))
        with _State.s3_lock:
            client = _State.s3.get(key)
            if client is None:
                session = botocore.session.get_session()  # credentials and region: read anew
                if _State.s3_loader is None:
                    _State.s3_loader = session.get_component("data_loader")
                session.register_component("data_loader", _State.s3_loader)
                conf = Config(
                    connect_timeout=timeout,
                    read_timeout=timeout,
                    retries={"total_max_attempts": 1},  # our retries, in the deadline
                    max_pool_connections=key[1],
                )
                client = boto3.session.Session(botocore_session=session).client("s3", config=conf)
                if len(_State.s3) >= 32:
                    _State.s3.pop(next(iter(_State.s3)))
                _State.s3[key] = client
        if deadline.left() >= timeout:
            break
    return client


def _read_s3(url: str, cfg: FetchCfg, deadline: _Deadline) -> bytes:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        ReadTimeoutError,
    )

    try:
        parts = urlsplit(url)
    except ValueError:
        raise FetchFailure(codes.IMAGE_URL_INVALID) from None
    key = unquote(parts.path.lstrip("/"))
    if not _BUCKET.fullmatch(parts.netloc) or not key.strip("/") or "\x00" in key:
        raise FetchFailure(codes.IMAGE_URL_INVALID)
    try:
        obj = _s3_client(cfg, deadline).get_object(Bucket=parts.netloc, Key=key)
        with obj["Body"] as raw:  # botocore's own door to the urllib3 response (read1 below)
            if obj.get("ContentLength", 0) > cfg.max_bytes:
                raise FetchFailure(codes.IMAGE_BYTES_TOO_LARGE)
            with _network(deadline):
                return _read_capped(raw.read1, cfg, deadline)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchKey", "NoSuchBucket", "404") or status == 404:
            raise FetchFailure(codes.IMAGE_NOT_FOUND) from None
        raise FetchFailure(codes.IMAGE_FETCH_ERROR, transient=status in TRANSIENT_HTTP) from None
    except (ConnectTimeoutError, ReadTimeoutError):
        raise FetchFailure(codes.IMAGE_FETCH_TIMEOUT, transient=not deadline.passed()) from None
    except BotoCoreError:
        if deadline.passed():
            raise FetchFailure(codes.IMAGE_FETCH_TIMEOUT) from None
        raise FetchFailure(codes.IMAGE_FETCH_ERROR, transient=True) from None
