"""The risk decision of one bar: which candidates to enter, and how much of each.

`RiskManager.decide` runs every rule over all candidates at once:

1. Per-candidate checks, vectorised: valid inputs, known market rules, kill switch, the
   protections (drawdown lookback, stop-loss guard, low-profit lock: `risk.protections`), one
   position per symbol, stop-loss cooldown, er > 0, p >= min_probability, Kelly fraction > 0
   (the order of `risk.reasons.PRECEDENCE`).
2. Size caps, vectorised: Half Kelly (capped by `max_fraction_per_trade`), the stop-risk size
   (a stop at max(SL, atr_floor x ATR) plus costs loses at most `risk_per_trade` of equity), the
   per-symbol cap and the exchange's maximum order.
3. A greedy pass over the survivors ranked by `er` (then p, then symbol order), because the
   remaining limits are shared: max positions, orders per minute, the correlation filter (skip
   when the signed correlation with an open position or with a candidate already taken this bar
   exceeds `max_correlation`), the gross exposure budget and free cash. The size is rounded down
   to the lot step; below the exchange minimum it is skipped with the reason that made it small.

Correlation is signed on purpose: the bot is long-only spot, so two strongly anti-correlated
longs hedge each other rather than concentrate risk; only positive co-movement is refused.

The manager owns the stateful limits (kill switch, order rate, cooldowns, protections) and
serialises them with `to_dict`/`load_dict`. `decide` (or `update_equity` on a bar without
candidates) feeds the equity to the kill switch and the drawdown lookback but does not count
orders: the caller reports what it actually sent with `record_order`, stop-loss exits with
`record_stop_loss` (the cooldown, when the exit is decided) and every closed trade with
`record_trade` (the stop-loss guard and the low-profit lock, at the trade's exit time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from risk.config import RiskConfig
from risk.correlation import corr_matrix
from risk.decision import B_CASH, B_EXPOSURE, DecisionBatch
from risk.errors import RiskInputError, RiskStateError
from risk.inputs import Candidates, Portfolio
from risk.limits import Cooldowns, KillSwitch, OrderRateLimiter
from risk.market import MarketRules, MarketRulesTable
from risk.protections import Protections
from risk.reasons import PENDING, Reason
from risk.sizing import kelly_fraction, payoff_ratio, risk_notional, round_qty_down, stop_distance

STATE_VERSION = 1


class RiskManager:
    """Sizing and limits for a fixed universe of symbols (the rows of the `returns` matrix)."""

    def __init__(self, cfg: RiskConfig, symbols: Sequence[str], market_rules: Mapping[str, MarketRules],
                 round_trip_cost: float):
        """`round_trip_cost`: fees + slippage of entering and exiting, as a fraction of notional
        (computed by the caller from the costs config, e.g. 2 x (0.001 + 2 bps) = 0.0024)."""
        if len(set(symbols)) != len(symbols):
            raise RiskInputError("RiskManager symbols must be unique")
        if not (0 <= round_trip_cost < 1):
            raise RiskInputError(f"round_trip_cost must be a fraction in [0, 1), got {round_trip_cost!r}")
        self.cfg = cfg
        self.symbols: tuple[str, ...] = tuple(symbols)
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self.round_trip_cost = float(round_trip_cost)
        self.rules = MarketRulesTable(self.symbols, market_rules)
        self.kill_switch = KillSwitch(cfg.daily_loss_limit, cfg.max_drawdown, cfg.kill_switch_reset, cfg.drawdown_reset)
        self.order_rate = OrderRateLimiter(cfg.max_orders_per_minute)
        self.cooldowns = Cooldowns(cfg.cooldown_after_stop_minutes)
        self.protections = Protections(cfg)
        self.min_overlap = max(10, cfg.correlation_window // 2)

    # --- inputs ---------------------------------------------------------------------------

    def index_of(self, symbols: Sequence[str]) -> np.ndarray:
        """Universe rows of `symbols` (for `Candidates.symbol_idx`); raises on an unknown symbol."""
        try:
            return np.fromiter((self._index[s] for s in symbols), np.int64, len(symbols))
        except KeyError as e:
            raise RiskInputError(f"symbol {e.args[0]} is not in the risk universe {self.symbols}") from None

    def set_market_rules(self, market_rules: Mapping[str, MarketRules]) -> None:
        """Replace the exchange constraints (after the bot reloads markets)."""
        self.rules = MarketRulesTable(self.symbols, market_rules)

    # --- events from the caller -----------------------------------------------------------

    def update_equity(self, equity: float, now_ms: int) -> str | None:
        """Feed the kill switch and the drawdown lookback on a bar without candidates (`decide`
        does it otherwise); returns the kill switch's event."""
        self.protections.update_equity(equity, now_ms)
        return self.kill_switch.update(equity, now_ms)

    def record_order(self, now_ms: int, n: int = 1) -> None:
        """Count orders actually sent (entries and exits) against `max_orders_per_minute`."""
        self.order_rate.record(now_ms, n)

    def record_stop_loss(self, symbol: str, now_ms: int) -> int:
        """A position in `symbol` exited at its stop-loss: start its cooldown; return its end (ms)."""
        return self.cooldowns.record_stop(symbol, now_ms)

    def record_trade(self, symbol: str, exit_ms: int, ret: float, stop_loss: bool) -> list[dict[str, Any]]:
        """A position in `symbol` closed at `exit_ms` with net return `ret` (`stop_loss`: at its
        stop-loss barrier): feed the stop-loss guard and the low-profit lock; return the blocks
        it started (see `risk.protections`)."""
        return self.protections.record_trade(symbol, exit_ms, ret, stop_loss)

    def reset_kill_switch(self, equity: float, now_ms: int) -> None:
        """Clear the kill switch by hand (the only way under the `manual` reset rule)."""
        self.kill_switch.reset(equity, now_ms)

    # --- the decision ---------------------------------------------------------------------

    def decide(self, cands: Candidates, portfolio: Portfolio, returns: np.ndarray, now_ms: int) -> DecisionBatch:
        """Decide every candidate of the bar at `now_ms`.

        `returns` is the 1m return window of every universe symbol (symbols x minutes, oldest
        first, NaN where unknown); only the last `correlation_window` minutes are used.
        """
        cfg = self.cfg
        n = len(cands)
        idx = cands.symbol_idx
        nsym = len(self.symbols)
        if n and (idx.min() < 0 or idx.max() >= nsym):
            raise RiskInputError(f"Candidates.symbol_idx must be in [0, {nsym}), got {idx.min()}..{idx.max()}")
        if n > 1 and np.bincount(idx, minlength=nsym).max() > 1:
            raise RiskInputError("Candidates list a symbol twice; pass each symbol at most once")
        returns = np.asarray(returns)
        if returns.ndim != 2 or returns.shape[0] != nsym:
            raise RiskInputError(f"returns must be ({nsym} symbols, window), got shape {returns.shape}")
        if returns.shape[1] > cfg.correlation_window:
            returns = returns[:, -cfg.correlation_window:]

        event = self.kill_switch.update(portfolio.equity, now_ms)
        self.protections.update_equity(portfolio.equity, now_ms)
        equity = portfolio.equity
        cost = self.round_trip_cost
        er, p, price, tp, sl, atr = cands.er, cands.p, cands.price, cands.tp_frac, cands.sl_frac, cands.atr_frac
        cooldown_until = np.zeros(n, np.int64)
        blocked_until = np.zeros(n, np.int64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            # NaN compares False, and a sum is finite only if every term is: 2 checks in one
            valid = (np.isfinite(er + p + price + tp + sl + atr) & (price > 0) & (tp > 0) & (sl > 0)
                     & (atr >= 0) & (p >= 0) & (p <= 1))  # fmt: skip
            if cands.payoff is not None:
                valid &= ~np.isinf(cands.payoff)
            b = payoff_ratio(tp, sl, cost)
            if cands.payoff is not None:
                b = np.where(np.isfinite(cands.payoff), cands.payoff, b)
            kelly_raw = kelly_fraction(p, b, cfg.kelly_multiplier)

            # The checks in reverse order of precedence: each overwrites the later ones, so a
            # candidate keeps the first check it fails (the order documented in `Reason`).
            reason = np.full(n, PENDING, np.int8)
            reason[~(kelly_raw > 0)] = Reason.KELLY_NON_POSITIVE
            reason[p < cfg.min_probability] = Reason.LOW_PROBABILITY
            reason[er <= 0] = Reason.NON_POSITIVE_ER
            if self.cooldowns and n:
                self.cooldowns.prune(now_ms)
                cooldown_until = np.fromiter((self.cooldowns.until(self.symbols[i]) for i in idx.tolist()), np.int64, n)
                reason[cooldown_until > now_ms] = Reason.COOLDOWN
            if portfolio.positions and n:
                held = {pos.symbol for pos in portfolio.positions}
                reason[np.fromiter((self.symbols[i] in held for i in idx.tolist()), bool, n)] = Reason.POSITION_OPEN
            if self.protections.on and n:
                self._protect(idx, now_ms, reason, blocked_until)
            if self.kill_switch.active:
                reason[:] = Reason.KILL_SWITCH
            reason[~self.rules.known[idx]] = Reason.NO_MARKET_RULES
            reason[~valid] = Reason.INVALID_INPUT

            caps = np.empty((4, n))
            np.multiply(np.minimum(kelly_raw, cfg.max_fraction_per_trade), equity, out=caps[0])
            caps[1] = risk_notional(equity, cfg.risk_per_trade, stop_distance(sl, atr, cfg.stop_atr_floor, cost))
            caps[2] = cfg.max_per_symbol * equity
            np.minimum(self.rules.max_notional[idx], self.rules.max_qty[idx] * price, out=caps[3])
            caps[:, ~valid] = np.nan

        qty = np.zeros(n)
        notional = np.zeros(n)
        cap_exposure = np.full(n, np.nan)
        cap_cash = np.full(n, np.nan)
        binding = np.full(n, -1, np.int8)
        corr_out = np.full(n, np.nan)
        corr_with: list[str | None] = [None] * n

        elig = np.flatnonzero(reason == PENDING)
        if elig.size:
            order = elig[np.lexsort((idx[elig], -p[elig], -er[elig]))]
            self._greedy(order, cands, portfolio, returns, now_ms, caps, reason, qty, notional,
                         cap_exposure, cap_cash, binding, corr_out, corr_with)

        ks = self.kill_switch.tripped
        return DecisionBatch(
            now_ms=int(now_ms), equity=float(equity), symbols=tuple(self.symbols[i] for i in idx.tolist()),
            reason=reason, er=er, p=p, price=price, qty=qty, notional=notional, payoff=b,
            kelly_raw=kelly_raw, cap_kelly=caps[0], cap_risk=caps[1], cap_symbol=caps[2],
            cap_market=caps[3], cap_exposure=cap_exposure, cap_cash=cap_cash, binding=binding,
            corr=corr_out, corr_with=corr_with, cooldown_until_ms=cooldown_until, blocked_until_ms=blocked_until, kill_switch=ks,
            kill_switch_event=event, flatten=bool(ks is not None and cfg.kill_switch_flatten),
        )  # fmt: skip

    def _protect(self, idx: np.ndarray, now_ms: int, reason: np.ndarray, blocked_until: np.ndarray) -> None:
        """The protections' blocks, in reverse precedence (each overwrites the weaker ones)."""
        pr = self.protections
        pr.prune(now_ms)
        syms = [self.symbols[i] for i in idx.tolist()]
        for k, s in enumerate(syms):
            u = pr.low_profit_lock.blocked_until(s, now_ms)
            if u:
                reason[k], blocked_until[k] = Reason.LOW_PROFIT_LOCK, u
            u = pr.stop_loss_guard.blocked_until(s, now_ms)
            if u:
                reason[k], blocked_until[k] = Reason.STOP_LOSS_GUARD, u
        u = pr.drawdown_lookback.blocked_until(now_ms)
        if u:
            reason[:] = Reason.DRAWDOWN_LOOKBACK
            blocked_until[:] = u

    def _greedy(self, order: np.ndarray, cands: Candidates, portfolio: Portfolio, returns: np.ndarray,
                now_ms: int, caps: np.ndarray, reason: np.ndarray, qty: np.ndarray, notional: np.ndarray,
                cap_exposure: np.ndarray, cap_cash: np.ndarray, binding: np.ndarray,
                corr_out: np.ndarray, corr_with: list[str | None]) -> None:
        """Shared limits, best candidate first. Writes the outputs in place at candidate positions."""
        cfg = self.cfg
        k = order.size
        rows = cands.symbol_idx[order]
        positions = portfolio.positions
        m = len(positions)
        # Correlations of each ranked candidate with every ranked candidate, then every position.
        corr: list[list[float]] = []
        if m or k > 1:
            open_rows = np.fromiter((self._index.get(pos.symbol, -1) for pos in positions), np.int64, m)
            corr = corr_matrix(returns, np.concatenate([rows, open_rows]), self.min_overlap)[:k].tolist()
        ref_names = [self.symbols[r] for r in rows.tolist()] + [pos.symbol for pos in positions]

        pre_caps = caps[:, order]
        pre = pre_caps.min(axis=0).tolist()
        pre_bind = pre_caps.argmin(axis=0).tolist()
        price = cands.price[order].tolist()
        sym = rows.tolist()
        step = self.rules.qty_step.tolist()
        decimals = self.rules.qty_decimals.tolist()
        min_qty = self.rules.min_qty.tolist()
        min_notional = self.rules.min_notional.tolist()

        slots = cfg.max_positions - m
        capacity = self.order_rate.capacity(now_ms)
        gross_left = cfg.max_gross_exposure * portfolio.equity - portfolio.gross_exposure
        cash_left = portfolio.cash
        entry_cost = 1.0 + self.round_trip_cost / 2
        thr = cfg.max_correlation
        refs = list(range(k, k + m))  # columns the next candidate is checked against

        for t, i in enumerate(order.tolist()):
            if slots <= 0:
                reason[i] = Reason.MAX_POSITIONS
                continue
            if capacity <= 0:
                reason[i] = Reason.ORDER_RATE
                continue
            if refs:
                row = corr[t]
                worst, worst_j, unknown_j = -2.0, -1, -1
                for j in refs:
                    v = row[j]
                    if v != v:  # NaN: not enough history to know
                        if unknown_j < 0:
                            unknown_j = j
                    elif v > worst:
                        worst, worst_j = v, j
                if worst_j >= 0:
                    corr_out[i], corr_with[i] = worst, ref_names[worst_j]
                if worst > thr:
                    reason[i] = Reason.CORRELATION
                    continue
                if unknown_j >= 0:
                    corr_with[i] = ref_names[unknown_j]
                    reason[i] = Reason.CORRELATION_UNKNOWN
                    continue
            s = sym[t]
            size, bind = pre[t], pre_bind[t]
            budget_cash = cash_left / entry_cost
            cap_exposure[i], cap_cash[i] = gross_left, budget_cash
            if gross_left < size:
                size, bind = gross_left, B_EXPOSURE
            if budget_cash < size:
                size, bind = budget_cash, B_CASH
            binding[i] = bind
            q = round_qty_down(size, price[t], step[s], decimals[s])
            value = q * price[t]
            if q <= 0 or q < min_qty[s] or value < min_notional[s]:
                if bind == B_EXPOSURE:
                    reason[i] = Reason.EXPOSURE_LIMIT
                elif bind == B_CASH:
                    reason[i] = Reason.INSUFFICIENT_CASH
                elif q <= 0 or q < min_qty[s]:
                    reason[i] = Reason.BELOW_MIN_QTY
                else:
                    reason[i] = Reason.BELOW_MIN_NOTIONAL
                continue
            reason[i] = Reason.TAKEN
            qty[i], notional[i] = q, value
            slots -= 1
            capacity -= 1
            gross_left -= value
            cash_left -= value * entry_cost
            refs.append(t)

    # --- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """All mutable state as plain JSON-safe data, for the daemon to persist."""
        return {
            "version": STATE_VERSION,
            "kill_switch": self.kill_switch.to_dict(),
            "order_rate": self.order_rate.to_dict(),
            "cooldowns": self.cooldowns.to_dict(),
            "protections": self.protections.to_dict(),
        }

    def load_dict(self, state: Mapping[str, Any]) -> None:
        """Restore state saved by `to_dict` (e.g. after a restart); limits come from the config."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            got = state.get("version") if isinstance(state, Mapping) else type(state).__name__
            raise RiskStateError(f"risk state version {got!r} is not {STATE_VERSION}; it was saved by other code")
        for key in ("kill_switch", "order_rate", "cooldowns"):
            if not isinstance(state.get(key), Mapping):
                raise RiskStateError(f"risk state: '{key}' must be a mapping")
        self.kill_switch.load_dict(state["kill_switch"])
        self.order_rate.load_dict(state["order_rate"])
        self.cooldowns.load_dict(state["cooldowns"])
        # a state saved before the protections existed has none: they start empty
        self.protections.load_dict(state.get("protections", {}))
