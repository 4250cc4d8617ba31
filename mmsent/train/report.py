"""The evaluation report of a checkpoint on labelled posts, written by `mmsent train` (on the test
split, into the run folder) and by `mmsent evaluate` (on any data), through the same function:

    metrics = write_report("runs/x", model, posts, history=history, extra={"data": ...})

Files: metrics.json, per_class.md, ablation.md (the same posts scored fused, with each of the
model's modalities alone and, with more than two, each left out, per group: `report.modes`),
confusion.png, curves.png (when a history exists) and samples.png (sample posts with the weight
the head gave each modality; attention maps for cross_attention). A post that a mode cannot
score (image-only and no usable image) counts under "scored", not as an error of the model.
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


def modes(modalities: list[str]) -> dict[str, tuple[str, ...]]:
    """Ablation modes of a model -> the modalities each hides: fused, each modality alone
    (`<m>_only`) and, with more than two, each left out (`without_<m>`)."""
    out = {"fused": ()}
    out.update({f"{m}_only": tuple(x for x in modalities if x != m) for m in modalities})
    if len(modalities) > 2:  # with two, leaving one out is the other alone
        out.update({f"without_{m}": (m,) for m in modalities})
    return out


@torch.inference_mode()
def score(
    model: MultimodalClassifier, pre: Preprocessor, posts: Posts, batch_size: int = 64
) -> dict:
    """Class probabilities per mode (N, K), fusion weights (N, M) or None, presence per modality
    (`has_<m>`, for every modality of the model)."""
    model.eval()
    names = model.cfg.modalities()
    hidden_by = modes(names)
    out: dict[str, list] = {k: [] for k in [*hidden_by, "weights", *(f"has_{m}" for m in names)]}
    for batch, _ in batches(posts, pre, batch_size):
        t = to_tensors(batch, model.device)
        n = len(batch["text_status"])
        for mode, hidden in hidden_by.items():
            drop = {m: torch.ones(n, dtype=torch.bool, device=model.device) for m in hidden}
            fused = model(t, drop=drop)
            out[mode].append(fused.logits.float().softmax(-1).cpu().numpy())
            if mode == "fused" and fused.weights is not None:
                out["weights"].append(fused.weights.float().cpu().numpy())
        for m in names:
            out[f"has_{m}"].append(np.asarray(batch[f"has_{m}"], dtype=bool))
    k = len(model.cfg.labels)
    res = {
        key: np.concatenate(v) if v else np.zeros((0, k) if key in hidden_by else 0, dtype=float)
        for key, v in out.items()
        if key != "weights"
    }
    for m in names:
        res[f"has_{m}"] = res[f"has_{m}"].astype(bool)
    res["weights"] = np.concatenate(out["weights"]) if out["weights"] else None
    res["modalities"] = names
    return res


def covered(scores: dict, mode: str) -> np.ndarray:
    """The posts a mode can score: those with at least one modality it does not hide."""
    names = scores["modalities"]
    hidden = modes(names)[mode]
    return np.any([scores[f"has_{m}"] for m in names if m not in hidden], axis=0)


def ablation(scores: dict, y: np.ndarray, groups: list[str], labels: list[str]) -> dict:
    names = ["all"] + (sorted(set(groups)) if len(set(groups)) > 1 else [])
    table = {}
    for g in names:
        in_g = (
            np.ones(len(y), dtype=bool)
            if g == "all"
            else np.array([x == g for x in groups], dtype=bool)
        )
        row = {"posts": int(in_g.sum())}
        row.update(
            {f"with_{m}": int((in_g & scores[f"has_{m}"]).sum()) for m in scores["modalities"]}
        )
        for mode in modes(scores["modalities"]):
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
        **{f"with_{m}": int(scores[f"has_{m}"].sum()) for m in scores["modalities"]},
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
    """The ablation table: a column per mode, macro-F1 (accuracy) [posts scored, when fewer]."""
    first = next(iter(table.values()))
    shown = [k for k in first if k.startswith("with_")]
    mode_names = [k for k in first if isinstance(first[k], dict)]
    head = ["group", "posts", *(k.replace("_", " ") for k in shown)]
    head += [m.replace("_", " ") for m in mode_names]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for g, row in table.items():
        cells = [g, str(row["posts"]), *(str(row[k]) for k in shown)]
        for m in mode_names:
            r, n = row[m], row[m]["scored"]
            cell = f"{r['macro_f1']:.3f} ({r['accuracy']:.3f})" if n else "-"
            cells.append(cell + (f" [{n}]" if n < row["posts"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + (
        "\n\nmacro-F1 (accuracy) over the posts a mode can score (those with a modality it does not"
        " hide; [n]: how many, where fewer than all). `<m> only`: every other modality hidden;"
        " `without <m>`: that one hidden.\n"
    )
