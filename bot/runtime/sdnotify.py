"""Minimal systemd notify protocol (READY=1, WATCHDOG=1, STOPPING=1) without a dependency.

Does nothing when not started by systemd (no $NOTIFY_SOCKET). The daemon sends READY=1 once it
has warmed up, STOPPING=1 when it begins to shut down, and runs `keep_watchdog()` as a task on
its event loop: the pings come from the loop itself, so a loop that stalls (a blocking call, a
deadlock) stops pinging and systemd restarts the service after `WatchdogSec`.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(state: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec (the recommended ping period), or None if not enabled."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


async def keep_watchdog(interval_s: float | None = None) -> None:
    """Send WATCHDOG=1 every `interval_s` (default: half of systemd's WatchdogSec) until
    cancelled; returns at once when the watchdog is not enabled."""
    interval = interval_s if interval_s is not None else watchdog_interval_s()
    if not interval:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
