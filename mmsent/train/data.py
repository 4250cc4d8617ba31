"""Labelled posts for training: the bundled VADER texts, label maps and seeded stratified splits."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import codes
from ..config import ConfigError

VADER_SOURCES = {
    "tweets": "tweets_GroundTruth.txt",
    "movie_snippets": "movieReviewSnippets_GroundTruth.txt",
    "nyt_editorials": "nytEditorialSnippets_GroundTruth.txt",
}
VADER_DIR = Path(__file__).resolve().parents[1] / "data" / "vader-ground-truth"
VADER_LABELS = ("negative", "neutral", "positive")  # the classes of rating_to_label


@dataclass
class Posts:
    """Columns of labelled posts; `images` / `audio` hold encoded bytes or None (until fetched),
    `tabular` per post a mapping of the model's tabular columns to their raw values, or None."""

    texts: list[str | None]
    labels: np.ndarray  # (N,) int64
    images: list[bytes | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # group / source of each post (split strata)
    image_refs: list[str | None] = field(default_factory=list)  # where `images` came from
    image_status: list[str] = field(default_factory=list)  # mmsent.codes code once fetched
    ids: list = field(default_factory=list)
    audio: list[bytes | None] = field(default_factory=list)
    audio_refs: list[str | None] = field(default_factory=list)
    audio_status: list[str] = field(default_factory=list)
    tabular: list[dict | None] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.texts)
        for name in ("images", "image_refs", "audio", "audio_refs", "tabular"):
            setattr(self, name, getattr(self, name) or [None] * n)
        self.sources = self.sources or [""] * n
        self.image_status = self.image_status or [
            codes.MISSING if b is None else codes.OK for b in self.images
        ]
        self.audio_status = self.audio_status or [
            codes.MISSING if b is None else codes.OK for b in self.audio
        ]
        self.ids = self.ids or list(range(n))

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx) -> Posts:
        idx = np.asarray(idx, dtype=np.int64)
        cols = {f.name: getattr(self, f.name) for f in fields(self)}
        return Posts(
            **{k: v[idx] if k == "labels" else [v[i] for i in idx] for k, v in cols.items()}
        )


def rating_to_label(rating: float, threshold: float = 0.5) -> int:
    """The usual 3 classes of the VADER ratings: 0 negative (< -t), 1 neutral, 2 positive (> t)."""
    return 0 if rating < -threshold else 2 if rating > threshold else 1


def vader_rows(directory: Path = VADER_DIR, limit: int = 0) -> list[dict]:
    """The VADER texts as labelled records (id, text, label, source); `limit`: per source file."""
    rows = []
    for source, name in VADER_SOURCES.items():
        with open(directory / name, encoding="utf-8", errors="replace", newline="") as f:
            got = 0
            for line in f:
                parts = line.rstrip("\r\n").split("\t")
                if len(parts) < 3 or not parts[2].strip():
                    continue
                label = VADER_LABELS[rating_to_label(float(parts[1]))]
                row = {"id": f"{source}/{parts[0]}", "text": parts[2], "label": label}
                rows.append({**row, "source": source})
                got += 1
                if limit and got >= limit:
                    break
    return rows


def read_vader(directory: Path = VADER_DIR) -> Posts:
    rows = vader_rows(directory)
    labels = np.array([VADER_LABELS.index(r["label"]) for r in rows], dtype=np.int64)
    return Posts([r["text"] for r in rows], labels, sources=[r["source"] for r in rows])


# data sets shipped in the package, by the name `data.train` gives them: name -> (folder, rows)
BUNDLED = {"vader-ground-truth": (VADER_DIR, vader_rows)}


def stratified_split(strata: list, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices split in `fractions` within every stratum (e.g. (source, label)), seeded."""
    rng = np.random.default_rng(seed)
    groups: dict = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    parts: list[list[int]] = [[] for _ in fractions]
    for key in sorted(groups, key=str):
        idx = np.array(groups[key])
        rng.shuffle(idx)
        cuts = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for p, chunk in zip(parts, np.split(idx, cuts), strict=True):
            p.extend(chunk.tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def label_key(raw) -> str | None:
    """A raw label as text: 4, 4.0 and "4" are all "4"; None, NaN and "" are None."""
    if raw is None or (isinstance(raw, float) and raw != raw):
        return None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    key = str(raw).strip()
    return key or None


def make_label_map(
    keys: set[str],
    labels: list[str] | None,
    label_map: dict[str, str] | None,
    model_labels: list[str],
) -> tuple[list[str], dict[str, str]]:
    """(class names in order, raw label text -> class name) for the raw labels `keys` of the data.

    An explicit `label_map` wins; then the given `labels` (raw values that are names, or class
    indices 0..K-1); then the model's labels when they cover the data; else the sorted raw values.
    """
    if label_map:
        mapping = {str(k): str(v) for k, v in label_map.items()}
        names = labels or (
            model_labels
            if set(mapping.values()) <= set(model_labels)
            else sorted(set(mapping.values()))
        )
        return list(names), {**{n: n for n in names}, **mapping}
    names = labels or (model_labels if keys <= set(model_labels) else None)
    if names is None:
        numeric = all(k.lstrip("-").isdigit() for k in keys)
        names = sorted(keys, key=int) if numeric else sorted(keys)
        return names, {n: n for n in names}
    if keys <= set(names):
        return list(names), {n: n for n in names}
    if all(k.isdigit() and int(k) < len(names) for k in keys):
        return list(names), {**{str(i): n for i, n in enumerate(names)}, **{n: n for n in names}}
    unknown = sorted(keys - set(names))[:10]
    raise ConfigError(f"labels {unknown} are not among {list(names)}: give data.label_map")
