"""The fetcher's SSRF guard and limits (mmsent.io.fetch with block_private_networks), against local
servers that record hits. Refusal must come before any connection: the test process's network
guard (tests/netguard) logs every connect() attempt and refuses any off loopback, so no packet to
10.x or 169.254.x can leave even if the guard regressed, and the log proves none was tried."""

from __future__ import annotations

import dataclasses

import pytest
from serve_helpers import WebServer, connect_attempts

from mmsent import codes
from mmsent.config import ServeFetchCfg
from mmsent.io.fetch import fetch, is_public_address


@pytest.fixture(scope="module")
def servers():
    target = WebServer("127.0.0.1", {"a.jpg": b"image bytes"})  # what an attacker wants to reach
    allowed = WebServer("127.0.0.2", {"a.jpg": b"image bytes"})  # an allow-listed image host
    yield target, allowed
    target.close()
    allowed.close()


def cfg(**kw) -> ServeFetchCfg:
    base = ServeFetchCfg(timeout_s=2.0, retries=0, allow_networks=["127.0.0.2/32"])
    return dataclasses.replace(base, **kw)


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.100.100.200",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_private_loopback_link_local_and_metadata_addresses_are_not_public(ip):
    assert not is_public_address(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808"])
def test_global_addresses_are_public(ip):
    assert is_public_address(ip)


def forbidden_urls(target: WebServer) -> list[str]:
    p = target.port
    return [
        f"http://127.0.0.1:{p}/img/a.jpg",
        f"http://localhost:{p}/img/a.jpg",
        f"http://2130706433:{p}/img/a.jpg",
        f"http://0x7f.1:{p}/img/a.jpg",
        f"http://[::1]:{p}/img/a.jpg",
        f"http://[::ffff:127.0.0.1]:{p}/img/a.jpg",
        "http://10.0.0.1/img.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "https://169.254.169.254/",
        "http://[::ffff:169.254.169.254]/",
    ]


def test_forbidden_hosts_are_refused_before_any_connection(servers):
    target, _ = servers
    with connect_attempts() as attempts:
        results = [fetch(url, cfg()) for url in forbidden_urls(target)]
    assert results == [(None, codes.IMAGE_URL_FORBIDDEN, None)] * len(results)
    assert attempts == [] and target.hits == []


def test_redirects_to_forbidden_hosts_are_refused_before_connecting(servers):
    target, allowed = servers
    before = len(allowed.hits)
    urls = [allowed.url(f"/redirect?to={u}") for u in forbidden_urls(target)]
    with connect_attempts() as attempts:
        results = [fetch(url, cfg()) for url in urls]
    assert results == [(None, codes.IMAGE_URL_FORBIDDEN, None)] * len(urls)
    assert target.hits == []
    assert {h for h, _ in attempts} <= {"127.0.0.2"}  # the first hop only
    assert len(allowed.hits) - before == len(urls)
    assert len(attempts) <= 1  # one kept-alive connection served every first hop


def test_allow_listed_host_and_redirects_within_it_are_fetched(servers):
    _, allowed = servers
    hop = allowed.url("/redirect?to=/img/a.jpg")
    assert fetch(allowed.url("/img/a.jpg"), cfg()) == (b"image bytes", codes.OK, None)
    assert fetch(hop, cfg()) == (b"image bytes", codes.OK, None)
    assert fetch(allowed.url("/img/a.jpg"), cfg(allow_networks=[])) == (
        None,
        codes.IMAGE_URL_FORBIDDEN,
        None,
    )


def test_host_header_carries_no_credentials(servers):
    _, allowed = servers
    url = f"http://user:secret@127.0.0.2:{allowed.port}/img/a.jpg"
    assert fetch(url, cfg()) == (b"image bytes", codes.OK, None)
    assert allowed.hits[-1] == ("/img/a.jpg", f"127.0.0.2:{allowed.port}")


@pytest.mark.parametrize(
    "url, status",
    [("file:///etc/passwd", codes.IMAGE_URL_INVALID), ("/etc/passwd", codes.IMAGE_URL_INVALID),
     ("gopher://127.0.0.2/x", codes.IMAGE_URL_INVALID), ("http://127.0.0.2:99999/x", codes.IMAGE_URL_INVALID),
     ("http://127.0.0.2:port/x", codes.IMAGE_URL_INVALID), ("http:///x", codes.IMAGE_URL_INVALID),
     ("s3://bucket/key", codes.IMAGE_URL_INVALID)],
)  # fmt: skip
def test_unsupported_or_malformed_urls_are_refused_without_connecting(url, status):
    with connect_attempts() as attempts:
        assert fetch(url, cfg()) == (None, status, None)
    assert attempts == []


def test_redirect_to_another_scheme_or_too_many_hops_fails(servers):
    _, allowed = servers
    to_file = allowed.url("/redirect?to=file:///etc/passwd")
    assert fetch(to_file, cfg()) == (None, codes.IMAGE_URL_INVALID, None)
    loop = allowed.url("/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/img/a.jpg")
    assert fetch(loop, cfg(max_redirects=1)) == (None, codes.IMAGE_FETCH_ERROR, None)
    assert fetch(loop, cfg(max_redirects=3)) == (b"image bytes", codes.OK, None)


@pytest.mark.parametrize("query", ["n=5000", "n=5000&chunked=1"])
def test_byte_cap_holds_with_and_without_content_length(servers, query):
    _, allowed = servers
    url = allowed.url(f"/big?{query}")
    assert fetch(url, cfg(max_bytes=4096)) == (None, codes.IMAGE_BYTES_TOO_LARGE, None)
    assert fetch(url, cfg(max_bytes=5000)) == (b"x" * 5000, codes.OK, None)


def test_deadline_stops_a_server_that_trickles_bytes(servers):
    _, allowed = servers
    url = allowed.url("/trickle?n=40&every=0.05")  # ~2 s in all, each byte well within timeout_s
    assert fetch(url, cfg(deadline_s=0.5)) == (None, codes.IMAGE_FETCH_TIMEOUT, None)
    assert fetch(url, cfg(deadline_s=None)) == (b"x" * 40, codes.OK, None)
