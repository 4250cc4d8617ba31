"""Decode throughput per CPU: what one CPU task of bulk scoring does to a fetched image
(mmsent.preprocess.decode_image: decode, EXIF turn, centre crop, resize to the tower's size),
on the real photos shipped in installed packages: as posts carry them (<= 512 px) and at a phone
camera's size (4032 px wide, upscaled from the same photos). Then the other modalities' cost per
post: a text to its token windows (the default model's tokenizer, VADER texts), an audio clip to its log-mel spectrogram (mmsent.audio.decode_audio: decode, downmix,
resample to 16 kHz, STFT, mel bands) on 5 s synthetic voice-like clips in each format, and a
post's tabular columns to the tower's inputs (mmsent.tabular.encode_tabular).

    .venv/bin/python bench/decode.py [--seconds 5]

One process, one thread: the figure is per core. JPEG decodes at a reduced scale (Pillow's
draft mode), so big photos cost little more than small ones; PNG has no such shortcut.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import soundfile as sf
from PIL import Image

from mmsent.audio import decode_audio
from mmsent.config import AudioCfg, PreprocessCfg, TabularTowerCfg
from mmsent.preprocess import decode_image
from mmsent.sample_data import real_photos
from mmsent.tabular import encode_tabular, fit_tabular


def reencode(data: bytes, fmt: str, width: int | None = None) -> bytes:
    im = Image.open(io.BytesIO(data))
    if width:  # phone-camera size: upscaled, so decode cost is real even if detail is not
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def rate(images: list[bytes], size: int, seconds: float) -> float:
    cfg, n, start = PreprocessCfg(), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for data in images:
            assert decode_image(data, size, cfg)[1] == "ok"
            n += 1
    return n / (time.perf_counter() - start)


def voice_clip(fmt: str, rate: int = 44_100, seconds: float = 5.0) -> bytes:
    """Stereo, a 140 Hz voice-like harmonic stack with a wobbling pitch, and some noise."""
    t = np.arange(round(rate * seconds)) / rate
    f0 = 140 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / rate) / k for k in range(1, 12))
    x = 0.2 * x + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, np.stack([x, 0.8 * x], 1).astype(np.float32), rate, format=fmt)
    return buf.getvalue()


def per_second(work, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += work()
    return n / (time.perf_counter() - start)


def text(seconds: float) -> None:
    from mmsent.config import ModelCfg
    from mmsent.preprocess import Preprocessor
    from mmsent.train.data import read_vader

    pre, texts = Preprocessor(ModelCfg(image=None)), read_vader().texts[:2048]
    batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    r = per_second(lambda: sum(len(pre(b)["has_text"]) for b in batches), seconds)
    print(
        f"text -> token windows (VADER texts, batches of 32), 1 core {r:9.0f} {1000 / r:9.3f} ms/text"
    )


def audio_and_tabular(seconds: float) -> None:
    print("audio clip -> log-mel (5 s, 44.1 kHz stereo), 1 core   clips/s   ms/clip")
    cfg = AudioCfg()
    for fmt in ("WAV", "FLAC", "OGG", "MP3"):
        clip = voice_clip(fmt)
        assert decode_audio(clip, cfg)[1] == "ok"
        r = per_second(lambda clip=clip: decode_audio(clip, cfg)[1] == "ok", seconds)
        print(f"  {fmt + f' ({len(clip) // 1024} KiB)':42s} {r:9.1f} {1000 / r:9.2f}", flush=True)
    rng = np.random.default_rng(0)
    likes, platforms = rng.lognormal(3, 2, 1000), rng.choice(["x", "insta", "tiktok"], 1000)
    rows = [  # followers as CSV cells give them: strings
        {"likes": int(v), "followers": str(int(v * 40)), "hour": int(v) % 24, "platform": p}
        for v, p in zip(likes, platforms, strict=True)
    ]
    tab = fit_tabular(
        rows, TabularTowerCfg(numeric=["likes", "followers", "hour"], categorical=["platform"])
    )
    r = per_second(lambda: len(encode_tabular(rows, tab)["tab_num"]), seconds)
    print(f"tabular row -> inputs (4 columns), 1 core {'':13s}{r:9.0f} {1e6 / r:9.2f} us/row")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per row of the table")
    ap.add_argument("--size", type=int, default=224, help="the image tower's input side")
    args = ap.parse_args(argv)
    print(f"decode + crop + resize to {args.size}px, 1 core   images/s   ms/image")
    photos = [b for _, b in real_photos(max_side=None)]  # as shipped: 300-640 px
    cases = {
        "JPEG <= 512 px": [b for _, b in real_photos(max_side=512)],
        "PNG <= 512 px": [reencode(b, "PNG") for _, b in real_photos(max_side=512)],
        "JPEG 4032 px wide (phone size)": [reencode(b, "JPEG", 4032) for b in photos],
    }
    for label, images in cases.items():
        r = rate(images, args.size, args.seconds)
        print(f"  {label + f' ({len(images)})':42s} {r:9.1f} {1000 / r:9.2f}", flush=True)
    text(args.seconds)
    audio_and_tabular(args.seconds)


if __name__ == "__main__":
    main()
