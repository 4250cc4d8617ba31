"""The output schema of bulk scoring, fixed per model and input: every file of a job has the same
columns and types whatever its rows hold (a block of nulls does not become a `null` column).

id | label | score_<label>... | confidence | modalities | weight_<modality>... | <m>_status... |
error | error_detail | model_name | model_version | input_file | input_row | pass-through...

weight_<modality>: one per modality of the model, in its order (text, image, tabular, audio).
<m>_status: text_status, image_status, audio_status always (inputs any dump may carry: "unused"
where the model has no such tower), tabular_status with a tabular tower (codes.status_modalities).
error_detail: what an internal_error, unreadable record, fetch error or junk tabular value was.

Scores, confidence and weights are null (not NaN) where there is no prediction.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..codes import status_modalities
from ..config import ModelCfg
from .rows import to_arrow

KEY = ("input_file", "input_row")  # a row's identity in the input: what resume and accounting use


def output_fields(cfg: ModelCfg) -> list[tuple[str, pa.DataType]]:
    f32, text = pa.float32(), pa.string()
    return (
        [("id", text), ("label", text)]
        + [(f"score_{lab}", f32) for lab in cfg.labels]
        + [("confidence", f32), ("modalities", text)]
        + [(f"weight_{m}", f32) for m in cfg.modalities()]
        + [(f"{m}_status", text) for m in status_modalities(cfg.modalities())]
        + [("error", text), ("error_detail", text)]
        + [("model_name", text), ("model_version", text)]
        + [("input_file", text), ("input_row", pa.int64())]
    )


def output_schema(cfg: ModelCfg, passthrough: list) -> pa.Schema:
    extra = [(out, typ) for _, out, typ in passthrough]
    return pa.schema(output_fields(cfg) + extra, metadata={"mmsent.model": cfg.name})


def to_table(out: dict[str, np.ndarray], rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """ModelRunner columns (+ record_error) and the rows' own Arrow columns (key, id,
    pass-through, by name) -> a table of `schema`. A record error (unreadable line, missing id)
    outranks the modality errors in `error`."""
    out = dict(out)
    # a column of nulls may come back from Ray's Arrow blocks as NaNs: only strings are codes
    record_errors = [r if isinstance(r, str) else None for r in out.pop("record_error")]
    out["error"] = np.array(
        [r or e for r, e in zip(record_errors, out["error"], strict=True)], dtype=object
    )
    details = out.get("error_detail", np.full(len(out["error"]), None, dtype=object))
    out["error_detail"] = np.array(
        [d if isinstance(d, str) else None for d in details], dtype=object
    )
    arrays = [
        rows.column(f.name).cast(f.type)
        if f.name in rows.column_names
        else to_arrow(out[f.name], f.type, nan_is_null=True)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)
