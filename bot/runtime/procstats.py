"""The daemon's own resource figures (what a months-long run must keep flat), and giving
transient memory back to the OS.

Resident memory, open file descriptors, threads and asyncio tasks of this process, read in a
few microseconds (Linux /proc through psutil; the task count from the running loop). The
heartbeat writes them to the `daemon_status` row (`details.runtime`) and the dashboard's
`/metrics` exposes them (`bot_asyncio_tasks`, `bot_threads`; the fd count and the RSS are the
standard `process_open_fds` / `process_resident_memory_bytes`). The week-long reliability run
(tests/reliability/test_week.py) samples them to prove that none of them grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


def runtime_figures() -> dict[str, float | int]:
    """{"rss_mb", "open_fds", "threads", "asyncio_tasks"} of this process, now. Call it from
    the event loop thread (the task count is the running loop's; 0 outside a loop)."""
    import psutil

    p = psutil.Process()
    out: dict[str, float | int] = {"rss_mb": round(p.memory_info().rss / 2**20, 1), "threads": threading.active_count()}
    try:
        out["open_fds"] = p.num_fds()
    except (AttributeError, psutil.Error):  # not Linux/Unix
        out["open_fds"] = -1
    tasks = 0
    with contextlib.suppress(RuntimeError):
        tasks = len(asyncio.all_tasks())
    out["asyncio_tasks"] = tasks
    return out


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the OS (glibc `malloc_trim(0)`); False where there
    is no glibc. Called after the warm-up and after a hot swap, the two moments the daemon
    allocates a lot for a short while (days of candles for 30 symbols, a second feature engine,
    a second bundle): glibc keeps such freed memory in its arenas, fragmented, so the RSS stayed
    ~17 MB higher after every swap's peak (found by the week-long reliability run)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
