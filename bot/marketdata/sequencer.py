"""Per-symbol ordering of closed candles: the rule "each minute exactly once, strictly in
order, nothing invented" as a small state machine with no I/O.

State of one symbol:
  next_ts   the next minute to release (everything before it has been released)
  horizon   the latest minute known to be closed (from a closed kline, a later minute
            having started, or the exchange's clock)
  pending   valid closed candles received for minutes >= next_ts, not yet releasable
            because an earlier minute is missing
  gaps      minutes >= next_ts confirmed absent on the exchange

A minute in [next_ts, horizon] with neither a candle nor a confirmed gap is *missing*: the
feed asks REST for it (`missing_range`). `pop_ready` releases the contiguous run that starts
at next_ts. Candles for minutes < next_ts are stale (already released) and never re-released.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from models.timeutil import MINUTE_MS

Values = tuple[float, float, float, float, float]

NEW = "new"
STALE = "stale"
DUPLICATE = "duplicate"
CONFLICT = "conflict"
OVERFLOW = "overflow"


@dataclass
class Slot:
    values: Values
    source: str
    received: float


@dataclass
class SymbolSequencer:
    symbol: str
    next_ts: int
    horizon: int = -1
    max_pending: int = 20_000
    pending: dict[int, Slot] = field(default_factory=dict)
    gaps: set[int] = field(default_factory=set)
    released: int = 0

    def __post_init__(self) -> None:
        if self.next_ts % MINUTE_MS:
            raise ValueError(f"{self.symbol}: next_ts {self.next_ts} is not on the minute")
        if self.horizon < 0:
            self.horizon = self.next_ts - MINUTE_MS

    def offer(self, ts: int, values: Values, source: str, received: float) -> str:
        """Add a valid closed candle. Returns NEW, STALE (minute already released),
        DUPLICATE (same values already pending), CONFLICT (other values already pending; the
        first one stays) or OVERFLOW (too far ahead to buffer; REST will bring it later)."""
        if ts < self.next_ts:
            return STALE
        have = self.pending.get(ts)
        if have is not None:
            return DUPLICATE if have.values == values else CONFLICT
        if ts in self.gaps:
            # The exchange produced it after all (REST said no earlier): the candle wins.
            self.gaps.discard(ts)
        if len(self.pending) >= self.max_pending:
            return OVERFLOW
        self.pending[ts] = Slot(values, source, received)
        if ts > self.horizon:
            self.horizon = ts
        return NEW

    def close_through(self, ts: int) -> None:
        """Every minute up to and including `ts` has closed."""
        ts -= ts % MINUTE_MS
        if ts > self.horizon:
            self.horizon = ts

    def mark_gap(self, ts: int) -> bool:
        """Record that the exchange has no candle for minute `ts` (>= next_ts, not pending)."""
        if ts < self.next_ts or ts in self.pending:
            return False
        self.gaps.add(ts)
        if ts > self.horizon:
            self.horizon = ts
        return True

    def has(self, ts: int) -> bool:
        return ts < self.next_ts or ts in self.pending or ts in self.gaps

    def missing_range(self) -> tuple[int, int] | None:
        """(first missing minute, last minute worth asking about) or None if nothing is missing.

        The range ends at the first minute after the hole that is known (pending), or at the
        horizon, so that a REST answer covering it proves whether the hole is an exchange gap.
        """
        t = self.next_ts
        while t <= self.horizon and (t in self.pending or t in self.gaps):
            t += MINUTE_MS
        if t > self.horizon:
            return None
        end = t
        while end < self.horizon and end not in self.pending:
            end += MINUTE_MS
        return t, end

    def pop_ready(self) -> Iterator[tuple[int, Slot | None]]:
        """Release the contiguous run from next_ts: (ts, slot) for a candle, (ts, None) for an
        exchange gap. Advances next_ts past each released minute."""
        while True:
            t = self.next_ts
            slot = self.pending.pop(t, None)
            if slot is not None:
                self.next_ts = t + MINUTE_MS
                self.released += 1
                yield t, slot
            elif t in self.gaps:
                self.gaps.discard(t)
                self.next_ts = t + MINUTE_MS
                yield t, None
            else:
                return

    @property
    def lag_minutes(self) -> int:
        """Closed minutes not yet released."""
        return max(0, (self.horizon - self.next_ts) // MINUTE_MS + 1)
