"""Crash points: a fault-injection hook for tests, never set in production.

`BOT_CRASH_POINT=<name>` in the daemon's environment makes the process SIGKILL itself the first
time it reaches that point (what a power cut, the OOM killer or `kill -9` would do there), so a
test can prove that a restart *without* the variable recovers to the exchange's state with no
manual step. The variable is read once, when this module is first imported (the daemon's
start); unset or empty, `reached()` is one comparison and does nothing.

Points (the live broker's critical window, between an order's submission and the persisting of
its fill):
  after_submit   the exchange accepted a new order and answered; nothing of the answer is
                 written (the store says 'submitted', the engine has not booked it)
  after_fill     an order's fills are in the `orders`/`fills` tables; the engine has not booked
                 them and its minute is not persisted (no position row, no engine state)
  during_retrain a retrain's training process is running (the daemon dies under it)
  before_order_row  a new order is about to be written to the store (and then sent)
The order points take the order's leg as a qualifier: `after_submit:entry`, `after_fill:exit`.

`BOT_CRASH_ACTION=pause` makes the point SIGSTOP the process instead (once): the test then
changes the world under it (e.g. stops Postgres, so the order row cannot be written) and
resumes it with SIGCONT.
"""

from __future__ import annotations

import logging
import os
import signal

import structlog

ENV = "BOT_CRASH_POINT"
ACTION_ENV = "BOT_CRASH_ACTION"
POINTS = ("after_submit", "after_fill", "during_retrain", "before_order_row")
_point: str | None = os.environ.get(ENV) or None
_pause = os.environ.get(ACTION_ENV) == "pause"

log = structlog.get_logger("bot.runtime.crashpoint")


def armed() -> str | None:
    return _point


def reached(name: str, qualifier: str | None = None, **fields: object) -> None:
    """SIGKILL this process if `name` is the armed crash point (a test hook; see the module).
    `qualifier` narrows it: `BOT_CRASH_POINT=after_fill:entry` fires only where the point is
    reached with qualifier "entry" (an entry order's fill), plain `after_fill` on any. `fields`
    go to the log line (e.g. the client order id), so a test knows where it died."""
    global _point
    if _point is None or (_point != name and _point != f"{name}:{qualifier}"):
        return
    what = "SIGSTOP of this process until SIGCONT" if _pause else "kill -9 of this process"
    log.warning("crash_point", point=name, pid=os.getpid(), action="pause" if _pause else "kill", **fields,
                text=f"CRASH POINT {name}: {what} (test hook)")  # fmt: skip
    for h in logging.getLogger().handlers:
        try:
            h.flush()
        except Exception:  # noqa: BLE001, S110 - stopping or dying anyway
            pass
    if _pause:
        _point = None  # once: the process goes on after SIGCONT
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    os.kill(os.getpid(), signal.SIGKILL)
