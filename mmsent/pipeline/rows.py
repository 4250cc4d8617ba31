"""One input row (a dumps.Item) -> the Row the stages carry: id, raw text, image reference, record
error, pass-through values, and what reading already knows (the error's detail, an image status).
Text and image stay raw (the one preprocessing path judges them); ids and pass-through values are
made writable (Parquet needs valid UTF-8 and one type per column).

    blob = encode(item, plan, base="s3://bucket/dump")  # a pickled Row
"""

from __future__ import annotations

import json
import math
import pickle
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from .. import codes
from ..boundary import describe
from ..io.dumps import Item, resolve_image

if TYPE_CHECKING:
    from .plan import Plan


class Row(NamedTuple):
    id: str | None
    text: Any
    image: Any  # what to fetch (a resolved path or URL), inline bytes, or None
    error: str | None  # record error: invalid_record, record_too_large, missing_column, ...
    extras: tuple  # pass-through values, in plan.passthrough order
    detail: str | None = None  # what the record error or the image status was
    image_status: str | None = None  # known before fetching (image_url_forbidden): not fetched


def encode(item: Item, plan: Plan, base: str) -> bytes:
    """A pickled Row; a record that cannot become one is that row's internal_error."""
    try:
        return pickle.dumps(to_row(item.record, plan, base, item.error, item.detail), protocol=5)
    except Exception as e:  # noqa: BLE001 - the read stage's error boundary, one row at a time
        n = len(plan.passthrough)
        return pickle.dumps(
            Row(None, None, None, codes.INTERNAL_ERROR, (None,) * n, describe(e)), 5
        )


def to_row(
    record: dict | None, plan: Plan, base: str, error: str | None = None, detail: str | None = None
) -> Row:
    if record is None:
        return Row(None, None, None, error or codes.INVALID_RECORD, (None,) * len(plan.passthrough),
                   detail)  # fmt: skip
    c = plan.columns
    rid = normalize_id(record.get(c.id))
    if rid is None or (c.text not in record and c.image not in record):
        error = codes.MISSING_COLUMN
    extras = tuple(cell(record.get(name), typ) for name, _, typ in plan.passthrough)
    image, status, image_detail = resolve_image(record.get(c.image), base, plan.read)
    return Row(rid, record.get(c.text), image, error, extras, image_detail, status)


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
