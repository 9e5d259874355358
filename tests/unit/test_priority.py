"""Priority under saturation and the AIMD pressure on lower classes (engine/priority.py).

In: the gate driven by real asyncio tasks holding slots; the controller on a clock the test
moves. Asserted: who gets a freed slot, the bounded wait, the full queue pushing out the
lowest class, a cancelled waiter giving its slot on, and the decrease / floor / recovery
constants as documented.
"""

from __future__ import annotations

import asyncio

import pytest

from agentspec_runtime.engine.errors import RateLimitedError
from agentspec_runtime.engine.priority import FLOOR, Pressure, PriorityGate


async def _hold(
    gate: PriorityGate,
    priority: int,
    release: asyncio.Event,
    order: list[int],
    *,
    wait: float = 5.0,
    max_queued: int = 100,
) -> None:
    async with gate.slot(limit=1, priority=priority, wait=wait, max_queued=max_queued):
        order.append(priority)
        await release.wait()


async def test_a_freed_slot_goes_to_the_highest_waiting_class_then_the_oldest() -> None:
    gate, order = PriorityGate(), list[int]()
    releases = [asyncio.Event() for _ in range(5)]
    first = asyncio.create_task(_hold(gate, 10, releases[0], order))
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(_hold(gate, p, releases[i + 1], order))
        for i, p in enumerate([10, 50, 90, 50])
    ]
    await asyncio.sleep(0.01)
    assert order == [10]
    assert gate.queued == 4
    for release in releases:  # each run ends in turn: the next one is chosen by priority
        release.set()
        await asyncio.sleep(0.01)
    await asyncio.gather(first, *waiting)
    assert order == [10, 90, 50, 50, 10]
    assert gate.running == 0


async def test_a_wait_is_bounded_and_a_full_queue_pushes_out_the_lowest() -> None:
    gate, order = PriorityGate(), list[int]()
    hold = asyncio.Event()
    busy = asyncio.create_task(_hold(gate, 50, hold, order))
    await asyncio.sleep(0)
    with pytest.raises(RateLimitedError, match="saturated"):
        await _hold(gate, 50, hold, order, wait=0.05)
    low = asyncio.create_task(_hold(gate, 10, hold, order, max_queued=1))
    await asyncio.sleep(0.01)
    with pytest.raises(RateLimitedError):  # not higher than what waits: refused itself
        await _hold(gate, 10, hold, order, max_queued=1)
    high = asyncio.create_task(_hold(gate, 90, hold, order, max_queued=1))
    await asyncio.sleep(0.01)
    with pytest.raises(RateLimitedError):  # pushed out by the higher class
        await low
    hold.set()
    await asyncio.gather(busy, high)
    assert order == [50, 90]


async def test_a_waiter_that_leaves_does_not_keep_a_slot() -> None:
    gate, order = PriorityGate(), list[int]()
    hold, later = asyncio.Event(), asyncio.Event()
    busy = asyncio.create_task(_hold(gate, 50, hold, order))
    await asyncio.sleep(0)
    leaving = asyncio.create_task(_hold(gate, 90, later, order))
    staying = asyncio.create_task(_hold(gate, 10, later, order))
    await asyncio.sleep(0.01)
    leaving.cancel()
    hold.set()
    later.set()
    await asyncio.gather(busy, staying)
    assert order == [50, 10]
    assert gate.running == 0


def test_pressure_halves_per_pushback_floors_and_recovers_per_second() -> None:
    now = [0.0]
    pressure = Pressure(clock=lambda: now[0])
    assert pressure.factor() == 1.0
    pressure.pushback()
    assert pressure.factor() == 0.5
    pressure.pushback()  # the same burst (within a second): counted once
    assert pressure.factor() == 0.5
    for _ in range(10):  # a pushback every second: each halves what the second gave back
        now[0] += 1.0
        pressure.pushback()
    assert pressure.factor() == pytest.approx(FLOOR, abs=0.001)
    now[0] += 4.5
    assert pressure.factor() == pytest.approx(FLOOR + 0.45, abs=0.001)
    now[0] += 10
    assert pressure.factor() == 1.0
