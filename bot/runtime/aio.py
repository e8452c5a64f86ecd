"""asyncio helpers the daemon needs to be stoppable.

`wait_for` is Python 3.12's `asyncio.wait_for` (a timeout context around a plain await).
Python 3.11's own `asyncio.wait_for` loses a cancellation when the awaited future has just
completed: it returns the result instead of raising `CancelledError`. A loop such as
`while True: await asyncio.wait_for(ws.next_message(), 30)` then goes on after it was
cancelled, and whoever awaits the cancelled task waits forever. That is how the daemon
sometimes did not stop on SIGTERM (the feed's websocket loop, which completes a wait many
times a second at a fast clock, swallowed its cancel and `bot run` hung until systemd or the
test killed it) and how a Telegram sender test hung. Every timeout in `bot/` goes through
this helper (`tests/unit/bot/test_aio.py` checks both the behaviour and that nothing else is used).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await `aw` for at most `timeout` seconds (None: no limit); on timeout it is cancelled
    and `TimeoutError` is raised. A cancellation of the caller is never lost."""
    if timeout is None:
        return await aw
    async with asyncio.timeout(timeout):
        return await aw
