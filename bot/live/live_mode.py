"""What the live loop (`bot.live.trader.LiveTrader`) does differently in live mode, in one place:

- `setup`: keys present (from BOT_API_KEY/BOT_API_SECRET or the 0600 secrets file), the account
  readable (its quote balance is the starting equity of a fresh store), lot-size rules from the
  exchange's markets (`risk.market.MarketRules.from_ccxt`);
- `build_engine`: the engine with `LiveBroker` (`bot.execution.live_broker`) and those rules; entries
  blocked ("reconcile_pending") until the first reconciliation completes;
- `entry_gate` / `apply_gate`: before each step, no new entry on a minute that closed more than
  `live.max_entry_lag_s` before the exchange's clock ("catch_up": the minutes re-stepped after
  a restart or an outage carry old signals, and an order would fill at today's price); exits
  still run. The exchange's time comes from `fetch_time`, asked only while the minute is not
  already known to be stale (the exchange's clock only moves forward);
- `load_orders`: the store's orders, before the engine restores its pending ones;
- `reconcile`: `bot.execution.reconcile` at start and every `live.reconcile_interval_s`, its result
  applied to the engine in the engine's worker thread (so never during a step);
- `poll_loop`: fills from the user data stream (`watch_orders`) where the exchange has one, and
  look-ups of orders still open (every `live.fill_poll_interval_s`; slower while the stream is up).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import ccxt
import structlog

from bot.config import Config
from bot.execution.live_broker import LiveBroker, LiveExecutor
from bot.execution.orders import OrderStore
from bot.execution.reconcile import Reconciliation, reconcile
from bot.marketdata.exchange import to_ccxt_symbol
from bot.runtime.aio import wait_for
from models.timeutil import DAY_MS, MINUTE_MS, fmt_short

if TYPE_CHECKING:
    from bot.engine.engine import Engine
    from bot.store.db import Store
    from models.bundle.directory import Bundle

log = structlog.get_logger("bot.live.trader")

RECONCILE_PENDING = "reconcile_pending"
#: Entry gate code for a minute that closed longer than `live.max_entry_lag_s` ago by the
#: exchange's clock (it reaches the decision log as the skip reason of its candidates).
CATCH_UP = "catch_up"
TIME_TIMEOUT_S = 3.0  # a step never waits longer than this for the exchange's clock


class LiveHooks:
    def __init__(self, cfg: Config, store: Store, exchange: Any, stop: asyncio.Event):
        self.cfg = cfg
        self.exchange = exchange
        self.stop = stop
        self.executor = LiveExecutor(exchange, OrderStore(store.pool, "live"), cfg.live, cfg.exchange.quote)
        self.broker: LiveBroker | None = None
        self.rules: dict[str, Any] = {}
        self.equity = 0.0
        self.last_reconcile = 0.0
        self.reconciliations = 0
        self.mismatches = 0
        self._ex_now: int | None = None  # the exchange's clock at the last `fetch_time` (ms)
        self._ex_now_at = 0.0  # time.monotonic() of that answer
        self._stale_since: int | None = None  # first minute of the current catch-up (for the log)
        self.stale_minutes = 0  # minutes stepped without entries because they were stale
        self._episode_minutes = 0  # of the current catch-up
        from bot.logs.error_lines import ErrorStreak

        self._poll_errors = ErrorStreak("broker order poll", "order_poll_failed", log)

    async def setup(self) -> bool:
        from risk.market import MarketRules

        cfg = self.cfg
        if not cfg.secrets.complete:
            log.error("live_no_keys", text="LIVE mode needs API keys: set BOT_API_KEY and BOT_API_SECRET, or "
                      "exchange.secrets_file (mode 0600); refusing to start")  # fmt: skip
            return False
        try:
            bal = await self.exchange.fetch_balance()
        except ccxt.AuthenticationError as e:
            log.error("live_auth_failed", error=type(e).__name__,
                      text="LIVE the exchange refused the API key (check the key, its permissions and IP whitelist)")  # fmt: skip
            return False
        self.equity = float((bal.get("total") or {}).get(cfg.exchange.quote) or 0.0)
        for s in cfg.symbols:
            m = self.exchange.markets.get(to_ccxt_symbol(s, cfg.exchange.quote))
            if m is not None:
                self.rules[s] = MarketRules.from_ccxt(m, self.exchange.precisionMode)
        self.broker = LiveBroker(self.executor, asyncio.get_running_loop(), cfg.live)
        log.warning("live_mode", equity=self.equity,
                    text=f"LIVE MODE: real orders on {cfg.exchange.id}; {cfg.exchange.quote} balance {self.equity:,.2f}")  # fmt: skip
        return True

    def build_engine(self, bundle: Bundle) -> Any:
        from bot.engine import Engine

        c = self.cfg
        eng = Engine(c.symbols, bundle, trading=c.trading, risk=c.risk, costs=c.costs, initial_equity=self.equity,
                     broker=self.broker, market_rules=self.rules)  # fmt: skip
        eng.entry_block = RECONCILE_PENDING
        assert self.broker is not None
        self.broker.meta_of = eng.pending_meta
        return eng

    async def exchange_now(self, known_stale_before: int | None = None) -> int:
        """The exchange's clock (ms). `known_stale_before`: skip the request when the last
        answer already shows that this close time is behind (the clock only moves forward).
        The exchange cannot be asked: the last answer plus the time elapsed since (our clock
        only when there was none)."""
        if self._ex_now is not None and known_stale_before is not None and self._ex_now > known_stale_before:
            return self._ex_now
        try:
            t = int(await wait_for(self.exchange.fetch_time(), TIME_TIMEOUT_S))
            self._ex_now, self._ex_now_at = t, time.monotonic()
            return t
        except (ccxt.BaseError, TimeoutError, ValueError, TypeError) as e:
            log.debug("exchange_time_failed", error=type(e).__name__)
            if self._ex_now is None:
                return int(time.time() * 1000)
            return self._ex_now + int((time.monotonic() - self._ex_now_at) * 1000)

    async def entry_gate(self, ts: int) -> str | None:
        """Before the step of minute `ts`: CATCH_UP if it closed more than `max_entry_lag_s` before
        the exchange's clock, else None. The start and the end of a catch-up are one line each."""
        lag_ms = int(self.cfg.live.max_entry_lag_s * 1000)
        close = ts + MINUTE_MS
        now = await self.exchange_now(known_stale_before=close + lag_ms)
        behind = now - close
        if behind > lag_ms:
            self.stale_minutes += 1
            self._episode_minutes += 1
            if self._stale_since is None:
                self._stale_since = ts
                self._episode_minutes = 1
                log.warning("live_catch_up", ts=ts, behind_s=round(behind / 1000, 1), max_lag_s=self.cfg.live.max_entry_lag_s,
                            text=f"LIVE catching up from {fmt_short(ts)}: {behind / 1000:,.0f}s behind the exchange "
                                 f"(max {self.cfg.live.max_entry_lag_s:g}s): no new entries until caught up, exits go on")  # fmt: skip
            return CATCH_UP
        if self._stale_since is not None:
            log.info("live_caught_up", ts=ts, since_ts=self._stale_since, minutes=self._episode_minutes,
                     text=f"LIVE caught up at {fmt_short(ts)} ({behind / 1000:,.0f}s behind the exchange, "
                          f"{self._episode_minutes} minute(s) stepped without entries): entries resume")  # fmt: skip
            self._stale_since = None
        return None

    @staticmethod
    def apply_gate(eng: Engine, gate: str | None) -> None:
        """In the engine's worker thread, right before its step: the catch-up gate, without
        touching a pending reconciliation's own block."""
        if eng.entry_block in (None, CATCH_UP):
            eng.entry_block = gate

    def after_step(self, ts: int) -> None:
        """After the step of minute `ts` (on the loop): orders sent for it, or earlier, by a process
        that died before persisting them, and not decided again by this engine, are handed to
        it now (booked at its next step, before it decides new entries)."""
        from bot.execution.reconcile import log_mismatch, orphan_mismatch

        for t in self.executor.orphans_through(ts):
            self.mismatches += 1
            log_mismatch(orphan_mismatch(t))
        if ts % (60 * MINUTE_MS) == 0:  # hourly: the executor forgets orders older than a day
            self.executor.prune(ts - DAY_MS)

    async def load_orders(self, anchor: int, *, persisted: bool = True) -> None:
        """The store's orders. `persisted`: the engine state of `anchor` is in the store; when no
        step was ever persisted (a crash inside the first one), every stored order was decided
        after the (empty) restored state, whatever its minute."""
        await self.executor.load(since_ts=anchor - DAY_MS, anchor=anchor if persisted else -1)

    def idle_timeout(self) -> float:
        """How long the loop may wait for a minute before it reconciles anyway."""
        return self.cfg.live.reconcile_interval_s

    def reconcile_due(self) -> bool:
        return time.monotonic() - self.last_reconcile >= self.cfg.live.reconcile_interval_s

    async def reconcile(self, eng: Engine, in_worker: Any) -> Reconciliation:
        self.last_reconcile = time.monotonic()
        positions = {s: p.qty for s, p in eng.positions.items()}
        steps = {s: r.qty_step for s, r in self.rules.items()}
        rec = await reconcile(self.executor, cash=eng.cash, positions=positions, symbols=list(self.cfg.symbols),
                              qty_steps=steps, engine_ts=eng.last_ts)  # fmt: skip
        self.reconciliations += 1
        self.mismatches += len(rec.mismatches)
        cuts, state = await in_worker(self._apply, eng, rec)
        if cuts:
            await self._record_cuts(cuts, state)
        return rec

    async def _record_cuts(self, cuts: list[tuple[Any, Any]], state: dict[str, Any]) -> None:
        """Positions the rule cut: closed trades (exit reason 'reconciled', PnL at the exchange's
        last price) in the positions table with the engine state after the cut, and one line
        each, so reports and `bot status` agree with the exchange."""
        from bot.store.trading import TradingStore

        for trade, rest in cuts:
            log.warning("trade_close", symbol=trade.symbol, qty=trade.qty, price=trade.exit_price, ts=trade.exit_ts,
                        pnl=trade.pnl, ret=trade.ret, reason=trade.exit_reason, entry_price=trade.entry_price,
                        held_min=(trade.exit_ts - trade.entry_ts) / MINUTE_MS, mode="live",
                        remaining=rest.qty if rest else 0.0)  # fmt: skip
        if not state:  # no minute persisted yet: the first step writes the state
            return
        try:
            await TradingStore(self.executor.store.pool, "live").write_reconciled(
                cuts, state=state["state"], last_minute_ts=state["ts"], cash=state["cash"], equity=state["equity"])
        except Exception as e:  # noqa: BLE001 - the next step's state still carries the cut
            log.error("reconciled_trade_not_written", error=type(e).__name__,
                      text=f"RECONCILE cut positions could not be written ({type(e).__name__}); the next minute's state carries them")  # fmt: skip

    @staticmethod
    def _apply(eng: Engine, rec: Reconciliation) -> tuple[list[tuple[Any, Any]], dict[str, Any]]:
        """The rule's result on the engine (in its worker thread, between steps); returns the
        trades closed by position cuts with what remains of each position, and (when there
        are cuts) the engine state to persist with them."""
        if rec.cash is not None:
            eng.cash = float(rec.cash)
        ts = (eng.last_ts + MINUTE_MS) if eng.last_ts is not None else int(time.time() * 1000)
        cuts = []
        for sym, qty in rec.positions.items():
            trade, rest = eng.cut_position(sym, float(qty), ts)
            if trade is not None:
                cuts.append((trade, rest))
        eng.entry_block = None if rec.complete else RECONCILE_PENDING
        state: dict[str, Any] = {}
        if cuts and eng.last_ts is not None:
            state = {"state": eng.state_dict(), "ts": eng.last_ts, "cash": eng.cash, "equity": eng.equity()}
        return cuts, state

    def streams_orders(self) -> bool:
        return self.cfg.live.watch_orders and bool(self.exchange.has.get("watchOrders"))

    async def poll_loop(self) -> None:
        """Fills: the user data stream (`LiveExecutor.watch_loop`) where the exchange has one and
        `live.watch_orders` is on, and polling always: every `fill_poll_interval_s`, or every
        `stream_poll_interval_s` while the stream is up (a safety net for reports lost in a drop)."""
        cfg = self.cfg.live
        watcher = asyncio.create_task(self.executor.watch_loop(), name="order-stream") if self.streams_orders() else None
        last = time.monotonic()
        try:
            while True:
                await asyncio.sleep(cfg.fill_poll_interval_s)
                try:
                    await self.executor.expire_limits()
                except Exception as e:  # noqa: BLE001 - never end the daemon
                    log.warning("order_expire_failed", error=type(e).__name__)
                every = cfg.stream_poll_interval_s if self.executor.stream_up else cfg.fill_poll_interval_s
                if time.monotonic() - last < every:
                    continue
                last = time.monotonic()
                try:
                    await self.executor.poll_open()
                except Exception as e:  # noqa: BLE001 - polling must never end the daemon
                    self._poll_errors.failed(e)
                    continue
                self._poll_errors.ok()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
