"""Resume: a re-run on the same OUTPUT scores only the rows that no complete output file holds.

Every output row carries its input key (input_file, input_row). A Parquet file is complete iff its
footer reads (the footer is written last), so a file cut short by a kill is deleted and its rows
are scored again; the rows of complete files are skipped by the readers, before any fetch. This
holds whatever the kill hit (reader, fetch, model, write) and on S3, where an object appears whole
or not at all. `_job.json` records what OUTPUT holds, so that a re-run cannot mix in another
input, model or column mapping.

    prepare(output, manifest, overwrite=False)       # check _job.json, drop cut-short files
    done = read_keys(output)                         # {input_file: sorted unique input_rows}
    units = [{"file": f, "skip": to_ranges(done.get(f, []))} for f in files]
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .files import filesystem
from .output import KEY

MANIFEST = "_job.json"


class ResumeError(RuntimeError):
    pass


def output_files(output: str) -> list[str]:
    """Paths (inside the output's filesystem) of the Parquet files under OUTPUT."""
    fs, root = filesystem(output)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(i.path for i in infos if i.is_file and i.extension == "parquet"
                  and not i.base_name.startswith(("_", ".")))  # fmt: skip


def prepare(output: str, manifest: dict, overwrite: bool = False) -> list[str]:
    """Make OUTPUT ready for this job; returns the cut-short files it deleted."""
    fs, root = filesystem(output)
    if overwrite:
        fs.delete_dir_contents(root, missing_dir_ok=True)
    fs.create_dir(root, recursive=True)
    path = f"{root}/{MANIFEST}"
    if fs.get_file_info(path).is_file:
        with fs.open_input_stream(path) as f:
            old = json.loads(f.read())
        changed = [k for k in ("input", "model", "columns") if old.get(k) != manifest.get(k)]
        if changed:
            diff = "; ".join(f"{k} was {old.get(k)}, now {manifest.get(k)}" for k in changed)
            raise ResumeError(f"{output} holds the scores of another job ({diff}): "
                              "use a new OUTPUT, or --overwrite to replace them")  # fmt: skip
    elif output_files(output):
        raise ResumeError(f"{output} holds Parquet files but no {MANIFEST}: not an mmsent output")
    else:
        with fs.open_output_stream(path) as f:
            f.write(json.dumps(manifest, indent=2).encode() + b"\n")

    def complete(p: str) -> bool:
        try:
            pq.read_metadata(p, filesystem=fs)
            return True
        except (pa.ArrowInvalid, OSError):
            return False

    files = output_files(output)
    with ThreadPoolExecutor(8) as pool:
        partial = [p for p, ok in zip(files, pool.map(complete, files), strict=True) if not ok]
    for p in partial:
        fs.delete_file(p)
    return partial


def read_output(output: str, columns: list[str]) -> pa.Table:
    """`columns` of every output file (all complete after prepare())."""
    fs, _ = filesystem(output)
    files = output_files(output)
    if not files:
        return pa.table({c: pa.array([], pa.int64() if c == "input_row" else pa.string())
                         for c in columns})  # fmt: skip
    return pq.ParquetDataset(files, filesystem=fs).read(columns=columns)


def read_keys(output: str) -> dict[str, np.ndarray]:
    keys = read_output(output, list(KEY))
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
