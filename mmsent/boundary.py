"""The error boundary of the data path: whatever one row raises becomes that row's error, never a
failed batch, task or request. Every stage that works on a batch (preprocessing, the model) runs it
through `isolate`, so a row that nobody foresaw costs its own result and nothing else.

    out = isolate(lambda lo, hi: work(rows[lo:hi]), len(rows), concat, failed, retries=1)

`work` runs on the whole batch; if it raises, once more (`retries`: a passing fault, e.g. a GPU out
of memory), then on halves, down to single rows: k bad rows in n cost O(k log n) extra calls.
`failed(lo, hi, exc)` gives the output of a row that fails alone (its error code, and `describe`'s
text in the `error_detail` column).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np

T = TypeVar("T")
logger = logging.getLogger("mmsent")
DETAIL_CHARS = 200


def describe(exc: BaseException) -> str:
    """`Type: message`, short: the `error_detail` of a row (the trace goes to the log)."""
    text = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {text}"[:DETAIL_CHARS] if text else type(exc).__name__


def isolate(
    work: Callable[[int, int], T],
    n: int,
    concat: Callable[[list[T]], T],
    failed: Callable[[int, int, Exception], T],
    retries: int = 0,
) -> T:
    def part(lo: int, hi: int, tries: int) -> T:
        try:
            return work(lo, hi)
        except Exception as exc:  # noqa: BLE001 - the boundary: any failure is a row's error
            if tries:
                return part(lo, hi, tries - 1)
            if hi - lo <= 1:
                logger.warning("row %d of a batch failed: %s", lo, describe(exc), exc_info=True)
                return failed(lo, hi, exc)
            mid = (lo + hi) // 2
            return concat([part(lo, mid, 0), part(mid, hi, 0)])

    return part(0, n, retries)


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Column batches (the same keys) -> one batch, rows in order."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def take(columns: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    return {k: v[lo:hi] for k, v in columns.items()}
