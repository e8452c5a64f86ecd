"""The one event-loop lag sampler: how late the loop wakes up (what a blocking call would show).

The daemon runs one (`bot.live.trader.LiveTrader.lag`): it keeps the max since the last `take()` (the
status row's `loop_lag_max_ms`) and over the whole run, and hands every sample to `sink` when
one is set (the dashboard's `DaemonMetrics.loop_lag`, for the Prometheus histogram).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopLag:
    PERIOD_S = 0.05

    def __init__(self, sink: Callable[[float], None] | None = None, period_s: float | None = None) -> None:
        self.window_max = 0.0
        self.run_max = 0.0
        self.sink = sink  # called with each sample, in seconds
        self.period_s = period_s or self.PERIOD_S

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.period_s)
            late_s = max(0.0, time.perf_counter() - t - self.period_s)
            late = late_s * 1000
            self.window_max = max(self.window_max, late)
            self.run_max = max(self.run_max, late)
            if self.sink is not None:
                self.sink(late_s)

    def take(self) -> float:
        """The max lag (ms) since the last call."""
        v, self.window_max = self.window_max, 0.0
        return round(v, 1)
