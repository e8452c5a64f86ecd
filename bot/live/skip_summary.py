"""The hourly summary of why candidates were not traded (the `risk_skips` line).

The engine decides every minute for 30 symbols; one log line per skip would drown the log and
Telegram. The daemon feeds every decision here (`skip(reason, ts)` / `entered(ts)`, with the
decision's bar time, so a fast replay summarises by market hours too) and this logs one
`risk_skips` event when a UTC hour is over: the counts per reason (one counter per reason:
bounded), how many entered, and the hour it covers (`event_ts`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import structlog

from models.timeutil import HOUR_MS

log = structlog.get_logger("bot.skips")


class SkipSummary:
    def __init__(self, window_ms: int = HOUR_MS, logger: Any = None):
        self.window_ms = window_ms
        self.log = logger or log
        self.counts: Counter[str] = Counter()
        self.n_entered = 0
        self.window_start: int | None = None

    def _roll(self, ts: int) -> dict[str, Any] | None:
        start = ts - ts % self.window_ms
        out = None
        if self.window_start is not None and start > self.window_start:
            out = self.flush()
        if self.window_start is None or start > self.window_start:
            self.window_start = start
        return out

    def skip(self, reason: str, ts: int) -> dict[str, Any] | None:
        out = self._roll(ts)
        self.counts[reason] += 1
        return out

    def entered(self, ts: int) -> dict[str, Any] | None:
        out = self._roll(ts)
        self.n_entered += 1
        return out

    def tick(self, ts: int) -> dict[str, Any] | None:
        """Call once per minute step: logs the summary when the hour is over, even if quiet."""
        return self._roll(ts)

    def flush(self) -> dict[str, Any] | None:
        """Log the current window's summary now (also at shutdown); None if nothing happened."""
        if self.window_start is None or (not self.counts and not self.n_entered):
            return None
        fields = {"counts": dict(self.counts), "window_min": self.window_ms // 60_000,
                  "entered": self.n_entered, "event_ts": self.window_start + self.window_ms}  # fmt: skip
        self.log.info("risk_skips", **fields)
        self.counts.clear()
        self.n_entered = 0
        return fields
