"""mmsent.io.fetch against hostile hosts and paths: every fetch ends with its code within its
deadline (plus slack), whatever the host does, and leaves no thread behind. Servers on 127.0.0.1
(tests/hostile_http.py, and two raw sockets standing in for a hostile S3 endpoint); local paths
that are devices, FIFOs, sockets, folders and /proc files."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import time
from urllib.parse import quote

import pytest
from hostile_http import HostileServer
from serve_helpers import connect_attempts

from mmsent import codes
from mmsent.config import FetchCfg
from mmsent.io.fetch import MAX_URL_CHARS, fetch, fetch_many

DEADLINE, SLACK = 1.0, 0.5
# timeout_s well above the deadline: only the deadline can end a trickle; one retry, so that
# retries and backoff are seen to stay within the deadline too
CFG = FetchCfg(timeout_s=5.0, deadline_s=DEADLINE, retries=1, backoff_s=0.05, max_bytes=100_000)
IMAGE = b"\x89PNG not really, but bytes"


def redirects(n: int, to: str = "/img/cat") -> str:
    for _ in range(n):
        to = "/redirect?to=" + quote(to, safe="")
    return to


# (route, status, the bytes when ok) ; every route of HostileServer
ROUTES = [
    ("/img/cat", codes.OK, IMAGE),
    ("/trickle-headers?every=0.05", codes.IMAGE_FETCH_TIMEOUT, None),  # ~9 s of headers
    ("/trickle-body?n=4000&every=0.01", codes.IMAGE_FETCH_TIMEOUT, None),  # ~40 s of body
    ("/hang", codes.IMAGE_FETCH_TIMEOUT, None),
    ("/redirect?to=/img/cat", codes.OK, IMAGE),  # the server closes the kept-alive connection
    (redirects(3), codes.OK, IMAGE),  # max_redirects hops
    (redirects(4), codes.IMAGE_FETCH_ERROR, None),  # one too many
    ("/redirect?to=" + quote("http://[::1"), codes.IMAGE_URL_INVALID, None),
    ("/redirect?to=" + quote("https://[]/"), codes.IMAGE_URL_INVALID, None),
    ("/redirect?to=" + quote("http://[evil]/a.jpg"), codes.IMAGE_URL_INVALID, None),
    ("/redirect?to=" + quote("http://127.0.0.1:99999/a.jpg"), codes.IMAGE_URL_INVALID, None),
    ("/redirect?to=" + quote("http://127.0.0.1/a\x00.jpg"), codes.IMAGE_URL_INVALID, None),
    ("/redirect?to=" + quote("file:///etc/passwd"), codes.IMAGE_URL_INVALID, None),
    ("/lie-length?claim=5000&send=10", codes.IMAGE_FETCH_ERROR, None),  # closed early: failed
    ("/lie-length?claim=10&send=5000", codes.OK, b"x" * 10),  # HTTP framing: Content-Length
    ("/no-length?n=5000", codes.OK, b"x" * 5000),
    ("/no-length?n=100001", codes.IMAGE_BYTES_TOO_LARGE, None),
    ("/gzip-bomb?n=50000", codes.OK, b"\0" * 50000),  # decoded
    ("/gzip-bomb?n=20000000", codes.IMAGE_BYTES_TOO_LARGE, None),  # 20 KB of gzip, 20 MB decoded
    ("/status/503", codes.IMAGE_FETCH_ERROR, None),
    ("/status/404", codes.IMAGE_NOT_FOUND, None),
    ("/status/302", codes.IMAGE_FETCH_ERROR, None),  # a redirect without Location
    ("/garbage", codes.IMAGE_FETCH_ERROR, None),
]


@pytest.fixture(scope="module")
def hostile():
    with HostileServer({"cat": IMAGE}) as h:
        yield h


def new_threads(before: set[threading.Thread], wait_s: float = 1.0) -> list[threading.Thread]:
    """Threads started since `before` and still alive, aside from the server's own (they linger
    until their client's socket goes) and fetch's resolver pool (bounded, kept for good). Fetch
    threads that are ending get `wait_s` to end."""
    end = time.monotonic() + wait_s
    while True:
        left = [
            t
            for t in threading.enumerate()
            if t not in before
            and t.is_alive()
            and not t.name.endswith(("(_answer)", "(_serve)"))
            and not t.name.startswith("mmsent-dns")
        ]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.02)


def timed(url, cfg: FetchCfg = CFG):
    start = time.monotonic()
    got = fetch(url, cfg)
    return got, time.monotonic() - start


@pytest.mark.parametrize("route, status, data", ROUTES, ids=[r[0][:40] for r in ROUTES])
def test_each_hostile_route_ends_with_its_code_within_the_deadline(hostile, route, status, data):
    got, took = timed(hostile.url(route))
    assert (got.status, got.data, got.detail) == (status, data, None)
    assert took < DEADLINE + SLACK, f"{route}: {took:.2f} s"


def test_transient_failures_are_retried_within_the_deadline(hostile):
    before = hostile.hits["/status/503?again"]
    got, took = timed(hostile.url("/status/503?again"))
    assert got.status == codes.IMAGE_FETCH_ERROR and hostile.hits["/status/503?again"] - before == 2
    # a trickle uses the whole deadline on its first attempt: no second one after it
    got, took = timed(hostile.url("/trickle-body?n=4000&every=0.01&once"))
    assert got.status == codes.IMAGE_FETCH_TIMEOUT and took < DEADLINE + SLACK
    assert hostile.hits["/trickle-body?n=4000&every=0.01&once"] == 1


def test_hostile_fetches_at_once_all_end_by_the_deadline_and_leave_no_thread(hostile):
    fetch(hostile.url("/img/cat"), CFG)  # the watchdog thread (one, for good) is started
    before = set(threading.enumerate())
    urls = [hostile.url(r) for r, _, _ in ROUTES] * 2
    start = time.monotonic()
    got = fetch_many(urls, dataclasses.replace(CFG, concurrency=len(urls)))
    took = time.monotonic() - start
    assert [g.status for g in got] == [s for _, s, _ in ROUTES] * 2
    assert took < DEADLINE + SLACK, f"{took:.2f} s"
    assert new_threads(before) == []


def test_a_fetch_thread_abandoned_by_its_caller_still_ends_at_the_deadline(hostile):
    """What Serve does: the request is answered (or given up) while the fetch runs in a pool
    thread. That thread must end at the deadline, not live on with the trickling server."""
    fetch(hostile.url("/img/cat"), CFG)
    before = set(threading.enumerate())
    results = []
    threads = [
        threading.Thread(target=lambda u=u: results.append(fetch(u, CFG)))
        for u in (hostile.url("/trickle-headers?every=0.05&t"), hostile.url("/hang?t"))
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)  # the caller gives up here
    for t in threads:
        t.join(DEADLINE + SLACK)
    assert not any(t.is_alive() for t in threads)
    assert [r.status for r in results] == [codes.IMAGE_FETCH_TIMEOUT] * 2
    assert new_threads(before) == []


def test_a_kept_alive_connection_the_server_dropped_is_replaced_not_failed():
    """A server may close an idle kept-alive connection just as it is reused (keepalive_timeout):
    that request goes again on a new connection, within the same attempt (retries=0 here)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(5)

    def serve():  # each connection answers its first request only, then drops the next one
        with contextlib.suppress(OSError):
            while True:
                conn = srv.accept()[0]
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ncat")
                conn.recv(65536)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/a.jpg"
    once = FetchCfg(timeout_s=2.0, deadline_s=2.0, retries=0)
    try:
        with connect_attempts() as attempts:
            assert [fetch(url, once) for _ in range(3)] == [(b"cat", codes.OK, None)] * 3
        assert len(attempts) == 3  # each reuse failed, and was replaced at once
    finally:
        srv.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/x",
        "https://[]/",
        "http://[evil]/a.jpg",
        "http://[::1]]/a.jpg",
        "http://[fe80::1%25eth0]/a.jpg",
        "http://127.0.0.1:99999/a.jpg",
        "http://127.0.0.1:-1/a",
        "http://127.0.0.1:0/a",
        "http://127.0.0.1:8x/a",
        "http://127.0.0.1:\u0663/a",
        "http://127.0.0.1/a\x00.jpg",
        "http://127.0.0.1/a\r\nX-Injected: 1",
        "http://127.0.0.1\n/a",
        "http://127.0.0.1/a\tb",
        "http://exa mple/a.jpg",
        "http://a..b/a.jpg",
        "http://a_b%2f/x",
        "http://" + "\u00fc" * 64 + ".example/a.jpg",  # an IDNA label over 63 characters
        "http://xn--\u00fc/a",
        "http://\udcff/a",
        "http://127.0.0.1/" + "a" * MAX_URL_CHARS,
        "http://",
        "http:///a.jpg",
        "http://:80/a",
        "ht!tp://127.0.0.1/",
        "://127.0.0.1/",
        "file://elsewhere/etc/passwd",
        "file:///tmp/a%00.jpg",
        "file://[::1/a",
        "file://[[::1]]/a",
        "s3://",
        "s3:///key",
        "s3://b/",
        "s3://bad bucket/k",
        "s3://b\u00e9/k",
        "s3://[b/k",
        " " * 10_000 + "x" * 100_000,
    ],
)
def test_malformed_urls_are_invalid_without_any_connection(url):
    with connect_attempts() as attempts:
        got, took = timed(url)
    assert got == (None, codes.IMAGE_URL_INVALID, None)
    assert attempts == [] and took < 0.5


def test_non_strings_and_blanks():
    assert fetch(None, CFG).status == fetch(float("nan"), CFG).status == codes.MISSING
    assert fetch(" \t\n", CFG).status == codes.MISSING
    assert (
        fetch(b"http://127.0.0.1/", CFG).status
        == fetch(["x"], CFG).status
        == codes.IMAGE_URL_INVALID
    )


# ---- local paths --------------------------------------------------------------------------------

SMALL = FetchCfg(max_bytes=16, deadline_s=DEADLINE, retries=0)


def test_local_paths_that_are_not_regular_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # no writer: a blocking open would wait forever
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s"))
    cases = [
        tmp_path / "fifo",
        "/dev/zero",
        "/dev/urandom",
        "/dev/null",
        tmp_path,
        tmp_path / "zero.jpg",
        tmp_path / "s",
        f"file://{tmp_path / 'fifo'}",
    ]
    try:
        for path in cases:
            got, took = timed(str(path), SMALL)
            assert got == (None, codes.IMAGE_NOT_A_FILE, None), path
            assert took < 0.5, path
    finally:
        sock.close()


def test_the_byte_cap_holds_while_reading_whatever_st_size_says(tmp_path):
    assert os.stat("/proc/self/environ").st_size == 0  # what the old cap trusted
    with open("/proc/self/environ", "rb") as f:
        assert len(f.read()) > SMALL.max_bytes
    got, took = timed("/proc/self/environ", SMALL)
    assert got == (None, codes.IMAGE_BYTES_TOO_LARGE, None) and took < 0.5
    (tmp_path / "16").write_bytes(b"x" * 16)
    (tmp_path / "17").write_bytes(b"x" * 17)
    assert fetch(str(tmp_path / "16"), SMALL) == (b"x" * 16, codes.OK, None)
    assert fetch(f"file://{tmp_path / '16'}", SMALL) == (b"x" * 16, codes.OK, None)
    assert fetch(str(tmp_path / "17"), SMALL) == (None, codes.IMAGE_BYTES_TOO_LARGE, None)


def test_missing_and_unreadable_paths(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    assert fetch(str(tmp_path / "nope.jpg"), SMALL).status == codes.IMAGE_NOT_FOUND
    assert fetch(str(tmp_path / "f" / "x.jpg"), SMALL).status == codes.IMAGE_NOT_FOUND
    assert fetch("/" + "a" * 5000, SMALL).status == codes.IMAGE_URL_INVALID  # name too long
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert fetch(str(tmp_path / "loop"), SMALL).status == codes.IMAGE_FETCH_ERROR


# ---- a hostile S3 endpoint ----------------------------------------------------------------------


@pytest.fixture()
def s3_endpoint(monkeypatch):
    """Point boto3 at a server of ours: `mode` "hang" (accepts, never answers) or "trickle"
    (an S3-like 200, then the body a byte at a time)."""
    servers = []

    def start(mode: str) -> None:
        srv = socket.create_server(("127.0.0.1", 0))
        srv.settimeout(5)
        servers.append(srv)

        def answer():
            with srv.accept()[0] as conn:
                conn.recv(65536)
                if mode == "trickle":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n")
                    for _ in range(4000):
                        conn.sendall(b"x")
                        time.sleep(0.01)
                else:
                    time.sleep(4)

        threading.Thread(target=lambda: _quiet(answer), daemon=True).start()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{srv.getsockname()[1]}")
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(k, "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    yield start
    for srv in servers:
        srv.close()


def _quiet(fn):
    with contextlib.suppress(OSError):  # the client gave up: fine
        fn()


@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_s3_reads_are_bounded_by_the_deadline(s3_endpoint, mode):
    s3_endpoint(mode)
    cfg = FetchCfg(timeout_s=5.0, deadline_s=DEADLINE, retries=0)
    got, took = timed("s3://bucket/key.jpg", cfg)
    assert got == (None, codes.IMAGE_FETCH_TIMEOUT, None)
    assert took < DEADLINE + SLACK, f"{took:.2f} s"


# ---- TLS: the name is checked (SNI, certificate) on a connection made to the resolved address --


def tls_certificates(folder) -> tuple[str, str, str]:
    """PEM files of a test CA and of a certificate for "localhost" that it signed."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(name, public, signer, issuer, ca: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        )
        if ca:
            b = b.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        return b.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    paths = [str(folder / n) for n in ("ca.pem", "cert.pem", "key.pem")]
    with open(paths[0], "wb") as f:
        f.write(cert("mmsent test CA", ca_key.public_key(), ca_key, "mmsent test CA", True))
    with open(paths[1], "wb") as f:
        f.write(cert("localhost", key.public_key(), ca_key, "mmsent test CA", False))
    with open(paths[2], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return tuple(paths)


@pytest.fixture()
def tls_server(tmp_path, monkeypatch):
    """An HTTPS server on 127.0.0.1 with a certificate for "localhost" from a CA that the test
    process trusts (SSL_CERT_FILE): /img answers, /trickle sends its headers a byte at a time."""
    import ssl

    ca, cert, key = tls_certificates(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def answer(conn):
        with (
            contextlib.suppress(OSError, IndexError),
            ctx.wrap_socket(conn, server_side=True) as tls,
        ):
            tls.settimeout(10)
            path = tls.recv(65536).split(b" ")[1]
            reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            for i in range(len(reply)) if path == b"/trickle" else ():
                if stop.wait(0.05):
                    return
                tls.sendall(reply[i : i + 1])
            tls.sendall(reply if path != b"/trickle" else b"")

    def serve():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = srv.accept()
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()


def test_https_checks_the_name_on_the_connection_to_the_resolved_address(tls_server):
    port = tls_server
    with connect_attempts() as attempts:
        assert fetch(f"https://localhost:{port}/img", CFG) == (b"hello", codes.OK, None)
        # the certificate is for "localhost", not for the address dialled: refused, not retried
        assert fetch(f"https://127.0.0.1:{port}/img", CFG) == (None, codes.IMAGE_FETCH_ERROR, None)
    assert {host for host, _ in attempts} == {"127.0.0.1"}  # the name was resolved first
    assert len(attempts) == 2


def test_a_tls_server_that_trickles_its_headers_ends_at_the_deadline(tls_server):
    got, took = timed(f"https://localhost:{tls_server}/trickle")
    assert got == (None, codes.IMAGE_FETCH_TIMEOUT, None)
    assert DEADLINE - 0.1 < took < DEADLINE + SLACK, f"{took:.2f} s"
