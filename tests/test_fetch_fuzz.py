"""Property tests of mmsent.io.fetch on random URL strings: from a grammar (schemes, loopback hosts
in many spellings, brackets, ports, userinfo, paths of a hostile server on 127.0.0.1, redirects to
random targets, control characters, unicode) and plain st.text(). For every input: no exception
reaches fetch's last-resort boundary (never internal_error), the code is one of fetch's, and a
re-run gives the same code; fetch_many gives exactly one result per input, in order.

Traffic stays on loopback and no DNS query is sent: the fuzz runs under the test network guard
(tests/netguard: it refuses getaddrinfo for any name but "localhost" and connects off loopback),
and every connect attempted is checked to be to loopback; with the SSRF guard on, none at all.

    HYPOTHESIS_PROFILE=long pytest tests/test_fetch_fuzz.py   # many more cases, random seeds
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from urllib.parse import quote, unquote

import pytest
from hostile_http import HostileServer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from serve_helpers import connect_attempts, free_port, netguard

from mmsent import codes
from mmsent.config import FetchCfg
from mmsent.io.fetch import fetch, fetch_many

settings.register_profile("long", max_examples=5000, deadline=None)
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def fuzz(n: int):
    return settings(
        max_examples=n * 20 if LONG else n,
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# a short deadline and no retries: a case that reaches a listening loopback port cannot slow the run
CFG = FetchCfg(
    timeout_s=0.5,
    deadline_s=0.5,
    retries=0,
    max_redirects=2,
    max_bytes=4096,
    schemes=["http", "https", "s3", "file"],
)
GUARDED = dataclasses.replace(CFG, block_private_networks=True, schemes=["http", "https"])
CODES = {
    codes.OK,
    codes.MISSING,
    codes.IMAGE_NOT_FOUND,
    codes.IMAGE_FETCH_TIMEOUT,
    codes.IMAGE_FETCH_ERROR,
    codes.IMAGE_URL_INVALID,
    codes.IMAGE_URL_FORBIDDEN,
    codes.IMAGE_NOT_A_FILE,
    codes.IMAGE_BYTES_TOO_LARGE,
}

LOOPBACK = ["127.0.0.1", "127.1", "127.0.0.255", "0x7f.1", "0x7f000001", "2130706433",
            "0177.0.0.1", "localhost", "LocalHost", "localhost.", "[::1]", "[0:0:0:0:0:0:0:1]",
            "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54"]  # fmt: skip
GARBAGE = ["", "[", "]", "[]", "[evil]", "[::1", "::1]", "[::1]]", "[[::1]]", "[fe80::1%25lo]",
           "[v1.x]", "a..b", "-", "_", "exa mple", "\u2603", "xn--", "ex%41mple", "example.com",
           "metadata.google.internal", "\u00fc" * 70, "a" * 300, "127.0.0.1\x00.evil",
           "127.0.0.1%0d%0aX: y", "local\u200bhost"]  # fmt: skip
PATHS = ["", "/", "/img/cat", "/a.jpg", "/status/404", "/status/503", "/status/302",
         "/garbage", "/no-length?n=10", "/no-length?n=5000", "/lie-length?claim=9&send=3",
         "/lie-length?claim=3&send=9", "/%2e%2e/%00", "/\u00e9t\u00e9.jpg", "/a b.jpg"]  # fmt: skip
TAILS = ["", "", "?a=1", "#frag", "%zz", "%00", "\r\nX-Injected: 1", "\n", "\x00", "\t", " x",
         "\u2028", "\udcff"]  # fmt: skip


def url_grammar(port: int, closed: int, depth: int = 1) -> st.SearchStrategy[str]:
    """Well-formed URLs of the hostile server (any loopback spelling) half the time, else any
    mix of the parts below."""
    paths = st.sampled_from(PATHS) | st.text(max_size=20).map(lambda s: "/" + s)
    if depth:  # a redirect to a grammar URL or any text, sent as Location unchecked (latin-1)
        targets = (url_grammar(port, closed, depth - 1) | st.text(max_size=30)).map(
            lambda t: t.encode("latin-1", "replace").decode("latin-1").translate(NO_CRLF)
        )
        paths = paths | targets.map(lambda t: "/redirect?to=" + quote(t, safe=""))
    tails = st.sampled_from(TAILS) | st.text(max_size=6)
    good = st.builds(
        lambda *p: "".join(p),
        st.sampled_from(["http://"] * 6 + ["HTTP://", "https://"]),  # https: a TLS hang
        st.sampled_from(LOOPBACK),
        st.sampled_from([f":{port}", f":{port}", f":{port}", f":{closed}", ""]),
        st.sampled_from(["/img/cat", "/img/cat"]) | paths,
        st.sampled_from(["", "", "", "", "?a=1", "#frag"]) | tails,
    )
    mixed = st.builds(
        lambda *p: "".join(p),
        st.sampled_from(["http", "http", "https", "HTTP", "s3", "file", "ftp", "", "ht tp"]),
        st.sampled_from(["://", "://", "://", ":/", ":", "//", ":///"]),
        st.sampled_from(["", "", "", "u@", "u:p@", "@", "a@b@"]),
        st.sampled_from(LOOPBACK) | st.sampled_from(GARBAGE) | st.text(max_size=12),
        st.sampled_from(
            [
                "",
                "",
                f":{port}",
                f":{port}",
                f":{closed}",
                ":",
                ":0",
                ":99999",
                ":-1",
                ":8x",
                ":\u0663",
                ":443",
                ":65536",
            ]
        ),
        paths,
        tails,
    )
    return good | mixed


NO_CRLF = str.maketrans("", "", "\r\n")


def random_urls(port: int, closed: int) -> st.SearchStrategy:
    specials = st.sampled_from([None, "", " ", float("nan"), 17, b"http://127.0.0.1/"])
    return url_grammar(port, closed) | st.text() | specials


_AFTER_SLASHES = re.compile(r"//([^/?#]*)")


def _off_loopback_ip(authority: str) -> bool:
    hostport = authority.rpartition("@")[2]
    host = hostport[1:].partition("]")[0] if hostport.startswith("[") else hostport.split(":")[0]
    try:  # what fetch dials without a lookup; any other host goes through getaddrinfo
        return not netguard.is_loopback(str(ipaddress.ip_address(host)))
    except ValueError:
        return False


def only_loopback_literals(url) -> bool:
    """No IP literal off loopback anywhere in `url` (its redirect targets decoded): the grammar
    never asks to reach one (the guard would refuse it, but the attempt would be logged)."""
    text = unquote(unquote(url)) if isinstance(url, str) else ""
    return not any(_off_loopback_ip(h) for h in _AFTER_SLASHES.findall(text))


@pytest.fixture(scope="module")
def env():
    """A hostile server, a closed port, and an S3 endpoint on a closed loopback port."""
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        )
    }
    closed = free_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    with HostileServer({"cat": b"cat bytes"}) as h:
        yield h.port, closed
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def assert_loopback_only(attempts) -> None:
    assert all(netguard.is_loopback(host) for host, _ in attempts), attempts


@fuzz(300)
@given(data=st.data())
def test_fetch_on_random_urls_never_raises_and_gives_one_stable_code(env, data):
    url = data.draw(random_urls(*env), label="url")
    assume(only_loopback_literals(url))
    with connect_attempts() as attempts:
        first, again = fetch(url, CFG), fetch(url, CFG)
    assert first.status in CODES, (first, url)
    assert again.status == first.status, url
    assert (first.data is not None) == (first.status == codes.OK)
    assert_loopback_only(attempts)
    with connect_attempts() as attempts:  # the SSRF guard: every host here is loopback or unknown
        guarded = fetch(url, GUARDED)
    assert guarded.status in CODES - {codes.OK}, (guarded, url)
    assert attempts == []


@fuzz(40)
@given(data=st.data())
def test_fetch_many_gives_one_result_per_input_in_order(env, data):
    urls = data.draw(st.lists(random_urls(*env), max_size=8), label="urls")
    assume(all(only_loopback_literals(u) for u in urls))
    with connect_attempts() as attempts:
        many = fetch_many(urls, dataclasses.replace(CFG, concurrency=4))
        one_by_one = [fetch(u, CFG) for u in urls]
    assert len(many) == len(urls)
    assert [r.status for r in many] == [r.status for r in one_by_one]
    assert all(r.status in CODES for r in many)
    assert_loopback_only(attempts)


def test_the_network_guard_refuses_dns_lookups_while_armed():
    """What keeps the fuzz off the network: names other than "localhost" are never looked up."""
    with connect_attempts() as attempts:
        for host in ("localhost", "127.0.0.1", "127.1", "0x7f.1", "2130706433", "::1"):
            socket.getaddrinfo(host, 80)
        for host in ("example.com", "images.example", "10.0.0.1", "0.0.0.0", "local\u200bhost"):
            with pytest.raises(socket.gaierror, match="netguard"):
                socket.getaddrinfo(host, 80)
        assert fetch("http://images.example/a.jpg", CFG).status == codes.IMAGE_FETCH_ERROR
    assert attempts == []
    socket.getaddrinfo("127.0.0.1", 80)  # disarmed: as before
