"""Property-based fuzzing of the Serve request model, without HTTP or Ray: `parse_json` on random
JSON values and random bytes, and the ingress's whole parse -> images -> preprocess path
(mmsent.serve.parse, media and scoring, with the ingress's own Preprocessor of the tiny
checkpoint) on post-shaped JSON with real, mutated and garbage images. The properties: nothing but a RequestError escapes,
every RequestError is a 4xx with codes from mmsent.codes and a body that renders as JSON, a
request that passes has one model input per post and ids that can be echoed back, and a re-run
gives the same outcome. Image URLs are malformed, of a refused scheme or on hosts the SSRF guard
refuses before any connection (checked: the test process's netguard log stays empty).

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest -q tests/test_serve_fuzz.py   # more examples
"""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from serve_helpers import connect_attempts, tiny_checkpoint

from mmsent import codes
from mmsent.config import ModelCfg, ServeCfg, from_dict
from mmsent.models.checkpoint import read_meta
from mmsent.sample_data import real_photos
from mmsent.serve.errors import ErrorJSON, RequestError
from mmsent.serve.media import load_media
from mmsent.serve.parse import parse_json
from mmsent.serve.scoring import fetch_caps, preprocess, serve_preprocessor

settings.register_profile(
    "long",
    max_examples=3000,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
CODES = {v for k, v in vars(codes).items() if k.isupper() and isinstance(v, str)}


def sized(n: int) -> settings:
    """`n` examples, derandomized (the same ones in every CI run); the long profile when asked."""
    if LONG:
        return settings.get_profile("long")
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )


@pytest.fixture(scope="module")
def ingress(tmp_path_factory):
    model_dir = tiny_checkpoint(tmp_path_factory.getbasetemp() / "tiny-model")
    cfg = ServeCfg(
        model_dir=model_dir,
        max_posts=6,
        max_image_bytes=48 * 1024,
        max_request_image_bytes=96 * 1024,
        max_image_pixels=200_000,
    )
    pre = serve_preprocessor(from_dict(ModelCfg, read_meta(model_dir)["model"]), cfg)
    return cfg, pre


def outcome(body: bytes, cfg: ServeCfg, pre=None) -> tuple:
    """What the ingress makes of `body`, as a comparable value (parsing only without `pre`)."""
    try:
        posts, single = parse_json(body, cfg)
        json.dumps([p.id for p in posts], ensure_ascii=False).encode()  # echoed back in UTF-8
        if pre is None:
            return ("parsed", single, len(posts))
        caps = fetch_caps(pre.cfg, cfg)
        media = load_media(posts, cfg.fetch, caps, cfg.max_request_image_bytes)
        batch = preprocess(pre, posts, media, single)
    except RequestError as e:
        assert 400 <= e.status < 500, e.body()
        assert {e.code, *(d["code"] for d in e.details)} <= CODES, e.body()
        ErrorJSON(e.body(), status_code=e.status)  # renders, whatever the client's text
        return (e.status, e.code, [(d["index"], d["field"], d["code"]) for d in e.details])
    assert len(batch["text_status"]) == len(batch["image_status"]) == len(posts)
    return ("ok", single, list(batch["text_status"]), list(batch["image_status"]))


# --- random JSON and random bytes -> parse_json

# hypothesis's text seldom holds lone surrogates and invisible characters: mixed in here
chars = st.characters() | st.sampled_from(
    ["\ud800", "\udfff", "\u200b", "\x00", "\ufeff", "\u202e"]
)
strings = st.text(chars, max_size=20)
keys = strings | st.sampled_from(["id", "text", "image_url", "image_base64"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)


@sized(300)
@given(value=json_values)
def test_parse_json_on_random_json_values(ingress, value):
    cfg, _ = ingress
    body = json.dumps(value).encode()  # NaN and infinities too: Python's JSON writes them
    assert outcome(body, cfg) == outcome(body, cfg)


@sized(300)
@given(body=st.binary(max_size=300) | strings.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_parse_json_on_random_bytes(ingress, body):
    cfg, _ = ingress
    assert outcome(body, cfg) == outcome(body, cfg)


# --- post-shaped JSON with images and URLs -> parse_json -> load_media -> preprocess


def _encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _seeds() -> list[bytes]:
    """Small images of every allowed format, a real photo, and formats that are not allowed."""
    im = Image.new("RGB", (40, 30), (200, 30, 90))
    seeds = [_encoded(im, f) for f in ("PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO")]
    seeds.append(_encoded(Image.new("L", (900, 900)), "PNG"))  # 810 kpx: over the pixel cap
    return [real_photos(max_side=48)[0][1], *seeds]


SEEDS = _seeds()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for pos, value in draw(
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6)
    ):
        data[pos % len(data)] = value
    return bytes(data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# hosts that are malformed, of a refused scheme, or refused by the SSRF guard before connecting
URL_BASES = [
    "http://[::1/",
    "https://[]/",
    "http://[evil]/a.jpg",
    "http://10.0.0.1/",
    "http://127.0.0.1:9/",
    "http://[::1]:9/",
    "http://169.254.169.254/",
    "ftp://10.0.0.1/",
    "file:///etc/",
    "/etc/",
    "http://0.0.0.0/",
    "https://[fd00::1]/",
    "http://2130706433/",
]
image_fields = st.one_of(
    st.just({}),
    mutated().map(lambda b: {"image_base64": b64(b)}),
    mutated().map(lambda b: {"image_base64": "data:image/png;base64," + b64(b)}),
    strings.map(lambda t: {"image_base64": t}),  # garbage, maybe base64 by chance
    st.tuples(st.sampled_from(URL_BASES), strings).map(lambda u: {"image_url": "".join(u)}),
)
texts = st.one_of(
    st.none(),
    strings,
    st.sampled_from(["good day", "\u200b", "\x01", "\ufeff", "\ud800", " \n ", "\x00"]),
)
ids = st.none() | st.integers() | strings
ODD = [
    {"id": "\ud800"},
    {"id": 1.5},
    {"id": [1]},
    {"id": 10**30},
    {"imageurl": "x"},
    {"\ud800": 1},
    {"x" * 300: None},
    {"text": 5},
    {"image_url": None},
]
posts = st.builds(
    lambda text, image, id_, extra: {
        **({} if text is None else {"text": text}),
        **image,
        **({} if id_ is None else {"id": id_}),
        **extra,
    },
    texts,
    image_fields,
    ids,
    st.sampled_from([{}] * 3 * len(ODD) + ODD),  # mostly well-formed
)


@sized(400)
@given(payload=posts | st.lists(posts, max_size=6))
def test_ingress_path_on_posts_with_real_mutated_and_garbage_images(ingress, payload):
    cfg, pre = ingress
    body = json.dumps(payload).encode()
    with connect_attempts() as attempts:
        first = outcome(body, cfg, pre)
    assert attempts == []  # no URL was even tried: malformed, refused scheme or guarded host
    assert outcome(body, cfg, pre) == first
