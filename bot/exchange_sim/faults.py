"""Fault injection for the exchange simulator: what can go wrong on a real exchange connection,
scheduled on the replay clock so that a test can plan it, and logged when it actually happens
so that a test can check that every injected fault was seen and handled.

Kinds:
  stream, per (symbol, minute) — applied to that minute's closing kline event:
    skip          the closed candle is never sent (a gap only REST can fill)
    duplicate     the closed candle is sent twice
    out_of_order  the closed candle is held back and sent after the next minute's close
    nan           a price is "NaN"
    zero          a price is "0"
    high_low      high and low are swapped (high < low)
    neg_volume    the volume is negative
    unaligned     the open time is not on the minute
  connection, at a minute — applied to every open websocket:
    ws_drop       the TCP connection is closed with no websocket close handshake (abnormal
                  closure, code 1006 on the client), after the frames already sent
    ws_stall      the connection stays open but goes silent (no data, no pongs) until the client leaves
    ws_malformed  a text frame that is not valid JSON (a kline event cut in half) on every open
                  websocket; the connection stays up and carries on
  REST, armed at a minute — applied to the next kline request(s):
    rest_429      429 Too Many Requests (Binance -1003) with Retry-After
    rest_418      418 IP banned, with Retry-After
    rest_5xx      503 with a non-JSON body (a gateway error)
    rest_timeout  the answer is delayed past any sane client timeout
    rest_malformed 200 OK, Content-Type application/json, with a body cut in the middle (not JSON)
  order, armed at a minute — applied to the next new-order request (POST /api/v3/order):
    order_lost_response  the order is accepted (and executed) but the answer is held past the
                         client's timeout: the client cannot know whether it was placed
    order_partial        a market order fills only part now; the rest at the next minute's close
    order_delayed        a market order is accepted as NEW; it fills at the next minute's close
    order_reject_balance rejected: -2010 insufficient balance (nothing placed)
    order_reject_filter  rejected: -1013 PRICE_FILTER (nothing placed)
    order_429            429 -1003 with Retry-After (nothing placed)
    order_418            418 IP ban with Retry-After (nothing placed)
    order_5xx            503 gateway error (nothing placed; the client cannot know that)
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from models.timeutil import MINUTE_MS

CANDLE_KINDS = ("skip", "duplicate", "out_of_order", "nan", "zero", "high_low", "neg_volume", "unaligned")
BAD_VALUE_KINDS = ("nan", "zero", "high_low", "neg_volume", "unaligned")
CONNECTION_KINDS = ("ws_drop", "ws_stall", "ws_malformed")
REST_KINDS = ("rest_429", "rest_418", "rest_5xx", "rest_timeout", "rest_malformed")
ORDER_KINDS = ("order_lost_response", "order_partial", "order_delayed", "order_reject_balance", "order_reject_filter",
               "order_429", "order_418", "order_5xx")  # fmt: skip
FEED_KINDS = CANDLE_KINDS + CONNECTION_KINDS + REST_KINDS  # what a market-data client experiences
ALL_KINDS = FEED_KINDS + ORDER_KINDS


class FaultPlanError(ValueError):
    """A fault that cannot be scheduled (unknown kind, candle fault without a symbol, ...)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned fault. `at_ms` is exchange time (a minute's open time for candle faults)."""

    kind: str
    at_ms: int
    symbol: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ALL_KINDS:
            raise FaultPlanError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(ALL_KINDS)}")
        if self.kind in CANDLE_KINDS and not self.symbol:
            raise FaultPlanError(f"fault {self.kind} at {self.at_ms} needs a symbol")


@dataclass(frozen=True, slots=True)
class AppliedFault:
    """A fault that actually happened: `ts` is the candle's minute (candle faults) or the
    exchange time when it was applied; `detail` says what was done."""

    kind: str
    symbol: str | None
    ts: int
    applied_at_ms: int
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class FaultInjector:
    """Holds the plan, answers "is there a fault here?", records what was applied.

    A planned time is the earliest time a fault may happen: a fault is applied at the first
    opportunity from then on where it reaches a client (a candle fault when that symbol's
    closing event goes to a live connection; a connection fault when a live connection
    exists), so that every planned fault is really experienced by the client under test.
    "Applied" is recorded when the faulty frame was written to the socket, or the connection
    was cut, or the REST answer was sent. At most one candle fault per symbol every second
    minute, so that each one stays a separate event (an out-of-order candle needs the next
    minute to overtake it). Thread-safe for the control API.
    """

    def __init__(self, faults: Iterable[Fault] = ()):
        self._lock = threading.Lock()
        self._candle: dict[str, list[Fault]] = {}
        self._candle_next: dict[str, int] = {}
        self._timed: list[Fault] = []
        self._rest_armed: list[Fault] = []
        self._order_armed: list[Fault] = []
        self.applied: list[AppliedFault] = []
        self.add(faults)

    def add(self, faults: Iterable[Fault]) -> None:
        with self._lock:
            for f in faults:
                if f.kind in CANDLE_KINDS:
                    assert f.symbol is not None
                    self._candle.setdefault(f.symbol, []).append(f)
                    self._candle[f.symbol].sort(key=lambda x: x.at_ms)
                else:
                    self._timed.append(f)
            self._timed.sort(key=lambda f: f.at_ms)

    def take_candle_fault(self, symbol: str, ts: int) -> str | None:
        """The fault to apply to (symbol, minute ts)'s closing event, if one is due."""
        with self._lock:
            q = self._candle.get(symbol)
            if not q or q[0].at_ms > ts or ts < self._candle_next.get(symbol, 0):
                return None
            self._candle_next[symbol] = ts + 2 * MINUTE_MS
            return q.pop(0).kind

    def next_timed_ms(self) -> int | None:
        with self._lock:
            return self._timed[0].at_ms if self._timed else None

    def due(self, now_ms: int, connected: bool) -> list[Fault]:
        """Arm REST faults due by `now_ms`; return connection faults due, if `connected`
        (otherwise they wait for a connection)."""
        out: list[Fault] = []
        with self._lock:
            keep: list[Fault] = []
            for f in self._timed:
                if f.at_ms > now_ms:
                    keep.append(f)
                elif f.kind in REST_KINDS:
                    self._rest_armed.append(f)
                elif f.kind in ORDER_KINDS:
                    self._order_armed.append(f)
                elif connected:
                    out.append(f)
                else:
                    keep.append(f)
            self._timed = keep
        return out

    def take_rest_fault(self) -> Fault | None:
        with self._lock:
            return self._rest_armed.pop(0) if self._rest_armed else None

    def take_order_fault(self, now_ms: int) -> Fault | None:
        """The fault for the new-order request arriving now, if one is armed (order faults are
        also armed here, not only by the clock loop, so a fast clock cannot skip them)."""
        with self._lock:
            keep = []
            for f in self._timed:
                if f.kind in ORDER_KINDS and f.at_ms <= now_ms:
                    self._order_armed.append(f)
                else:
                    keep.append(f)
            self._timed = keep
            return self._order_armed.pop(0) if self._order_armed else None

    def record(self, kind: str, symbol: str | None, ts: int, now_ms: int, detail: str = "") -> None:
        with self._lock:
            self.applied.append(AppliedFault(kind, symbol, ts, now_ms, detail))

    def pending(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._candle.values()) + len(self._timed) + len(self._rest_armed) + len(self._order_armed)

    def applied_counts(self) -> dict[str, int]:
        with self._lock:
            counts = {k: 0 for k in ALL_KINDS}
            for a in self.applied:
                counts[a.kind] += 1
            return counts


def random_plan(
    counts: dict[str, int],
    symbols: Sequence[str],
    minutes: Sequence[int],
    *,
    seed: int = 0,
) -> list[Fault]:
    """A reproducible plan: `counts[kind]` faults of each kind at random minutes of `minutes`
    (minute open times), candle faults on random `symbols`; connection and REST faults at a
    random second inside their minute, spread evenly over the minutes."""
    rng = random.Random(seed)
    plan: list[Fault] = []
    mins = sorted(minutes)
    if not mins:
        raise FaultPlanError("random_plan needs at least one minute")
    for kind, n in counts.items():
        if kind not in ALL_KINDS:
            raise FaultPlanError(f"unknown fault kind {kind!r}")
        if kind in CANDLE_KINDS:
            plan.extend(Fault(kind, rng.choice(mins), rng.choice(symbols)) for _ in range(n))
        else:
            step = len(mins) / max(n, 1)
            plan.extend(Fault(kind, mins[min(len(mins) - 1, int(j * step + rng.random() * step))] + rng.randrange(1_000, 59_000))
                        for j in range(n))  # fmt: skip
    return plan
