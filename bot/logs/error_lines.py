"""Errors the daemon survives, said as one short `error` line.

The daemon never dies of a network, store or broker error: it logs it and goes on (retries,
keeps the rows, skips a heartbeat). Those places log the registered `error` event
(`bot.logs.event_lines`: `ERROR <where>: <Type>: <detail>`), one line in `bot.log`, on the console and
in Telegram; the JSON log keeps every field, including `what` (the specific kind, e.g.
`feed_persist_failed`) and the traceback when one is asked for.

`ErrorStreak` is for a call that keeps failing while a dependency is down (a store write every
flush, a heartbeat every few seconds): the first failure of a streak is the `error` line, the
repeats are debug lines, and the first success after it is one `error_cleared` line with the
count, so an outage is two lines, not one per attempt.
"""

from __future__ import annotations

import time
from typing import Any


def log_survived(log: Any, where: str, err: BaseException, *, what: str, level: str = "error",
                 exc_info: bool = False, **fields: Any) -> None:  # fmt: skip
    """One `error` event for `err`, which the caller survives; `what` names the kind."""
    if exc_info:
        fields["exc_info"] = True  # the traceback goes to the JSON log; the human line stays one line
    getattr(log, level)("error", where=where, error=type(err).__name__, detail=str(err)[:200] or None, what=what, **fields)


class ErrorStreak:
    """See the module docstring. Not thread-safe: one per call site, on the event loop."""

    def __init__(self, where: str, what: str, log: Any):
        self.where, self.what, self.log = where, what, log
        self.failures = 0
        self._since = 0.0

    def failed(self, err: BaseException, **fields: Any) -> None:
        self.failures += 1
        if self.failures == 1:
            self._since = time.monotonic()
            log_survived(self.log, self.where, err, what=self.what, **fields)
        else:
            self.log.debug(self.what, error=type(err).__name__, failures=self.failures, **fields)

    def ok(self) -> None:
        if not self.failures:
            return
        n, self.failures = self.failures, 0
        secs = time.monotonic() - self._since
        self.log.info("error_cleared", where=self.where, what=self.what, failures=n, seconds=round(secs, 1),
                      text=f"{self.where}: working again after {n} failure(s) in {secs:.0f}s")  # fmt: skip
