"""A stop that takes too long says where it waits (`bot.runtime.slow_stop`): one `stop_slow` line
with the stacks of the task that holds the stop and of every thread."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from bot.runtime.slow_stop import watch_stop


async def test_a_slow_stop_logs_the_stack_of_what_it_waits_on() -> None:
    stop = asyncio.Event()
    release = asyncio.Event()

    async def flush_that_hangs() -> None:
        await release.wait()

    holder = asyncio.create_task(flush_that_hangs(), name="feed")
    with capture_logs() as logs:
        watch = asyncio.create_task(watch_stop(stop, after_s=0.05))
        await asyncio.sleep(0.2)
        assert not [e for e in logs if e["event"] == "stop_slow"]  # nothing before a stop is asked
        stop.set()
        await asyncio.sleep(0.2)
        watch.cancel()
    release.set()
    await holder
    slow = [e for e in logs if e["event"] == "stop_slow"]
    assert slow, logs
    assert "--- task feed" in slow[0]["stacks"] and "flush_that_hangs" in slow[0]["stacks"]
    assert "--- thread MainThread" in slow[0]["stacks"]
