"""The fetch stage's gate (mmsent.pipeline.gate): a fetch call waits while rows_ahead rows are
fetched and not yet decoded, goes on when decoding hands rows back, and never waits past wait_s."""

import asyncio
import time

from mmsent.pipeline.gate import FetchGate


def test_a_fetch_waits_for_room_and_goes_on_when_rows_come_back():
    async def scenario():
        gate = FetchGate(rows_ahead=32, wait_s=10)
        assert await gate.acquire(16) == 16 and await gate.acquire(16) == 32
        third = asyncio.create_task(gate.acquire(16))
        await asyncio.sleep(0.2)
        assert not third.done()  # 48 > 32: it waits
        await gate.release(16)
        assert await asyncio.wait_for(third, 1) == 32

    asyncio.run(scenario())


def test_room_for_one_call_however_large_and_a_leak_only_slows():
    async def scenario():
        gate = FetchGate(rows_ahead=8, wait_s=0.3)
        assert await gate.acquire(100) == 100  # nothing out: a call larger than the gate goes
        start = time.monotonic()
        assert await gate.acquire(1) == 101  # never handed back: it waits wait_s, then goes on
        assert 0.25 < time.monotonic() - start < 2
        await gate.release(500)
        assert gate.out == 0  # a row handed back twice (a retried decode task) is not credit

    asyncio.run(scenario())
