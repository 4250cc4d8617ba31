"""Labelled posts for training: readers, label maps and seeded stratified splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VADER_SOURCES = {
    "tweets": "tweets_GroundTruth.txt",
    "movie_snippets": "movieReviewSnippets_GroundTruth.txt",
    "nyt_editorials": "nytEditorialSnippets_GroundTruth.txt",
}
VADER_DIR = Path(__file__).resolve().parents[2] / "data" / "vader-ground-truth"


@dataclass
class Posts:
    """Columns of labelled posts; `images` holds encoded image bytes or None."""

    texts: list[str | None]
    labels: np.ndarray  # (N,) int64
    images: list[bytes | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.texts)
        self.images = self.images or [None] * n
        self.sources = self.sources or [""] * n

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx) -> Posts:
        return Posts([self.texts[i] for i in idx], self.labels[idx], [self.images[i] for i in idx],
                     [self.sources[i] for i in idx])  # fmt: skip


def rating_to_label(rating: float, threshold: float = 0.5) -> int:
    """The usual 3 classes of the VADER ratings: 0 negative (< -t), 1 neutral, 2 positive (> t)."""
    return 0 if rating < -threshold else 2 if rating > threshold else 1


def read_vader(directory: Path = VADER_DIR) -> Posts:
    texts, labels, sources = [], [], []
    for source, name in VADER_SOURCES.items():
        with open(directory / name, encoding="utf-8", errors="replace", newline="") as f:
            for line in f:
                parts = line.rstrip("\r\n").split("\t")
                if len(parts) < 3 or not parts[2].strip():
                    continue
                texts.append(parts[2])
                labels.append(rating_to_label(float(parts[1])))
                sources.append(source)
    return Posts(texts, np.array(labels, dtype=np.int64), sources=sources)


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
