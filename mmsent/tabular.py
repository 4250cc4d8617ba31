"""Tabular columns of posts (counts, hour, platform, verified, ...) -> the tabular tower's inputs, in
numpy. Junk never raises: a value that is not a number (numeric column) or a category
(categorical column) counts as missing and gives the row the status `tabular_invalid`.

    cfg = fit_tabular(train_rows, TabularTowerCfg(numeric=["likes"], categorical=["platform"]))
    batch = encode_tabular([{"likes": 12, "platform": "x"}, {"likes": "n/a"}], cfg)
    batch["tab_num"] (B, N) float32   batch["tab_cat"] (B, C) int32   batch["tab_missing"] (B, N + C)
    batch["has_tabular"] (B,) bool    batch["tabular_status"], batch["tabular_detail"] (B,) object

Numbers are taken from JSON numbers, bools (1 / 0) and numeric strings (CSV cells); categories
are strings (stripped, case kept), ints and integral floats as digits ("13" whether 13 or 13.0),
bools as "true" / "false". Empty cells and NA markers ("NA", "n/a", "null", "None", "nan") are
missing. Category ids: 0 missing, 1 unknown (not in the training vocabulary), 2... the vocabulary.
A row whose values are all missing has no tabular modality (`has_tabular` False); a row with some
valid values uses them, even when others were junk (the status then says so).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from . import codes
from .config import TabularTowerCfg

NA = {"", "na", "n/a", "nan", "null", "none"}
INVALID = object()  # a parsed value that is junk (None is a missing one)


def number(v: Any) -> float | None | object:
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip()
        if s.lower() in NA:
            return None
        if len(s) > 64:  # no number is written with more; float() on megabytes costs time
            return INVALID
        try:
            v = float(s)
        except ValueError:
            return INVALID
    if isinstance(v, bool | np.bool_):
        return float(v)
    if not isinstance(v, numbers.Real | Decimal):
        return INVALID
    try:
        x = float(v)
    except (OverflowError, ValueError):  # an int past float's range, a signalling Decimal NaN
        return INVALID
    return None if math.isnan(x) else x if math.isfinite(x) else INVALID


def category(v: Any) -> str | None | object:
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip()
        return None if s.lower() in NA else s
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        try:
            return str(int(v))
        except ValueError:  # past Python's int -> str digit limit (4300 digits)
            return INVALID
    x = number(v)  # floats and Decimals: 13.0 is the category "13"
    if not isinstance(x, float):
        return x
    return str(int(x)) if x.is_integer() else repr(x)


def numeric_value(cfg: TabularTowerCfg, col: str, v: Any) -> float | None | object:
    x = number(v)
    if col in cfg.log_numeric and isinstance(x, float):
        x = math.copysign(math.log1p(abs(x)), x)  # counts span 1 .. 1e8: their log is normal-ish
    return x


def fit_tabular(rows: Sequence[Mapping[str, Any]], cfg: TabularTowerCfg) -> TabularTowerCfg:
    """`cfg` with the training split's statistics: mean / std per numeric column (a column with
    no values or one value: 0 / 1), and per categorical column its categories seen at least
    `min_count` times, the `max_categories` most frequent, most frequent first."""
    mean, std, vocab = {}, {}, {}
    rows = [r for r in rows if isinstance(r, Mapping)]
    for col in cfg.numeric:
        xs = [numeric_value(cfg, col, r.get(col)) for r in rows]
        xs = np.array([x for x in xs if isinstance(x, float)], dtype=np.float64)
        mean[col] = float(xs.mean()) if len(xs) else 0.0
        sd = float(xs.std()) if len(xs) else 0.0
        std[col] = sd if sd > 1e-8 else 1.0
    for col in cfg.categorical:
        counts = Counter(c for r in rows if isinstance(c := category(r.get(col)), str))
        kept = sorted(
            (c for c, k in counts.items() if k >= cfg.min_count), key=lambda c: (-counts[c], c)
        )
        vocab[col] = kept[: cfg.max_categories]
    return dataclasses.replace(cfg, mean=mean, std=std, vocab=vocab)


def check_fitted(cfg: TabularTowerCfg) -> None:
    missing = [c for c in cfg.numeric if c not in cfg.mean or c not in cfg.std]
    missing += [c for c in cfg.categorical if c not in cfg.vocab]
    if missing:
        raise ValueError(f"tabular: no training statistics for {missing}: run fit_tabular first")


def encode_tabular(rows: Sequence[Any], cfg: TabularTowerCfg) -> dict[str, np.ndarray]:
    """Rows (mappings; None or anything else: nothing present) -> the tabular tower's batch."""
    check_fitted(cfg)
    n, nn_, nc = len(rows), len(cfg.numeric), len(cfg.categorical)
    num = np.zeros((n, nn_), dtype=np.float32)
    cat = np.zeros((n, nc), dtype=np.int32)
    missing = np.ones((n, nn_ + nc), dtype=bool)
    index = {c: {v: i + 2 for i, v in enumerate(cfg.vocab[c])} for c in cfg.categorical}
    status, detail = np.full(n, codes.OK, dtype=object), np.full(n, None, dtype=object)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            status[i] = codes.MISSING if row is None else codes.TABULAR_INVALID
            detail[i] = None if row is None else f"row is a {type(row).__name__}, not a mapping"
            continue
        bad = []
        for j, col in enumerate(cfg.numeric):
            x = numeric_value(cfg, col, row.get(col))
            if isinstance(x, float):
                z = (x - cfg.mean[col]) / cfg.std[col]
                num[i, j], missing[i, j] = max(-cfg.clip, min(cfg.clip, z)), False
            elif x is INVALID:
                bad.append(col)
        for j, col in enumerate(cfg.categorical):
            c = category(row.get(col))
            if isinstance(c, str):
                cat[i, j], missing[i, nn_ + j] = index[col].get(c, 1), False
            elif c is INVALID:
                bad.append(col)
        if bad:
            status[i], detail[i] = codes.TABULAR_INVALID, f"not a number or category: {bad}"
        elif missing[i].all():
            status[i] = codes.MISSING
    return {
        "tab_num": num,
        "tab_cat": cat,
        "tab_missing": missing,
        "has_tabular": ~missing.all(1),
        "tabular_status": status,
        "tabular_detail": detail,
    }
