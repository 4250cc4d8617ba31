"""The evaluation report of a checkpoint on labelled posts, written by `mmsent train` (on the test
split, into the run folder) and by `mmsent evaluate` (on any data), through the same function:

    metrics = write_report("runs/x", model, posts, history=history, extra={"data": ...})

Files: metrics.json, per_class.md, ablation.md (the same posts scored fused, text-only and
image-only, per group), confusion.png, curves.png (when a history exists) and samples.png
(sample posts with the weight the head gave the image; attention maps for cross_attention).
A post that a mode cannot score (image-only and no usable image) counts under "scored", not as
an error of the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..models.model import MultimodalClassifier
from ..preprocess import Preprocessor, to_tensors
from . import plots
from .batches import batches
from .data import Posts
from .metrics import report

MODES = {"fused": (), "text_only": ("image",), "image_only": ("text",)}  # mode -> modalities hidden


@torch.inference_mode()
def score(
    model: MultimodalClassifier, pre: Preprocessor, posts: Posts, batch_size: int = 64
) -> dict:
    """Class probabilities per mode (N, K), fusion weights (N, M) or None, presence per modality."""
    model.eval()
    out: dict[str, list] = {k: [] for k in [*MODES, "weights", "has_text", "has_image"]}
    for batch, _ in batches(posts, pre, batch_size):
        t = to_tensors(batch, model.device)
        n = len(batch["text_status"])
        for mode, hidden in MODES.items():
            drop = {
                m: torch.ones(n, dtype=torch.bool, device=model.device)
                for m in hidden
                if m in model.towers
            }
            fused = model(t, drop=drop)
            out[mode].append(fused.logits.float().softmax(-1).cpu().numpy())
            if mode == "fused" and fused.weights is not None:
                out["weights"].append(fused.weights.float().cpu().numpy())
        for m in ("text", "image"):
            out[f"has_{m}"].append(
                np.asarray(batch.get(f"has_{m}", np.zeros(n, dtype=bool)), dtype=bool)
            )
    k = len(model.cfg.labels)
    res = {
        key: np.concatenate(v) if v else np.zeros((0, k))
        for key, v in out.items()
        if key != "weights"
    }
    res["weights"] = np.concatenate(out["weights"]) if out["weights"] else None
    for m in ("text", "image"):  # a model without a tower does not read that modality
        res[f"has_{m}"] = res[f"has_{m}"].astype(bool) & (m in model.towers)
    return res


def covered(scores: dict, mode: str) -> np.ndarray:
    has_t, has_i = scores["has_text"], scores["has_image"]
    return {"fused": has_t | has_i, "text_only": has_t, "image_only": has_i}[mode]


def ablation(scores: dict, y: np.ndarray, groups: list[str], labels: list[str]) -> dict:
    names = ["all"] + (sorted(set(groups)) if len(set(groups)) > 1 else [])
    table = {}
    for g in names:
        in_g = (
            np.ones(len(y), dtype=bool)
            if g == "all"
            else np.array([x == g for x in groups], dtype=bool)
        )
        row = {"posts": int(in_g.sum()), "with_image": int((in_g & scores["has_image"]).sum())}
        for mode in MODES:
            ok = in_g & covered(scores, mode)
            r = report(y[ok], scores[mode][ok].argmax(1), labels)
            row[mode] = {
                "scored": int(ok.sum()),
                "accuracy": round(r["accuracy"], 4),
                "macro_f1": round(r["macro_f1"], 4),
            }
        table[g] = row
    return table


def write_report(
    out_dir,
    model: MultimodalClassifier,
    posts: Posts,
    history: list[dict] | None = None,
    extra: dict | None = None,
    batch_size: int = 64,
    samples: int = 8,
) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, pre = model.cfg.labels, Preprocessor(model.cfg)
    scores = score(model, pre, posts, batch_size)
    ok = covered(scores, "fused")
    test = report(posts.labels[ok], scores["fused"][ok].argmax(1), labels)
    metrics = {
        "model": {
            "name": model.cfg.name,
            "version": model.cfg.version,
            "head": model.cfg.fusion.head,
            "labels": labels,
        },
        "posts": len(posts),
        "unscored": int((~ok).sum()),
        "with_image": int(scores["has_image"].sum()),
        "test": test,
        "ablation": ablation(scores, posts.labels, posts.sources, labels),
        **(extra or {}),
    }
    if history:
        metrics["history"] = history
        plots.curves_png(history, out / "curves.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "per_class.md").write_text(per_class_md(test, labels))
    (out / "ablation.md").write_text(ablation_md(metrics["ablation"]))
    plots.confusion_png(np.array(test["confusion"]), labels, out / "confusion.png")
    if scores["weights"] is not None and "image" in model.towers and samples:
        plots.samples_png(model, pre, posts, scores, out / "samples.png", samples)
    return metrics


def per_class_md(r: dict, labels: list[str]) -> str:
    lines = ["| class | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    for lab in labels:
        c = r["per_class"][lab]
        lines.append(
            f"| {lab} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        )
    lines.append(f"| **macro** | | | **{r['macro_f1']:.3f}** | {r['n']} |")
    return "\n".join(lines) + f"\n\naccuracy {r['accuracy']:.3f} on {r['n']} posts\n"


def ablation_md(table: dict) -> str:
    lines = [
        "| group | posts | with image | fused F1 (acc) | text-only F1 (acc) | image-only F1 (acc) [scored] |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for g, row in table.items():
        f1, text, image = (f"{row[m]['macro_f1']:.3f} ({row[m]['accuracy']:.3f})" for m in MODES)
        lines.append(
            f"| {g} | {row['posts']} | {row['with_image']} | {f1} | {text} | {image} "
            f"[{row['image_only']['scored']}] |"
        )
    return "\n".join(lines) + "\n\nmacro-F1 (accuracy) over the posts a mode can score.\n"
