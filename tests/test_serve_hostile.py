"""A hostile corpus against the Serve app over real HTTP (`serve.run` on 127.0.0.1, the tiny
checkpoint): whatever a client sends is answered with a 4xx and a stable code, never a 5xx, and
in bounded time. Image URLs point at tests/hostile_http.HostileServer on 127.0.0.1 (trickling
headers, hanging, redirecting to malformed URLs, lying about Content-Length), allow-listed by the
app's fetch config. Also: decoded-pixel and per-request image-byte caps, text requests stay
prompt while big images decode, /healthz floods cost the model about one ping a second, and an
empty token is a start-up error. Without Serve: a post that makes the model raise is a 422.

    flock /tmp/mmsent-ray.lock .venv/bin/python -m pytest -q tests/test_serve_hostile.py
"""

from __future__ import annotations

import base64
import io
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import requests
from hostile_http import HostileServer
from PIL import Image, ImageDraw
from serve_helpers import NETGUARD_DIR, free_port, tiny_checkpoint

from mmsent import codes
from mmsent.config import ServeCfg, ServeFetchCfg
from mmsent.sample_data import real_photos

TOKEN = "hostile-test-token-7c1e"
DEADLINE_S = 2.0  # the fetch deadline of the app (one attempt: retries 0)
SLACK_S = 3.0  # Serve's own time on a loaded 2-core machine


def png(side: int) -> bytes:
    """A `side` x `side` RGB PNG of a few shapes: ~230 KB at 7000, decoding it takes ~0.7 s."""
    im = Image.new("RGB", (side, side), (30, 120, 200))
    draw = ImageDraw.Draw(im)
    for k in range(4):
        box = (k * side // 8, k * side // 9, k * side // 8 + side // 3, k * side // 9 + side // 4)
        draw.ellipse(box, fill=(200, 40 * k, 90))
        draw.line((0, k * side // 6, side, side - k * side // 6), fill=(255, 255, 0), width=20)
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def api(ray_local, tmp_path_factory):
    from ray import serve

    from mmsent.serve.app import compose

    tmp = tmp_path_factory.mktemp("serve-hostile")
    photo = real_photos(max_side=256)[0][1]
    blob = os.urandom(290 * 1024)  # under the per-image cap; 8 of them are over the request's
    hostile = HostileServer({"photo": photo, "blob": blob}).__enter__()
    model_dir = tiny_checkpoint(tmp_path_factory.getbasetemp() / "tiny-model")
    fetch = ServeFetchCfg(
        allow_networks=["127.0.0.1/32"], timeout_s=1.0, deadline_s=DEADLINE_S, retries=0
    )
    cfg = ServeCfg(
        model_dir=model_dir,
        max_posts=8,
        max_body_bytes=4 * 1024 * 1024,
        max_image_bytes=300 * 1024,
        max_request_image_bytes=2 * 1024 * 1024,
        auth_token_env="MMSENT_TEST_TOKEN",
        fetch=fetch,
    )
    log = tmp / "netguard.log"
    log.touch()
    env = {
        "PYTHONPATH": str(NETGUARD_DIR),
        "MMSENT_NETGUARD_LOG": str(log),
        "MMSENT_TEST_TOKEN": TOKEN,
    }
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # a small model queue: a health check that took a slot per call would overflow it
    model = {
        "max_ongoing_requests": 8,
        "max_queued_requests": 8,
        "ray_actor_options": {"num_cpus": 1, "num_gpus": 0.5},
    }
    ingress = {"ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": env}}}
    serve.run(compose(cfg, model, ingress), name="mmsent-hostile", route_prefix="/")
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {TOKEN}"
    yield SimpleNamespace(
        url=f"http://127.0.0.1:{port}",
        http=http,
        cfg=cfg,
        photo=photo,
        hostile=hostile,
        model_dir=model_dir,
        env=env,
    )
    serve.shutdown()
    hostile.__exit__()


def send(api, timeout: float = 60, **kw) -> requests.Response:
    return api.http.post(f"{api.url}/v1/sentiment", timeout=timeout, **kw)


def answer(r: requests.Response) -> tuple[int, str, list[str]]:
    error = r.json()["error"]
    return r.status_code, error["code"], [d["code"] for d in error["details"]]


def multipart(parts: list[bytes], boundary: str = "xyz") -> dict:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return {"data": body + b"--" + boundary.encode() + b"--\r\n", "headers": headers}


def _corpus(api) -> list[tuple[str, dict, int, str, list[str]]]:
    h, photo = api.hostile, b64(api.photo)
    deep = b'{"text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    form = b'Content-Disposition: form-data; name="%s"\r\n\r\n%s'
    upload = b'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    INVALID, MALFORMED = codes.INVALID_POSTS, codes.MALFORMED_REQUEST
    return [
        # malformed URLs, and a redirect to one
        ("url [::1", {"json": {"image_url": "http://[::1/x"}}, 422, INVALID, [codes.IMAGE_URL_INVALID]),
        ("url []", {"json": {"image_url": "https://[]/"}}, 422, INVALID, [codes.IMAGE_URL_INVALID]),
        ("url [evil]", {"json": {"text": "hi", "image_url": "http://[evil]/a.jpg"}}, 422, INVALID, [codes.IMAGE_URL_INVALID]),
        ("redirect to [::1", {"json": {"image_url": h.url("/redirect?to=http://[::1")}}, 422, INVALID, [codes.IMAGE_URL_INVALID]),
        ("url in a list", {"json": [{"text": "fine"}, {"image_url": "http://[::1/x"}]}, 422, INVALID, [codes.IMAGE_URL_INVALID]),
        # text with no visible character
        ("zero-width space", {"json": {"text": "\u200b"}}, 422, INVALID, [codes.NO_USABLE_INPUT]),
        ("control byte", {"json": {"text": "\x01"}}, 422, INVALID, [codes.NO_USABLE_INPUT]),
        ("bom", {"json": {"text": "\ufeff"}}, 422, INVALID, [codes.NO_USABLE_INPUT]),
        ("marks and spaces", {"json": {"text": "\u200e\u202e \u2060\t"}}, 422, INVALID, [codes.NO_USABLE_INPUT]),
        ("escaped NULs", {"json": {"text": "\u0000\u0000"}}, 422, INVALID, [codes.NO_USABLE_INPUT]),
        # nesting, numbers, types, NUL bytes
        ("deep nesting in a post", {"data": deep}, 422, MALFORMED, []),
        ("nesting under the limit", {"data": b'{"text": ' + b"[" * 500 + b"]" * 500 + b"}"}, 422, MALFORMED, [MALFORMED]),
        ("huge integer id", {"data": b'{"text": "hi", "id": 1' + b"0" * 5000 + b"}"}, 422, MALFORMED, []),
        ("infinite id", {"data": b'{"text": "hi", "id": 1e999}'}, 422, MALFORMED, [MALFORMED, MALFORMED]),
        ("NaN text", {"data": b'{"text": NaN}'}, 422, MALFORMED, [MALFORMED]),
        ("number as image", {"json": {"image_base64": 5}}, 422, MALFORMED, [MALFORMED]),
        ("object as url", {"json": {"image_url": {"a": 1}}}, 422, MALFORMED, [MALFORMED]),
        ("list of text", {"json": {"text": ["a"]}}, 422, MALFORMED, [MALFORMED]),
        ("a string", {"json": "hello"}, 422, MALFORMED, []),
        ("null", {"data": b"null"}, 422, MALFORMED, []),
        ("a post and a number", {"json": [{"text": "a"}, 5]}, 422, MALFORMED, [MALFORMED]),
        ("lone surrogate id", {"data": b'{"text": "hi", "id": "\\ud800"}'}, 422, MALFORMED, [MALFORMED]),
        ("lone surrogate key", {"data": b'{"text": "hi", "\\udfff": 1}'}, 422, MALFORMED, [MALFORMED]),
        ("raw NUL in a string", {"data": b'{"text": "a\x00b"}'}, 422, MALFORMED, []),
        ("NUL bytes", {"data": b"\x00" * 64}, 422, MALFORMED, []),
        ("UTF-16 garbage", {"data": "{\"text\": \"hi\"}".encode("utf-16")[:-1]}, 422, MALFORMED, []),
        ("NUL in base64", {"json": {"image_base64": "aGk\u0000="}}, 422, INVALID, [codes.IMAGE_BASE64_INVALID]),
        # multipart with garbage
        ("multipart garbage", {"data": os.urandom(2000), "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}}, 422, MALFORMED, []),
        ("multipart no boundary", {"data": b"--\r\n\r\n", "headers": {"Content-Type": "multipart/form-data"}}, 422, MALFORMED, []),
        ("multipart two files", multipart([upload + api.photo, upload + api.photo]), 422, MALFORMED, []),
        ("multipart many fields", multipart([form % (b"f%d" % i, b"x") for i in range(12)]), 422, MALFORMED, []),
        ("multipart image as text", multipart([form % (b"image", b"not a file")]), 422, MALFORMED, []),
        ("multipart headless part", multipart([b"\r\n\r\nno headers at all", form % (b"text", b"hi")]), 422, MALFORMED, []),
        ("multipart unknown field", multipart([form % (b"\xff\xfe", b"x"), form % (b"text", b"hi")]), 422, MALFORMED, [MALFORMED]),
        ("multipart garbage upload", multipart([upload + os.urandom(3000)]), 422, INVALID, [codes.NOT_AN_IMAGE]),
        ("multipart invisible text", multipart([form % (b"text", "\u200b".encode())]), 422, INVALID, [codes.NO_USABLE_INPUT]),
        # images over a cap: pixels decoded, bytes of the request (base64 and fetched)
        ("too many image bytes", {"json": [{"image_base64": b64(os.urandom(290 * 1024))} for _ in range(8)]}, 413, codes.REQUEST_IMAGES_TOO_LARGE, []),
        ("too many fetched bytes", {"json": [{"image_url": h.url("/img/blob")} for _ in range(8)]}, 413, codes.REQUEST_IMAGES_TOO_LARGE, []),
        ("fetched and given bytes", {"json": [{"image_base64": b64(os.urandom(290 * 1024))}] * 6 + [{"image_url": h.url("/img/blob")}] * 2}, 413, codes.REQUEST_IMAGES_TOO_LARGE, []),
        ("photo and garbage", {"json": [{"image_base64": photo}, {"image_base64": b64(b"\x89PNG\r\n\x1a\n" + os.urandom(500))}]}, 422, INVALID, [codes.IMAGE_DECODE_ERROR]),
    ]  # fmt: skip


def test_hostile_corpus_gets_a_4xx_with_its_code(api):
    failures = []
    for name, kw, status, code, details in _corpus(api):
        r = send(api, **kw)
        got = (r.status_code, r.headers["content-type"])
        if got != (status, "application/json") or answer(r)[1:] != (code, details):
            failures.append((name, r.status_code, r.text[:300]))
        assert "Traceback" not in r.text, name
    assert failures == []


def test_invisible_text_next_to_an_image_is_empty_text_and_the_image_is_scored(api):
    for text in ("\u200b", "\x01", "\ufeff"):
        r = send(api, json={"text": text, "image_base64": b64(api.photo)})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["status"] == {
            "text": codes.EMPTY_TEXT,
            "image": codes.OK,
            "audio": codes.MISSING,
        }
        assert got["modalities_used"] == ["image"]


def test_odd_but_valid_values_are_scored(api):
    big = 123456789012345678901234567890
    r = send(
        api,
        json=[{"text": "ok\u0000 fine", "id": big}, {"text": "x" * 20_000, "id": "\u00e9\u0000"}],
    )
    assert r.status_code == 200, r.text
    assert [p["id"] for p in r.json()["predictions"]] == [big, "\u00e9\u0000"]


@pytest.mark.parametrize(
    "path, code",
    [("/trickle-headers?every=0.2", codes.IMAGE_FETCH_TIMEOUT),  # each byte well within timeout_s
     ("/trickle-body?n=4000&every=0.01", codes.IMAGE_FETCH_TIMEOUT),
     ("/hang", codes.IMAGE_FETCH_TIMEOUT),
     ("/redirect?to=http://[::1", codes.IMAGE_URL_INVALID),
     ("/redirect?to=https://[]/", codes.IMAGE_URL_INVALID),
     ("/lie-length?claim=5000&send=10", codes.IMAGE_FETCH_ERROR),  # the body ends early
     ("/lie-length?claim=10&send=5000", codes.NOT_AN_IMAGE),  # 10 bytes read, as declared
     ("/garbage", codes.IMAGE_FETCH_ERROR)],
)  # fmt: skip
def test_hostile_image_hosts_are_answered_within_the_fetch_deadline(api, path, code):
    start = time.monotonic()
    r = send(api, json={"text": "hi", "image_url": api.hostile.url(path)})
    took = time.monotonic() - start
    assert answer(r) == (422, codes.INVALID_POSTS, [code]), r.text
    assert took < DEADLINE_S + SLACK_S, f"{path}: answered after {took:.1f} s"


def test_eight_huge_pngs_are_refused_before_decoding(api):
    """8 PNGs of 7000x7000 (49 Mpx each, ~230 KB): ~5 s of decoding under the checkpoint's own
    50 Mpx cap; Serve's 16 Mpx cap refuses each from its header."""
    data = b64(png(7000))
    send(api, json={"text": "warm-up"})
    start = time.monotonic()
    r = send(api, json=[{"text": "big", "image_base64": data}] * 8)
    took = time.monotonic() - start
    assert answer(r) == (413, codes.INVALID_POSTS, [codes.IMAGE_TOO_LARGE] * 8), r.text
    print(
        f"8 PNGs of 7000x7000 ({len(data) * 3 // 4 // 1000} KB each): 413 in {took * 1000:.0f} ms"
    )
    assert took < 1.0


def test_text_requests_stay_prompt_while_big_images_decode(api):
    """Two requests of 8 allowed 16 Mpx PNGs decode (~4 s of CPU on 2 decode slots) while
    text-only requests go on: these never wait for a decode."""
    heavy = [{"text": "big", "image_base64": b64(png(4000))}] * 8

    def timed(payload) -> tuple[float, int]:
        start = time.monotonic()
        status = send(api, json=payload).status_code
        return time.monotonic() - start, status

    idle = [timed({"text": f"idle {i}"})[0] for i in range(5)]
    with ThreadPoolExecutor(2) as pool:
        big = [pool.submit(timed, heavy) for _ in range(2)]
        time.sleep(0.3)  # both are decoding now
        busy = []
        while not all(f.done() for f in big) or len(busy) < 3:
            busy.append(timed({"text": f"text during decoding {len(busy)}"}))
        big = [f.result() for f in big]
    during = [t for t, _ in busy]
    print(
        f"text-only latency idle {statistics.median(idle) * 1000:.0f} ms, during decoding "
        f"{[round(t * 1000) for t in during]} ms; the heavy requests took {[round(t, 1) for t, _ in big]} s"
    )
    assert [s for _, s in big + busy] == [200] * (len(big) + len(busy))
    assert min(t for t, _ in big) > 1.0  # the text requests really ran during decoding
    assert statistics.median(during) < 0.5 and max(during) < 2.0


def test_a_healthz_flood_costs_the_model_a_few_pings_and_no_503(api):
    def replica() -> dict:
        return api.http.get(f"{api.url}/v1/model", timeout=30).json()["batching"]["replica"]

    before, stop, scored = replica()["pings"], threading.Event(), []

    def score() -> None:
        while not stop.is_set():
            scored.append(send(api, json=[{"text": "still scoring"}] * 2).status_code)

    scorers = [threading.Thread(target=score) for _ in range(3)]
    for t in scorers:
        t.start()
    start = time.monotonic()
    with ThreadPoolExecutor(32) as pool:  # unauthenticated, as a load balancer or an attacker
        health = list(
            pool.map(
                lambda _: requests.get(f"{api.url}/healthz", timeout=30).status_code, range(300)
            )
        )
    took = time.monotonic() - start
    stop.set()
    for t in scorers:
        t.join()
    pings = replica()["pings"] - before
    print(f"300 /healthz in {took:.1f} s: {pings} model pings; {len(scored)} scoring requests")
    assert health == [200] * 300
    assert scored and set(scored) == {200}, sorted(set(scored))
    assert pings <= took / api.cfg.health_cache_s + 3


def test_an_empty_token_is_a_start_up_error(api):
    from ray import serve

    from mmsent.serve.app import compose

    env = {**api.env, "MMSENT_EMPTY_TOKEN": " \n"}
    cfg = ServeCfg(model_dir=api.model_dir, auth_token_env="MMSENT_EMPTY_TOKEN")
    ingress = {
        "max_constructor_retry_count": 1,
        "ray_actor_options": {"num_cpus": 0, "runtime_env": {"env_vars": env}},
    }
    model = {"ray_actor_options": {"num_cpus": 0, "num_gpus": 0}}
    with pytest.raises(RuntimeError, match="Deploying application empty-token failed"):
        serve.run(compose(cfg, model, ingress), name="empty-token", route_prefix="/empty")
    why = serve.status().applications["empty-token"].deployments["SentimentAPI"].message
    assert "$MMSENT_EMPTY_TOKEN is set but empty" in why, why
    serve.delete("empty-token")
    assert requests.get(f"{api.url}/empty/healthz", timeout=30).status_code == 404  # never served


def test_auth_token_from_the_environment(monkeypatch):
    from mmsent.serve.auth import auth_token

    monkeypatch.delenv("MMSENT_X_TOKEN", raising=False)
    assert auth_token("MMSENT_X_TOKEN") is None and auth_token(None) is None  # auth off
    monkeypatch.setenv("MMSENT_X_TOKEN", "s3cret\n")  # a Secret's trailing newline
    assert auth_token("MMSENT_X_TOKEN") == b"s3cret"
    for blank in ("", " ", "\n\t"):
        monkeypatch.setenv("MMSENT_X_TOKEN", blank)
        with pytest.raises(ValueError, match="set but empty"):
            auth_token("MMSENT_X_TOKEN")


def test_a_post_the_model_fails_on_is_a_422_naming_it(tmp_path_factory):
    """The real model on a real batch whose second post breaks it (token ids past the
    vocabulary: what a corrupt row would do): that post alone gets internal_error, and the
    ingress answers 422 invalid_posts naming it."""
    from mmsent.predictor import ModelRunner
    from mmsent.preprocess import Preprocessor
    from mmsent.serve.errors import RequestError
    from mmsent.serve.scoring import check_scored

    model_dir = tiny_checkpoint(tmp_path_factory.getbasetemp() / "tiny-model")
    runner = ModelRunner(model_dir)
    batch = Preprocessor(runner.cfg)(["good", "bad", "fine"])
    batch["input_ids"][1] = np.iinfo(np.int32).max
    columns = runner(batch)
    assert list(columns["error"]) == [None, codes.INTERNAL_ERROR, None]
    check_scored({k: v[[0, 2]] for k, v in columns.items()}, single=False)  # the others: fine
    with pytest.raises(RequestError) as e:
        check_scored(columns, single=False)
    assert (e.value.status, e.value.code) == (422, codes.INVALID_POSTS)
    assert [(d["index"], d["code"]) for d in e.value.details] == [(1, codes.INTERNAL_ERROR)]
    assert "IndexError" in e.value.details[0]["message"]
