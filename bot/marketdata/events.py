"""What the live feed hands to the engine: closed candles and exchange gaps, per symbol in
strict minute order, each minute exactly once (a candle or, where the exchange has none, a
gap)."""

from __future__ import annotations

from dataclasses import dataclass

from models.timeutil import MINUTE_MS


@dataclass(frozen=True, slots=True)
class ClosedCandle:
    """One final 1m candle. `ts` is the open time (epoch ms); `source` is "ws" or "rest";
    `received` is `time.perf_counter()` when the feed got it (for latency measurements)."""

    symbol: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    source: str
    received: float

    def values(self) -> tuple[float, float, float, float, float]:
        return (self.open, self.high, self.low, self.close, self.volume)


@dataclass(frozen=True, slots=True)
class ExchangeGap:
    """`minutes` consecutive minutes from `ts` for which there is no candle for `symbol`:
    the exchange has none (confirmed by REST: a later candle exists, none for these minutes),
    or — rarely — it kept serving an invalid one (logged as unrepairable); never invented."""

    symbol: str
    ts: int
    minutes: int

    @property
    def end_ts(self) -> int:
        """Open time of the last missing minute."""
        return self.ts + (self.minutes - 1) * MINUTE_MS


FeedEvent = ClosedCandle | ExchangeGap
