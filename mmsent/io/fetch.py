"""Fetch image bytes by URL with timeouts, retries with backoff, a byte cap and, for serving, an
SSRF guard. Failures are status codes (mmsent.schema), never exceptions.

    data, status, detail = fetch("s3://bucket/img.jpg", FetchCfg())   # a Fetched tuple
    results = fetch_many(urls, FetchCfg(concurrency=16))              # [Fetched], in order

S3 endpoint, keys and region come from the usual AWS settings (AWS_ENDPOINT_URL, ...), so MinIO,
moto and AWS all work. With `block_private_networks`, a host is resolved first, every address is
checked, the connection goes to the checked address (no second lookup to rebind), and every
redirect hop is checked the same way.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urljoin, urlsplit

import urllib3

from .. import schema as S
from ..boundary import describe
from ..config import FetchCfg

TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_local = threading.local()


class FetchFailure(Exception):
    def __init__(self, status: str, transient: bool = False):
        super().__init__(status)
        self.status, self.transient = status, transient


class Fetched(NamedTuple):
    data: bytes | None
    status: str  # mmsent.schema code: ok, missing or an image error
    detail: str | None = None  # what an internal_error was (boundary.describe)


def fetch(url: str | None, cfg: FetchCfg) -> Fetched:
    """Never raises: whatever a URL does becomes its status (the error boundary of fetching)."""
    try:
        return _fetch(url, cfg)
    except ValueError:  # urlsplit and friends on a malformed URL (e.g. "http://[::1/x")
        return Fetched(None, S.IMAGE_URL_INVALID)
    except Exception as e:  # noqa: BLE001 - the boundary: one URL never fails a batch
        return Fetched(None, S.INTERNAL_ERROR, describe(e))


def _fetch(url: str | None, cfg: FetchCfg) -> Fetched:
    if (
        url is None
        or (isinstance(url, float) and url != url)
        or (isinstance(url, str) and not url.strip())
    ):
        return Fetched(None, S.MISSING)
    if not isinstance(url, str):
        return Fetched(None, S.IMAGE_URL_INVALID)
    url = url.strip()
    scheme = urlsplit(url).scheme.lower() if "://" in url else "file"
    if scheme not in cfg.schemes:
        return Fetched(None, S.IMAGE_URL_INVALID)
    reader = {"s3": _read_s3, "http": _read_http, "https": _read_http, "file": _read_file}[scheme]
    delay = cfg.backoff_s
    for attempt in range(cfg.retries + 1):
        try:
            return Fetched(reader(url, cfg), S.OK)
        except FetchFailure as e:
            if not e.transient or attempt == cfg.retries:
                return Fetched(None, e.status)
        time.sleep(delay * (0.5 + random.random()))
        delay *= 2
    raise AssertionError("unreachable")


def fetch_many(urls, cfg: FetchCfg) -> list[Fetched]:
    """Fetch a batch with at most `cfg.concurrency` requests in flight; results in input order."""
    urls = list(urls)
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(cfg.concurrency, len(urls)))) as pool:
        return list(pool.map(lambda u: fetch(u, cfg), urls))


def _read_file(url: str, cfg: FetchCfg) -> bytes:
    path = Path(unquote(urlsplit(url).path)) if url.startswith("file://") else Path(url)
    try:
        if path.stat().st_size > cfg.max_bytes:
            raise FetchFailure(S.IMAGE_BYTES_TOO_LARGE)
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise FetchFailure(S.IMAGE_NOT_FOUND) from None
    except OSError:
        raise FetchFailure(S.IMAGE_FETCH_ERROR) from None


def _s3_client(cfg: FetchCfg):
    key = (cfg.timeout_s, cfg.retries, os.environ.get("AWS_ENDPOINT_URL"))
    if getattr(_local, "s3_key", None) != key:
        import boto3
        from botocore.config import Config

        conf = Config(connect_timeout=cfg.timeout_s, read_timeout=cfg.timeout_s, retries={"max_attempts": 1},
                      max_pool_connections=max(10, cfg.concurrency))  # fmt: skip
        _local.s3, _local.s3_key = boto3.session.Session().client("s3", config=conf), key
    return _local.s3


def _read_s3(url: str, cfg: FetchCfg) -> bytes:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        ReadTimeoutError,
    )

    parts = urlsplit(url)
    if not parts.netloc or not parts.path.strip("/"):
        raise FetchFailure(S.IMAGE_URL_INVALID)
    try:
        obj = _s3_client(cfg).get_object(Bucket=parts.netloc, Key=unquote(parts.path.lstrip("/")))
        if obj.get("ContentLength", 0) > cfg.max_bytes:
            raise FetchFailure(S.IMAGE_BYTES_TOO_LARGE)
        data = obj["Body"].read(cfg.max_bytes + 1)
        if len(data) > cfg.max_bytes:
            raise FetchFailure(S.IMAGE_BYTES_TOO_LARGE)
        return data
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        http = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchKey", "NoSuchBucket", "404") or http == 404:
            raise FetchFailure(S.IMAGE_NOT_FOUND) from None
        raise FetchFailure(S.IMAGE_FETCH_ERROR, transient=http in TRANSIENT_HTTP) from None
    except (ConnectTimeoutError, ReadTimeoutError):
        raise FetchFailure(S.IMAGE_FETCH_TIMEOUT, transient=True) from None
    except BotoCoreError:
        raise FetchFailure(S.IMAGE_FETCH_ERROR, transient=True) from None


def _pool() -> urllib3.PoolManager:
    if not hasattr(_local, "http"):
        _local.http = urllib3.PoolManager(num_pools=32, maxsize=4, retries=False)
    return _local.http


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


def _checked_address(host: str, port: int, cfg: FetchCfg) -> str:
    """Resolve `host`; refuse it unless every address is public. Returns the address to dial."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise FetchFailure(S.IMAGE_FETCH_ERROR) from None
    allow = tuple(ipaddress.ip_network(n, strict=False) for n in cfg.allow_networks)
    addrs = [info[4][0] for info in infos]
    if not addrs or not all(is_public_address(a, allow) for a in addrs):
        raise FetchFailure(S.IMAGE_URL_FORBIDDEN)
    return addrs[0]


def _read_http(url: str, cfg: FetchCfg) -> bytes:
    timeout = urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s)
    deadline = time.monotonic() + cfg.deadline_s if cfg.deadline_s else None
    for _ in range(cfg.max_redirects + 1):
        parts = urlsplit(url)
        try:
            explicit_port = parts.port  # raises on a port that is not a number in 0..65535
        except ValueError:
            raise FetchFailure(S.IMAGE_URL_INVALID) from None
        if (
            parts.scheme not in ("http", "https")
            or parts.scheme not in cfg.schemes
            or not parts.hostname
        ):
            raise FetchFailure(S.IMAGE_URL_INVALID)
        try:
            if cfg.block_private_networks:
                port = explicit_port or (443 if parts.scheme == "https" else 80)
                ip = _checked_address(parts.hostname, port, cfg)
                kw = (
                    {"assert_hostname": parts.hostname, "server_hostname": parts.hostname}
                    if parts.scheme == "https"
                    else {}
                )
                pool = urllib3.connectionpool.connection_from_url(
                    f"{parts.scheme}://{_bracket(ip)}:{port}", retries=False, **kw
                )
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                resp = pool.urlopen(
                    "GET",
                    path,
                    headers={
                        "Host": _bracket(parts.hostname)
                        + (f":{explicit_port}" if explicit_port else "")
                    },
                    timeout=timeout,
                    redirect=False,
                    preload_content=False,
                )
            else:
                resp = _pool().urlopen(
                    "GET", url, timeout=timeout, redirect=False, preload_content=False
                )
        except urllib3.exceptions.TimeoutError:
            raise FetchFailure(S.IMAGE_FETCH_TIMEOUT, transient=True) from None
        except urllib3.exceptions.HTTPError:
            raise FetchFailure(S.IMAGE_FETCH_ERROR, transient=True) from None
        try:
            if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                url = urljoin(url, resp.headers["Location"])
                continue
            if resp.status == 404 or resp.status == 410:
                raise FetchFailure(S.IMAGE_NOT_FOUND)
            if resp.status != 200:
                raise FetchFailure(S.IMAGE_FETCH_ERROR, transient=resp.status in TRANSIENT_HTTP)
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > cfg.max_bytes:
                raise FetchFailure(S.IMAGE_BYTES_TOO_LARGE)
            chunks, size = [], 0
            # read1: one socket read per call, so the cap and the deadline hold for a server that
            # trickles bytes (each read is bounded by timeout_s)
            while chunk := resp.read1(64 * 1024):
                size += len(chunk)
                if size > cfg.max_bytes:
                    raise FetchFailure(S.IMAGE_BYTES_TOO_LARGE)
                if deadline is not None and time.monotonic() > deadline:
                    raise FetchFailure(S.IMAGE_FETCH_TIMEOUT)
                chunks.append(chunk)
            return b"".join(chunks)
        except urllib3.exceptions.TimeoutError:
            raise FetchFailure(S.IMAGE_FETCH_TIMEOUT, transient=True) from None
        except urllib3.exceptions.HTTPError:
            raise FetchFailure(S.IMAGE_FETCH_ERROR, transient=True) from None
        finally:
            resp.release_conn()
    raise FetchFailure(S.IMAGE_FETCH_ERROR)  # too many redirects


def _bracket(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
