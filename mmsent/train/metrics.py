"""Classification metrics without extra dependencies: per-class precision/recall/F1, macro-F1."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    m = np.zeros((k, k), dtype=np.int64)  # rows: true, columns: predicted
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def report(y_true, y_pred, labels: list[str]) -> dict:
    return report_from_confusion(confusion(y_true, y_pred, len(labels)), labels)


def report_from_confusion(m: np.ndarray, labels: list[str]) -> dict:
    """The same report from a confusion matrix (rows: true, columns: predicted)."""
    m = np.asarray(m, dtype=np.int64)
    tp = np.diag(m).astype(float)
    precision = np.divide(tp, m.sum(0), out=np.zeros_like(tp), where=m.sum(0) > 0)
    recall = np.divide(tp, m.sum(1), out=np.zeros_like(tp), where=m.sum(1) > 0)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(tp),
        where=(precision + recall) > 0,
    )
    per_class = {
        lab: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(m[i].sum()),
        }
        for i, lab in enumerate(labels)
    }
    n = int(m.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion": m.tolist(),
    }
