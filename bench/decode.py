"""Image decode throughput per CPU: what one CPU task of bulk scoring does to a fetched image
(mmsent.preprocess.decode_image: decode, EXIF turn, centre crop, resize to the tower's size),
on the real photos shipped in installed packages: as posts carry them (<= 512 px) and at a phone
camera's size (4032 px wide, upscaled from the same photos).

    .venv/bin/python bench/decode.py [--seconds 5]

One process, one thread: the figure is per core. JPEG decodes at a reduced scale (Pillow's
draft mode), so big photos cost little more than small ones; PNG has no such shortcut.
"""

from __future__ import annotations

import argparse
import io
import time

from PIL import Image

from mmsent.config import PreprocessCfg
from mmsent.preprocess import decode_image
from mmsent.sample_data import real_photos


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


if __name__ == "__main__":
    main()
