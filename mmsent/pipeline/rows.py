"""Input rows (dumps.Items) -> the read stage's Arrow block: one typed column per field, each
pass-through column by its (output) name with its own type, so `ds.schema()` and `ds.show()` read
like the dump. What reading already knows is a column too (the record's error and its detail,
an image or audio status); the one preprocessing path judges the text, image, audio and tabular
values later.

    block = read_block("s3://bucket/dump/a.jsonl", items, plan)   # a pyarrow.Table
    block.schema   # input_file: string, input_row: int64, id: string, input_text: string, ...

A string column holds valid UTF-8 only, so what a hostile dump has in the text or image column
and no string column can carry is judged now, with the code the later stage would give it: a
number, list or object as text is text_invalid, undecodable bytes or lone surrogates are
text_not_utf8 (both by the one preprocessing path's clean_text); an image value that is no
reference (a number, a list, lone surrogates) is what fetching it gives, image_url_invalid (an
audio value: audio_url_invalid).
Ids and pass-through values are made writable (valid UTF-8, one type per column; a value that
does not fit its column's type is null).
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .. import codes
from ..boundary import describe
from ..config import PreprocessCfg
from ..io.dumps import Item, parent, resolve_image
from ..preprocess import MODEL_KEYS, clean_text

if TYPE_CHECKING:
    from .plan import Plan

_STR, _BIN = pa.string(), pa.binary()
# the read stage's own columns (then the pass-through ones): what each row is, and what is known
READ_FIELDS = [
    ("input_file", _STR),  # the row's key: its file and 0-based row (see dumps.Item)
    ("input_row", pa.int64()),
    ("id", _STR),  # as written: 17 -> "17"
    ("input_text", _STR),  # the text as read; null: none, or not text (then text_status says)
    ("input_image", _STR),  # the reference to fetch: a resolved path or URL
    ("image_data", _BIN),  # the image's bytes: inline in the dump, or (later) fetched
    ("image_fetch_status", _STR),  # what fetching gave (known now for a value no URL can be)
    ("image_fetch_detail", _STR),
    ("record_error", _STR),  # invalid_record, record_too_large, missing_column, internal_error
    ("error_detail", _STR),  # what the record error or the image status was
    ("text_status", _STR),  # a code known from reading: text_invalid, text_not_utf8
    ("image_status", _STR),  # a code known from reading: image_url_forbidden, ... (not fetched)
    ("input_audio", _STR),  # as the image columns, for the audio clip
    ("audio_data", _BIN),
    ("audio_fetch_status", _STR),
    ("audio_fetch_detail", _STR),
    ("audio_status", _STR),
    ("input_tabular", _STR),  # JSON {column: value} of the model's tabular columns the row has
]
# what the fetch stage fills, per fetched modality
FETCHED = {m: (f"{m}_data", f"{m}_fetch_status", f"{m}_fetch_detail") for m in ("image", "audio")}
# columns that are the stages' own (read, preprocess): a pass-through column with one of these
# names is renamed input_<name>, as one named like an output column is (plan.make_plan)
STAGE_COLUMNS = frozenset(n for n, _ in READ_FIELDS) | set(MODEL_KEYS) | {"text_chunks"}


def read_schema(plan: Plan) -> pa.Schema:
    return pa.schema(READ_FIELDS + [(out, typ) for _, out, typ in plan.passthrough])


def read_block(uri: str, items: list[Item], plan: Plan) -> pa.Table:
    """The read stage's block of `items` of input file `uri` (images resolved against its folder)."""
    base = parent(uri)
    rows = [_safe_row(item, plan, base) for item in items]
    schema = read_schema(plan)
    columns = {"input_file": [uri] * len(items), "input_row": [i.row for i in items]}
    arrays = [
        to_arrow(columns[f.name] if f.name in columns else [r.get(f.name) for r in rows], f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _safe_row(item: Item, plan: Plan, base: str) -> dict[str, Any]:
    """The row's columns; a record that cannot become a row is that row's internal_error."""
    try:
        return to_row(item.record, plan, base, item.error, item.detail)
    except Exception as e:  # noqa: BLE001 - the read stage's error boundary, one row at a time
        return {"record_error": codes.INTERNAL_ERROR, "error_detail": describe(e)}


def to_row(
    record: dict | None, plan: Plan, base: str, error: str | None = None, detail: str | None = None
) -> dict[str, Any]:
    """One record as {column: value} of the read stage (absent columns are null)."""
    if record is None:
        return {"record_error": error or codes.INVALID_RECORD, "error_detail": detail}
    c = plan.columns
    rid = normalize_id(record.get(c.id))
    if rid is None or not any(k in record for k in (c.text, c.image, c.audio, *plan.tabular)):
        error = codes.MISSING_COLUMN
    text, text_status = text_cell(record.get(c.text))
    row = {"id": rid, "input_text": text, "record_error": error, "text_status": text_status}
    details = []
    for m, column in (("image", c.image), ("audio", c.audio)):
        ref, status, detail = resolve_image(record.get(column), base, plan.read)
        ref, data, fetch_status = image_cells(ref)
        row[f"input_{m}"], row[f"{m}_data"] = ref, data
        # resolve_image and image_cells give the one fetcher's codes (image_*)
        row[f"{m}_fetch_status"] = codes.fetch_code(fetch_status, m)
        row[f"{m}_status"] = codes.fetch_code(status, m)
        details.append(detail)
    row["error_detail"] = next(filter(None, details), None)
    row["input_tabular"] = tabular_cell(record, plan.tabular)
    for name, out, typ in plan.passthrough:
        row[out] = cell(record.get(name), typ)
    return row


def tabular_cell(record: dict, columns: list[str]) -> str | None:
    """The model's tabular columns of a record as JSON text (values as read: a CSV cell stays a
    string, a JSON number a number; mmsent.tabular judges them), or None when it has none."""
    values = {k: record[k] for k in columns if k in record}
    if not values:
        return None
    return valid_utf8(json.dumps(values, ensure_ascii=False, default=str, allow_nan=True))


def text_cell(v: Any) -> tuple[str | None, str | None]:
    """(text for the string column, code known now): UTF-8 bytes are text; a value that is not
    text gets clean_text's code (the one preprocessing path's judgement); NaN is no text."""
    if isinstance(v, bytes | bytearray):
        with contextlib.suppress(UnicodeDecodeError):  # undecodable: clean_text says so below
            v = bytes(v).decode("utf-8")
    if v is None or (isinstance(v, str) and _is_utf8(v)):
        return v, None
    status = clean_text(v, PreprocessCfg())[1]
    return None, None if status == codes.MISSING else status


def image_cells(ref: Any) -> tuple[str | None, bytes | None, str | None]:
    """A resolved image value as (reference, inline bytes, fetch status known now). A value that
    no reader may see (not a string, lone surrogates) is what fetch() makes of it; its text stays
    in the reference column, so a model without an image tower still reads it as present."""
    if isinstance(ref, bytes | bytearray):
        return None, bytes(ref), None
    if ref is None or (isinstance(ref, float) and math.isnan(ref)):
        return None, None, None
    if isinstance(ref, str) and _is_utf8(ref):
        return ref, None, None
    return cell(ref, _STR), None, codes.IMAGE_URL_INVALID


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def valid_utf8(s: str) -> str:
    """`s` with lone surrogates (undecodable bytes, broken \\u escapes) replaced by U+FFFD."""
    if _is_utf8(s):
        return s
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


def to_arrow(values: list, typ: pa.DataType, nan_is_null: bool = False) -> pa.Array:
    """Values as `typ`; a value that does not fit the column's type becomes null."""
    try:
        return pa.array(values, type=typ, from_pandas=nan_is_null)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return pa.array([_fits(v, typ) for v in values], type=typ)


def _fits(v: Any, typ: pa.DataType) -> Any:
    try:
        pa.array([v], type=typ)
        return v
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return None
