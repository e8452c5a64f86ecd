"""When a stop takes too long, say where it waits.

A daemon asked to stop (SIGTERM from systemd, Ctrl-C) should be gone in seconds; systemd
kills it after `TimeoutStopSec` and the reason is lost. This watch starts when the stop is
requested and, if the process is still stopping after `after_s`, logs one `stop_slow` line
with the stack of every asyncio task and every thread: enough to see which await or lock
holds the stop, from the log alone. It never changes what the daemon does.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import traceback

import structlog

log = structlog.get_logger("bot.runtime.slow_stop")

STOP_SLOW_S = 20.0


def stacks() -> str:
    """Every asyncio task of the running loop and every thread, as text."""
    out = io.StringIO()
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is me:
            continue
        out.write(f"--- task {task.get_name()} ({task._coro!r})\n")  # noqa: SLF001 - the coroutine says what it is
        task.print_stack(limit=12, file=out)
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():  # noqa: SLF001 - the only way to a thread's stack
        out.write(f"--- thread {names.get(ident, ident)}\n")
        out.write("".join(traceback.format_stack(frame, limit=12)))
    return out.getvalue()


async def watch_stop(stop: asyncio.Event, after_s: float = STOP_SLOW_S) -> None:
    """Run beside the daemon; cancelled when it has stopped."""
    await stop.wait()
    await asyncio.sleep(after_s)
    while True:
        text = stacks()
        log.warning("stop_slow", after_s=after_s, stacks=text,
                    text=f"STOP still waiting after {after_s:.0f}s; task and thread stacks in the JSON log")  # fmt: skip
        await asyncio.sleep(after_s)
