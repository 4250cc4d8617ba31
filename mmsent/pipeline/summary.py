"""The job summary: every row accounted for, read back from what OUTPUT actually holds.

rows (output), input_rows (the input re-counted by Ray tasks, when `verify`), missing and
duplicates (both must be 0), rows written by this run and by earlier runs, errors by code,
labels, elapsed time and throughput. Printed, and written to OUTPUT/_summary.json.

The re-count does not trust the parser that made the rows (dumps.count_file): a JSONL file is
re-counted as its non-blank physical lines by a plain scan of the bytes, and must have exactly
that many rows; a Parquet file has its footer's count. A CSV record may span lines, so its rows
can only be counted by parsing; the scan still counts its non-blank data lines (`input_lines`),
and `lines_in_quoted_fields` = lines - rows says how many went into multi-line records: in a dump
without multi-line posts, anything but 0 there is an unclosed quote that merged lines (at most
read.max_record_lines of them; a longer one is an error row). A file whose rest could not be read
(input_read_error) has lost rows nobody can count. So `ok` means: nothing missing, nothing
twice, nothing from elsewhere, and no file cut short.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pyarrow as pa

from .. import codes
from ..io.dumps import Count, count_file, filesystem
from .plan import Plan
from .resume import read_output

SUMMARY = "_summary.json"


def count_inputs(plan: Plan) -> dict[str, Count]:
    """Rows (and lines) of every input file, counted in parallel by Ray tasks (one per file)."""
    import ray

    task = ray.remote(num_cpus=1)(count_file)
    counts = ray.get([task.remote(f, plan.fmt, plan.read) for f in plan.files])
    return dict(zip(plan.files, counts, strict=True))


def input_counts(counted: dict[str, Count] | None, per_file: Counter) -> dict:
    """The summary's fields of the independent count (None where the input was not re-counted)."""
    if counted is None:
        return dict.fromkeys(("input_rows", "input_lines", "lines_in_quoted_fields", "missing"))
    lines = [c for c in counted.values() if c.lines is not None]
    return {
        "input_rows": sum(c.rows for c in counted.values()),
        "input_lines": sum(c.lines for c in lines),  # JSONL and CSV (data lines): a byte scan
        "lines_in_quoted_fields": sum(c.lines - c.rows for c in lines),  # CSV only
        "missing": sum(max(0, c.rows - per_file[f]) for f, c in counted.items()),
    }


def account(
    plan: Plan,
    output: str,
    cfg,
    manifest: dict,
    *,
    started: float,
    pipeline_s: float,
    rows_before: int,
    cut_short: list[str],
    ray: str,
) -> dict:
    t = read_output(output, ["input_file", "input_row", "error", "label"])
    keys = t.group_by(["input_file", "input_row"]).aggregate([])
    per_file = Counter(keys.column("input_file").to_pylist())
    counts = input_counts(count_inputs(plan) if cfg.verify else None, per_file)
    files = set(plan.files)
    elapsed = time.time() - started
    this_run = t.num_rows - rows_before
    summary = {
        "input": manifest["input"],
        "output": output,
        "model": manifest["model"],
        "rows": t.num_rows,
        **counts,
        "duplicates": t.num_rows - keys.num_rows,
        "not_in_input": sum(n for f, n in per_file.items() if f not in files),
        "rows_this_run": this_run,
        "rows_before": rows_before,
        "cut_short_files_removed": len(cut_short),
        "errors": _counts(t.column("error")),
        "labels": _counts(t.column("label")),
        "elapsed_s": round(elapsed, 2),  # the whole job: planning, Ray start, model load, verify
        "rows_per_s": round(this_run / elapsed, 2) if elapsed > 0 else None,
        "pipeline_s": round(pipeline_s, 2),  # Ray Data's execution (actors start within it)
        "files": len(plan.files),
        "ray": ray,
        "config": manifest["config"],
    }
    fs, root = filesystem(output)
    with fs.open_output_stream(f"{root}/{SUMMARY}") as f:
        f.write(json.dumps(summary, indent=2).encode() + b"\n")
    return summary


def _counts(col: pa.ChunkedArray) -> dict[str, int]:
    return dict(Counter(v for v in col.to_pylist() if v is not None).most_common())


def ok(summary: dict) -> bool:
    """Nothing lost, nothing twice (a file whose rest could not be read has lost rows)."""
    return (
        not summary["missing"]
        and not summary["duplicates"]
        and not summary["not_in_input"]
        and not summary["errors"].get(codes.INPUT_READ_ERROR)
    )


def format_summary(s: dict) -> str:
    verified = (
        f"input rows {s['input_rows']} | missing {s['missing']} | "
        if s["input_rows"] is not None
        else "input not re-counted (verify: false) | "
    )
    if s.get("lines_in_quoted_fields"):  # multi-line CSV records: an unclosed quote shows here
        verified += f"{s['lines_in_quoted_fields']} lines inside quoted fields | "
    lines = [
        f"mmsent score: {s['input']} -> {s['output']}  ({s['model']['name']} {s['model']['version']})",
        f"  output rows {s['rows']} | {verified}duplicates {s['duplicates']}",
        f"  this run: {s['rows_this_run']} rows in {s['elapsed_s']:.1f} s ({s['rows_per_s']} rows/s;"
        f" pipeline {s['pipeline_s']:.1f} s; Ray: {s['ray']}); written before: {s['rows_before']}",
        "  labels: " + (", ".join(f"{k} {v}" for k, v in s["labels"].items()) or "-"),
        "  errors: " + (", ".join(f"{k} {v}" for k, v in s["errors"].items()) or "none"),
        f"  summary: {s['output']}/{SUMMARY}",
    ]
    return "\n".join(lines)


def sample_rows(output: str, n: int) -> str:
    """A few output rows as a table: scored rows first, then rows with an error code."""
    cols = ["id", "label", "confidence", "modalities", "text_status", "image_status", "error"]
    t = read_output(output, cols).to_pylist()
    good = [r for r in t if r["error"] is None][: n - n // 2]
    bad = [r for r in t if r["error"] is not None][: n - len(good)]
    rows = [[_fmt(r[c]) for c in cols] for r in good + bad]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join(line.format(*r) for r in [cols, *rows])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "-" if v is None else str(v)[:24]
