"""Tabular values and audio clips over the HTTP API, by configuration alone: one Serve instance on
127.0.0.1 with two apps, a tiny 4-modality checkpoint (text, image, tabular, audio) at `/` and a
tiny text-only one at `/text`, and an audio host on 127.0.0.1 (allow-listed by the app's fetch
config; it records hits). Audio arrives as `audio_base64`, an `audio` file part or an `audio_url`
fetched behind the SSRF guard; tabular values as a `tabular` object (a JSON part in multipart).

    flock /tmp/mmsent-ray.lock .venv/bin/python -m pytest -q tests/test_serve_modalities.py
"""

from __future__ import annotations

import base64
import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import requests
import soundfile
from serve_helpers import WebServer, free_port

from mmsent import codes
from mmsent.config import ServeCfg, ServeFetchCfg

ALL = ["text", "image", "tabular", "audio"]
MAX_AUDIO = 100 * 1024  # Serve's clip cap here, under the checkpoint's (10 MiB)


def wav(seconds: float = 1.0) -> bytes:
    t = np.arange(int(16_000 * seconds)) / 16_000
    buf = io.BytesIO()
    soundfile.write(buf, 0.5 * np.sin(2 * np.pi * 440 * t), 16_000, format="WAV")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def checkpoint(path, text_dir: str, vision_dir: str | None, **kw) -> str:
    import torch

    from mmsent.models.checkpoint import save
    from mmsent.models.model import build_model
    from mmsent.testing import tiny_model_cfg

    if not (path / "config.json").exists():
        torch.manual_seed(0)
        save(build_model(tiny_model_cfg(text_dir, vision_dir, **kw)), path)
    return str(path)


@pytest.fixture(scope="module")
def api(ray_local, encoders, photos, tmp_path_factory):
    from ray import serve

    from mmsent.serve.app import compose

    tmp = tmp_path_factory.mktemp("serve-modalities")
    clip = wav()
    host = WebServer("127.0.0.1", {"clip.wav": clip, "photo.jpg": photos[0]})
    text_dir, vision_dir = encoders
    four = checkpoint(tmp / "four", text_dir, vision_dir, tabular=True, audio=True)
    text_only = checkpoint(tmp / "text", text_dir, None)
    fetch = ServeFetchCfg(allow_networks=["127.0.0.1/32"], timeout_s=2.0, retries=0)
    cfgs = {
        "/": ServeCfg(model_dir=four, max_audio_bytes=MAX_AUDIO, fetch=fetch, auth_token_env=None),
        "/text": ServeCfg(model_dir=text_only, fetch=fetch, auth_token_env=None),
    }
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    options = {"ray_actor_options": {"num_cpus": 0.5}}
    for i, (prefix, cfg) in enumerate(cfgs.items()):
        serve.run(compose(cfg, options, options), name=f"modalities-{i}", route_prefix=prefix)
    yield SimpleNamespace(
        url=f"http://127.0.0.1:{port}", four=four, clip=clip, photo=photos[0], host=host
    )
    serve.shutdown()
    host.close()


def post(api, payload=None, prefix: str = "", **kw) -> requests.Response:
    return requests.post(f"{api.url}{prefix}/v1/sentiment", json=payload, timeout=60, **kw)


def full_post(api) -> dict:
    tabular = {"likes": 40, "hour": 21, "platform": "insta", "verified": True}
    return {"text": "best concert ever", "image_base64": b64(api.photo), "tabular": tabular}


def assert_close(got: dict, want: dict, tol: float = 1e-4) -> None:
    for key in ("modalities_used", "status", "error", "model"):
        assert got[key] == want[key], key
    for key in ("scores", "fusion_weights"):
        for k, v in want[key].items():
            assert math.isclose(got[key][k], v, abs_tol=tol), (key, k)


@pytest.fixture(scope="module")
def want(api) -> dict:
    """What the Predictor (no Serve) makes of full_post with the clip."""
    from mmsent.predictor import Predictor

    p = full_post(api)
    [pred] = Predictor(api.four).predict(
        [{"text": p["text"], "image": api.photo, "audio": api.clip, "tabular": p["tabular"]}]
    )
    assert pred["status"] == dict.fromkeys(ALL, codes.OK)
    return pred


def test_a_post_of_all_four_modalities_gets_a_label(api, want):
    r = post(api, {**full_post(api), "audio_base64": b64(api.clip), "id": 7})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["id"] == 7 and got["label"] in ("negative", "neutral", "positive")
    assert list(got["fusion_weights"]) == ALL and got["modalities_used"] == ALL
    assert got["status"] == dict.fromkeys(ALL, codes.OK)
    assert_close(got, want)
    card = requests.get(f"{api.url}/v1/model", timeout=30).json()
    assert card["modalities"] == ALL and card["limits"]["max_audio_bytes"] == MAX_AUDIO


def test_an_audio_file_part_and_a_tabular_json_part(api, want):
    p = full_post(api)
    r = post(
        api,
        data={"text": p["text"], "tabular": json.dumps(p["tabular"]), "id": "m1"},
        files={"image": ("a.jpg", api.photo, "image/jpeg"), "audio": ("a.wav", api.clip)},
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "m1"
    assert_close(r.json(), want)
    bad = post(api, files={"text": (None, "hi"), "tabular": (None, "{not json")})
    assert bad.status_code == 422 and "`tabular` is not JSON" in bad.json()["error"]["message"]
    two = post(api, files=[("audio", ("a.wav", api.clip)), ("audio", ("b.wav", api.clip))])
    assert two.status_code == 422 and two.json()["error"]["code"] == codes.MALFORMED_REQUEST


def test_an_audio_url_is_fetched_and_its_errors_are_audio_codes(api, want):
    r = post(api, {**full_post(api), "audio_url": api.host.url("/img/clip.wav")})
    assert r.status_code == 200, r.text
    assert_close(r.json(), want)
    posts = [
        {"text": "fine", "audio_url": api.host.url("/img/none.wav")},
        {"text": "fine", "audio_url": "http://169.254.169.254/latest/meta-data/"},
    ]
    r = post(api, posts)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"] == [
        {"index": 0, "field": "audio_url", "code": codes.AUDIO_NOT_FOUND},
        {"index": 1, "field": "audio_url", "code": codes.AUDIO_URL_FORBIDDEN},
    ]


def test_unusable_audio_and_tabular_values_fail_the_request_naming_the_post(api):
    cases = [
        ({"audio_base64": b64(b"RIFF\x00\x00\x00\x00WAVEjunk")}, 422, "audio_base64", codes.AUDIO_DECODE_ERROR),
        ({"audio_base64": "%%%% not base64"}, 422, "audio_base64", codes.AUDIO_BASE64_INVALID),
        ({"audio_base64": b64(wav(4.0))}, 413, "audio_base64", codes.AUDIO_BYTES_TOO_LARGE),
        ({"audio_base64": b64(wav(0.01))}, 422, "audio_base64", codes.AUDIO_TOO_SHORT),
        ({"tabular": {"likes": "many", "platform": "x"}}, 422, "tabular", codes.TABULAR_INVALID),
    ]  # fmt: skip
    for extra, status, field, code in cases:
        r = post(api, [{"text": "good"}, {"text": "good", **extra}])
        assert r.status_code == status, (code, r.text)
        error = r.json()["error"]
        assert error["code"] == codes.INVALID_POSTS
        assert [(d["index"], d["field"], d["code"]) for d in error["details"]] == [(1, field, code)]
    for tabular in ([1, 2], "likes=3", 5):
        r = post(api, {"text": "good", "tabular": tabular})
        assert r.status_code == 422 and r.json()["error"]["code"] == codes.MALFORMED_REQUEST
    r = post(api, {"text": "good", "audio_url": "http://a/b.wav", "audio_base64": b64(wav())})
    assert r.status_code == 422 and r.json()["error"]["code"] == codes.MALFORMED_REQUEST


def test_tabular_values_alone_and_beside_unknown_columns(api):
    r = post(api, {"tabular": {"likes": 3, "followers": 10**6, "platform": "tiktok"}})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["modalities_used"] == ["tabular"] and got["label"] is not None
    assert got["status"] == {
        "text": codes.MISSING,
        "image": codes.MISSING,
        "tabular": codes.OK,
        "audio": codes.MISSING,
    }


def test_a_model_without_audio_does_not_fetch_audio_and_says_unused(api):
    hits = len(api.host.hits)
    posts = [
        {"text": "lovely", "audio_base64": b64(api.clip)},
        {"text": "lovely", "audio_url": api.host.url("/img/clip.wav")},
        {"text": "lovely", "audio_url": "http://169.254.169.254/", "tabular": {"a": 1}},
    ]
    r = post(api, posts, prefix="/text")
    assert r.status_code == 200, r.text
    for got in r.json()["predictions"]:
        assert got["status"] == {"text": codes.OK, "image": codes.MISSING, "audio": codes.UNUSED}
        assert got["modalities_used"] == ["text"] and list(got["fusion_weights"]) == ["text"]
    assert len(api.host.hits) == hits  # never fetched
    card = requests.get(f"{api.url}/text/v1/model", timeout=30).json()
    assert card["modalities"] == ["text"] and card["limits"]["max_audio_bytes"] == 8 * 1024 * 1024
