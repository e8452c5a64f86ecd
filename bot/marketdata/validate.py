"""Candle validation: which candles may enter the store, and the record of every one that
did not.

Value checks (`check_values`, `invalid_reasons` for whole pages) find NaN/inf, prices <= 0,
high < low, open/close outside [low, high], negative volume and open times not on the
minute. None of these is repaired in place: clamping or flooring would write a candle the
exchange never produced, and the store must equal the exchange's data. A bad candle is
dropped and its minute fetched again by REST (the exchange's answer there is final), which
is the repair. Sequence problems (duplicate, out of order) are decided by the feed, which
knows what it already has; they are recorded here too.

`IssueLog` counts every issue by reason and action, keeps a bounded list of the recent ones
for `bot status`/tests, and logs each with its reason.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import structlog

from models.candles import Candles
from models.timeutil import MINUTE_MS

log = structlog.get_logger(__name__)

# Reasons
NAN = "nan"
NON_POSITIVE = "non_positive_price"
HIGH_LT_LOW = "high_lt_low"
OUTSIDE_RANGE = "open_close_outside_range"
NEGATIVE_VOLUME = "negative_volume"
UNALIGNED = "ts_unaligned"
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"
MISSING = "missing"  # a minute the websocket never delivered (or delivered bad); REST filled it
EXCHANGE_GAP = "exchange_gap"  # the exchange has no candle for the minute (confirmed by REST)
TOO_FAR_AHEAD = "ts_too_far_ahead"  # an open time beyond any minute the feed could have seen close
VALUE_REASONS = (NAN, NON_POSITIVE, HIGH_LT_LOW, OUTSIDE_RANGE, NEGATIVE_VOLUME, UNALIGNED)

# Actions
REFETCH = "refetch"  # dropped; the minute is fetched again by REST
DROPPED = "dropped"  # dropped; the minute is already known (or will be) from elsewhere
REORDERED = "reordered"  # late but still needed: put in its place
FILLED = "filled_rest"
RECORDED = "recorded"
UNREPAIRABLE = "unrepairable"  # REST kept answering a bad candle: the minute is left empty (never invented)


def check_values(ts: int, o: float, h: float, lo: float, c: float, v: float) -> str | None:
    """The first problem of one candle, or None if it is valid."""
    if not (math.isfinite(o) and math.isfinite(h) and math.isfinite(lo) and math.isfinite(c) and math.isfinite(v)):
        return NAN
    if ts % MINUTE_MS:
        return UNALIGNED
    if o <= 0 or h <= 0 or lo <= 0 or c <= 0:
        return NON_POSITIVE
    if h < lo:
        return HIGH_LT_LOW
    if not (lo <= o <= h and lo <= c <= h):
        return OUTSIDE_RANGE
    if v < 0:
        return NEGATIVE_VOLUME
    return None


def invalid_reasons(c: Candles) -> list[tuple[int, str]]:
    """(row index, reason) of every invalid row of a page, vectorised; same order of checks
    as `check_values`."""
    if len(c) == 0:
        return []
    p = np.stack([c.open, c.high, c.low, c.close])
    reasons = np.full(len(c), "", dtype=object)

    def mark(mask: np.ndarray, reason: str) -> None:
        sel = mask & (reasons == "")
        reasons[sel] = reason

    mark(~(np.isfinite(p).all(axis=0) & np.isfinite(c.volume)), NAN)
    mark(c.ts % MINUTE_MS != 0, UNALIGNED)
    mark((p <= 0).any(axis=0), NON_POSITIVE)
    mark(c.high < c.low, HIGH_LT_LOW)
    mark((c.open < c.low) | (c.open > c.high) | (c.close < c.low) | (c.close > c.high), OUTSIDE_RANGE)
    mark(c.volume < 0, NEGATIVE_VOLUME)
    idx = np.flatnonzero(reasons != "")
    return [(int(i), str(reasons[i])) for i in idx]


@dataclass(frozen=True, slots=True)
class Issue:
    symbol: str
    ts: int
    reason: str
    action: str
    source: str
    detail: str = ""


class IssueLog:
    """Counters by reason and by (reason, action), plus the last `keep` issues."""

    def __init__(self, keep: int = 20_000):
        self.by_reason: Counter[str] = Counter()
        self.by_action: Counter[tuple[str, str]] = Counter()
        self.recent: deque[Issue] = deque(maxlen=keep)

    def report(self, symbol: str, ts: int, reason: str, action: str, source: str, detail: str = "",
               level: str | None = "warning") -> None:  # fmt: skip
        """Count one issue; log it at `level` (None: count only, the caller logs a summary)."""
        self.by_reason[reason] += 1
        self.by_action[(reason, action)] += 1
        self.recent.append(Issue(symbol, ts, reason, action, source, detail))
        if level is not None:
            getattr(log, level)("candle_issue", symbol=symbol, ts=ts, reason=reason, action=action, source=source,
                                **({"detail": detail} if detail else {}))  # fmt: skip

    def count(self, reason: str) -> int:
        return self.by_reason[reason]

    def as_dict(self) -> dict[str, int]:
        return dict(self.by_reason)
