"""One input record -> the values the stages carry: id, raw text, image reference, record error,
pass-through values. Text and image stay raw (the one preprocessing path judges them); ids and
pass-through values are made writable (Parquet needs valid UTF-8 and one type per column).

    blob = encode(record, plan, base="s3://bucket/dump")  # pickled (id, text, image, error, extras)
"""

from __future__ import annotations

import json
import math
import pickle
from typing import Any

import pyarrow as pa

from .. import schema as S
from .readers import Plan

Row = tuple[str | None, Any, Any, str | None, tuple]


def encode(record: dict | None, plan: Plan, base: str) -> bytes:
    return pickle.dumps(to_row(record, plan, base), protocol=5)


def to_row(record: dict | None, plan: Plan, base: str) -> Row:
    if record is None:
        return None, None, None, S.INVALID_RECORD, (None,) * len(plan.passthrough)
    c = plan.columns
    rid = normalize_id(record.get(c.id))
    error = None
    if rid is None or (c.text not in record and c.image not in record):
        error = S.MISSING_COLUMN
    extras = tuple(cell(record.get(name), typ) for name, _, typ in plan.passthrough)
    return rid, record.get(c.text), resolve_image(record.get(c.image), base), error, extras


def valid_utf8(s: str) -> str:
    """`s` with lone surrogates (undecodable bytes, broken \\u escapes) replaced by U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def normalize_id(v: Any) -> str | None:
    """Ids are written as strings: 17 -> "17", 17.0 -> "17"; null, NaN and blank -> None."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bytes | bytearray):
        v = bytes(v).decode("utf-8", "replace")
    if isinstance(v, str):
        return valid_utf8(v) if v.strip() else None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return valid_utf8(json.dumps(v, ensure_ascii=False, sort_keys=True, default=str))


def cell(v: Any, typ: pa.DataType) -> Any:
    """A pass-through value for a column of type `typ` (string columns: JSON text of non-strings)."""
    if not pa.types.is_string(typ) or v is None:
        return v
    if isinstance(v, str):
        return valid_utf8(v)
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "replace")
    return valid_utf8(json.dumps(v, ensure_ascii=False, default=str))


def resolve_image(v: Any, base: str) -> Any:
    """Relative image paths are relative to the input file's folder (local or s3://)."""
    if not isinstance(v, str) or not v.strip():
        return v
    v = v.strip()
    if "://" in v or v.startswith("/"):
        return v
    return f"{base.rstrip('/')}/{v}"
