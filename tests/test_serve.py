"""The HTTP API over real HTTP: `serve.run` of the app on 127.0.0.1 (a free port), a tiny checkpoint,
local image servers on 127.0.0.1 (an SSRF target that records hits) and 127.0.0.2 (allow-listed),
and the moto S3 server. The ingress replica runs under tests/netguard, which logs its connect()
attempts and refuses any off loopback."""

from __future__ import annotations

import base64
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests
from serve_helpers import NETGUARD_DIR, WebServer, free_port, netguard, tiny_checkpoint

from mmsent import codes
from mmsent.config import ServeCfg, ServeFetchCfg
from mmsent.sample_data import real_photos

TOKEN = "test-token-3f9a"


@pytest.fixture(scope="module")
def api(ray_local, s3_server, tmp_path_factory):
    import boto3
    from ray import serve

    from mmsent.serve.app import compose

    tmp = tmp_path_factory.mktemp("serve")
    photos = dict(real_photos(max_side=256)[:3])
    names = list(photos)
    target, images = WebServer("127.0.0.1"), WebServer("127.0.0.2", photos)
    boto3.client("s3").create_bucket(Bucket="mmsent-serve-test")
    boto3.client("s3").put_object(Bucket="mmsent-serve-test", Key="p.jpg", Body=photos[names[0]])
    model_dir = tiny_checkpoint(tmp_path_factory.getbasetemp() / "tiny-model")
    cfg = ServeCfg(
        model_dir=model_dir,
        # ONNX Runtime behind Serve (the CPU preset's runtime), fp32: its scores agree with the
        # torch Predictor's to 1e-4, which the tests below check post by post
        runtime="onnx",
        precision="fp32",
        max_posts=4,
        max_body_bytes=512 * 1024,
        max_image_bytes=200 * 1024,
        auth_token_env="MMSENT_TEST_TOKEN",
        fetch=ServeFetchCfg(
            schemes=["http", "https", "s3"],
            allow_networks=["127.0.0.2/32"],
            timeout_s=2.0,
            retries=0,
        ),
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
    app = compose(
        cfg,
        model_options={"ray_actor_options": {"num_cpus": 1, "num_gpus": 0.5}},
        api_options={"ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": env}}},
    )
    serve.run(app, name="mmsent-test", route_prefix="/")
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {TOKEN}"
    yield SimpleNamespace(
        url=f"http://127.0.0.1:{port}",
        http=http,
        cfg=cfg,
        photos=photos,
        names=names,
        target=target,
        images=images,
        log=log,
        tmp=tmp,
    )
    serve.shutdown()
    target.close()
    images.close()


def post(api, payload=None, **kw) -> requests.Response:
    kw.setdefault("timeout", 60)
    return api.http.post(f"{api.url}/v1/sentiment", json=payload, **kw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_same(got: dict, want: dict, tol: float = 1e-4) -> None:
    """Predictions agree: same statuses and modalities, scores within `tol` (batched vs one)."""
    for key in ("modalities_used", "status", "error", "model"):
        assert got[key] == want[key], key
    for key in ("scores", "fusion_weights"):
        for k, v in (want[key] or {}).items():
            assert (v is None and got[key][k] is None) or math.isclose(got[key][k], v, abs_tol=tol)
    top = sorted(want["scores"].values())
    if top[-1] - top[-2] > 10 * tol:  # a near tie may flip between batched and single runs
        assert got["label"] == want["label"]


def cli_predict(capsys, *args) -> dict:
    from mmsent.cli import main

    main(["predict", *args])
    return json.loads(capsys.readouterr().out)


def test_health_model_card_and_docs(api):
    health = requests.get(f"{api.url}/healthz", timeout=30)  # open: no token needed
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "model": {"name": "tiny", "version": "0.1.0"}}
    card = api.http.get(f"{api.url}/v1/model", timeout=30).json()
    assert card["labels"] == ["negative", "neutral", "positive"]
    assert card["modalities"] == ["text", "image"]
    assert card["batching"]["max_batch_size"] == 32 and card["limits"]["max_posts"] == 4
    replica = card["batching"]["replica"]
    assert (replica["runtime"], replica["precision"]) == ("onnx", "fp32")
    doc = requests.get(f"{api.url}/openapi.json", timeout=30).json()
    body = doc["paths"]["/v1/sentiment"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert requests.get(f"{api.url}/docs", timeout=30).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer no"}, {"Authorization": TOKEN}])
def test_bearer_token_is_required(api, headers):
    for r in (
        requests.post(f"{api.url}/v1/sentiment", json={"text": "hi"}, headers=headers, timeout=30),
        requests.get(f"{api.url}/v1/model", headers=headers, timeout=30),
    ):
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == codes.UNAUTHORIZED


def test_single_posts_agree_with_mmsent_predict(api, capsys):
    name = api.names[0]
    path = api.tmp / f"{name}.jpg"
    path.write_bytes(api.photos[name])
    text = "What a wonderful day at the beach!"
    model = ["--model", api.cfg.model_dir]
    want_text = cli_predict(capsys, "--text", text, *model)
    want_both = cli_predict(capsys, "--text", text, "--image", str(path), *model)
    assert want_both["modalities_used"] == ["text", "image"]
    assert_same(post(api, {"text": text}).json(), want_text)
    with path.open("rb") as f:
        upload = api.http.post(
            f"{api.url}/v1/sentiment",
            data={"text": text, "id": "u1"},
            files={"image": (path.name, f, "image/jpeg")},
            timeout=60,
        )
    for r in (
        upload,
        post(api, {"text": text, "image_base64": b64(path.read_bytes())}),
        post(api, {"text": text, "image_url": api.images.url(f"/img/{name}")}),
        post(api, {"text": text, "image_url": "s3://mmsent-serve-test/p.jpg"}),
    ):
        assert r.status_code == 200, r.text
        assert_same(r.json(), want_both)
    assert upload.json()["id"] == "u1"


def test_list_request_agrees_with_the_predictor_in_order(api):
    from mmsent.predictor import Predictor

    a, b = (api.photos[n] for n in api.names[1:3])
    posts = [
        {"id": 1, "text": "terrible service, never again"},
        {"id": "two", "text": "nice", "image_base64": b64(a)},
        {"image_url": api.images.url(f"/img/{api.names[2]}")},
        {"text": "   ", "image_base64": "data:image/jpeg;base64," + b64(b)},
    ]
    r = post(api, posts)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = Predictor(api.cfg.model_dir).predict(
        [
            {"text": "terrible service, never again"},
            {"text": "nice", "image": a},
            {"text": None, "image": b},
            {"text": "   ", "image": b},
        ]
    )
    assert [g.get("id") for g in got] == [1, "two", None, None]
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)
    assert got[3]["status"] == {
        "text": codes.EMPTY_TEXT,
        "image": codes.OK,
        "audio": codes.MISSING,  # every prediction has it; a model without audio says "unused"
    }


def _hostile(api) -> list[tuple[str, dict, int, str]]:
    photo = api.photos[api.names[0]]
    big = bytes(range(256)) * 1000  # 256 KB, over the 200 KB image cap
    return [
        ("not json", {"data": b"{'text': 1"}, 422, codes.MALFORMED_REQUEST),
        ("deep nesting", {"data": b"[" * 100_000 + b"]" * 100_000}, 422, codes.MALFORMED_REQUEST),
        ("wrong type", {"json": {"text": 5}}, 422, codes.MALFORMED_REQUEST),
        ("unknown field", {"json": {"text": "hi", "imageurl": "x"}}, 422, codes.MALFORMED_REQUEST),
        ("no input", {"json": {"id": 3}}, 422, codes.MALFORMED_REQUEST),
        ("two images", {"json": {"image_url": "http://a/b", "image_base64": "aGk="}}, 422, codes.MALFORMED_REQUEST),
        ("empty list", {"json": []}, 422, codes.MALFORMED_REQUEST),
        ("a number", {"json": 7}, 422, codes.MALFORMED_REQUEST),
        ("too many posts", {"json": [{"text": "hi"}] * 5}, 422, codes.TOO_MANY_POSTS),
        ("body too large", {"json": {"text": "x" * 600_000}}, 413, codes.BODY_TOO_LARGE),
        ("chunked body too large", {"data": iter([b'{"text": "', b"x" * 300_000, b"x" * 300_000, b'"}'])}, 413, codes.BODY_TOO_LARGE),
        ("base64 image too large", {"json": {"image_base64": b64(big)}}, 413, codes.INVALID_POSTS),
        ("upload too large", {"files": {"image": ("a.jpg", big, "image/jpeg")}}, 413, codes.INVALID_POSTS),
        ("fetched image too large", {"json": {"image_url": api.images.url("/big?n=250000")}}, 413, codes.INVALID_POSTS),
        ("not base64", {"json": {"text": "hi", "image_base64": "%%%%"}}, 422, codes.INVALID_POSTS),
        ("undecodable image", {"json": {"text": "hi", "image_base64": b64(b"<html>hi</html>")}}, 422, codes.INVALID_POSTS),
        ("truncated jpeg", {"json": {"image_base64": b64(photo[: len(photo) // 3])}}, 422, codes.INVALID_POSTS),
        ("undecodable upload", {"files": {"image": ("a.jpg", b"GIF89a junk", "image/gif")}}, 422, codes.INVALID_POSTS),
        ("broken multipart", {"data": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}}, 422, codes.MALFORMED_REQUEST),
        ("lone surrogate", {"data": b'{"text": "\\ud800"}'}, 422, codes.INVALID_POSTS),
        ("blank text only", {"json": {"text": " \n "}}, 422, codes.INVALID_POSTS),
        ("image 404", {"json": {"image_url": api.images.url("/img/none.jpg")}}, 422, codes.INVALID_POSTS),
        ("file url", {"json": {"image_url": "file:///etc/passwd"}}, 422, codes.INVALID_POSTS),
    ]  # fmt: skip


def test_hostile_inputs_get_a_clear_4xx_json_error(api):
    for name, kw, status, code in _hostile(api):
        r = api.http.post(f"{api.url}/v1/sentiment", timeout=60, **kw)
        got = (r.status_code, r.headers["content-type"])
        assert got == (status, "application/json"), (name, r.text)
        error = r.json()["error"]
        assert error["code"] == code and error["message"], name
        assert "Traceback" not in r.text and 'File "' not in r.text, name
    r = api.http.get(f"{api.url}/v1/sentiment", timeout=30)
    assert r.status_code == 405 and r.json()["error"]["code"] == codes.NOT_FOUND
    assert api.http.get(f"{api.url}/nope", timeout=30).json()["error"]["code"] == codes.NOT_FOUND


def test_ssrf_attempts_are_refused_without_connecting(api):
    t = api.target.port
    direct = [
        f"http://127.0.0.1:{t}/img/x.jpg",
        f"http://localhost:{t}/img/x.jpg",
        f"http://[::1]:{t}/img/x.jpg",
        f"http://2130706433:{t}/img/x.jpg",
        "http://10.0.0.1/img.jpg",
        "http://169.254.169.254/latest/meta-data/iam/",
    ]
    redirects = [api.images.url(f"/redirect?to={u}") for u in direct]
    hits_before = len(api.images.hits)
    for url in direct + redirects:
        r = post(api, {"text": "hi", "image_url": url})
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"]["details"] == [
            {"index": None, "field": "image_url", "code": codes.IMAGE_URL_FORBIDDEN}
        ]
    assert api.target.hits == []  # the 127.0.0.1 server never saw a request
    assert len(api.images.hits) - hits_before == len(redirects)  # only the allowed first hops
    attempts = [line.split() for line in api.log.read_text().splitlines()]
    assert attempts, "the netguard log of the ingress replica is empty: is it loaded?"
    assert not [a for a in attempts if int(a[1]) == t or not netguard.is_loopback(a[0])]


def test_bounded_concurrent_load_has_no_5xx(api):
    photo = b64(api.photos[api.names[1]])
    payloads = [{"text": f"post number {i} is great"} for i in range(24)]
    payloads += [[{"text": "so bad"}, {"text": "fine", "image_base64": photo}]] * 12
    payloads += [{"txt": "malformed"}, {"image_url": "http://169.254.169.254/"}] * 6
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda p: post(api, p).status_code, payloads))
    assert len(statuses) == 48 and not [c for c in statuses if c >= 500]
    assert statuses.count(200) == 36 and statuses.count(422) == 12
    # posts of concurrent requests share forward passes (list requests alone make batches of 2)
    replica = api.http.get(f"{api.url}/v1/model", timeout=30).json()["batching"]["replica"]
    assert replica["largest_batch"] >= 4, replica


def test_metrics_are_exported_in_prometheus_format(api, ray_local):
    port = ray_local.nodes()[0]["MetricsExportPort"]
    wanted = [
        "ray_mmsent_requests_total{",
        'status="422"',
        'status="200"',
        "ray_mmsent_request_latency_ms_bucket",
        "ray_mmsent_batch_size_bucket",
        'code="image_url_forbidden"',
        "ray_mmsent_posts_total{",
    ]
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:  # Ray exports on an interval (10 s by default)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(w in text for w in wanted):
            break
        time.sleep(2)
    assert [w for w in wanted if w not in text] == []


def test_ray_and_serve_listen_on_loopback_only(api):
    """Every socket that this session's Ray processes (GCS, raylet, workers, the Serve proxy and
    replicas with their inter-deployment gRPC servers: mmsent.serve.loopback) listen on is on
    127.0.0.0/8."""
    import psutil

    ours = {p.pid for p in psutil.Process().children(recursive=True)} | {psutil.Process().pid}
    listening = [
        c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.pid in ours
    ]
    replicas = {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "ServeReplica" in " ".join(p.info["cmdline"] or [])
    }
    assert replicas & {c.pid for c in listening}, "no listening Serve replica found"
    assert [(c.laddr, c.pid) for c in listening if not netguard.is_loopback(c.laddr.ip)] == []
