"""Protections: entry gates that react to the bot's own recent losses.

Three guards, each with its own reason code in the decision log (`risk.reasons.Reason`):

- `StopLossGuard` (`stop_loss_guard`): `stop_losses` stop-loss exits within `window_minutes`
  pause entries for `pause_minutes`: every symbol's (scope "global"), or only the symbol that
  had them (scope "symbol").
- `LowProfitLock` (`low_profit_lock`): a symbol whose recent closed trades add up to a net loss
  of more than `max_loss` (a fraction: the sum of the trades' net returns) is locked for
  `lock_minutes`. The trades looked at are its last `trades` ones (`window_minutes` 0), or every
  one that closed within `window_minutes` once there are at least `trades` of them.
- `DrawdownLookback` (`drawdown_lookback`): equity `max_drawdown` (a fraction) or more below its
  highest value over the last `hours` pauses every entry for `pause_minutes`. It sits beside the
  kill switch (`risk.limits.KillSwitch`: the loss from the UTC day's start and the drawdown from
  the all-time peak), for the bad stretch that straddles midnight or is too short for either.

Rules they share, so that each is easy to reason about:

- Told the time, never reading a clock: a trade counts at its exit time, an equity value at its
  minute. A block set at time t lasts [t, t + pause): `blocked_until(..., now_ms)` is its end
  while now_ms is before it, else 0.
- A trip consumes its evidence: the stops that tripped the guard, the trades that locked the
  symbol, the equity history before the drawdown trip are forgotten. The block ends when its time
  is up, and only new losses trip it again (otherwise a pause would last as long as the losses
  stay inside the window, whatever `pause_minutes` says).
- Off by default: a guard whose trip size is 0 (`stop_losses`, `max_loss`, `max_drawdown`) records
  nothing and never blocks.
- The whole state is plain JSON-safe data (`to_dict` / `load_dict`, as `risk.limits`), persisted
  with the engine state each minute and restored after a restart; the limits always come from the
  current config. `active_protections(risk_state, now_ms)` reads that persisted form (the `risk`
  part of the engine state) and lists what blocks entries at `now_ms`, for `bot status` and the
  dashboard.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

from risk.config import DrawdownLookbackConfig, LowProfitLockConfig, RiskConfig, StopLossGuardConfig
from risk.errors import RiskStateError
from risk.limits import MINUTE_MS

HOUR_MS = 60 * MINUTE_MS
ALL = "*"  # the key of a block on every symbol (the stop-loss guard's global scope, the drawdown lookback)

Scope = Literal["global", "symbol"]


def _block(since_ms: int, until_ms: int, **info: Any) -> dict[str, Any]:
    return {"since_ms": int(since_ms), "until_ms": int(until_ms), **info}


def _until(blocks: Mapping[str, Mapping[str, Any]], key: str, now_ms: int) -> int:
    b = blocks.get(key)
    return int(b["until_ms"]) if b is not None and now_ms < b["until_ms"] else 0


def _set_block(blocks: dict[str, dict[str, Any]], key: str, block: dict[str, Any]) -> None:
    """A new trip replaces an older block unless that one ends later (a block never shortens)."""
    old = blocks.get(key)
    if old is None or block["until_ms"] >= old["until_ms"]:
        blocks[key] = block


def _prune(blocks: dict[str, dict[str, Any]], now_ms: int) -> None:
    for k in [k for k, b in blocks.items() if b["until_ms"] <= now_ms]:
        del blocks[k]


def _load_blocks(d: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(d, Mapping):
        raise RiskStateError(f"{where}: must map a symbol (or '*') to a block, got {d!r}")
    out = {}
    for k, b in d.items():
        if not isinstance(k, str) or not isinstance(b, Mapping) or not all(
            isinstance(b.get(f), int) and not isinstance(b.get(f), bool) for f in ("since_ms", "until_ms")
        ):
            raise RiskStateError(f"{where}.{k}: must be a block with integer since_ms and until_ms, got {b!r}")
        out[k] = dict(b)
    return out


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class StopLossGuard:
    """`stop_losses` stop-loss exits within `window_minutes` pause entries for `pause_minutes`.

    Worked example (3 within 60 min, pause 30, global): stops at 10:00, 10:10 and 10:50 trip it at
    10:50; no symbol is entered from 10:50 until 11:19 inclusive, entries resume at 11:20. Stops at
    10:00, 10:10 and 11:01 do not trip it: 10:00 is out of the window (10:01, 11:01] by then.
    """

    __slots__ = ("cfg", "_stops", "_blocks")

    def __init__(self, cfg: StopLossGuardConfig):
        self.cfg = cfg
        self._stops: deque[tuple[str, int]] = deque()  # (symbol, exit ms), oldest first
        self._blocks: dict[str, dict[str, Any]] = {}

    @property
    def on(self) -> bool:
        return self.cfg.stop_losses > 0

    def record_exit(self, symbol: str, exit_ms: int, stop_loss: bool) -> dict[str, Any] | None:
        """A position closed at `exit_ms`; return the block it started, if it tripped the guard."""
        if not (self.on and stop_loss):
            return None
        exit_ms = int(exit_ms)
        window = self.cfg.window_minutes * MINUTE_MS
        self._stops.append((symbol, exit_ms))
        newest = max(t for _, t in self._stops)
        while self._stops and self._stops[0][1] <= newest - window:
            self._stops.popleft()
        key = ALL if self.cfg.scope == "global" else symbol
        counted = [(s, t) for s, t in self._stops if (key == ALL or s == symbol) and exit_ms - window < t <= exit_ms]
        if len(counted) < self.cfg.stop_losses:
            return None
        used = set(counted)
        self._stops = deque(x for x in self._stops if x not in used)
        block = _block(exit_ms, exit_ms + self.cfg.pause_minutes * MINUTE_MS, stop_losses=len(counted),
                       window_minutes=self.cfg.window_minutes)  # fmt: skip
        _set_block(self._blocks, key, block)
        return {"protection": "stop_loss_guard", "scope": key, **block}

    def blocked_until(self, symbol: str, now_ms: int) -> int:
        """End of the pause that blocks `symbol` at `now_ms` (a global one or its own), else 0."""
        if not self._blocks:
            return 0
        return max(_until(self._blocks, ALL, now_ms), _until(self._blocks, symbol, now_ms))

    def prune(self, now_ms: int) -> None:
        _prune(self._blocks, now_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"stops": [[s, t] for s, t in self._stops], "blocks": {k: dict(b) for k, b in self._blocks.items()}}

    def load_dict(self, d: Mapping[str, Any]) -> None:
        stops = d.get("stops", [])
        if not isinstance(stops, list) or not all(
            isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and _int(x[1]) for x in stops
        ):
            raise RiskStateError(f"protections.stop_loss_guard.stops: must be a list of [symbol, epoch ms], got {stops!r}")
        self._stops = deque((s, int(t)) for s, t in sorted(stops, key=lambda x: x[1]))
        self._blocks = _load_blocks(d.get("blocks", {}), "protections.stop_loss_guard.blocks")


class LowProfitLock:
    """Locks a symbol whose recent closed trades lost more than `max_loss` in sum of net returns.

    Worked example (3 trades, window 0, max_loss 0.02, lock 240 min): trades of -1.0 %, +0.5 %,
    -1.2 % sum to -1.7 %: no lock; a fourth of -0.4 % makes the last three +0.5 - 1.2 - 0.4 =
    -1.1 %: still none; a fifth of -0.5 % makes -1.2 - 0.4 - 0.5 = -2.1 %: locked from its exit
    for 240 minutes, and the count starts over.
    """

    __slots__ = ("cfg", "_trades", "_blocks")

    def __init__(self, cfg: LowProfitLockConfig):
        self.cfg = cfg
        self._trades: dict[str, deque[tuple[int, float]]] = {}  # symbol -> (exit ms, net return), oldest first
        self._blocks: dict[str, dict[str, Any]] = {}

    @property
    def on(self) -> bool:
        return self.cfg.max_loss > 0

    def _new_deque(self, items: Any = ()) -> deque[tuple[int, float]]:
        # last-N mode keeps N; window mode keeps the window, pruned by time (a symbol holds one
        # position at a time, so at most one trade a minute closes in it)
        return deque(items, maxlen=self.cfg.trades if self.cfg.window_minutes == 0 else None)

    def record_trade(self, symbol: str, exit_ms: int, ret: float) -> dict[str, Any] | None:
        """A trade in `symbol` closed at `exit_ms` with net return `ret` (a fraction); return the
        block it started, if it locked the symbol. A trade whose return is not known (NaN) is not
        counted."""
        if not self.on or not math.isfinite(ret):
            return None
        exit_ms = int(exit_ms)
        q = self._trades.get(symbol)
        if q is None:
            q = self._trades[symbol] = self._new_deque()
        q.append((exit_ms, float(ret)))
        if self.cfg.window_minutes > 0:
            start = exit_ms - self.cfg.window_minutes * MINUTE_MS
            while q and q[0][0] <= start:
                q.popleft()
        if len(q) < self.cfg.trades:
            return None
        total = math.fsum(r for _, r in q)
        if not (-total > self.cfg.max_loss):
            return None
        n = len(q)
        del self._trades[symbol]
        block = _block(exit_ms, exit_ms + self.cfg.lock_minutes * MINUTE_MS, trades=n, net_return=total)
        _set_block(self._blocks, symbol, block)
        return {"protection": "low_profit_lock", "scope": symbol, **block}

    def blocked_until(self, symbol: str, now_ms: int) -> int:
        return _until(self._blocks, symbol, now_ms) if self._blocks else 0

    def prune(self, now_ms: int) -> None:
        _prune(self._blocks, now_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"trades": {s: [[t, r] for t, r in q] for s, q in self._trades.items() if q},
                "blocks": {k: dict(b) for k, b in self._blocks.items()}}  # fmt: skip

    def load_dict(self, d: Mapping[str, Any]) -> None:
        trades = d.get("trades", {})
        if not isinstance(trades, Mapping) or not all(
            isinstance(s, str) and isinstance(q, list)
            and all(isinstance(x, list) and len(x) == 2 and _int(x[0]) and _num(x[1]) for x in q)
            for s, q in trades.items()
        ):  # fmt: skip
            raise RiskStateError(f"protections.low_profit_lock.trades: must map symbol -> [[epoch ms, return], ...], got {trades!r}")
        self._trades = {s: self._new_deque((int(t), float(r)) for t, r in sorted(q, key=lambda x: x[0]))
                        for s, q in trades.items()}  # fmt: skip
        self._blocks = _load_blocks(d.get("blocks", {}), "protections.low_profit_lock.blocks")


class DrawdownLookback:
    """Pauses every entry when equity is `max_drawdown` or more below its peak of the last `hours`.

    The peak over the sliding window is kept as a monotonic queue (each value that a later, higher
    one can never be beaten by is dropped), so the state is small however long the window: one
    value while equity rises, a handful while it chops.

    Worked example (5 % over 6 h, pause 60 min): equity 10 000 at 08:00, 10 400 at 09:00, 9 900 at
    10:00 (-4.8 %): nothing; 9 870 at 11:00 (-5.1 % of 10 400): paused from 11:00 until 11:59
    inclusive. The history restarts at 9 870, so at 12:00 entries resume although 10 400 is still
    within the 6 hours.
    """

    __slots__ = ("cfg", "_peaks", "_block", "last_ms")

    def __init__(self, cfg: DrawdownLookbackConfig):
        self.cfg = cfg
        self._peaks: deque[tuple[int, float]] = deque()  # (minute ms, equity), equity strictly decreasing
        self._block: dict[str, Any] | None = None
        self.last_ms: int | None = None

    @property
    def on(self) -> bool:
        return self.cfg.max_drawdown > 0

    def update(self, equity: float, now_ms: int) -> dict[str, Any] | None:
        """Observe the equity at `now_ms`; return the block it started, if it tripped. A value not
        newer than the last one is ignored (the engine steps minutes in order; a minute seen again
        after a restart must not rewrite the history)."""
        if not self.on or not math.isfinite(equity):
            return None
        now_ms = int(now_ms)
        if self.last_ms is not None and now_ms <= self.last_ms:
            return None
        self.last_ms = now_ms
        q = self._peaks
        while q and q[-1][1] <= equity:
            q.pop()
        q.append((now_ms, float(equity)))
        start = now_ms - self.cfg.hours * HOUR_MS
        while q[0][0] <= start:
            q.popleft()
        peak = q[0][1]
        if not (equity <= peak * (1.0 - self.cfg.max_drawdown)):
            return None
        q.clear()
        q.append((now_ms, float(equity)))
        block = _block(now_ms, now_ms + self.cfg.pause_minutes * MINUTE_MS, peak=peak, equity=float(equity),
                       drawdown=1.0 - equity / peak, hours=self.cfg.hours)  # fmt: skip
        if self._block is None or block["until_ms"] >= self._block["until_ms"]:
            self._block = block
        return {"protection": "drawdown_lookback", "scope": ALL, **block}

    def blocked_until(self, now_ms: int) -> int:
        b = self._block
        return int(b["until_ms"]) if b is not None and now_ms < b["until_ms"] else 0

    def to_dict(self) -> dict[str, Any]:
        return {"peaks": [[t, e] for t, e in self._peaks], "last_ms": self.last_ms,
                "blocks": {ALL: dict(self._block)} if self._block is not None else {}}  # fmt: skip

    def load_dict(self, d: Mapping[str, Any]) -> None:
        peaks = d.get("peaks", [])
        if not isinstance(peaks, list) or not all(
            isinstance(x, list) and len(x) == 2 and _int(x[0]) and _num(x[1]) for x in peaks
        ):
            raise RiskStateError(f"protections.drawdown_lookback.peaks: must be a list of [epoch ms, equity], got {peaks!r}")
        last = d.get("last_ms")
        if last is not None and not _int(last):
            raise RiskStateError(f"protections.drawdown_lookback.last_ms: must be an integer or null, got {last!r}")
        self._peaks = deque((int(t), float(e)) for t, e in sorted(peaks, key=lambda x: x[0]))
        self.last_ms = last
        self._block = _load_blocks(d.get("blocks", {}), "protections.drawdown_lookback.blocks").get(ALL)


class Protections:
    """The three guards of a `RiskConfig`, fed by the risk manager (see the module docstring)."""

    __slots__ = ("stop_loss_guard", "low_profit_lock", "drawdown_lookback")

    def __init__(self, cfg: RiskConfig):
        self.stop_loss_guard = StopLossGuard(cfg.stop_loss_guard)
        self.low_profit_lock = LowProfitLock(cfg.low_profit_lock)
        self.drawdown_lookback = DrawdownLookback(cfg.drawdown_lookback)

    @property
    def on(self) -> bool:
        return self.stop_loss_guard.on or self.low_profit_lock.on or self.drawdown_lookback.on

    def record_trade(self, symbol: str, exit_ms: int, ret: float, stop_loss: bool) -> list[dict[str, Any]]:
        """A closed trade; returns the blocks it started (none, one or both per-trade guards)."""
        trips = [self.stop_loss_guard.record_exit(symbol, exit_ms, stop_loss), self.low_profit_lock.record_trade(symbol, exit_ms, ret)]
        return [t for t in trips if t is not None]

    def update_equity(self, equity: float, now_ms: int) -> dict[str, Any] | None:
        return self.drawdown_lookback.update(equity, now_ms)

    def prune(self, now_ms: int) -> None:
        self.stop_loss_guard.prune(now_ms)
        self.low_profit_lock.prune(now_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"stop_loss_guard": self.stop_loss_guard.to_dict(), "low_profit_lock": self.low_profit_lock.to_dict(),
                "drawdown_lookback": self.drawdown_lookback.to_dict()}  # fmt: skip

    def load_dict(self, d: Mapping[str, Any]) -> None:
        """Restore `to_dict` output; a guard missing from `d` starts empty."""
        if not isinstance(d, Mapping):
            raise RiskStateError(f"protections: must be a mapping, got {d!r}")
        for name in ("stop_loss_guard", "low_profit_lock", "drawdown_lookback"):
            part = d.get(name, {})
            if not isinstance(part, Mapping):
                raise RiskStateError(f"protections.{name}: must be a mapping, got {part!r}")
            getattr(self, name).load_dict(part)


def active_protections(risk_state: Mapping[str, Any] | None, now_ms: int) -> list[dict[str, Any]]:
    """What blocks entries at `now_ms`, read from a persisted risk state (`RiskManager.to_dict()`,
    the `risk` part of the engine state): one dict per active block, soonest end first, each with
    `protection` (the reason label), `scope` ("*" = every symbol, else the symbol), `since_ms`,
    `until_ms` and the figures that tripped it (`stop_losses`, `net_return`, `drawdown`, ...).
    A state written before the protections existed, or with none active, gives []."""
    prot = (risk_state or {}).get("protections") if isinstance(risk_state, Mapping) else None
    if not isinstance(prot, Mapping):
        return []
    out = []
    for name in ("stop_loss_guard", "low_profit_lock", "drawdown_lookback"):
        blocks = (prot.get(name) or {}).get("blocks") or {}
        if not isinstance(blocks, Mapping):
            continue
        for key, b in blocks.items():
            if isinstance(b, Mapping) and _int(b.get("until_ms")) and now_ms < b["until_ms"]:
                out.append({"protection": name, "scope": key, **b})
    return sorted(out, key=lambda b: (b["until_ms"], b["protection"], b["scope"]))
