"""Stateful limits: the kill switch, the order-rate limiter and stop-loss cooldowns.

Each is a small object whose whole state is plain data (`to_dict` / `from_dict`), so the daemon
can persist it after every change and restore it on start: a crash or a restart must not forget
that the kill switch tripped or that a symbol is cooling down. None of them reads a clock; every
call takes `now_ms` (UTC epoch milliseconds).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

from risk.errors import RiskInputError, RiskStateError

# risk's own time units, defined once for the whole package (only this module needs them).
# `risk/` must not import `models/` (the layout test enforces it: risk is pure and stands
# alone), so it cannot use `models.timeutil`; the values are the same UTC epoch-ms units, and
# `tests/unit/test_layout.py` checks that they equal `models.timeutil`'s.
DAY_MS = 86_400_000
MINUTE_MS = 60_000

TripReason = Literal["daily_loss", "max_drawdown"]
ResetRule = Literal["next_utc_day", "manual"]


def utc_day(now_ms: int) -> int:
    """Days since the epoch in UTC; a new value at every 00:00 UTC."""
    return int(now_ms) // DAY_MS


class KillSwitch:
    """Stops new entries after a daily loss or a drawdown, until its reset rule fires.

    Fed the account equity every bar (`update`). The daily loss is measured from the first equity
    seen in the current UTC day; the drawdown from the highest equity seen since the last reset.
    A daily-loss trip clears per `daily_reset`, a drawdown trip per `drawdown_reset`: either at the
    first update of a later UTC day, or only through `reset()` by hand. When both limits are
    breached the drawdown wins, since its reset rule is usually the stricter one. Clearing a
    drawdown trip (or any trip by hand) re-bases the peak to the current equity, otherwise it would
    re-fire on the very next bar; clearing a daily-loss trip keeps the peak, so that several bad
    days in a row still add up to a drawdown.
    """

    __slots__ = ("daily_loss_limit", "max_drawdown", "daily_reset", "drawdown_reset", "day",
                 "day_start_equity", "peak_equity", "tripped", "tripped_ms", "trip_equity")  # fmt: skip

    def __init__(self, daily_loss_limit: float, max_drawdown: float,
                 daily_reset: ResetRule = "next_utc_day", drawdown_reset: ResetRule = "manual"):
        self.daily_loss_limit = float(daily_loss_limit)
        self.max_drawdown = float(max_drawdown)
        self.daily_reset: ResetRule = daily_reset
        self.drawdown_reset: ResetRule = drawdown_reset
        self.day: int | None = None
        self.day_start_equity: float | None = None
        self.peak_equity: float | None = None
        self.tripped: TripReason | None = None
        self.tripped_ms: int | None = None
        self.trip_equity: float | None = None

    @property
    def active(self) -> bool:
        return self.tripped is not None

    def update(self, equity: float, now_ms: int) -> str | None:
        """Observe the equity at `now_ms`; return an event name when the state changed, else None.

        Events: "reset:next_utc_day", "tripped:daily_loss", "tripped:max_drawdown" (a reset and a
        new trip on the same bar report the trip).
        """
        if not math.isfinite(equity) or equity < 0:
            raise RiskInputError(f"equity must be a finite number >= 0, got {equity!r}")
        day = utc_day(now_ms)
        event: str | None = None
        if self.day is None:
            self.day, self.day_start_equity, self.peak_equity = day, equity, equity
        elif day < self.day:
            raise RiskStateError(
                f"clock went backwards: now_ms={now_ms} is in UTC day {day} but the kill switch has "
                f"already seen day {self.day}; restore the state of this run, not a later one"
            )
        elif day > self.day:
            self.day, self.day_start_equity = day, equity
            rule = self.daily_reset if self.tripped == "daily_loss" else self.drawdown_reset
            if self.tripped is not None and rule == "next_utc_day":
                self._clear(equity, rebase_peak=self.tripped == "max_drawdown")
                event = "reset:next_utc_day"
        assert self.day_start_equity is not None and self.peak_equity is not None
        self.peak_equity = max(self.peak_equity, equity)
        dd_hit = equity <= self.peak_equity * (1.0 - self.max_drawdown)
        daily_hit = equity <= self.day_start_equity * (1.0 - self.daily_loss_limit)
        if dd_hit and self.tripped != "max_drawdown":
            self._trip("max_drawdown", equity, now_ms)
            event = "tripped:max_drawdown"
        elif daily_hit and self.tripped is None:
            self._trip("daily_loss", equity, now_ms)
            event = "tripped:daily_loss"
        return event

    def reset(self, equity: float, now_ms: int) -> None:
        """Clear a trip by hand (the `manual` rule) and start counting from this equity."""
        self._clear(equity, rebase_peak=True)
        self.day = utc_day(now_ms)
        self.day_start_equity = equity

    def _trip(self, reason: TripReason, equity: float, now_ms: int) -> None:
        self.tripped, self.tripped_ms, self.trip_equity = reason, int(now_ms), float(equity)

    def _clear(self, equity: float, rebase_peak: bool) -> None:
        self.tripped = self.tripped_ms = self.trip_equity = None
        if rebase_peak:
            self.peak_equity = equity

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "day_start_equity": self.day_start_equity,
            "peak_equity": self.peak_equity,
            "tripped": self.tripped,
            "tripped_ms": self.tripped_ms,
            "trip_equity": self.trip_equity,
        }

    def load_dict(self, d: Mapping[str, Any]) -> None:
        """Restore the state saved by `to_dict` (limits and rules stay those of the current config)."""
        tripped = d.get("tripped")
        if tripped not in (None, "daily_loss", "max_drawdown"):
            raise RiskStateError(f"kill_switch.tripped: must be null, 'daily_loss' or 'max_drawdown', got {tripped!r}")
        self.day = _opt(d, "day", int, "kill_switch")
        self.day_start_equity = _opt(d, "day_start_equity", float, "kill_switch")
        self.peak_equity = _opt(d, "peak_equity", float, "kill_switch")
        self.tripped = tripped
        self.tripped_ms = _opt(d, "tripped_ms", int, "kill_switch")
        self.trip_equity = _opt(d, "trip_equity", float, "kill_switch")
        if self.day is not None and (self.day_start_equity is None or self.peak_equity is None):
            raise RiskStateError("kill_switch: day is set but day_start_equity/peak_equity are missing")


class OrderRateLimiter:
    """Sliding 60-second window over the orders sent (entries and exits alike).

    Only the latest `max_per_minute` timestamps are kept: if all of them are inside the window the
    limit is reached, whatever happened before, so the buffer is bounded.
    """

    __slots__ = ("max_per_minute", "_sent")

    def __init__(self, max_per_minute: int):
        if max_per_minute < 1:
            raise RiskInputError(f"max_per_minute must be >= 1, got {max_per_minute}")
        self.max_per_minute = int(max_per_minute)
        self._sent: deque[int] = deque(maxlen=self.max_per_minute)

    def record(self, now_ms: int, n: int = 1) -> None:
        """Count `n` orders sent at `now_ms`."""
        for _ in range(min(n, self.max_per_minute)):
            self._sent.append(int(now_ms))

    def sent_in_window(self, now_ms: int) -> int:
        start = now_ms - MINUTE_MS
        return sum(1 for t in self._sent if t > start)

    def capacity(self, now_ms: int) -> int:
        """How many more orders may be sent at `now_ms` without breaking the limit."""
        return self.max_per_minute - self.sent_in_window(now_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"sent_ms": list(self._sent)}

    def load_dict(self, d: Mapping[str, Any]) -> None:
        sent = d.get("sent_ms", [])
        if not isinstance(sent, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in sent):
            raise RiskStateError(f"order_rate.sent_ms: must be a list of integer epoch ms, got {sent!r}")
        self._sent = deque(sorted(sent), maxlen=self.max_per_minute)


class Cooldowns:
    """Per-symbol "no new entry until" times, set when a position exits at its stop-loss."""

    __slots__ = ("minutes", "_until")

    def __init__(self, minutes: int):
        self.minutes = int(minutes)
        self._until: dict[str, int] = {}

    def record_stop(self, symbol: str, now_ms: int) -> int:
        """Start (or extend) the cooldown of `symbol`; return the time it ends."""
        until = int(now_ms) + self.minutes * MINUTE_MS
        self._until[symbol] = max(until, self._until.get(symbol, 0))
        return self._until[symbol]

    def until(self, symbol: str) -> int:
        return self._until.get(symbol, 0)

    def active(self, symbol: str, now_ms: int) -> bool:
        return now_ms < self._until.get(symbol, 0)

    def __bool__(self) -> bool:
        return bool(self._until)

    def prune(self, now_ms: int) -> None:
        """Forget cooldowns that ended (keeps the state bounded by the symbols in cooldown)."""
        for s in [s for s, t in self._until.items() if t <= now_ms]:
            del self._until[s]

    def to_dict(self) -> dict[str, Any]:
        return dict(self._until)

    def load_dict(self, d: Mapping[str, Any]) -> None:
        if not isinstance(d, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in d.items()
        ):
            raise RiskStateError(f"cooldowns: must map symbol -> integer epoch ms, got {d!r}")
        self._until = dict(d)


def _opt(d: Mapping[str, Any], key: str, typ: type, where: str) -> Any:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (typ is int and not isinstance(v, int)):
        raise RiskStateError(f"{where}.{key}: must be {'an integer' if typ is int else 'a number'} or null, got {v!r}")
    if typ is float and not math.isfinite(v):
        raise RiskStateError(f"{where}.{key}: must be finite, got {v!r}")
    return typ(v)
