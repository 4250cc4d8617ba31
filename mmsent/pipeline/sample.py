"""`mmsent make-sample-dump OUT`: the sample dump that the README scores. Real texts (the VADER
ground truth in data/), real photos (shipped inside installed packages), and a dozen rows that
are bad on purpose, so that the output shows the error codes. Nothing is downloaded.

    mmsent make-sample-dump out/sample-dump [--posts 600] [--seed 0]
    -> OUT/posts.jsonl (image_url relative to it) and OUT/images/*.jpg
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

LABELS = ["negative", "neutral", "positive"]


def bad_rows(text: str) -> list[bytes]:
    """One line per failure the output must show (row id says which), in JSONL as written."""
    rows = [
        {"id": "bad-404", "text": text, "image_url": "images/no-such-photo.jpg"},
        {"id": "bad-truncated-jpeg", "text": text, "image_url": "images/truncated.jpg"},
        {"id": "bad-zero-byte-image", "text": text, "image_url": "images/empty.jpg"},
        {"id": "bad-html-not-image", "text": text, "image_url": "images/page.jpg"},
        {"id": "bad-random-bytes", "text": text, "image_url": "images/noise.jpg"},
        {"id": "bad-url-scheme", "text": text, "image_url": "ftp://example.invalid/a.jpg"},
        {"id": "bad-empty-text", "text": "   "},
        {"id": "bad-text-not-a-string", "text": ["a", "list"]},
        {"text": "This post has no id, so its row says missing_column."},
        {"id": 12345, "text": "A numeric id is fine: it is written as a string."},
        {"id": "bad-no-text-no-image", "lang": "en"},
    ]
    lines = [json.dumps(r).encode() for r in rows]
    lines.append(b'{"id": "bad-not-utf8", "text": "caf\xe9 cr\xe8me: Latin-1, not UTF-8"}')
    lines.append(b"{this line is not JSON")
    return lines


def write_images(folder: Path, photos: list[tuple[str, bytes]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in photos:
        (folder / f"{name}.jpg").write_bytes(data)
    (folder / "truncated.jpg").write_bytes(photos[0][1][: len(photos[0][1]) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "page.jpg").write_bytes(b"<!doctype html><html><body>Not found</body></html>")
    (folder / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(4096))


def make(out: Path, posts: int = 600, seed: int = 0) -> Path:
    from ..sample_data import real_photos
    from ..train.data import read_vader

    vader, photos = read_vader(), real_photos()
    write_images(out / "images", photos)
    rng = np.random.default_rng(seed)
    lines = []
    for k, i in enumerate(rng.choice(len(vader), size=posts, replace=False)):
        row = {
            "id": f"post-{k:05d}",
            "text": vader.texts[i],
            "source": vader.sources[i],
            "true_label": LABELS[int(vader.labels[i])],
        }
        if k % 2 == 0:  # half the posts carry a photo
            row["image_url"] = f"images/{photos[(k // 2) % len(photos)][0]}.jpg"
        lines.append(json.dumps(row).encode())
    bad = bad_rows(vader.texts[0])
    for j, line in enumerate(bad):  # spread out, so they land in different batches
        lines.insert((j + 1) * len(lines) // (len(bad) + 1), line)
    path = out / "posts.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmsent make-sample-dump", description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="folder for posts.jsonl and images/")
    ap.add_argument("--posts", type=int, default=600, help="good posts (bad ones come on top)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    path = make(args.out, args.posts, args.seed)
    print(f"wrote {path} ({args.posts} posts + {len(bad_rows(''))} bad rows) and {args.out}/images")
    return 0
