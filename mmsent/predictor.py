"""Model inputs -> output rows: the model stage shared by bulk scoring, serving and the CLI.

    runner = ModelRunner()                       # loads the checkpoint once
    columns = runner(preprocessed_batch)         # dict of numpy columns, one row per input row

    predictor = Predictor()                      # preprocessing + runner, for single posts
    predictor.predict([{"text": "I love this!", "image": jpeg_bytes}])  # -> list of JSON dicts

Output columns (also the Parquet schema of bulk scoring): label, score_<label> for every label,
confidence, modalities ("text+image"), weight_<modality>, <modality>_status (codes.
status_modalities), error, model_name, model_version. A row with no usable modality keeps label None, scores NaN and an error.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import codes
from .boundary import concat_columns, describe, isolate, take
from .models.checkpoint import read_meta
from .models.runtime import load_runtime
from .preprocess import MODEL_KEYS, Preprocessor, to_tensors, unpack_batch

INTERNAL_COLUMNS = set(MODEL_KEYS) | {"text_chunks"}


class ModelRunner:
    """runtime: torch | onnx; precision: auto | fp32 | bf16 | fp16 | int8 (mmsent.models.runtime)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str | None = None,
        runtime: str = "torch",
        precision: str = "auto",
    ):
        self.model = load_runtime(model_dir, runtime, precision, device)
        self.cfg = self.model.cfg
        self.modalities = self.cfg.modalities()
        self.meta = read_meta(model_dir)
        self.status_modalities = codes.status_modalities(self.modalities)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Preprocessed batch (pixels dense or `pack_pixels`ed) -> its non-model columns plus the
        prediction columns. The error boundary: a batch that fails is tried once more, then in
        halves; a post that fails alone gets internal_error and the others their scores."""
        n = len(batch["text_status"])

        def work(lo: int, hi: int) -> dict[str, np.ndarray]:
            return self._forward(take(batch, lo, hi))

        def failed(lo: int, hi: int, exc: Exception) -> dict[str, np.ndarray]:
            return self.failed(take(batch, lo, hi), describe(exc))

        return isolate(work, n, concat_columns, failed, retries=1)

    def failed(self, batch: dict[str, np.ndarray], detail: str) -> dict[str, np.ndarray]:
        """The output of posts the model could not score: no prediction, internal_error."""
        n = len(batch["text_status"])
        unused = {k: v for k, v in batch.items() if k not in INTERNAL_COLUMNS}  # e.g. bad pixels
        unused.update({f"has_{m}": np.zeros(n, dtype=bool) for m in self.modalities})
        out = self._forward(unused)  # nothing usable: the model does not run
        out["error"] = np.full(n, codes.INTERNAL_ERROR, dtype=object)
        out["error_detail"] = np.full(n, detail, dtype=object)
        out["modalities"] = np.full(n, "", dtype=object)
        return out

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _autocast(self):
        """bf16/fp16 autocast where the torch runtime runs at one (ONNX graphs are what they are)."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.model.precision)
        if dtype is None or not isinstance(self.model, torch.nn.Module):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.inference_mode()
    def _forward(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = unpack_batch(batch, self.cfg)
        n = len(batch["text_status"])
        out = {k: v for k, v in batch.items() if k not in INTERNAL_COLUMNS}
        out.setdefault("error_detail", np.full(n, None, dtype=object))
        labels = self.cfg.labels
        probs = np.full((n, len(labels)), np.nan, dtype=np.float32)
        weights = np.full((n, len(self.modalities)), np.nan, dtype=np.float32)
        present = np.stack([np.asarray(batch[f"has_{m}"], dtype=bool) for m in self.modalities], 1)
        usable = present.any(1)
        if usable.any():
            idx = np.flatnonzero(usable)
            inputs = to_tensors({k: batch[k][idx] for k in MODEL_KEYS if k in batch}, self.device)
            with self._autocast():
                fused = self.model(inputs)
            probs[idx] = fused.logits.float().softmax(-1).cpu().numpy()
            if fused.weights is not None:
                weights[idx] = fused.weights.float().cpu().numpy()
        best = np.nan_to_num(probs, nan=-1.0).argmax(1)
        out["label"] = np.array(
            [labels[b] if u else None for b, u in zip(best, usable, strict=True)], dtype=object
        )
        for i, lab in enumerate(labels):
            out[f"score_{lab}"] = probs[:, i]
        out["confidence"] = np.where(usable, np.nan_to_num(probs, nan=0.0).max(1), np.nan).astype(
            np.float32
        )
        out["modalities"] = np.array(
            [
                "+".join(m for m, p in zip(self.modalities, row, strict=True) if p)
                for row in present
            ],
            dtype=object,
        )
        for i, m in enumerate(self.modalities):
            out[f"weight_{m}"] = weights[:, i]
        statuses = [batch[f"{m}_status"] for m in self.status_modalities]
        out["error"] = np.array(
            [
                codes.row_error(st) or (None if u else codes.NO_USABLE_INPUT)
                for st, u in zip(zip(*statuses, strict=True), usable, strict=True)
            ],
            dtype=object,
        )
        out["model_name"] = np.full(n, self.cfg.name, dtype=object)
        out["model_version"] = np.full(n, self.cfg.version, dtype=object)
        return out


class Predictor:
    """Preprocessing + model for posts given one by one (CLI, serving)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str | None = None,
        runtime: str = "torch",
        precision: str = "auto",
    ):
        self.runner = ModelRunner(model_dir, device, runtime, precision)
        self.pre = Preprocessor(self.runner.cfg)

    @property
    def cfg(self):
        return self.runner.cfg

    def predict(self, posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """posts: {"text": str | None, "image": bytes | None, "image_status": fetch error or None,
        "audio": bytes | None, "audio_status": ..., "tabular": {column: value} | None}."""
        if not posts:
            return []
        get = lambda key: [p.get(key) for p in posts]  # noqa: E731
        batch = self.pre(
            get("text"),
            get("image"),
            get("image_status"),
            audio=get("audio"),
            audio_status=get("audio_status"),
            tabular=get("tabular"),
        )
        rows = codes.rows_from_columns(self.runner(batch))
        return [codes.prediction_to_json(r, self.cfg.labels, self.runner.modalities) for r in rows]
