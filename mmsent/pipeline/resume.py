"""Resume: a re-run on the same OUTPUT scores only the rows that no complete output file holds.

Every output row carries its input key (input_file, input_row). A Parquet file is complete iff its
footer reads (the footer is written last), so a file cut short by a kill is deleted and its rows
are scored again; the rows of complete files are skipped by the readers, before any fetch. This
holds whatever the kill hit (reader, fetch, model, write) and on S3, where an object appears whole
or not at all. A file is deleted only when the store answered and its bytes end without a footer:
a read error is retried READ_TRIES times, then stops the job with nothing deleted.

`_job.json` records what OUTPUT holds: input, model, column mapping, and fingerprints of every
input file (size, mtime, S3 ETag) and of the checkpoint (sha256 of its files). A re-run that would
mix in another input, model or column mapping, or files or a checkpoint changed since, is refused
with what changed; so is one on a `_job.json` without fingerprints (an older mmsent's).

    manifest |= {"inputs": fingerprint_inputs(files), "checkpoint": fingerprint_checkpoint(d)}
    prepare(output, manifest, overwrite=False)       # check _job.json, drop cut-short files
    done = read_keys(output)                         # {input_file: sorted unique input_rows}
    units = [{"file": f, "skip": to_ranges(done.get(f, []))} for f in files]
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..io.dumps import filesystem
from ..models.checkpoint import DEFAULT_MODEL_DIR
from .lease import LEASE
from .output import KEY

MANIFEST = "_job.json"
READ_TRIES = 4  # per file, each after pyarrow's own retries; backoff doubles from READ_BACKOFF_S
READ_BACKOFF_S = 0.25
SHOWN = 10  # changed files listed in a refusal
REDO = "Use a new OUTPUT, or --overwrite to score everything again."


class ResumeError(RuntimeError):
    pass


class ReadError(ResumeError):
    """OUTPUT could not be read (the store did not answer): nothing was deleted, try again."""


def output_files(output: str) -> list[str]:
    """Paths (inside the output's filesystem) of the Parquet files under OUTPUT."""
    fs, root = filesystem(output)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(
        i.path
        for i in infos
        if i.is_file and i.extension == "parquet" and not i.base_name.startswith(("_", "."))
    )


def fingerprint_inputs(files: list[str]) -> dict[str, dict]:
    """{uri: {size, mtime[, etag]}} of input files (S3: one HEAD each, in parallel)."""
    if not files:
        return {}
    fs, _ = filesystem(files[0])
    if fs.type_name == "s3":
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        conf = Config(
            connect_timeout=10,
            read_timeout=10,
            retries={"max_attempts": READ_TRIES},
            max_pool_connections=16,
        )
        s3 = boto3.session.Session().client("s3", config=conf)

        def head(uri: str) -> dict:
            u = urlsplit(uri)
            try:
                h = s3.head_object(Bucket=u.netloc, Key=u.path.lstrip("/"))
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    raise FileNotFoundError(f"input file {uri} is gone") from None
                raise ReadError(f"cannot read the size and ETag of {uri}: {e}") from e
            except BotoCoreError as e:
                raise ReadError(f"cannot read the size and ETag of {uri}: {e}") from e
            return {"size": h["ContentLength"], "mtime": _iso(h["LastModified"]), "etag": h["ETag"]}

        with ThreadPoolExecutor(16) as pool:
            return dict(zip(files, pool.map(head, files), strict=True))
    infos = fs.get_file_info([filesystem(f)[1] for f in files])
    if gone := [f for f, i in zip(files, infos, strict=True) if not i.is_file]:
        raise FileNotFoundError(f"input file {gone[0]} is gone")
    return {f: {"size": i.size, "mtime": _iso(i.mtime)} for f, i in zip(files, infos, strict=True)}


def fingerprint_checkpoint(model_dir: str | None) -> dict:
    """sha256 of every file of a checkpoint directory (None: the shipped default model), each
    and all together, in the order of their relative paths. Hidden files are not the model, nor
    the ONNX exports cached beside it (onnx-*: built from it, see models/runtime.py)."""
    root = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    files = {}
    for p in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        rel = p.relative_to(root).as_posix()
        parts = rel.split("/")
        derived = parts[0].startswith("onnx-")
        if p.is_file() and not derived and not any(part.startswith(".") for part in parts):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            files[rel] = h.hexdigest()
    total = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in files.items()).encode())
    return {
        "path": str(model_dir) if model_dir else "default",
        "sha256": total.hexdigest(),
        "files": files,
    }


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _same(a: dict, b: dict) -> bool:
    """One input file, then and now: an ETag (S3) says more than an mtime (a copy re-uploaded)."""
    if a.get("etag") and b.get("etag"):
        return a["size"] == b["size"] and a["etag"] == b["etag"]
    return a.get("size") == b.get("size") and a.get("mtime") == b.get("mtime")


def _listed(kind: str, items: list[str]) -> list[str]:
    more = [f"  ... and {len(items) - SHOWN} more {kind}"] if len(items) > SHOWN else []
    return [f"  {kind}: {x}" for x in items[:SHOWN]] + more


def changes(old: dict, new: dict) -> list[str]:
    """What differs between the fingerprints of `_job.json` (old) and of this run (new)."""
    was, now = old["inputs"], new["inputs"]
    lines = _listed("input file added", sorted(set(now) - set(was)))
    lines += _listed("input file removed", sorted(set(was) - set(now)))
    diff = sorted(f for f in set(was) & set(now) if not _same(was[f], now[f]))
    lines += _listed(
        "input file changed",
        [
            f"{f} (size {was[f].get('size')} -> {now[f].get('size')} bytes, mtime "
            f"{was[f].get('mtime')} -> {now[f].get('mtime')}"
            + (f", ETag {was[f].get('etag')} -> {now[f]['etag']}" if now[f].get("etag") else "")
            + ")"
            for f in diff
        ],
    )
    a, b = old["checkpoint"], new["checkpoint"]
    if a.get("sha256") != b.get("sha256"):
        fa, fb = a.get("files", {}), b.get("files", {})
        which = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
        lines.append(
            f"  checkpoint changed: {b['path']} (was {a.get('path')}; files that differ: "
            f"{', '.join(which) or 'none listed'})"
        )
    return lines


def check(output: str, old: dict, new: dict) -> None:
    """Refuse to resume OUTPUT (whose _job.json is `old`) with this run's manifest `new`."""
    changed = [k for k in ("input", "model", "columns") if old.get(k) != new.get(k)]
    if changed:
        diff = "; ".join(f"{k} was {old.get(k)}, now {new.get(k)}" for k in changed)
        raise ResumeError(
            f"{output} holds the scores of another job ({diff}): "
            "use a new OUTPUT, or --overwrite to replace them"
        )
    kinds = [k for k in ("inputs", "checkpoint") if k in new]
    if any(k not in old for k in kinds):
        raise ResumeError(
            f"{output}/{MANIFEST} was written by mmsent {old.get('mmsent_version', '?')}, which did "
            "not record fingerprints of the input files and checkpoint: whether they changed "
            f"since cannot be verified, so the job will not resume there. {REDO}"
        )
    if kinds and (lines := changes(old, new)):
        raise ResumeError(
            "\n".join(
                [
                    f"{output} holds the scores of other input files or another checkpoint than this "
                    "run's: resuming would mix two runs.",
                    *lines,
                    REDO,
                ]
            )
        )


def _retry(fn, what: str):
    """fn() with READ_TRIES tries on OSError (the store did not answer), then ReadError."""
    for n in range(READ_TRIES):
        try:
            return fn()
        except OSError as e:
            if n == READ_TRIES - 1:
                raise ReadError(
                    f"could not read {what} ({READ_TRIES} tries): {e}. Nothing was deleted: run "
                    "the same command again once the store answers."
                ) from e
            time.sleep(READ_BACKOFF_S * 2**n)


def _cut_short(fs: pafs.FileSystem, path: str) -> bool:
    """True iff the store gave the file's bytes and they end without a Parquet footer (a write
    cut short). An OSError (the store did not answer, a short read) is no verdict."""
    with fs.open_input_file(path) as f:
        size = f.size()
        if size < 12:  # magic + footer length + magic
            return True
        tail = f.read_at(8, size - 8)
        if len(tail) != 8:
            raise OSError(f"{path}: read {len(tail)} of the 8 last bytes")
        if tail[4:] != b"PAR1":
            return True
        try:
            pq.read_metadata(f)
        except pa.ArrowInvalid:  # the footer is there but does not parse
            return True
    return False


def _read_json(fs: pafs.FileSystem, path: str):
    def read():
        with fs.open_input_stream(path) as f:
            return f.read(1 << 28)  # ~150 bytes per input file

    try:
        return json.loads(_retry(read, path))
    except ValueError:
        return None


def _wipe(fs: pafs.FileSystem, root: str, output: str) -> None:
    """--overwrite: empty OUTPUT, only if it is an mmsent output (holds its _job.json) or empty.
    The lease (this job's) stays; _job.json goes last, so a wipe cut short can be redone."""
    entries = _retry(
        lambda: fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)), output
    )
    entries = [i for i in entries if not i.base_name.startswith(LEASE)]
    if not entries:
        return
    job = f"{root}/{MANIFEST}"
    meta = _read_json(fs, job) if any(i.path == job and i.is_file for i in entries) else None
    if not (isinstance(meta, dict) and {"input", "model", "mmsent_version"} <= meta.keys()):
        names = ", ".join(sorted(i.base_name for i in entries)[:SHOWN])
        raise ResumeError(
            f"--overwrite refused: {output} is not empty ({names}) and holds no "
            f"mmsent {MANIFEST}, so it is not an mmsent output; nothing was "
            "deleted. Use an empty or new OUTPUT, or empty it yourself."
        )
    for i in sorted(entries, key=lambda i: i.path == job):
        if i.type == pafs.FileType.Directory:
            fs.delete_dir(i.path)
        else:
            fs.delete_file(i.path)


def prepare(output: str, manifest: dict, overwrite: bool = False) -> list[str]:
    """Make OUTPUT ready for this job; returns the cut-short files it deleted."""
    fs, root = filesystem(output)
    if overwrite:
        _wipe(fs, root, output)
    fs.create_dir(root, recursive=True)
    path = f"{root}/{MANIFEST}"
    if _retry(lambda: fs.get_file_info(path).is_file, path):
        old = _read_json(fs, path)
        if not isinstance(old, dict):
            raise ResumeError(f"{path} is not an mmsent {MANIFEST} (not a JSON object). {REDO}")
        check(output, old, manifest)
    elif _retry(lambda: output_files(output), output):
        raise ResumeError(f"{output} holds Parquet files but no {MANIFEST}: not an mmsent output")
    else:
        with fs.open_output_stream(path) as f:
            f.write(json.dumps(manifest, indent=2).encode() + b"\n")

    files = _retry(lambda: output_files(output), output)
    with ThreadPoolExecutor(8) as pool:  # every file judged before any is deleted
        cut = list(pool.map(lambda p: _retry(lambda: _cut_short(fs, p), p), files))
    partial = [p for p, c in zip(files, cut, strict=True) if c]
    for p in partial:
        fs.delete_file(p)
    return partial


def read_output(output: str, columns: list[str]) -> pa.Table:
    """`columns` of every output file (all complete after prepare())."""
    fs, _ = filesystem(output)
    files = output_files(output)
    if not files:
        return pa.table(
            {c: pa.array([], pa.int64() if c == "input_row" else pa.string()) for c in columns}
        )
    return pq.ParquetDataset(files, filesystem=fs).read(columns=columns)


def read_keys(output: str) -> dict[str, np.ndarray]:
    keys = _retry(lambda: read_output(output, list(KEY)), f"the keys of {output}")
    done: dict[str, np.ndarray] = {}
    for part in keys.group_by("input_file").aggregate([("input_row", "list")]).to_pylist():
        done[part["input_file"]] = np.unique(np.asarray(part["input_row_list"], dtype=np.int64))
    return done


def to_ranges(rows) -> list[list[int]]:
    """Sorted unique rows -> [[start, stop), ...] (what a reader skips, compactly)."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return []
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    starts, stops = rows[np.r_[0, cut]], rows[np.r_[cut - 1, len(rows) - 1]] + 1
    return [[int(a), int(b)] for a, b in zip(starts, stops, strict=True)]


class Skip:
    """Membership in sorted ranges for increasing row numbers: O(1) amortised per row."""

    def __init__(self, ranges: list[list[int]]):
        self.ranges, self.i = ranges, 0

    def __contains__(self, n: int) -> bool:
        while self.i < len(self.ranges) and self.ranges[self.i][1] <= n:
            self.i += 1
        return self.i < len(self.ranges) and self.ranges[self.i][0] <= n
