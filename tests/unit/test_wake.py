"""``WakeUp``: the data path's tasks sleep on it until work arrives, a timeout ends, or they are
cancelled (anyio cancel scopes over asyncio)."""

from __future__ import annotations

import asyncio
import math

import anyio
import anyio.lowlevel

from bridge.pipeline.wake import WakeUp


async def test_a_flag_set_before_the_sleep_returns_at_once_and_is_cleared() -> None:
    wake = WakeUp()
    wake.set()
    with anyio.fail_after(5):
        await wake.sleep(math.inf)
    assert not wake.is_set()


async def test_a_set_from_another_task_ends_an_unbounded_sleep() -> None:
    wake = WakeUp()
    done = anyio.Event()

    async def sleeper() -> None:
        await wake.sleep(math.inf)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.sleep(0.05)
        assert not done.is_set()  # it really waits
        wake.set()
        with anyio.fail_after(5):
            await done.wait()
    assert not wake.is_set()


async def test_the_timeout_ends_the_sleep_and_leaves_no_timer_behind() -> None:
    wake = WakeUp()
    loop = asyncio.get_running_loop()
    with anyio.fail_after(5):
        await wake.sleep(0.05)
    assert not wake.is_set()
    with anyio.move_on_after(0.05):  # cancelled from outside while its own timer is far off
        await wake.sleep(3600)
    await anyio.lowlevel.checkpoint()
    far = loop.time() + 1000
    scheduled = loop._scheduled  # type: ignore[attr-defined]
    assert not [h for h in scheduled if h.when() > far and not h.cancelled()]  # hour timer gone


async def test_wait_for_returns_only_once_the_condition_holds() -> None:
    wake = WakeUp()
    items: list[int] = []
    done = anyio.Event()

    async def waiter() -> None:
        await wake.wait_for(lambda: len(items) >= 2)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        items.append(1)
        wake.set()
        await anyio.sleep(0.05)
        assert not done.is_set()  # woken, checked, still not ready
        items.append(2)
        wake.set()
        with anyio.fail_after(5):
            await done.wait()
