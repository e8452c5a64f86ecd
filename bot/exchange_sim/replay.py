"""What the exchange simulator replays: recorded 1m candles and the clock that walks through them.

`ReplayClock` maps wall time to "exchange time" (epoch ms inside the recorded data):
`now = start + elapsed_real * speed`. Speed 1 is real time, 600 plays ten hours a minute, 0
freezes the clock (tests and backfills then see a fixed "now"). The clock can be moved or
re-timed while running; waiters are woken so that the websocket pump re-plans.

`CandleBook` holds the recorded candles per symbol (float64, as in the files) with an O(1)
minute -> row index, and synthesises the still-forming candle of the current minute (a
partial candle, as the exchange reports it before the minute closes) so that clients see
in-progress values that differ from the final ones: taking a forming candle for a closed one
is then a visible error, not a silent one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bot.runtime.aio import wait_for
from models.candles import Candles, candle_files, read_candles_csv
from models.timeutil import MINUTE_MS


class ReplayClock:
    """Exchange time driven by wall time and a speed factor."""

    def __init__(self, start_ms: int, speed: float = 1.0):
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self._anchor_ms = float(start_ms)
        self._anchor_real = time.monotonic()
        self._speed = float(speed)
        self._changed = asyncio.Event() if _has_loop() else None

    @property
    def speed(self) -> float:
        return self._speed

    def now_ms(self) -> int:
        return int(self._anchor_ms + (time.monotonic() - self._anchor_real) * 1000.0 * self._speed)

    def set(self, now_ms: int | None = None, speed: float | None = None) -> None:
        """Move the clock to `now_ms` and/or change its speed from this instant."""
        cur = self.now_ms()
        self._anchor_real = time.monotonic()
        self._anchor_ms = float(cur if now_ms is None else now_ms)
        if speed is not None:
            if speed < 0:
                raise ValueError(f"speed must be >= 0, got {speed}")
            self._speed = float(speed)
        self._signal()

    def advance(self, ms: int) -> None:
        self.set(self.now_ms() + int(ms))

    def real_seconds_until(self, exchange_ms: int) -> float | None:
        """Wall seconds until the clock reaches `exchange_ms`; None if it never will (frozen)."""
        delta = exchange_ms - self.now_ms()
        if delta <= 0:
            return 0.0
        if self._speed <= 0:
            return None
        return delta / 1000.0 / self._speed

    async def wait_changed(self, timeout: float | None) -> None:
        """Sleep up to `timeout` seconds (forever if None), waking early if the clock is moved."""
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass
        self._changed.clear()

    def _signal(self) -> None:
        if self._changed is not None:
            self._changed.set()


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


@dataclass(frozen=True, slots=True)
class RecordedCandle:
    """One candle of the recording the simulator replays (float64 values): the exchange's
    ground truth for a (symbol, minute), looked up by symbol. Deliberately not the feed's
    `bot.marketdata.events.ClosedCandle`, which is what our client *received* (it carries the
    symbol, the source ws/rest and the receive time); the simulator must not depend on the
    daemon's types."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    def values(self) -> tuple[float, float, float, float, float]:
        return (self.open, self.high, self.low, self.close, self.volume)


@lru_cache(maxsize=128)
def _load_file(path: str, mtime_ns: int) -> Candles:
    """Parse one file once per process (several simulators in one test session share it)."""
    return read_candles_csv(path)


class CandleBook:
    """Recorded candles of several symbols with O(1) lookup by (symbol, minute)."""

    def __init__(self, candles: dict[str, Candles]):
        if not candles:
            raise ValueError("CandleBook needs at least one symbol")
        self.candles = candles
        self.symbols: tuple[str, ...] = tuple(candles)
        self.first_ms = min(int(c.ts[0]) for c in candles.values() if len(c))
        self.last_ms = max(int(c.ts[-1]) for c in candles.values() if len(c))
        n = (self.last_ms - self.first_ms) // MINUTE_MS + 1
        self._index: dict[str, np.ndarray] = {}
        for s, c in candles.items():
            idx = np.full(n, -1, dtype=np.int32)
            if len(c):
                if np.any(c.ts % MINUTE_MS) or np.any(np.diff(c.ts) <= 0):
                    raise ValueError(f"{s}: timestamps must be ascending, unique and on the minute")
                idx[(c.ts - self.first_ms) // MINUTE_MS] = np.arange(len(c), dtype=np.int32)
            self._index[s] = idx

    @classmethod
    def from_directory(
        cls, directory: str | Path, symbols: Iterable[str] | None = None,
        start_ms: int | None = None, end_ms: int | None = None,
    ) -> CandleBook:  # fmt: skip
        """Load SYMBOL.csv(.gz) files, optionally only some symbols and [start_ms, end_ms)."""
        files = candle_files(directory, symbols)
        out: dict[str, Candles] = {}
        for s, p in files.items():
            c = _load_file(str(p), p.stat().st_mtime_ns)
            out[s] = c.between(start_ms, end_ms) if start_ms is not None or end_ms is not None else c
        return cls(out)

    def row_index(self, symbol: str, ts: int) -> int:
        """Row index of (symbol, minute ts) or -1 if the exchange has no candle for that minute."""
        if ts % MINUTE_MS or ts < self.first_ms or ts > self.last_ms:
            return -1
        return int(self._index[symbol][(ts - self.first_ms) // MINUTE_MS])

    def get(self, symbol: str, ts: int) -> RecordedCandle | None:
        i = self.row_index(symbol, ts)
        if i < 0:
            return None
        c = self.candles[symbol]
        return RecordedCandle(
            int(c.ts[i]), float(c.open[i]), float(c.high[i]), float(c.low[i]), float(c.close[i]), float(c.volume[i])
        )

    def range(self, symbol: str, start_ms: int | None, end_ms: int | None) -> Candles:
        """Recorded candles with start_ms <= ts <= end_ms (inclusive, like Binance's endTime)."""
        c = self.candles[symbol]
        return c.between(start_ms, None if end_ms is None else end_ms + 1)

    def last_at_or_before(self, symbol: str, ts: int) -> RecordedCandle | None:
        c = self.candles[symbol]
        i = int(np.searchsorted(c.ts, ts, "right")) - 1
        if i < 0:
            return None
        return self.get(symbol, int(c.ts[i]))


def forming(row: RecordedCandle, fraction: float) -> tuple[float, float, float, float, float]:
    """The in-progress values of `row`'s minute after `fraction` (0..1) of it has elapsed.

    The price walks linearly from open to close; high/low cover what has been seen so far and
    stay inside the final candle's range; volume accrues linearly. At fraction 1 this is the
    final candle; before that it generally differs from it.
    """
    f = min(max(fraction, 0.0), 1.0)
    if f >= 1.0:
        return row.values()
    p = row.open + (row.close - row.open) * f
    hi = min(max(row.open, p), row.high)
    lo = max(min(row.open, p), row.low)
    return (row.open, hi, lo, p, row.volume * f)
