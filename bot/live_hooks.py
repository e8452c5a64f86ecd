"""What the live loop (`bot.live.LiveTrader`) does differently in live mode, in one place:

- `setup`: keys present (from BOT_API_KEY/BOT_API_SECRET or the 0600 secrets file), the account
  readable (its quote balance is the starting equity of a fresh store), lot-size rules from the
  exchange's markets (`risk.market.MarketRules.from_ccxt`);
- `build_engine`: the engine with `LiveBroker` (`bot.brokers.live`) and those rules; entries
  blocked ("reconcile_pending") until the first reconciliation completes;
- `load_orders`: the store's orders, before the engine restores its pending ones;
- `reconcile`: `bot.brokers.reconcile` at start and every `live.reconcile_interval_s`, its result
  applied to the engine in the engine's worker thread (so never during a step);
- `poll_loop`: fills of orders still open, every `live.fill_poll_interval_s`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import ccxt
import structlog

from bot.brokers.live import LiveBroker, LiveExecutor
from bot.brokers.orders import OrderStore
from bot.brokers.reconcile import Reconciliation, reconcile
from bot.config import Config
from bot.marketdata.exchange import to_ccxt_symbol
from models.timeutil import DAY_MS

log = structlog.get_logger("bot.live")

RECONCILE_PENDING = "reconcile_pending"


class LiveHooks:
    def __init__(self, cfg: Config, store: Any, exchange: Any, stop: asyncio.Event):
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
        from bot.survived import ErrorStreak

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

    def build_engine(self, bundle: Any) -> Any:
        from bot.engine import Engine

        c = self.cfg
        eng = Engine(c.symbols, bundle, trading=c.trading, risk=c.risk, costs=c.costs, initial_equity=self.equity,
                     broker=self.broker, market_rules=self.rules)  # fmt: skip
        eng.entry_block = RECONCILE_PENDING
        return eng

    async def load_orders(self, anchor: int) -> None:
        await self.executor.load(since_ts=anchor - DAY_MS, anchor=anchor)

    def idle_timeout(self) -> float:
        """How long the loop may wait for a minute before it reconciles anyway."""
        return self.cfg.live.reconcile_interval_s

    def reconcile_due(self) -> bool:
        return time.monotonic() - self.last_reconcile >= self.cfg.live.reconcile_interval_s

    async def reconcile(self, eng: Any, in_worker: Any) -> Reconciliation:
        self.last_reconcile = time.monotonic()
        positions = {s: p.qty for s, p in eng.positions.items()}
        steps = {s: r.qty_step for s, r in self.rules.items()}
        rec = await reconcile(self.executor, cash=eng.cash, positions=positions, symbols=list(self.cfg.symbols),
                              qty_steps=steps, engine_ts=eng.last_ts)  # fmt: skip
        self.reconciliations += 1
        self.mismatches += len(rec.mismatches)
        await in_worker(self._apply, eng, rec)
        if rec.positions:
            await self._store_positions(rec.positions)
        return rec

    async def _store_positions(self, cut: dict[str, float]) -> None:
        """The rule's cuts in the positions table too (a dropped position is closed there with
        exit_reason 'reconciled'), so that the table keeps one open row per held symbol."""
        now = int(time.time() * 1000)
        async with self.executor.store.pool.acquire() as conn, conn.transaction():
            for sym, qty in cut.items():
                if qty > 0:
                    await conn.execute("UPDATE positions SET qty = $2 WHERE mode = 'live' AND symbol = $1 AND status = 'open'",
                                       sym, float(qty))  # fmt: skip
                else:
                    await conn.execute(
                        """UPDATE positions SET status = 'closed', exit_reason = 'reconciled', exit_ts = $2
                           WHERE mode = 'live' AND symbol = $1 AND status = 'open'""", sym, now)  # fmt: skip

    @staticmethod
    def _apply(eng: Any, rec: Reconciliation) -> None:
        """The rule's result on the engine (in its worker thread, between steps)."""
        if rec.cash is not None:
            eng.cash = float(rec.cash)
        for sym, qty in rec.positions.items():
            pos = eng.positions.get(sym)
            if pos is None:
                continue
            eng._close(sym)
            if qty > 0:
                eng._open(dataclasses.replace(pos, qty=float(qty)))
        eng.entry_block = None if rec.complete else RECONCILE_PENDING

    async def poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.live.fill_poll_interval_s)
            try:
                await self.executor.poll_open()
            except Exception as e:  # noqa: BLE001 - polling must never end the daemon
                self._poll_errors.failed(e)
                continue
            self._poll_errors.ok()
