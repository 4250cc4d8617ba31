"""Real photographs that ship inside installed packages (scikit-image, matplotlib, scikit-learn),
for sample dumps, demo data and tests. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

from PIL import Image

PHOTO_DIRS = [
    ("skimage", "data"),
    ("matplotlib", "mpl-data/sample_data"),
    ("sklearn", "datasets/images"),
]
# drawings, scans of text, test patterns and microscopy: not photos of the kind posts carry
NOT_PHOTOS = ("text", "page", "chessboard", "logo", "phantom", "clock", "cell", "microaneurysms",
              "ihc", "retina", "horse", "color", "s1045", "axes_grid", "eeg", "membrane", "goog", "aapl",
              "msft", "jacksboro", "topobathy", "percent", "lfw")  # fmt: skip


def photo_files() -> list[Path]:
    files = []
    for package, sub in PHOTO_DIRS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.origin:
            continue
        folder = Path(spec.origin).parent / sub
        for f in sorted(folder.glob("*")):
            if f.suffix.lower() in (".jpg", ".jpeg", ".png") and not any(
                w in f.name.lower() for w in NOT_PHOTOS
            ):
                files.append(f)
    return files


def real_photos(max_side: int | None = 512) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes) for every shipped photo, downscaled to `max_side` (None: as shipped)."""
    photos = []
    for f in photo_files():
        try:
            im = Image.open(f)
            im.load()
        except OSError:
            continue
        if min(im.size) < 128:
            continue
        im = im.convert("RGB")
        if max_side:
            im.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        photos.append((f.stem, buf.getvalue()))
    return photos
