"""`bot.runtime.aio.wait_for` never loses a cancellation, and it is the only wait_for the daemon uses.

The case that hung `bot run` on SIGTERM: a task loops on a timed wait; the awaited future
completes and, before the task runs again, the task is cancelled (the feed's websocket loop,
cancelled by the feed's stop while a message had just arrived). Python 3.11's
`asyncio.wait_for` returns the result and the loop goes on forever; the helper raises
`CancelledError` and the loop ends.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.runtime.aio import wait_for
from tests.support.shared_data import ROOT


async def _cancel_as_the_wait_completes(waiter: Callable[[Awaitable[Any], float], Awaitable[Any]]) -> str:
    futures: list[asyncio.Future[int]] = []

    async def loop_forever() -> None:
        while True:
            f = asyncio.get_running_loop().create_future()
            futures.append(f)
            await waiter(f, 5.0)

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0)  # the task now waits on futures[0]
    futures[-1].set_result(1)
    task.cancel()  # in the same loop iteration: the wait has completed, the task has not run yet
    done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:
        task.cancel()  # (the swallowing loop is waiting on a fresh future now: this cancel lands)
        await asyncio.gather(task, return_exceptions=True)
        return "swallowed"
    return "cancelled" if task.cancelled() else "other"


async def test_a_cancel_that_arrives_as_the_wait_completes_is_kept() -> None:
    assert await _cancel_as_the_wait_completes(wait_for) == "cancelled"
    # the reason the helper exists (a regression guard on the interpreter this project targets)
    expect = "swallowed" if sys.version_info < (3, 12) else "cancelled"
    assert await _cancel_as_the_wait_completes(asyncio.wait_for) == expect


async def test_timeout_cancels_the_awaited_and_raises() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await wait_for(slow(), 0.05)
    assert cancelled.is_set()
    assert await wait_for(asyncio.sleep(0, result=7), 1.0) == 7
    assert await wait_for(asyncio.sleep(0, result=8), None) == 8


def test_nothing_in_the_daemon_uses_asyncio_wait_for() -> None:
    offenders = []
    for path in [*(ROOT / "bot").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        if path.name == "aio.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\basyncio\.wait_for\(", line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert not offenders, f"use bot.runtime.aio.wait_for (3.11's asyncio.wait_for loses cancellations): {offenders}"
