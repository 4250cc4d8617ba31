"""Property-based fuzzing of image decoding (mmsent.preprocess.decode_image, the one decoder of every
path) on mutated bytes of real JPEG, PNG, GIF and WebP files: flipped, inserted and deleted bytes,
truncation, a corrupted header field, and pure random bytes behind a real signature. Properties:
no exception escapes; the answer is an RGB array of the tower's size with `ok`, or no array with a
stable error code; the same answer on a re-run; and the Preprocessor's batch keeps one row per input.

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_decode_fuzz.py   # ~30x longer
"""

from __future__ import annotations

import io
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmsent import codes
from mmsent.config import PreprocessCfg
from mmsent.preprocess import decode_image

settings.register_profile("long", max_examples=12_000, deadline=None)
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
FUZZ = settings(
    max_examples=12_000 if LONG else 400,
    deadline=None,
    derandomize=not LONG,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SIZE = 32
CFG = PreprocessCfg(max_image_pixels=4_000_000)  # a corrupted size field must not cost seconds
CODES = {
    codes.IMAGE_EMPTY,
    codes.IMAGE_BYTES_TOO_LARGE,
    codes.NOT_AN_IMAGE,
    codes.IMAGE_FORMAT_UNSUPPORTED,
    codes.IMAGE_TOO_LARGE,
    codes.IMAGE_TRUNCATED,
    codes.IMAGE_DECODE_ERROR,
}


def _seeds() -> list[bytes]:
    from mmsent.sample_data import real_photos

    photo = Image.open(io.BytesIO(real_photos(max_side=48)[0][1]))
    out = []
    for fmt, extra in [
        ("JPEG", {"quality": 80}),
        ("JPEG", {"progressive": True}),
        ("PNG", {}),
        ("GIF", {}),
        ("WEBP", {"quality": 70}),
        ("PNG", {"mode": "LA"}),
    ]:
        im = photo.convert(extra.pop("mode")) if "mode" in extra else photo
        buf = io.BytesIO()
        im.save(buf, fmt, **extra)
        out.append(buf.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "header"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[i:]
        elif op == "header" and len(data) > 32:  # sizes and lengths live in the first bytes
            j = draw(st.integers(0, 31))
            data[j] = draw(st.integers(0, 255))
    return bytes(data)


def _check(data: bytes) -> None:
    arr, status = decode_image(data, SIZE, CFG)
    again = decode_image(data, SIZE, CFG)
    assert status == again[1]
    if status == codes.OK:
        assert arr.shape == (SIZE, SIZE, 3) and arr.dtype == np.uint8
        assert np.array_equal(arr, again[0])
    else:
        assert arr is None and status in CODES, status


@FUZZ
@given(mutated())
def test_mutated_real_images_never_raise_and_answer_the_same(data):
    _check(data)


@FUZZ
@given(
    st.sampled_from(
        [
            b"\xff\xd8\xff",
            b"\x89PNG\r\n\x1a\n",
            b"GIF89a",
            b"RIFF\0\0\0\0WEBP",
            b"BM",
            b"II*\x00",
            b"\x00\x00\x01\x00",
        ]
    ),
    st.binary(max_size=512),
)
def test_random_bytes_behind_a_real_signature(signature, body):
    _check(signature + body)


@settings(max_examples=40 if not LONG else 1000, deadline=None, derandomize=not LONG)
@given(st.lists(st.one_of(mutated(), st.binary(max_size=64), st.none()), max_size=8))
def test_a_batch_keeps_one_row_per_input(images):
    from mmsent.config import ImageTowerCfg, ModelCfg
    from mmsent.preprocess import Preprocessor

    pre = Preprocessor(ModelCfg(text=None, image=ImageTowerCfg(image_size=SIZE), preprocess=CFG))
    batch = pre([None] * len(images), images)
    assert batch["pixels"].shape == (len(images), SIZE, SIZE, 3)
    assert len(batch["image_status"]) == len(batch["has_image"]) == len(images)
    assert batch["has_image"].tolist() == [s == codes.OK for s in batch["image_status"]]
