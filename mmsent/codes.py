"""Status and error codes of the data path, and the output record of a scored post.

A bad input never raises: it becomes a status code on its row. Codes are stable strings, part of
the output format (Parquet columns, HTTP responses); add new ones, never rename.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Modality statuses that are not errors.
OK = "ok"
MISSING = "missing"  # the post has no value for this modality
UNUSED = "unused"  # the post has one but the model does not read this modality

# Text errors.
EMPTY_TEXT = "empty_text"
TEXT_NOT_UTF8 = "text_not_utf8"
TEXT_INVALID = "text_invalid"  # not a string (e.g. a number or a list in a JSON dump)

# Image errors: reading the bytes.
IMAGE_EMPTY = "image_empty"  # zero bytes
IMAGE_BYTES_TOO_LARGE = "image_bytes_too_large"
NOT_AN_IMAGE = "not_an_image"  # bytes are not an image format that is allowed (HTML, text, ...)
IMAGE_FORMAT_UNSUPPORTED = "image_format_unsupported"  # an image format not in image_formats
IMAGE_TOO_LARGE = "image_too_large"  # decoded pixel count over the limit (decompression bomb)
IMAGE_TRUNCATED = "image_truncated"
IMAGE_DECODE_ERROR = "image_decode_error"

# Image errors: fetching the bytes.
IMAGE_NOT_FOUND = "image_not_found"  # 404 / no such key / no such file
IMAGE_FETCH_TIMEOUT = "image_fetch_timeout"
IMAGE_FETCH_ERROR = "image_fetch_error"  # other HTTP / network / permission errors, after retries
IMAGE_URL_INVALID = "image_url_invalid"  # unsupported scheme or malformed URL
IMAGE_URL_FORBIDDEN = "image_url_forbidden"  # SSRF guard, or a relative path out of the dump
IMAGE_NOT_A_FILE = "image_not_a_file"  # a local path that is a device, FIFO, socket or folder

# Audio errors: reading the bytes (mmsent.audio.decode_audio).
AUDIO_EMPTY = "audio_empty"  # zero bytes
AUDIO_BYTES_TOO_LARGE = "audio_bytes_too_large"
# a container not in the allowed formats (AIFF, MP4/M4A, WebM, AMR, ...), or a channel count or
# sample rate over the caps
AUDIO_FORMAT_UNSUPPORTED = "audio_format_unsupported"
AUDIO_DECODE_ERROR = "audio_decode_error"  # not audio, or an allowed format's corrupt body
AUDIO_TOO_LONG = "audio_too_long"  # longer than max_seconds (and not truncated)
AUDIO_TOO_SHORT = "audio_too_short"  # shorter than min_seconds (no frames, a few samples)
AUDIO_SILENT = "audio_silent"  # peak below silence_dbfs: nothing to hear

# Audio errors: fetching the bytes (the one fetcher's image_* codes, as audio_*: fetch_code).
AUDIO_NOT_FOUND = "audio_not_found"
AUDIO_FETCH_TIMEOUT = "audio_fetch_timeout"
AUDIO_FETCH_ERROR = "audio_fetch_error"
AUDIO_URL_INVALID = "audio_url_invalid"
AUDIO_URL_FORBIDDEN = "audio_url_forbidden"
AUDIO_NOT_A_FILE = "audio_not_a_file"

# Tabular errors (mmsent.tabular.encode_tabular).
TABULAR_INVALID = "tabular_invalid"  # a value that is not a number / category; it counts as missing

# Row errors.
NO_USABLE_INPUT = "no_usable_input"  # neither modality could be used: no prediction
MISSING_COLUMN = "missing_column"
INVALID_RECORD = "invalid_record"  # a dump line that is not a JSON object, or a malformed CSV row
RECORD_TOO_LARGE = "record_too_large"  # a line, CSV record or field over the reader's cap
INPUT_READ_ERROR = (
    "input_read_error"  # the rest of a file cannot be read (corrupt compression, ...)
)
INTERNAL_ERROR = "internal_error"  # anything else one row raised; `error_detail` names it

# Request errors of the HTTP API (mmsent.serve): the `error.code` of a 4xx/5xx JSON body.
MALFORMED_REQUEST = "malformed_request"  # 422: not JSON, wrong fields or types
TOO_MANY_POSTS = "too_many_posts"  # 422
BODY_TOO_LARGE = "body_too_large"  # 413
IMAGE_BASE64_INVALID = "image_base64_invalid"  # 422
AUDIO_BASE64_INVALID = "audio_base64_invalid"  # 422
INVALID_POSTS = "invalid_posts"  # 422/413: unusable inputs; `details` has per-post codes
UNAUTHORIZED = "unauthorized"  # 401
REQUEST_IMAGES_TOO_LARGE = (
    "request_images_too_large"  # 413: image bytes of one request over the cap
)
OVERLOADED = "overloaded"  # 503/429: over max_queued_requests, retry later
NOT_FOUND = "not_found"  # 404 / 405
# INTERNAL_ERROR (above) is also a post's code in a 422's `details`; a bare 500 only for a server fault

NOT_ERRORS = {OK, MISSING, UNUSED}
# modalities with a <m>_status in every output: inputs every job and request may carry (a model
# without the tower says "unused"); the others (tabular: columns the model names) only with it
ALWAYS_STATUS = ("text", "image", "audio")
_AS_AUDIO = {
    IMAGE_NOT_FOUND: AUDIO_NOT_FOUND,
    IMAGE_FETCH_TIMEOUT: AUDIO_FETCH_TIMEOUT,
    IMAGE_FETCH_ERROR: AUDIO_FETCH_ERROR,
    IMAGE_URL_INVALID: AUDIO_URL_INVALID,
    IMAGE_URL_FORBIDDEN: AUDIO_URL_FORBIDDEN,
    IMAGE_NOT_A_FILE: AUDIO_NOT_A_FILE,
    IMAGE_BYTES_TOO_LARGE: AUDIO_BYTES_TOO_LARGE,
}


def fetch_code(status: str | None, medium: str) -> str | None:
    """A code of the one fetcher (mmsent.io.fetch names its codes image_*) for a `medium`'s
    bytes: "image" as it is, "audio" as audio_*."""
    return _AS_AUDIO.get(status, status) if medium == "audio" else status


def status_modalities(modalities: list[str]) -> list[str]:
    """The modalities with a <m>_status column in the output of a model reading `modalities`."""
    from .config import MODALITIES

    return [m for m in MODALITIES if m in ALWAYS_STATUS or m in modalities]


def is_error(status: str | None) -> bool:
    return status is not None and status not in NOT_ERRORS


def row_error(statuses) -> str | None:
    """The row's error code: the first modality error (in status_modalities order), or None."""
    for status in statuses:
        if is_error(status):
            return status
    return None


def prediction_to_json(
    row: dict[str, Any], labels: list[str], modalities: list[str]
) -> dict[str, Any]:
    """One flat output row (as written to Parquet) as the nested JSON of the CLI and the HTTP API.
    `modalities`: the model's, in the order of its fusion weights."""

    def num(x: Any) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)

    weights = {m: num(row.get(f"weight_{m}")) for m in modalities}
    return {
        "label": row["label"],
        "scores": {k: num(row[f"score_{k}"]) for k in labels},
        "confidence": num(row["confidence"]),
        "modalities_used": [m for m in row["modalities"].split("+") if m],
        "fusion_weights": weights if any(v is not None for v in weights.values()) else None,
        "status": {m: row[f"{m}_status"] for m in status_modalities(modalities)},
        "error": row["error"],
        "model": {"name": row["model_name"], "version": row["model_version"]},
    }


def rows_from_columns(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    n = len(next(iter(columns.values())))
    return [{k: _py(v[i]) for k, v in columns.items()} for i in range(n)]


def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x
