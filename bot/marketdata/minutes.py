"""All symbols' bars for one minute: the shape the feature engine consumes
(`OnlineFeatureEngine.update(ts_ms, bars[S, 5])`, rows in `symbols` order, columns
open/high/low/close/volume, float64).

The feed delivers each symbol's minutes in order, each exactly once, as a candle or an
`ExchangeGap`; symbols arrive at their own pace. The assembler keeps a per-symbol watermark
(the last minute that symbol has delivered) and releases minute t, in increasing t:
  * as soon as every symbol's watermark is >= t (everything that will come for t has come), or
  * when `timeout_s` has passed since the first candle of t arrived (a lagging symbol must
    not hold the whole market back; its row is NaN and its late candle is counted as late
    and not delivered to the engine — it is still in the store).
Rows are NaN for a symbol whose minute is an exchange gap, that has not started yet, or that
timed out. A minute in which no symbol has a candle (exchange-wide downtime) is not emitted:
there is nothing to compute on. Minutes are emitted strictly increasing, never twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import structlog

from bot.marketdata.events import ClosedCandle, ExchangeGap, FeedEvent
from bot.runtime.aio import wait_for

log = structlog.get_logger(__name__)


class MinuteAssembler:
    """Sync core (`add`, `pop_ready`) plus an async driver (`minutes`)."""

    def __init__(self, symbols: Sequence[str], timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_pending: int = 1440):  # fmt: skip
        self.symbols = tuple(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.timeout_s = timeout_s
        self.clock = clock
        self.max_pending = max_pending
        self.watermark = np.full(len(self.symbols), np.iinfo(np.int64).min, dtype=np.int64)
        self._pending: dict[int, tuple[np.ndarray, float]] = {}  # ts -> (bars, first arrival)
        self.last_emitted: int | None = None
        self.late = 0
        self.timed_out_rows = 0
        self.skipped_empty = 0

    def add(self, ev: FeedEvent) -> None:
        i = self.index.get(ev.symbol)
        if i is None:
            return
        if isinstance(ev, ExchangeGap):
            self.watermark[i] = max(self.watermark[i], ev.end_ts)
            return
        assert isinstance(ev, ClosedCandle)
        self.watermark[i] = max(self.watermark[i], ev.ts)
        if self.last_emitted is not None and ev.ts <= self.last_emitted:
            self.late += 1
            log.warning("minute_late_candle", symbol=ev.symbol, ts=ev.ts, emitted_through=self.last_emitted)
            return
        slot = self._pending.get(ev.ts)
        if slot is None:
            if len(self._pending) >= self.max_pending:  # far behind: release the oldest early
                self._force_oldest()
            slot = (np.full((len(self.symbols), 5), np.nan), self.clock())
            self._pending[ev.ts] = slot
        slot[0][i] = ev.values()

    def _force_oldest(self) -> None:
        oldest = min(self._pending)
        self._pending[oldest] = (self._pending[oldest][0], -np.inf)

    def pop_ready(self) -> list[tuple[int, np.ndarray]]:
        """Minutes that can be released now, in increasing order."""
        out: list[tuple[int, np.ndarray]] = []
        if not self._pending:
            return out
        floor = int(self.watermark.min())
        now = self.clock()
        for ts in sorted(self._pending):
            bars, first = self._pending[ts]
            complete = floor >= ts
            if not complete and now - first < self.timeout_s:
                break  # keep order: nothing later goes before this one
            del self._pending[ts]
            if not complete:
                missing = int(np.isnan(bars[:, 3]).sum())
                self.timed_out_rows += missing
                log.warning("minute_timeout", ts=ts, missing_symbols=missing)
            self.last_emitted = ts
            out.append((ts, bars))
        return out

    def next_deadline(self) -> float | None:
        """Seconds until the oldest pending minute times out (None if nothing is pending)."""
        if not self._pending:
            return None
        first = self._pending[min(self._pending)][1]
        return max(0.0, self.timeout_s - (self.clock() - first))

    async def minutes(self, queue: asyncio.Queue[FeedEvent]) -> AsyncIterator[tuple[int, np.ndarray]]:
        """Consume the feed's queue; yield (minute ts, bars[S, 5]) as minutes are released."""
        while True:
            wait = self.next_deadline()
            try:
                ev = await (wait_for(queue.get(), wait) if wait is not None else queue.get())
                self.add(ev)
                while not queue.empty():
                    self.add(queue.get_nowait())
            except TimeoutError:
                pass
            for item in self.pop_ready():
                yield item
