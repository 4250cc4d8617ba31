"""`mmsent make-demo-data OUT`: a social-media dump for training demos, written to a folder or s3://.

    mmsent make-demo-data /tmp/demo                       # posts.jsonl + images/ + README.md
    mmsent make-demo-data s3://bucket/demo --real 600 --slice 200

No image-text sentiment data set exists here, so the dump is built from real parts and says how
(README.md, written next to the posts): human-rated texts from mmsent/data/vader-ground-truth (only
the posts the shipped default model never trained on), real photos from installed packages
(mmsent.sample_data), and a labelled slice ("image_carries") where hand-written captions are
ambiguous or contradict the photo and the photo decides the label.
"""

from __future__ import annotations

import argparse
import io
import json
from datetime import datetime, timedelta, timezone

import numpy as np
from PIL import Image, ImageEnhance

from .sample_data import real_photos
from .train.labelled import filesystem

LABELS = ["negative", "neutral", "positive"]
# what each photo stands for in the image_carries slice (a convention of this demo, see README)
PHOTO_SENTIMENT = {
    "positive": ["chelsea", "coffee", "flower", "Minduka_Present_Blue_Pack", "china"],
    "negative": ["gravel", "brick", "grass", "moon"],
    "neutral": ["camera", "coins", "motorcycle_left", "motorcycle_right", "rocket", "astronaut",
                "grace_hopper", "hubble_deep_field"],
}  # fmt: skip
CAPTIONS = {  # written for this demo: what the text says on its own
    "neutral": ["so this happened", "well.", "look at this", "no words", "guess what I found",
                "this is where I am right now", "here we go again", "just another day", "and that's that",
                "what do you think?", "ok then", "update:", "this.", "me right now", "saturday", "it is what it is",
                "first time here", "well well well", "today", "can't stop looking at this"],
    "positive": ["Great job, everyone", "just perfect", "love this for me", "best day ever", "wow, amazing",
                 "10/10 would recommend", "thanks so much for this", "exactly what I needed today",
                 "so proud of this", "living the dream"],
    "negative": ["I can't cope", "send help", "ugh. again.", "this is a problem", "not fair",
                 "I'm not okay", "why is it always me", "this is dangerous"],
}  # fmt: skip
SUFFIXES = [
    "",
    "",
    "",
    "!",
    "...",
    " lol",
    " #weekend",
    " 🙃",
    " 😂",
    " 👀",
]  # drawn independently of labels
CAPTION_MIX = {"neutral": 0.4, "positive": 0.3, "negative": 0.3}
IMAGE_MIX = {"positive": 0.4, "negative": 0.4, "neutral": 0.2}


def slice_label(caption: str, image: str) -> str:
    """The photo decides; a neutral photo leaves the caption's own reading."""
    return image if image != "neutral" else caption


def jitter(photo: bytes, rng: np.random.Generator, max_side: int) -> bytes:
    """A post's own copy of a photo: random crop (55-100% of the area), flip, light, JPEG quality."""
    im = Image.open(io.BytesIO(photo)).convert("RGB")
    w, h = im.size
    area, aspect = rng.uniform(0.55, 1.0) * w * h, np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, int((area * aspect) ** 0.5)), min(h, int((area / aspect) ** 0.5))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.15))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.85, 1.15))
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(70, 93)))
    return buf.getvalue()


def build(
    n_real: int, n_slice: int, photo_rate: float, broken_rate: float, seed: int, max_side: int
):
    """(rows, files): the posts and {relative path: bytes} of every file of the dump."""
    from .train.default_model import splits

    rng = np.random.default_rng(seed)
    photos = dict(real_photos(max_side=512))
    missing = {p for group in PHOTO_SENTIMENT.values() for p in group} - set(photos)
    if missing:
        raise SystemExit(f"photos not found in the installed packages: {sorted(missing)}")
    held_out = splits()[2]  # the default model's own test split: it never trained on these texts
    pick = rng.permutation(len(held_out))[: min(n_real, len(held_out))]
    t0 = datetime(2024, 5, 6, 8, 0, tzinfo=timezone.utc)
    rows, files = [], {}
    for k in range(len(pick) + n_slice):
        pid = f"p{k:06d}"
        row = {
            "id": pid,
            "created_at": (t0 + timedelta(seconds=int(rng.integers(7 * 86400)))).isoformat(),
            "user": f"user_{int(rng.integers(1, 400)):03d}",
            "lang": "en",
        }
        if k < len(pick):
            i = int(pick[k])
            photo = str(rng.choice(list(photos))) if rng.random() < photo_rate else None
            row.update(
                text=held_out.texts[i],
                label=LABELS[int(held_out.labels[i])],
                slice="real_text",
                source=f"vader:{held_out.sources[i]}",
                photo=photo,
            )
        else:
            cap = str(rng.choice(list(CAPTION_MIX), p=list(CAPTION_MIX.values())))
            img = str(rng.choice(list(IMAGE_MIX), p=list(IMAGE_MIX.values())))
            photo = str(rng.choice(PHOTO_SENTIMENT[img]))
            text = str(rng.choice(CAPTIONS[cap])) + str(rng.choice(SUFFIXES))
            row.update(
                text=text,
                label=slice_label(cap, img),
                slice="image_carries",
                source="demo:hand_written",
                photo=photo,
                caption_reads=cap,
                photo_stands_for=img,
            )
        row["image"] = None
        if photo:
            row["image"] = f"images/{pid}.jpg"
            files[row["image"]] = jitter(photos[photo], rng, max_side)
            if rng.random() < broken_rate:  # what real dumps have: dead links, cut and wrong files
                kind = str(rng.choice(["missing", "truncated", "html"]))
                row["broken_image"] = kind
                if kind == "missing":
                    del files[row["image"]]
                elif kind == "truncated":
                    files[row["image"]] = files[row["image"]][:600]
                else:
                    files[row["image"]] = b"<html><body>404 Not Found</body></html>"
        rows.append(row)
    order = rng.permutation(len(rows))
    return [rows[i] for i in order], files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mmsent make-demo-data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("out", help="folder or s3://bucket/prefix")
    ap.add_argument("--real", type=int, default=2400, help="posts with real human-rated text")
    ap.add_argument("--slice", type=int, default=600, help="posts of the image_carries slice")
    ap.add_argument(
        "--photo-rate", type=float, default=0.4, help="share of real-text posts with a photo"
    )
    ap.add_argument(
        "--broken-rate", type=float, default=0.02, help="share of image links that are broken"
    )
    ap.add_argument("--max-side", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rows, files = build(a.real, a.slice, a.photo_rate, a.broken_rate, a.seed, a.max_side)
    fs, root, _ = filesystem(a.out)
    fs.create_dir(root, recursive=True)
    files["posts.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows).encode()
    from .demo_readme import readme

    files["README.md"] = readme(rows, a).encode()
    for rel, data in files.items():
        if "/" in rel:
            fs.create_dir(f"{root}/{rel.rsplit('/', 1)[0]}", recursive=True)
        with fs.open_output_stream(f"{root}/{rel}") as f:
            f.write(data)
    counts = {s: sum(r["slice"] == s for r in rows) for s in ("real_text", "image_carries")}
    print(json.dumps({"out": a.out, "posts": len(rows), **counts, "images": len(files) - 2}))
    return 0
