"""The one preprocessing path on real photos, every image mode, and every kind of bad input."""

from __future__ import annotations

import io
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmsent import codes
from mmsent.config import ModelCfg, PreprocessCfg
from mmsent.preprocess import (
    Preprocessor,
    clean_text,
    decode_image,
    pack_batch,
    resolve_text_path,
    unpack_batch,
)
from mmsent.sample_data import photo_files

CFG = PreprocessCfg()


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def halves(size=(40, 20)) -> Image.Image:
    """Left half red, right half blue: orientation and colour are easy to check."""
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[:, : size[0] // 2] = (255, 0, 0)
    a[:, size[0] // 2 :] = (0, 0, 255)
    return Image.fromarray(a)


def test_real_photos_decode():
    files = photo_files()
    assert len(files) >= 8
    for f in files:
        arr, status = decode_image(f.read_bytes(), 224, CFG)
        assert status == codes.OK, f
        assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8
        assert arr.std() > 5, f  # a real picture, not a blank


@pytest.mark.parametrize(
    "mode,fmt,kw",
    [
        ("RGBA", "PNG", {}),
        ("LA", "PNG", {}),
        ("P", "PNG", {}),
        ("CMYK", "JPEG", {}),
        ("L", "JPEG", {}),
        ("I;16", "PNG", {}),
        ("1", "PNG", {}),
        ("RGB", "WEBP", {}),
        ("RGB", "BMP", {}),
        ("RGB", "TIFF", {}),
    ],
)
def test_every_mode_to_rgb(mode, fmt, kw):
    im = halves()
    im = im.convert("I;16") if mode == "I;16" else im.convert(mode)
    arr, status = decode_image(encode(im, fmt, **kw), 32, CFG)
    assert status == codes.OK
    assert arr.shape == (32, 32, 3)


def test_transparency_goes_onto_white():
    im = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # fully transparent red
    arr, _ = decode_image(encode(im, "PNG"), 8, CFG)
    assert (arr == 255).all()


def test_sixteen_bit_keeps_its_range():
    a = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    arr, status = decode_image(encode(Image.fromarray(a), "PNG"), 64, CFG)
    assert status == codes.OK and arr.min() < 10 and arr.max() > 245


def test_animated_gif_takes_the_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    arr, status = decode_image(data, 8, CFG)
    assert status == codes.OK
    assert arr[..., 0].mean() > 200 and arr[..., 1].mean() < 50  # red, the first frame


def test_exif_orientation_is_applied():
    im = halves((40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    arr, status = decode_image(encode(im, "JPEG", exif=exif.tobytes(), quality=95), 40, CFG)
    assert status == codes.OK
    top, bottom = arr[:10].reshape(-1, 3).mean(0), arr[-10:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and bottom[2] > 200  # red (was left) is now on top


def test_large_jpeg_uses_reduced_decoding_and_centre_crop():
    a = np.zeros((600, 1200, 3), np.uint8)
    a[:, 300:900] = 255  # white centre square, black sides
    arr, status = decode_image(encode(Image.fromarray(a), "JPEG", quality=95), 64, CFG)
    assert status == codes.OK and arr.mean() > 240  # the crop is the centre


def test_decompression_bomb_is_refused():
    bomb = encode(Image.new("1", (12_000, 12_000)), "PNG")  # ~30 KB that decodes to 144 Mpx
    assert len(bomb) < 200_000
    assert decode_image(bomb, 64, CFG) == (None, codes.IMAGE_TOO_LARGE)


@pytest.mark.parametrize(
    "data,code",
    [
        (b"", codes.IMAGE_EMPTY),
        (b"<html><body>Not found</body></html>", codes.NOT_AN_IMAGE),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, codes.IMAGE_DECODE_ERROR),
    ],
)
def test_bad_bytes(data, code):
    assert decode_image(data, 64, CFG) == (None, code)


def test_truncated_and_oversized():
    jpeg = encode(halves((300, 300)), "JPEG")
    assert decode_image(jpeg[: len(jpeg) // 2], 64, CFG) == (None, codes.IMAGE_TRUNCATED)
    assert decode_image(jpeg, 64, PreprocessCfg(max_image_bytes=100)) == (
        None,
        codes.IMAGE_BYTES_TOO_LARGE,
    )
    assert decode_image(jpeg, 64, PreprocessCfg(max_image_pixels=1000)) == (
        None,
        codes.IMAGE_TOO_LARGE,
    )


def test_random_garbage_never_raises():
    rng = random.Random(0)
    heads = [
        b"\xff\xd8\xff\xe0",
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"RIFF\x00\x00\x00\x00WEBP",
        b"II*\x00",
        b"BM",
    ]
    for _ in range(300):
        data = rng.choice(heads) + bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
        arr, status = decode_image(data, 32, CFG)
        assert (arr is None) == codes.is_error(status)


@pytest.mark.parametrize(
    "value,status",
    [
        (None, codes.MISSING),
        (float("nan"), codes.MISSING),
        ("", codes.EMPTY_TEXT),
        ("   \n", codes.EMPTY_TEXT),
        (b"\xff\xfe\x00bad", codes.TEXT_NOT_UTF8),
        ("lone \ud800 surrogate", codes.TEXT_NOT_UTF8),
        (42, codes.TEXT_INVALID),
        (["a"], codes.TEXT_INVALID),
        ("fine", codes.OK),
        ("caf\u00e9".encode(), codes.OK),
    ],
)
def test_text_statuses(value, status):
    assert clean_text(value, CFG)[1] == status


def test_batch_statuses_and_long_texts_are_chunked():
    pre = Preprocessor(ModelCfg())
    long_text = "This film is a delight from start to finish. " * 60  # ~600 tokens
    photo = encode(halves(), "JPEG")
    b = pre([long_text, None, "", "ok"], [photo, photo, None, b"nope"], [None, None, None, None])
    assert b["text_status"].tolist() == [codes.OK, codes.MISSING, codes.EMPTY_TEXT, codes.OK]
    assert b["image_status"].tolist() == [codes.OK, codes.OK, codes.MISSING, codes.NOT_AN_IMAGE]
    assert b["has_text"].tolist() == [True, False, False, True]
    assert b["has_image"].tolist() == [True, True, False, False]
    assert 4 <= b["text_chunks"][0] <= 8 and b["text_chunks"][3] == 1
    # a fetch error already known for a row is kept, and its bytes are not needed
    b2 = pre(["x"], [None], [codes.IMAGE_NOT_FOUND])
    assert b2["image_status"].tolist() == [codes.IMAGE_NOT_FOUND] and not b2["has_image"][0]
    # a fetch that succeeded ("ok") still decodes its bytes: never a blank image marked present
    b3 = pre(["x"], [photo], [codes.OK])
    assert (
        b3["image_status"].tolist() == [codes.OK]
        and b3["has_image"][0]
        and b3["pixels"][0].max() > 0
    )


def test_packed_pixels_round_trip_and_carry_no_blank_images():
    pre = Preprocessor(ModelCfg())
    b = pre(["a", "b", "c"], [encode(halves(), "JPEG"), None, b"nope"])
    packed = pack_batch(b)
    assert [len(p) for p in packed["pixels"]] == [224 * 224 * 3, 0, 0]
    back = unpack_batch(packed, pre.cfg)
    assert back["pixels"].shape == b["pixels"].shape and np.array_equal(back["pixels"], b["pixels"])
    text_only = {"has_image": np.zeros(2, bool), "pixels": np.zeros((2, 224, 224, 3), np.uint8)}
    assert unpack_batch(pack_batch(text_only), pre.cfg)["pixels"].shape == (2, 224, 224, 3)


def test_tokenizer_matches_autotokenizer_and_decoding_needs_no_torch():
    from transformers import AutoTokenizer

    from mmsent.train.data import read_vader

    texts = read_vader().texts[:500] + ["", "ünïcödé 😀 test", "a " * 400]
    kw = {
        "max_length": 128,
        "truncation": True,
        "stride": 32,
        "padding": "max_length",
        "return_overflowing_tokens": True,
    }
    ours = Preprocessor(ModelCfg()).tokenizer(texts, **kw)
    auto = AutoTokenizer.from_pretrained(resolve_text_path("minilm"), local_files_only=True)(
        texts, **kw
    )
    for key in ("input_ids", "attention_mask", "overflow_to_sample_mapping"):
        assert list(ours[key]) == list(auto[key]), key
    # a bulk-scoring decode worker: the stage module and a whole preprocessed batch, no torch
    code = (
        "import sys\n"
        "from mmsent.config import ModelCfg, FetchCfg, ScoreColumnsCfg\n"
        "from mmsent.io.dumps import Item\n"
        "from mmsent.pipeline.plan import Plan\n"
        "from mmsent.pipeline.rows import read_block\n"
        "from mmsent.pipeline.stages import preprocess\n"
        "plan = Plan([], 'auto', ScoreColumnsCfg(), [])\n"
        "block = read_block('f', [Item(0, {'id': 'p', 'text': 'a fine day'})], plan)\n"
        "out = preprocess(block, model_cfg=ModelCfg(), fetch_cfg=FetchCfg())\n"
        "assert out.column('has_text').to_pylist() == [True]\n"
        "from mmsent.pipeline import job  # and a `mmsent score` driver, which reads the meta\n"
        "assert job.read_meta()['model']['name']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout
