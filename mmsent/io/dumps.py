"""THE reader of dumps, for bulk scoring and for training/evaluation alike: listing input files,
formats, compression, caps, and one row per input row with an error code for every bad one.

    files = list_inputs("s3://bucket/dump/*.jsonl")          # sorted URIs (file, folder, glob, s3://)
    for item in read_records(files[0], "auto", ReadCfg()):   # Item(row, record, error, detail)
        ...                                                  # record None <=> error set
    count = count_file(files[0], "auto", ReadCfg())          # Count(rows, lines): no parser used
    ref, status, detail = resolve_image("img/a.jpg", parent(files[0]), ReadCfg())

Formats (from the extension, after a compression suffix; `fmt` forces one): JSON lines (.jsonl,
.ndjson), .json (an array of records, else JSON lines), CSV, Parquet. Compression by the suffix
(.gz .bz2 .zst .lz4, through pyarrow's codecs), for every text format. A UTF-8 byte-order mark at
the start is dropped.

Rows and their keys (`input_row`, stable: it depends only on the file):
- JSON lines: the 0-based physical line number; lines end at "\\n" (CRLF works). Blank lines (only
  ASCII whitespace) are not rows. A line over `max_record_bytes` is record_too_large; it is
  skipped in pieces, never held whole, and the next line reads normally. A line that is not a
  JSON object (whatever json.loads raises, 100,000 `[` included) or nests deeper than
  MAX_DEPTH levels is invalid_record, with the reason in `detail`.
- .json: when the first non-blank byte is `[`, the file is read whole (at most
  `max_json_array_bytes`, else one record_too_large row 0) and, if it parses as an array, element
  i is row i (non-objects: invalid_record). A file that does not parse whole is read as JSON lines
  (the train reader did so; a JSONL file may be named .json).
- CSV: the default dialect (comma, double quote), strict: a quoted field must be followed by a
  comma or the end of the record, and a lone CR outside quotes is invalid_record (no old-Mac line
  ends). The row key is the record's FIRST physical line, as in JSON lines (the header is line 0
  or the first non-blank line): the same key rule for every text format, a key that points at
  the line to look at, and keys that stay put when an error row makes the parser restart (see
  below), which a record index would not. A record that does not parse, or spans more than
  `max_record_lines` lines or `max_record_bytes` bytes, is an error row for its first line, and
  parsing restarts at the NEXT physical line (only that record's lines are buffered): an unclosed
  quote costs one row, not the rest of the file. Empty cells are null (CSV cannot tell "" from
  null; JSON and Parquet dumps write null for "no value"); a short record lacks its trailing
  columns, extra fields are dropped. When the header itself does not parse, every other
  non-blank line is an invalid_record row. csv's global field_size_limit is left alone: this
  module parses CSV itself (a small state machine, csv's default dialect in strict mode, checked
  against csv.reader in tests/test_readers_fuzz.py) so that the caps are its own.
- Parquet: the row number; one row group at a time, in batches of the wanted columns only. A row
  whose top-level string and binary cells hold more than `max_record_bytes` is record_too_large
  (its cells are never turned into Python objects). A row group that does not decode, or not to
  the number of rows the footer gives it (a corrupt page can do that silently), is where the
  file breaks (below).

Bytes that are not UTF-8 survive as lone surrogates (surrogateescape), in JSON and CSV alike: the
one preprocessing path then says text_not_utf8 (the train reader used to put U+FFFD in instead).

A file that breaks mid-way (corrupt or truncated compression, a truncated Parquet file) is data,
not infrastructure: the rows read so far stand, and ONE more row, at the next input_row, is
input_read_error with the reason; nothing after it can be read. A storage failure (S3 out of
reach, no permission, an I/O error) raises StorageError, naming the file: that is not the dump's
fault, and a retry may well succeed.

Row accounting without the parser (`count_file`, used by the job summary): JSON lines and CSV are
re-counted as non-blank physical lines by a plain scan of the bytes; a JSONL file has exactly that
many rows, a CSV file that many data lines (its records may span lines: lines - rows of them are
inside quoted fields); Parquet's count is its footer's. A JSON array is counted by parsing it
(JSON has no ambiguity that could merge two elements: it parses whole or is read as lines).

Image references (`resolve_image`, one rule for scoring and training): URLs and absolute paths
are kept (the fetch layer bounds them); a relative path is relative to the input file's folder
and must stay inside it, lexically and, for local paths, after symlinks are resolved, unless
`images_outside_input_dir`; one that leaves it is image_url_forbidden.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import json
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .. import codes
from ..boundary import describe
from ..config import ConfigError, ReadCfg

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
COMPRESSED = tuple(COMPRESSION)
CHUNK = 1 << 16  # bytes read at a time from a file that is not compressed
ZCHUNK = 8 * 1024  # from a compressed one: a read that meets a break loses what it decoded
MAX_DEPTH = 64  # JSON nesting; deeper records are invalid (and could not be pickled between stages)
PARQUET_BATCH = 512  # rows per Parquet batch
_GLOB = re.compile(r"[*?\[]")
_BOM = b"\xef\xbb\xbf"


class Item(NamedTuple):
    row: int  # input_row: the row's key in its file
    record: dict | None  # None when `error` is set
    error: str | None = None  # a code: invalid_record, record_too_large, input_read_error
    detail: str | None = None  # what was wrong (short; for the error_detail column)


class Count(NamedTuple):
    rows: int  # rows read_records yields for the file
    lines: int | None  # non-blank physical data lines (byte scan); None: Parquet, JSON array


class StorageError(OSError):
    """The store failed (not the data): unreachable, permission, I/O error. Raised, never a row."""


class _Broken(Exception):
    """The data of a file breaks here (corrupt compression, ...): what was read before stands."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class _Over(NamedTuple):
    """A physical line over max_record_bytes: its bytes are skipped, only whether any was not
    whitespace is kept (a blank line is never a row, however long)."""

    ink: bool


# ---------------------------------------------------------------- paths


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path, file:// or s3:// URI (S3 endpoint, keys and
    region from the usual AWS_* settings, so MinIO, moto and AWS all work)."""
    if uri.startswith("s3://"):
        return pafs.FileSystem.from_uri(uri)
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def to_uri(fs: pafs.FileSystem, path: str) -> str:
    return f"s3://{path}" if fs.type_name == "s3" else path


def parent(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if "/" in uri else "."


def _suffixes(uri: str) -> tuple[str, str | None]:
    """(format extension, codec or None) of a file name."""
    name = uri.lower()
    codec = None
    for ext, c in COMPRESSION.items():
        if name.endswith(ext):
            name, codec = name.removesuffix(ext), c
            break
    return os.path.splitext(name)[1], codec


def file_format(uri: str, fmt: str = "auto") -> str | None:
    """The format of one input file: `fmt` when given, else from the extension (None: unknown)."""
    return fmt if fmt != "auto" else FORMATS.get(_suffixes(uri)[0])


def _listed(info: pafs.FileInfo) -> bool:
    return info.is_file and not info.base_name.startswith(("_", "."))  # _SUCCESS, .crc, ...


def list_inputs(spec: str, fmt: str = "auto") -> list[str]:
    """Input files of a path, a folder (recursively: data files only), a glob or an s3:// prefix."""
    fs, path = filesystem(spec)
    try:
        if m := _GLOB.search(path):
            base = path[: m.start()].rsplit("/", 1)[0] or "/"
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            files = [i.path for i in infos if _listed(i) and fnmatch.fnmatchcase(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.File:
                files = [path]
            elif info.type == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
                files = [i.path for i in infos if _listed(i) and file_format(i.path, fmt)]
            else:
                files = []
    except OSError as e:
        raise StorageError(f"cannot list {spec}: {e}") from e
    if not files:
        raise FileNotFoundError(f"no input files at {spec}")
    uris = sorted(to_uri(fs, f) for f in files)
    unknown = [u for u in uris if not file_format(u, fmt)]
    if unknown:
        raise ConfigError(f"cannot tell the format of {unknown[0]}: set `format` in the config")
    return uris


# ---------------------------------------------------------------- bytes


class _Guard(io.RawIOBase):
    """A pyarrow file seen as a Python one, so that its own failures (storage) are told apart from
    those of decompressing or decoding what it returned (data): both are OSError in pyarrow."""

    def __init__(self, f, uri: str):
        super().__init__()
        self.f, self.uri = f, uri

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - whatever the store raises is a storage failure
            raise StorageError(f"cannot read {self.uri}: {e}") from e

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.f.seekable()

    def readinto(self, b) -> int:
        data = self._call(self.f.read, len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._call(self.f.seek, pos, whence)

    def tell(self) -> int:
        return self._call(self.f.tell)


def _open(uri: str, random_access: bool = False):
    fs, path = filesystem(uri)
    try:
        if random_access:
            return fs.open_input_file(path)
        return fs.open_input_stream(path, compression=None)  # decompressed by _chunks
    except OSError as e:
        raise StorageError(f"cannot open {uri}: {e}") from e


def _chunks(uri: str) -> Iterator[bytes]:
    """The decompressed bytes of a text file, CHUNK at a time, without a leading byte-order mark.
    Raises StorageError (the store failed) or _Broken (the data did)."""
    codec = _suffixes(uri)[1]
    with _open(uri) as raw:
        guard = _Guard(raw, uri)
        stream = pa.CompressedInputStream(pa.PythonFile(guard, mode="r"), codec) if codec else guard
        # small reads of a compressed stream: a read that meets broken data fails as a whole, so
        # the rows before a break stand up to the last ZCHUNK read
        size, first = ZCHUNK if codec else CHUNK, True
        while True:
            try:
                chunk = stream.read(size)
                while first and len(chunk) < len(_BOM) and (more := stream.read(size)):
                    chunk += more  # enough bytes to see a byte-order mark
            except StorageError:
                raise
            except Exception as e:  # noqa: BLE001 - decompression failed: the data is broken
                if isinstance(e.__context__, StorageError):  # pyarrow re-raised the store's error
                    raise e.__context__ from None
                raise _Broken(describe(e)) from None
            if first:
                chunk, first = chunk.removeprefix(_BOM), False
            if not chunk:
                return
            yield bytes(chunk)


def _lines(chunks: Iterable[bytes], cap: int) -> Iterator[tuple[int, bytes | _Over | _Broken]]:
    """(physical line number, its bytes without the "\\n") for every line, blank ones included;
    a line over `cap` bytes is _Over; a broken stream ends with (next line number, _Broken)."""
    n, parts, size, over, ink = 0, [], 0, False, False
    try:
        for chunk in chunks:
            pieces = chunk.split(b"\n")
            for piece in pieces[:-1]:
                if over or size + len(piece) > cap:
                    yield n, _Over(ink or bool(piece.strip()))
                else:
                    yield n, b"".join((*parts, piece)) if parts else piece
                n, parts, size, over, ink = n + 1, [], 0, False, False
            rest = pieces[-1]
            if over:
                ink = ink or bool(rest.strip())
            elif size + len(rest) > cap:  # drop what is held: only whether it had ink is kept
                over, ink = True, any(p.strip() for p in (*parts, rest))
                parts = []
            elif rest:
                parts.append(rest)
                size += len(rest)
        if over or size:  # the last line, without a "\n"
            yield n, _Over(ink) if over else b"".join(parts)
    except _Broken as e:  # the line being read when the data broke is lost with the rest
        yield n, e


def _count_lines(chunks: Iterable[bytes]) -> tuple[int, bool]:
    """(non-blank physical lines, whether the data broke) by a plain scan of the bytes, nothing
    of the readers' line splitting or parsing. A line cut by the break is not counted."""
    n, ink = 0, False
    try:
        for chunk in chunks:
            pieces = chunk.split(b"\n")
            for piece in pieces[:-1]:
                n += ink or bool(piece.strip())
                ink = False
            ink = ink or bool(pieces[-1].strip())
    except _Broken:
        return n, True
    return n + ink, False


# ---------------------------------------------------------------- JSON

_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels"


def _json_item(n: int, raw: bytes | str | Any, parsed: bool = False) -> Item:
    if parsed:
        rec = raw
    else:
        try:
            text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
            rec = json.loads(text)
        except RecursionError:  # C json's own limit: the same answer as the depth check below
            return Item(n, None, codes.INVALID_RECORD, _DEEP)
        except Exception as e:  # noqa: BLE001 - whatever json.loads raises: the line is not JSON
            return Item(n, None, codes.INVALID_RECORD, describe(e))
    if not isinstance(rec, dict):
        return Item(n, None, codes.INVALID_RECORD, f"a JSON {_kind(rec)}, not an object")
    if _too_deep(rec):
        return Item(n, None, codes.INVALID_RECORD, _DEEP)
    return Item(n, rec)


def _kind(v: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number"
    )


def _too_deep(rec: dict) -> bool:
    stack = [(rec, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        inner = v.values() if isinstance(v, dict) else v
        stack.extend((x, depth + 1) for x in inner if isinstance(x, dict | list))
    return False


def _jsonl(lines: Iterable[tuple[int, Any]], cfg: ReadCfg) -> Iterator[Item]:
    for n, data in lines:
        if isinstance(data, _Broken):
            yield Item(n, None, codes.INPUT_READ_ERROR, data.detail)
            return
        if isinstance(data, _Over):
            if data.ink:
                yield Item(n, None, codes.RECORD_TOO_LARGE, _line_over(cfg))
        elif data.strip():
            yield _json_item(n, data)


def _line_over(cfg: ReadCfg) -> str:
    return f"a line over read.max_record_bytes ({cfg.max_record_bytes} bytes)"


def _json_file(chunks: Iterator[bytes], cfg: ReadCfg) -> tuple[list[Item] | None, Iterator]:
    """A .json file: (its rows, when it is one array; else None) and the file's chunks again."""
    head: list[bytes] = []
    size, cap, broken = 0, cfg.max_json_array_bytes, None
    try:
        for chunk in chunks:  # up to the first non-blank byte
            head.append(chunk)
            size += len(chunk)
            if chunk.strip() or size > cap:
                break
        array = b"".join(head).lstrip().startswith(b"[")
        while array and size <= cap and (chunk := next(chunks, None)) is not None:
            head.append(chunk)
            size += len(chunk)
    except _Broken as e:
        broken = e

    def again() -> Iterator[bytes]:
        yield from head
        if broken is not None:
            raise broken
        yield from chunks

    if not array:
        return None, again()
    if broken is not None:
        return [Item(0, None, codes.INPUT_READ_ERROR, broken.detail)], iter(())
    if size > cap:
        detail = f"a JSON array file over read.max_json_array_bytes ({cap} bytes)"
        return [Item(0, None, codes.RECORD_TOO_LARGE, detail)], iter(())
    try:
        records = json.loads(b"".join(head).decode("utf-8", "surrogateescape"))
    except Exception:  # noqa: BLE001 - not one array: JSON lines (one may start with `[`)
        return None, again()
    if not isinstance(records, list):
        return None, again()
    return [_json_item(i, r, parsed=True) for i, r in enumerate(records)], iter(())


# ---------------------------------------------------------------- CSV

_BARE = re.compile(r"[^,\r]*")  # an unquoted field: quotes inside it are literal, as in csv
_QUOTED = re.compile(r'[^"]*+(?:""[^"]*+)*+')  # inside quotes, up to a lone quote or the line end


class _Pushback:
    """Lines, with some put back to be read again (a failed record's lines after its first)."""

    def __init__(self, lines: Iterator):
        self.lines, self.back = lines, []

    def __iter__(self):
        return self

    def __next__(self):
        return self.back.pop() if self.back else next(self.lines)

    def push(self, lines: list) -> None:
        self.back.extend(reversed(lines))


def _csv_record(data: bytes, src: _Pushback, cfg: ReadCfg) -> tuple[list[str] | None, str, str]:
    """The fields of the record whose first line is `data`, its continuation lines pulled from
    `src`; or (None, code, detail), its continuation lines put back to be read again."""
    taken: list = []

    def fail(code: str, detail: str):
        src.push(taken)
        return None, code, detail

    if isinstance(data, _Over):
        return None, codes.RECORD_TOO_LARGE, _line_over(cfg)
    s, size, pos, fields = data.decode("utf-8", "surrogateescape"), len(data), 0, []
    if '"' not in s and "\r" not in s[:-1]:  # most lines: no quotes, nothing to decide
        return s.removesuffix("\r").split(","), None, None
    while True:  # one field per turn
        quoted = s.startswith('"', pos)
        if quoted:
            pos, parts = pos + 1, []
            while True:
                m = _QUOTED.match(s, pos)
                parts.append(m.group())
                pos = m.end()
                if pos < len(s):  # the closing quote
                    pos += 1
                    break
                nxt = next(src, None)  # the field goes on, on the next physical line
                if nxt is None:
                    return fail(codes.INVALID_RECORD, "unexpected end of data in a quoted field")
                taken.append(nxt)
                d = nxt[1]
                if isinstance(d, _Broken):
                    return fail(codes.INVALID_RECORD, "a quoted field cut short by a read error")
                if isinstance(d, _Over) or size + 1 + len(d) > cfg.max_record_bytes:
                    detail = f"a record over read.max_record_bytes ({cfg.max_record_bytes} bytes)"
                    return fail(codes.RECORD_TOO_LARGE, detail)
                if 1 + len(taken) > cfg.max_record_lines:
                    detail = f"a record over read.max_record_lines ({cfg.max_record_lines} lines)"
                    return fail(codes.RECORD_TOO_LARGE, detail)
                size += 1 + len(d)
                parts.append("\n")
                s, pos = d.decode("utf-8", "surrogateescape"), 0
            value = "".join(parts).replace('""', '"')
        else:
            m = _BARE.match(s, pos)
            value, pos = m.group(), m.end()
        fields.append(value)
        if pos == len(s) or (pos == len(s) - 1 and s[pos] == "\r"):  # the end of the record
            return fields, None, None
        if s[pos] == ",":
            pos += 1
        elif quoted:
            return fail(codes.INVALID_RECORD, "a closing quote not followed by ',' or the line end")
        else:
            return fail(codes.INVALID_RECORD, "a carriage return inside an unquoted field")


def _csv(lines: Iterator, cfg: ReadCfg) -> Iterator[Item]:
    src = _Pushback(lines)
    header: list[str] | None = None
    header_error = None
    for n, data in src:
        if isinstance(data, _Broken):
            yield Item(n, None, codes.INPUT_READ_ERROR, data.detail)
            return
        if not (data.ink if isinstance(data, _Over) else data.strip()):
            continue  # a blank line outside a record: not a row
        if header_error is not None:  # no columns to read any line by
            yield Item(n, None, codes.INVALID_RECORD, header_error)
            continue
        fields, code, detail = _csv_record(data, src, cfg)
        if header is None:
            if fields is None:
                header_error = f"the CSV header (line {n}) does not read: {detail}"
            else:
                header = fields
        elif fields is None:
            yield Item(n, None, code, detail)
        else:  # empty cells are null; a short record lacks the trailing columns
            yield Item(n, {k: v or None for k, v in zip(header, fields, strict=False)})


def csv_header(uri: str, cfg: ReadCfg) -> list[str]:
    """The column names of a CSV file ([] when it has no header that reads)."""
    src = _Pushback(_lines(_chunks(uri), cfg.max_record_bytes))
    for _, data in src:
        if isinstance(data, _Broken):
            return []
        if data.ink if isinstance(data, _Over) else data.strip():
            return _csv_record(data, src, cfg)[0] or []
    return []


# ---------------------------------------------------------------- Parquet


def parquet_schema(uri: str) -> pa.Schema | None:
    """The Arrow schema of a Parquet file (None: its footer does not read)."""
    with _open(uri, random_access=True) as f:
        try:
            return pq.ParquetFile(_Guard(f, uri)).schema_arrow
        except StorageError:
            raise
        except Exception:  # noqa: BLE001 - a truncated or corrupt file: its rows will say so
            return None


def _parquet(uri: str, columns: list[str] | None, cfg: ReadCfg) -> Iterator[Item]:
    n = 0
    with _open(uri, random_access=True) as f:
        try:
            pf = pq.ParquetFile(_Guard(f, uri))
            names = pf.schema_arrow.names
            present = names if columns is None else [c for c in columns if c in names]
            for group in range(pf.num_row_groups):  # one at a time: a corrupt one ends the file
                end = n + pf.metadata.row_group(group).num_rows  # (not before)
                if not present:  # none of the wanted columns: rows still count
                    yield from (Item(i, {}) for i in range(n, end))
                    n = end
                for batch in pf.iter_batches(PARQUET_BATCH, [group], present) if present else ():
                    batch = batch.slice(0, end - n)
                    yield from _parquet_batch(batch, n, cfg)
                    n += batch.num_rows
                if n != end:  # a corrupt page can decode to fewer (or more) rows, silently
                    raise ValueError(f"row group {group} does not hold the rows its footer says")
            if n != pf.metadata.num_rows:  # what the job summary counts the file by
                raise ValueError(f"the footer says {pf.metadata.num_rows} rows, its groups {n}")
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated or corrupt: the rest cannot be read
            yield Item(n, None, codes.INPUT_READ_ERROR, describe(e))


_SIZED = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
)


def _parquet_batch(batch: pa.RecordBatch, first: int, cfg: ReadCfg) -> Iterator[Item]:
    cols = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
    size = np.zeros(batch.num_rows, dtype=np.int64)
    for c in cols:
        if any(is_kind(c.type) for is_kind in _SIZED):
            size += pc.fill_null(pc.binary_length(c), 0).to_numpy(zero_copy_only=False)
    over = size > cfg.max_record_bytes
    if over.any():  # the cells of rows over the cap are never made Python objects
        mask = pa.array(over)
        cols = [pc.if_else(mask, pa.scalar(None, c.type), c) for c in cols]
    names, values = batch.schema.names, [c.to_pylist() for c in cols]
    detail = f"a row over read.max_record_bytes ({cfg.max_record_bytes} bytes)"
    for i in range(batch.num_rows):
        if over[i]:
            yield Item(first + i, None, codes.RECORD_TOO_LARGE, detail)
        else:
            yield Item(first + i, {k: v[i] for k, v in zip(names, values, strict=True)})


# ---------------------------------------------------------------- the reader


def read_records(
    uri: str, fmt: str = "auto", cfg: ReadCfg | None = None, columns: list[str] | None = None
) -> Iterator[Item]:
    """Every row of one input file, in order: Item(row, record, None, None), or Item(row, None,
    code, detail) for a bad one. `columns`: the Parquet columns to read (None: all). Raises only
    StorageError (and ConfigError for an unknown format)."""
    cfg = cfg or ReadCfg()
    kind = file_format(uri, fmt)
    if kind == "parquet":
        yield from _parquet(uri, columns, cfg)
        return
    if kind not in ("jsonl", "json", "csv"):
        raise ConfigError(f"{uri}: unknown format {kind!r}; use jsonl, json, csv or parquet")
    chunks = _chunks(uri)
    if kind == "json":
        items, chunks = _json_file(chunks, cfg)
        if items is not None:
            yield from items
            return
    lines = _lines(chunks, cfg.max_record_bytes)
    yield from _csv(lines, cfg) if kind == "csv" else _jsonl(lines, cfg)


def count_file(uri: str, fmt: str = "auto", cfg: ReadCfg | None = None) -> Count:
    """The rows of one input file, counted without the record parser where the format allows
    (JSON lines: non-blank lines; Parquet: the footer); CSV rows need the parser (a record may
    span lines), its non-blank data lines do not. Raises only StorageError."""
    cfg = cfg or ReadCfg()
    kind = file_format(uri, fmt)
    if kind == "parquet":
        with _open(uri, random_access=True) as f:
            try:
                return Count(pq.ParquetFile(_Guard(f, uri)).metadata.num_rows, None)
            except StorageError:
                raise
            except Exception:  # noqa: BLE001 - no footer: the file is one input_read_error row
                return Count(1, None)
    chunks = _chunks(uri)
    if kind == "json":
        items, chunks = _json_file(chunks, cfg)
        if items is not None:
            return Count(len(items), None)
    lines, broken = _count_lines(chunks)
    if kind == "csv":  # the first non-blank line is the header; a break is one more row
        lines = max(lines - 1, 0) + broken
        return Count(sum(1 for _ in read_records(uri, kind, cfg)), lines)
    return Count(lines + broken, lines + broken)


# ---------------------------------------------------------------- image references


def resolve_image(
    ref: Any, base: str, cfg: ReadCfg | None = None
) -> tuple[Any, str | None, str | None]:
    """(reference to fetch, None, None), or (None, code, detail) for a relative path that leaves
    `base` (the input file's folder, local or s3://) or cannot be a path. Non-strings (inline
    bytes), blanks, URLs and absolute paths are returned as they are."""
    if not isinstance(ref, str) or not ref.strip():
        return ref, None, None
    ref = ref.strip()
    if "://" in ref or ref.startswith("/"):
        return ref, None, None
    base = base.rstrip("/")
    if cfg is not None and cfg.images_outside_input_dir:
        return f"{base}/{ref}", None, None
    shown = ref if len(ref) <= 80 else ref[:77] + "..."
    rel = posixpath.normpath(ref)  # lexical: "img/../../x" -> "../x"
    if rel == ".." or rel.startswith("../"):
        return None, codes.IMAGE_URL_FORBIDDEN, f"{shown!r} leaves the input file's folder"
    path = f"{base}/{rel}"
    if "://" not in base:  # local: a symlink inside the folder may point out of it
        try:
            real = os.path.realpath(path)
        except (ValueError, OSError) as e:  # a NUL byte, a name that is no file name
            return None, codes.IMAGE_URL_INVALID, describe(e)
        if not os.path.join(real, "").startswith(_real_dir(base)):
            return (
                None,
                codes.IMAGE_URL_FORBIDDEN,
                f"{shown!r} leads out of the input file's folder",
            )
    return path, None, None


@functools.lru_cache(maxsize=256)
def _real_dir(path: str) -> str:
    return os.path.join(os.path.realpath(path), "")  # with the trailing separator
