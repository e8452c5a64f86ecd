"""`bot ctl`'s side of the store channel: write a command row, wait for the daemon's answer.

The row is written 'pending'; the daemon claims it within half a second (`Controller.serve`)
and writes the answer. A CLI that gives up (its timeout, or Ctrl-C) expires its row unless the
daemon already took it, so a command nobody answered is never executed later.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import time
from typing import Any

from bot.store import control as store_control
from bot.store.control import CommandRow

POLL_S = 0.2
#: once the daemon took a command, how much longer the CLI waits for its answer (a flatten in
#: live mode waits for the exchange's answers)
RUNNING_GRACE_S = 120.0


def cli_identity() -> str:
    """`user@host` of whoever runs `bot ctl`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


async def send(conn: Any, identity: str, name: str, args: list[str], *, timeout_s: float) -> CommandRow:
    """The command's row once answered, or expired when no daemon took it within `timeout_s`."""
    row = await store_control.insert_command(conn, "cli", identity, name, args)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            await asyncio.sleep(POLL_S)
            cur = await store_control.get_command(conn, row.id)
            if cur is not None and cur.status in store_control.FINAL:
                return cur
            now = time.monotonic()
            if cur is not None and cur.status == "pending" and now > deadline:
                if await store_control.expire_if_pending(conn, row.id, f"not done: no daemon took it within {timeout_s:g} s"):
                    return await store_control.get_command(conn, row.id) or cur
            if now > deadline + RUNNING_GRACE_S:
                return cur or row  # taken but not answered: said by the caller
    except (asyncio.CancelledError, KeyboardInterrupt):
        await asyncio.shield(store_control.expire_if_pending(conn, row.id, "not done: the CLI stopped waiting"))
        raise
