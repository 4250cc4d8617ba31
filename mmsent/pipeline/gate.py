"""How far the fetch stage may run ahead of decoding. Fetching local or nearby images is faster
than decoding them, and Ray Data does not hold a stage back whose next stage waits on CPUs: left
alone, the fetch stage would fetch the whole dump and park its image bytes in the object store,
so memory would grow with the input. The gate counts the rows fetched and not yet decoded; a
fetch call waits while `rows_ahead` rows are out, and decoding hands rows back as it ends.

A call never waits longer than `wait_s` (then it goes on): rows whose fetch was retried after a
worker died are counted twice and never handed back, and a leak must slow the job, never stop it.
"""

from __future__ import annotations

import asyncio
import contextlib


class FetchGate:
    """A Ray actor (async, no CPU): `ray.remote(num_cpus=0)(FetchGate).remote(rows_ahead)`."""

    def __init__(self, rows_ahead: int, wait_s: float = 30.0):
        self.limit, self.wait_s, self.out = rows_ahead, wait_s, 0
        self.cond = asyncio.Condition()

    async def acquire(self, n: int) -> int:
        """Wait for room for `n` rows (always room when none are out); the rows now out."""
        async with self.cond:
            room = lambda: self.out == 0 or self.out + n <= self.limit  # noqa: E731
            with contextlib.suppress(asyncio.TimeoutError):  # a leak (see above): go on
                await asyncio.wait_for(self.cond.wait_for(room), self.wait_s)
            self.out += n
            return self.out

    async def release(self, n: int) -> None:
        async with self.cond:
            self.out = max(0, self.out - n)
            self.cond.notify_all()


def open_gate(rows_ahead: int):
    """The gate actor of one job (lives as long as the driver holds the handle)."""
    import ray

    return ray.remote(num_cpus=0)(FetchGate).remote(rows_ahead)
