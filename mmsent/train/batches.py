"""Batches of labelled posts through the one preprocessing path, and predictions over them: what
the loop (mmsent.train.loop), the report and the VADER comparison all read posts with.

    for batch, labels in batches(posts, pre, 32, rng, length_buckets=True): ...   # training
    batch = preprocess(pre, posts, [0, 5])    # two posts: text, image, audio, tabular, statuses
    probs, weights = predict_posts(model, pre, posts)                             # (N, K), (N, M)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..models.model import MultimodalClassifier
from ..preprocess import Preprocessor, to_tensors
from .data import Posts
from .metrics import report


def batches(
    posts: Posts,
    pre: Preprocessor,
    size: int,
    rng: np.random.Generator | None = None,
    length_buckets: bool = False,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Preprocessed batches; shuffled when `rng` is given, with similar text lengths together."""
    order = np.arange(len(posts))
    if rng is not None:
        order = rng.permutation(len(posts))
        if length_buckets:  # sort within windows of 50 batches, then shuffle the batches
            lens = np.array([len(t or "") for t in posts.texts])
            win = size * 50
            order = np.concatenate(
                [
                    c[np.argsort(lens[c], kind="stable")]
                    for c in np.split(order, range(win, len(order), win))
                ]
            )
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(chunks)
    for idx in chunks:
        yield preprocess(pre, posts, idx), posts.labels[idx]


def preprocess(pre: Preprocessor, posts: Posts, idx) -> dict[str, np.ndarray]:
    """The posts at `idx` through the one preprocessing path, every modality with its status."""
    pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
    return pre(
        pick(posts.texts),
        pick(posts.images),
        pick(posts.image_status),
        audio=pick(posts.audio),
        audio_status=pick(posts.audio_status),
        tabular=pick(posts.tabular),
    )


@torch.inference_mode()
def predict_posts(
    model: MultimodalClassifier,
    pre: Preprocessor,
    posts: Posts,
    batch_size: int = 64,
    drop: Callable[[dict], dict] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities (N, K) and fusion weights (N, M) or None, in input order."""
    model.eval()
    probs, weights = [], []
    for batch, _ in batches(posts, pre, batch_size):
        t = to_tensors(batch, model.device)
        out = model(t, drop=drop(t) if drop else None)
        probs.append(out.logits.float().softmax(-1).cpu().numpy())
        if out.weights is not None:
            weights.append(out.weights.float().cpu().numpy())
    return np.concatenate(probs), (np.concatenate(weights) if weights else None)


def evaluate(model, pre, posts: Posts, batch_size: int = 64) -> dict:
    probs, _ = predict_posts(model, pre, posts, batch_size)
    return report(posts.labels, probs.argmax(1), model.cfg.labels)
