"""Pictures of the evaluation report (matplotlib, Agg backend: no display needed).

confusion_png(matrix, labels, "confusion.png")
curves_png(history, "curves.png")            # loss / accuracy / macro-F1 per epoch
samples_png(model, pre, posts, scores, "samples.png")   # image, text, labels, modality weights
"""

from __future__ import annotations

import textwrap

import numpy as np
import torch

from ..preprocess import to_tensors
from .batches import preprocess


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def confusion_png(m: np.ndarray, labels: list[str], path) -> None:
    plt = _plt()
    rates = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.1 * len(labels) + 2))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                f"{m[i, j]}\n{rates[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix (share of each true class)",
    )
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_yticklabels(labels)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_png(history: list[dict], path) -> None:
    """One panel per measure (loss, accuracy, macro-F1); train and validation where both exist."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    panels = [
        (m, [s for s in ("train", "val") if f"{s}_{m}" in history[0]])
        for m in ("loss", "accuracy", "macro_f1")
    ]
    panels = [(m, sides) for m, sides in panels if sides]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (measure, sides) in zip(axes[0], panels, strict=True):
        for side in sides:
            ax.plot(epochs, [h.get(f"{side}_{measure}") for h in history], marker="o", label=side)
        ax.set(title=measure.replace("_", "-"), xlabel="epoch")
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pick_samples(posts, scores: dict, n: int, seed: int = 0) -> list[int]:
    """Posts with an image, taken from every group in turn, right and wrong predictions mixed."""
    rng = np.random.default_rng(seed)
    pred = scores["fused"].argmax(1)
    pools: dict = {}
    for i in rng.permutation(np.flatnonzero(scores["has_image"])):
        pools.setdefault((posts.sources[i], bool(pred[i] == posts.labels[i])), []).append(int(i))
    chosen, keys = [], sorted(pools, key=str)
    while len(chosen) < n and any(pools.values()):
        for k in keys:
            if pools[k] and len(chosen) < n:
                chosen.append(pools[k].pop())
    return chosen


@torch.inference_mode()
def samples_png(model, pre, posts, scores: dict, path, n: int = 8) -> None:
    names = model.cfg.modalities()
    idx = pick_samples(posts, scores, n) if "image" in names else []
    if not idx:  # the pictures are of posts' images: nothing to show without an image tower
        return
    plt = _plt()
    labels = model.cfg.labels
    cols = min(4, len(idx))
    rows = -(-len(idx) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx, strict=False):
        batch = preprocess(pre, posts, [i])
        t = to_tensors(batch, model.device)
        fused = model(t)
        ax.imshow(batch["pixels"][0])
        if fused.attention is not None:  # cross_attention: where the text looked in the image
            grid = _attention_grid(fused.attention, batch, _image_tokens(model, t))
            if grid is not None:
                ax.imshow(
                    grid,
                    cmap="inferno",
                    alpha=0.45,
                    extent=(0, batch["pixels"].shape[2], batch["pixels"].shape[1], 0),
                    interpolation="bilinear",
                )
        p = scores["fused"][i]
        true, pred = labels[posts.labels[i]], labels[int(p.argmax())]
        text = "".join(ch for ch in str(posts.texts[i] or "(no text)") if not _emoji(ch))
        text = textwrap.shorten(text, 150, placeholder=" ...")
        weights = " ".join(
            f"{m[:3]} {w:.2f}" for m, w in zip(names, scores["weights"][i], strict=True)
        )
        ax.set_title(
            f"true {true} | pred {pred} ({p.max():.2f})\nweights {weights}",
            fontsize=9,
            color="green" if true == pred else "red",
        )
        ax.text(
            0,
            -0.02,
            "\n".join(textwrap.wrap(text, 42)),
            transform=ax.transAxes,
            fontsize=7.5,
            va="top",
            ha="left",
            parse_math=False,
        )
    title = "sample posts: image, text, true and predicted label, the head's modality weights"
    if model.cfg.fusion.head == "cross_attention":
        title += "\noverlay: where the text's tokens attended in the image (mean over tokens)"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _image_tokens(model, t: dict) -> int:
    """How many tokens the image tower gives: the first ones of the head's attention keys (the
    other modalities' tokens follow, in the model's order)."""
    tower = model.towers["image"]
    return tower({k: t[k] for k in tower.input_keys}).tokens.shape[1]


def _attention_grid(attn: torch.Tensor, batch: dict, n_image: int) -> np.ndarray | None:
    """Mean attention of the real text tokens over the image's token grid, (side, side)."""
    a = attn[0, :, :n_image].float().cpu().numpy()  # (T_text, P)
    mask = batch["attention_mask"][0]  # (C, L): the tower drops unused windows and padding
    used = mask.sum(-1)
    c, l_ = max(int((used > 0).sum()), 1), max(int(used.max()), 1)
    q = mask[:c, :l_].reshape(-1).astype(bool)
    side = int(round(a.shape[1] ** 0.5))
    if side * side != a.shape[1] or len(q) != a.shape[0] or not q.any():
        return None
    return a[q].mean(0).reshape(side, side)


def _emoji(ch: str) -> bool:
    """Characters the bundled DejaVu font cannot draw (matplotlib would warn for each)."""
    o = ord(ch)
    return 0x2600 <= o < 0x27C0 or 0xFE00 <= o < 0xFE10 or o >= 0x1F000
