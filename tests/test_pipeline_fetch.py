"""mmsent.io.fetch as bulk scoring uses it, against real servers on 127.0.0.1: an HTTP server with
404s, slow, flaky, corrupt, zero-byte and HTML responses, a keep-alive server, and moto's S3
server. Hostile hosts and paths: tests/test_fetch_hostile.py."""

from __future__ import annotations

import dataclasses

import boto3
import pytest
from pipeline_support import ImageServer
from serve_helpers import WebServer, connect_attempts

from mmsent import codes
from mmsent.config import FetchCfg, ServeFetchCfg
from mmsent.io.fetch import fetch, fetch_many


@pytest.fixture(scope="module")
def photo():
    from mmsent.sample_data import real_photos

    return dict(real_photos(max_side=128))["chelsea"]


@pytest.fixture()
def server(photo):
    with ImageServer({"chelsea": photo}, slow_s=2.0) as srv:
        yield srv


FAST = FetchCfg(timeout_s=0.5, retries=1, backoff_s=0.01)


def test_http_statuses(server, photo):
    assert fetch(server.url("img/chelsea"), FAST) == (photo, codes.OK, None)
    assert fetch(server.url("404/chelsea"), FAST) == (None, codes.IMAGE_NOT_FOUND, None)
    assert fetch(server.url("slow/chelsea"), FAST) == (None, codes.IMAGE_FETCH_TIMEOUT, None)
    assert server.hits["/slow/chelsea"] == 2  # a timeout is transient: retried once
    assert fetch(server.url("404/x"), FAST)[1] == codes.IMAGE_NOT_FOUND
    assert server.hits["/404/x"] == 1  # a 404 is not retried


def test_retry_after_transient_error(server, photo):
    assert fetch(server.url("flaky/chelsea"), FAST) == (photo, codes.OK, None)
    assert server.hits["/flaky/chelsea"] == 2
    no_retry = FetchCfg(timeout_s=0.5, retries=0)
    assert fetch(server.url("flaky/chelsea?again"), no_retry) == (
        None,
        codes.IMAGE_FETCH_ERROR,
        None,
    )


def test_bytes_that_are_not_images_are_fetched_then_judged_by_preprocessing(server):
    # fetching succeeds; it is the one preprocessing path that names the problem
    from mmsent.config import PreprocessCfg
    from mmsent.preprocess import decode_image

    got = {}
    for route in ("corrupt", "zero", "html", "truncated/chelsea"):
        data, status, _ = fetch(server.url(route), FAST)
        assert status == codes.OK
        got[route] = decode_image(data, 64, PreprocessCfg())[1]
    assert got == {
        "corrupt": codes.IMAGE_DECODE_ERROR,
        "zero": codes.IMAGE_EMPTY,
        "html": codes.NOT_AN_IMAGE,
        "truncated/chelsea": codes.IMAGE_TRUNCATED,
    }


def test_byte_cap(server, photo):
    small = FetchCfg(timeout_s=1.0, retries=0, max_bytes=len(photo) - 1)
    assert fetch(server.url("img/chelsea"), small) == (None, codes.IMAGE_BYTES_TOO_LARGE, None)


def test_fetch_many_keeps_order_and_bounds_concurrency(server, photo):
    urls = [server.url(f"pause/chelsea?{i}") for i in range(9)] + [server.url("404/a"), None]
    data, status, _ = zip(*fetch_many(urls, FetchCfg(timeout_s=2.0, concurrency=3)), strict=True)
    assert list(status) == [codes.OK] * 9 + [codes.IMAGE_NOT_FOUND, codes.MISSING]
    assert list(data[:9]) == [photo] * 9
    assert server.max_in_flight <= 3


def test_connections_to_one_host_are_kept_alive_with_or_without_the_ssrf_guard():
    """Bulk scoring from one CDN: one path for guarded and unguarded fetches, and connections
    pooled per (scheme, address, port): a batch does not pay a connection per image."""
    srv = WebServer("127.0.0.2", {"a.jpg": b"image bytes"})  # HTTP/1.1, keep-alive
    guarded = ServeFetchCfg(timeout_s=2.0, retries=0, allow_networks=["127.0.0.2/32"])
    try:
        for cfg in (FetchCfg(timeout_s=2.0, retries=0), guarded):
            with connect_attempts() as attempts:
                got = fetch_many(
                    [srv.url("/img/a.jpg")] * 12, dataclasses.replace(cfg, concurrency=3)
                )
            assert got == [(b"image bytes", codes.OK, None)] * 12
            assert len(attempts) <= 3  # at most one connection per thread; the guarded run reuses
        assert len(srv.hits) == 24
    finally:
        srv.close()


def test_bad_urls():
    cfg = FetchCfg(schemes=["http", "https", "s3"])
    assert fetch("ftp://127.0.0.1/x.jpg", cfg)[1] == codes.IMAGE_URL_INVALID
    assert fetch("/etc/hostname", cfg)[1] == codes.IMAGE_URL_INVALID  # file: not allowed here
    assert fetch(17, cfg)[1] == codes.IMAGE_URL_INVALID
    assert fetch("  ", cfg)[1] == codes.MISSING


def test_s3(s3_server, photo):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fetch-test")
    s3.put_object(Bucket="fetch-test", Key="a b/cat.jpg", Body=photo)
    assert fetch("s3://fetch-test/a%20b/cat.jpg", FAST) == (photo, codes.OK, None)
    assert fetch("s3://fetch-test/a b/cat.jpg", FAST) == (photo, codes.OK, None)
    assert fetch("s3://fetch-test/nope.jpg", FAST) == (None, codes.IMAGE_NOT_FOUND, None)
    assert fetch("s3://no-such-bucket/cat.jpg", FAST)[1] == codes.IMAGE_NOT_FOUND
    small = FetchCfg(max_bytes=100)
    assert fetch("s3://fetch-test/a b/cat.jpg", small) == (None, codes.IMAGE_BYTES_TOO_LARGE, None)
