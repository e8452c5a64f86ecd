"""The trading engine: pure logic, the same for the live daemon and the backtest.

No asyncio, no ccxt, no asyncpg and no clock of its own: it is told the time, handed one
(symbols x OHLCV) matrix per closed minute, and returns order intents, decisions and account
records; brokers, the live loop, the store and the scheduler are adapters around it in `bot/`.
The records it exchanges with those adapters are in `bot.engine.records`.

Public API (stable names; the daemon and the backtest use them):

* `Engine(symbols, bundle, *, trading=TradingConfig, risk=RiskConfig, costs=Costs|CostConfig,
  initial_equity, broker=None (PaperBroker), market_rules=None, features=None)`.
  `engine.symbols` is the row order of every `bars` matrix: the traded symbols, then the
  bundle's reference symbols that are not traded (features only, never entered).
  - `warm_up(history)`: warm the online features from candles before the first step.
  - `step(ts_ms, bars, filled) -> StepResult`: one closed minute (bars S x 5 float64, a NaN row =
    no candle; `filled` (S,) bool = rows the feed made up). Order inside a step:
    1. `broker.poll`: entries decided last minute fill at this minute's open (paper), or are
       cancelled (`no_next_bar`);
    2. exits of open positions on this bar (`models.trading.rules.check_exits`: gap, SL, TP, SL first,
       time-out), filled at the barrier (paper);
    3. online features (`OnlineFeatureEngine.update`) -> one scoring call for all symbols ->
       entry rule (`models.trading.rules.EntryRule.for_trading`) -> engine gates -> sizing
       (`risk.RiskManager.decide`, or `equal_slots`) -> order intents -> `broker.submit`.
  - `on_fills(fills)`: book fills a (live) broker reports outside `step`.
  - `state_dict()` / `load_state(state)` / `Engine.from_state(state, symbols, bundle, ...)`:
    cash, positions with their barriers, pending orders and risk state (features are warmed
    again from candles after a restart).
  - `swap_bundle(bundle, features=None)`: a new model from the next step on; open positions keep
    their barriers.
  - `watch_only` / `watch_reason`: set when the bundle's walk-forward result does not clear
    `trading.min_validation_pf` / `min_validation_trades` ("model v... has no validated edge: PF
    0.87 < 1.05, watching only") or by `trading.watch_only`; `status_line()` says it.
  - `flatten(ts_ms, reason, symbols=None)`: close everything (or `symbols`) at the last close;
    `close_out(ts_ms, reason, symbols=None)`: the operator's flatten / force-exit between two
    minutes (drops entries not yet filled first); `set_risk_config(risk)`: a reloaded `risk:`
    section, the risk state kept; `stopping = True`: no new entries (graceful stop); `paused`:
    the operator's pause; `no_entries_from_ts`: the backtest's end-of-window cut.
* `StepResult`: ts, orders, fills, opened, closed, decisions, equity, skips (Counter), cancelled.
* `Broker` (Protocol: `submit(intents)`, `poll(ts, bars, index) -> BrokerUpdate`, `pending()`) and
  `PaperBroker(costs)` in `bot.engine.broker`.
* `TradingConfig` (the `trading:` config section) in `bot.engine.config`.
* `client_order_id(version, symbol, decision_ts, leg)`: deterministic order ids.

Gates, in order, for a symbol whose scores pass the entry rule (each skip is a `DecisionRow`
with action "skip" and is counted in `StepResult.skips` / `Engine.skips`):
`watch_only`, `stopping`, `paused` (the operator: `bot ctl pause`), `entry_block` (a reason code an adapter sets, e.g. the live broker's
"reconcile_pending" while it has not reconciled with the exchange), `symbol_filled` (its minute was made up), `reference_stale` (a
reference symbol was made up within `trading.reference_fresh_minutes`), `end_of_window`,
`order_pending`, `position_open` (equal_slots), then the risk manager's reason codes (among
them the protections, `risk.protections`: the engine feeds them every trade it closes, at its
exit time, and they live in the risk part of `state_dict()`, so a restart keeps them).

Which decisions become rows: every candidate that passes the entry rule (entered, or skipped
with the engine's or the risk manager's reason), every exit, and every entry order the broker
cancelled. Symbols without a signal make no row (that would be 30 rows a minute of nothing).

The probability gate is one gate: `p > max(bundle meta_threshold, risk.min_probability)` in the
entry rule; the risk manager is given `min_probability = 0` (see `models.trading.rules`).
"""

from typing import Any

# Imported on first use, so `bot.config` (which composes `bot.engine.config`) stays light.
_EXPORTS = {
    "Broker": "bot.engine.broker", "BrokerUpdate": "bot.engine.broker", "PaperBroker": "bot.engine.broker",
    "TradingConfig": "bot.engine.config", "Edge": "bot.engine.engine", "Engine": "bot.engine.engine",
    "StepResult": "bot.engine.engine", "client_order_id": "bot.engine.engine", "validated_edge": "bot.engine.engine",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bot.engine' has no attribute {name!r}")
