"""The plan of a scoring job: its input files and pass-through columns. Reading itself is
mmsent.io.dumps (formats, compression, caps, error rows, row keys: see its docstring).

    plan = make_plan("dump/*.jsonl", cfg, reserved={name for name, _ in output_fields(model_cfg)},
                     tabular=model_cfg.tabular_columns())
    for item in read_rows(plan.files[0], plan): ...    # dumps.Item(row, record, error, detail)

make_plan never fails on the data: a first file that is corrupt, truncated or full of bad lines
gives what it can (its rows will carry their error codes), and the next files are sampled too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa

from ..config import ReadCfg, ScoreCfg, ScoreColumnsCfg
from ..io.dumps import Item, csv_header, file_format, list_inputs, parquet_schema, read_records
from .rows import STAGE_COLUMNS, valid_utf8

SAMPLE_RECORDS = 1000  # JSONL records read to find the columns of a dump
SAMPLE_FILES = 8  # files tried when the first ones give no columns (corrupt, only bad lines)
MAX_PASSTHROUGH = 512  # pass-through columns found by sampling (more: list them in the config)
logger = logging.getLogger("mmsent")


class Passthrough(NamedTuple):
    name: str  # in the input
    out: str  # in the stages and the output
    type: pa.DataType


@dataclass
class Plan:
    files: list[str]  # sorted URIs
    fmt: str  # auto | jsonl | csv | parquet
    columns: ScoreColumnsCfg
    passthrough: list[Passthrough]
    read: ReadCfg = field(default_factory=ReadCfg)
    tabular: list[str] = field(default_factory=list)  # the model's tabular columns

    def wanted(self) -> list[str]:
        c = self.columns
        inputs = [c.id, c.text, c.image, c.audio, *self.tabular]
        return list(dict.fromkeys(inputs + [p[0] for p in self.passthrough]))


def make_plan(spec: str, cfg: ScoreCfg, reserved: set[str], tabular: list[str] = ()) -> Plan:
    """Files and pass-through columns (found in the first files unless listed). Pass-through
    types: the first readable Parquet file's (nested ones kept); JSONL and CSV values are written
    as strings. A pass-through column keeps its name unless an output column (`reserved`) or a
    stage's own column (rows.STAGE_COLUMNS) has it: then it is input_<name>. `tabular`: the
    model's tabular columns, read as its input (and passed through too)."""
    files = list_inputs(spec, cfg.format)
    c = cfg.columns
    fmt = file_format(files[0], cfg.format)
    types: dict[str, pa.DataType] = {}
    if fmt == "parquet":
        schema = next(filter(None, map(parquet_schema, files[:SAMPLE_FILES])), None)
        for f in schema or []:
            types[f.name] = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
    names = c.passthrough
    if names is None:
        names = list(types) if fmt == "parquet" else _sample_names(files, cfg)
        names = [n for n in names if n not in (c.id, c.text, c.image, c.audio)]
        if len(names) > MAX_PASSTHROUGH:
            logger.warning(
                "%s: %d columns found; passing the first %d through (list them in "
                "columns.passthrough to choose)",
                spec,
                len(names),
                MAX_PASSTHROUGH,
            )
            names = names[:MAX_PASSTHROUGH]
    passthrough = []
    reserved = reserved | STAGE_COLUMNS  # the stages carry pass-through columns beside their own
    for name in names:
        out = valid_utf8(name)  # a column name from undecodable bytes still has to be written
        while out in reserved:  # e.g. a ground-truth `label` column becomes `input_label`
            out = f"input_{out}"
        reserved = reserved | {out}
        passthrough.append(Passthrough(name, out, types.get(name, pa.string())))
    return Plan(files, cfg.format, c, passthrough, cfg.read, list(tabular))


def _sample_names(files: list[str], cfg: ScoreCfg) -> list[str]:
    seen: dict[str, None] = {}
    records = 0
    for uri in files[:SAMPLE_FILES]:
        if file_format(uri, cfg.format) == "csv":
            seen.update(dict.fromkeys(csv_header(uri, cfg.read)))
        else:
            for item in read_records(uri, cfg.format, cfg.read):
                seen.update(dict.fromkeys(item.record or {}))
                records += 1
                if records >= SAMPLE_RECORDS:
                    break
        if seen or records >= SAMPLE_RECORDS:  # the next files only when these gave nothing
            break
    return list(seen)


def read_rows(uri: str, plan: Plan) -> Iterator[Item]:
    """Every row of one input file (dumps.read_records with the plan's format, columns, caps)."""
    return read_records(uri, plan.fmt, plan.read, plan.wanted())
