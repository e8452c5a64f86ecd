"""The engine: one step per closed minute for every symbol at once (see `bot.engine`)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from bot.engine.broker import Broker, BrokerUpdate, PaperBroker
from bot.engine.config import TradingConfig
from bot.engine.records import ClosedTrade, DecisionRow, EquityPoint, Fill, OrderIntent, Position
from models.config import CostConfig, LabelConfig
from models.features.online import OnlineFeatureEngine
from models.features.ringbuffer import RingBuffer
from models.features.spec import ATR_FRAC, ATR_PERCENTILE
from models.timeutil import MINUTE_MS
from models.trading.costs import Costs
from models.trading.rules import (
    EXIT_NAMES,
    EXIT_SL,
    EntryLevers,
    TrailingScores,
    barrier_prices,
    check_exits,
    entry_fractions,
    on_cadence,
    top_k_mask,
)
from risk.config import RiskConfig
from risk.inputs import Candidates, OpenPosition, Portfolio
from risk.manager import RiskManager
from risk.market import MarketRules
from risk.reasons import Reason

STATE_VERSION = 1

# engine-level skip codes of entry candidates (risk reasons are `risk.Reason` labels)
SKIP_WATCH_ONLY = "watch_only"
SKIP_SYMBOL_FILLED = "symbol_filled"
SKIP_REFERENCE_STALE = "reference_stale"
SKIP_PENDING = "order_pending"
SKIP_END_OF_WINDOW = "end_of_window"
SKIP_NO_BARRIERS = "no_barriers"
SKIP_NO_NEXT_BAR = "no_next_bar"
SKIP_HELD = "position_open"
SKIP_STOPPING = "stopping"
SKIP_BLOCKED = "entries_blocked"  # default code of `Engine.entry_block` (e.g. a live broker reconciling)
SKIP_PAUSED = "paused"  # the operator paused entries (`bot ctl pause`: bot.ops.control); exits go on


@dataclass
class StepResult:
    """Everything one step produced, for the store, the logs and the backtest report."""

    ts: int
    orders: list[OrderIntent] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    opened: list[Position] = field(default_factory=list)
    closed: list[ClosedTrade] = field(default_factory=list)
    decisions: list[DecisionRow] = field(default_factory=list)
    equity: EquityPoint | None = None
    skips: Counter = field(default_factory=Counter)
    cancelled: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Edge:
    """The bundle's recorded out-of-sample result, and whether it clears the floor."""

    ok: bool
    reason: str
    profit_factor: float | None
    trades: int


def validated_edge(manifest: Mapping[str, Any], cfg: TradingConfig) -> Edge:
    """No edge, no trades: does the bundle's walk-forward result clear the configured floor?"""
    version = str(manifest.get("version", "?"))
    wf = (manifest.get("walk_forward") or {}).get("all") or {}
    o = wf.get("overall") or {}
    pf = o.get("profit_factor")
    n = int(o.get("trades") or 0)
    if not o:
        return Edge(False, f"model {version} has no out-of-sample result (trained without walk-forward folds), watching only",
                    None, 0)  # fmt: skip
    pf_v = float(pf) if pf is not None else (math.inf if n and o.get("total_return", 0) > 0 else 0.0)
    if pf_v < cfg.min_validation_pf:
        return Edge(False, f"model {version} has no validated edge: PF {pf_v:.2f} < {cfg.min_validation_pf:.2f}, watching only",
                    pf_v, n)  # fmt: skip
    if n < cfg.min_validation_trades:
        return Edge(False, f"model {version} has no validated edge: {n} out-of-sample trades < "
                    f"{cfg.min_validation_trades}, watching only", pf_v, n)  # fmt: skip
    return Edge(True, f"model {version}: out-of-sample PF {pf_v:.2f} over {n} trades >= floor {cfg.min_validation_pf:.2f}",
                pf_v, n)  # fmt: skip


def client_order_id(version: str, symbol: str, decision_ts: int, leg: str) -> str:
    """Deterministic and exchange-safe (<= 36 chars of [A-Za-z0-9-]): the same decision of the
    same bundle always has the same id, so a restart can never send it twice."""
    h = hashlib.sha1(f"{version}|{symbol}|{decision_ts}|{leg}".encode()).hexdigest()[:8]
    return f"{'E' if leg == 'entry' else 'X'}-{symbol[:12]}-{decision_ts // MINUTE_MS}-{h}"


class _Bundle:
    """What the engine reads from a bundle: the predictor, columns, configs, version, edge."""

    def __init__(self, bundle: Any, names: list[str]):
        self.bundle = bundle
        self.version = str(bundle.version)
        self.manifest = bundle.manifest
        missing = [k for k in ("label_config", "cost_config") if k not in self.manifest]
        if missing:
            from models.bundle.directory import BundleError

            raise BundleError(f"bundle {self.version}: manifest lacks {', '.join(missing)}; the engine needs them")
        self.predictor = bundle.predictor
        self.cols = bundle.column_index(names)
        self.labels = LabelConfig.model_validate(self.manifest["label_config"])
        self.costs = CostConfig.model_validate(self.manifest["cost_config"])
        meta = (self.predictor.info or {}).get("meta") or {}
        self.base_rate = float(meta.get("base_rate", 0.5) or 0.5)
        payoff = (self.predictor.info or {}).get("payoff_calib")
        self.payoff = float(payoff) if payoff else float("nan")


class Engine:
    """The trading engine (see the package docstring for the step and the gates).

    `symbols` are the traded symbols; reference symbols of the bundle's feature config that are
    not traded are appended (their rows feed the features, they are never entered). `bars`
    given to `step` have one row per `engine.symbols` entry, in that order.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        bundle: Any,
        *,
        trading: TradingConfig | None = None,
        risk: RiskConfig | None = None,
        costs: Costs | CostConfig | None = None,
        initial_equity: float = 10_000.0,
        broker: Broker | None = None,
        market_rules: Mapping[str, MarketRules] | None = None,
        features: OnlineFeatureEngine | None = None,
    ):
        self.trading = trading or TradingConfig()
        self.risk_cfg = risk or RiskConfig()
        fcfg = bundle.feature_config()
        refs = list(fcfg.reference_symbols)
        self.trade_symbols = list(dict.fromkeys(symbols))
        self.symbols = self.trade_symbols + [r for r in refs if r not in self.trade_symbols]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        s_n = len(self.symbols)
        self.features = features or OnlineFeatureEngine(self.symbols, fcfg, regime=bundle.regime_model())
        if list(self.features.symbols) != self.symbols:
            raise ValueError("the feature engine's symbols differ from the engine's")
        names = self.features.names
        self._atr_col = names.index(ATR_FRAC)
        self._pct_col = names.index(ATR_PERCENTILE)
        self._b = _Bundle(bundle, names)
        if isinstance(costs, Costs):
            self.costs = costs
        else:
            self.costs = Costs.from_config(costs if costs is not None else self._b.costs)
        self.broker: Broker = broker if broker is not None else PaperBroker(self.costs)
        self.initial_equity = float(initial_equity)
        self.cash = float(initial_equity)
        self._tradable = np.zeros(s_n, bool)
        self._zero_minute = np.zeros(s_n, np.int64)  # top_k ranks one minute's cross-section
        self._tradable[: len(self.trade_symbols)] = True
        self._ref_rows = np.array([self.index[r] for r in refs], np.intp)
        self._ref_last_fill = np.full(len(refs), -(10**15), np.int64)
        rules = dict(market_rules or {})
        for s in self.symbols:
            rules.setdefault(s, MarketRules(qty_step=self.trading.paper_qty_step, min_notional=self.trading.paper_min_notional))
        self._market_rules = rules
        self.risk = self._risk_manager(self.risk_cfg)
        self.slot_notional = self.initial_equity / max(1, len(self.trade_symbols))
        # open positions: one per symbol, also as arrays for the vectorised exit check
        self.positions: dict[str, Position] = {}
        self._held = np.zeros(s_n, bool)
        self._tp = np.full(s_n, np.nan)
        self._sl = np.full(s_n, np.nan)
        self._deadline = np.zeros(s_n, np.int64)
        self._qty = np.zeros(s_n)
        self._last_close = np.full(s_n, np.nan)
        self._pending_syms: set[str] = set()
        self._pending_meta: dict[str, dict[str, Any]] = {}
        self._exit_reason: dict[str, str] = {}
        self.no_entries_from_ts: int | None = None  # the backtest stops entering a horizon before its end
        self.stopping = False
        # An adapter may block entries with a reason code (a live broker while a reconciliation
        # with the exchange is pending: "reconcile_pending"); exits go on.
        self.entry_block: str | None = None
        # The operator's pause (bot.ops.control, persisted by the daemon): no new entries, exits go on.
        self.paused = False
        self.last_ts: int | None = None
        self.skips: Counter = Counter()
        # the 1m returns the risk manager's correlation filter reads, kept here (not read from the
        # feature engine) so that a backtest that runs the features ahead in blocks sees minute t only
        self._ret = RingBuffer(s_n, self.risk_cfg.correlation_window)
        self._prev_c = np.full(s_n, np.nan)
        self._r = np.empty(s_n)
        self._zeros = np.zeros(s_n)
        self._configure_rule()

    def _risk_manager(self, risk: RiskConfig) -> RiskManager:
        # the probability gate is the entry rule's (see the package docstring)
        return RiskManager(risk.model_copy(update={"min_probability": 0.0}), self.symbols, self._market_rules,
                           self.costs.round_trip)  # fmt: skip

    def set_risk_config(self, risk: RiskConfig) -> None:
        """Use another `risk:` section from the next step on (the operator's reload,
        `bot.ops.control`): what a restart with it would do, without the restart. The risk
        state (kill switch, cooldowns, order rate) carries over through `to_dict`/`load_dict`,
        the path a restart takes; the limits are the new section's. Nothing changes if the new
        section is refused."""
        new = self._risk_manager(risk)
        new.load_dict(self.risk.to_dict())
        ret = self._ret
        if risk.correlation_window != ret.capacity:  # the filter's return window, resized keeping what it holds
            ret = RingBuffer(len(self.symbols), risk.correlation_window)
            keep = min(self._ret.capacity, risk.correlation_window)
            for col in self._ret.window(keep).T.copy():
                ret.push(col)
        rule_changed = risk.min_probability != self.risk_cfg.min_probability
        self.risk_cfg, self.risk, self._ret = risk, new, ret
        if rule_changed:
            self._configure_rule()

    # --- bundle ---------------------------------------------------------------------------

    def entry_levers(self) -> tuple[EntryLevers, str]:
        """The levers of the entry rule and where they come from: the bundle's recorded rule
        (chosen by `bot research`) unless `trading.entry_rule` is `config`, else the entry_* keys."""
        t = self.trading
        recorded = EntryLevers.from_manifest(self._b.manifest)
        if recorded is not None and t.entry_rule == "bundle":
            return recorded, "the bundle's"
        return EntryLevers(cadence_minutes=t.entry_cadence_minutes, cost_multiple=t.entry_cost_multiple, floor=t.entry_floor,
                           top_k=t.entry_top_k, quantile=t.entry_quantile, quantile_days=t.entry_quantile_days,
                           regime_states=t.entry_regime_states), "config"  # fmt: skip

    def _configure_rule(self) -> None:
        t = self.trading
        pred = self._b.predictor
        levers, self.rule_source = self.entry_levers()
        rule = levers.to_rule(er_threshold=float(pred.er_threshold), meta_threshold=float(pred.meta_threshold),
                              round_trip=self.costs.round_trip, has_meta=pred.meta is not None)  # fmt: skip
        if rule.p_threshold is not None:  # the one probability gate: max(bundle / rule, risk.min_probability)
            rule = dataclasses.replace(rule, p_threshold=max(rule.p_threshold, float(self.risk_cfg.min_probability)))
        self.rule = dataclasses.replace(rule, q05_threshold=t.min_q05)
        # the quantile rule's trailing scores are the current model's own: a new model starts afresh
        self.trailing = None if self.rule.quantile is None else TrailingScores(self.rule.quantile, self.rule.quantile_ms)
        self.edge = validated_edge(self._b.manifest, self.trading)
        if self.trading.watch_only:
            self.watch_reason: str | None = "watch-only by configuration (trading.watch_only)"
        else:
            self.watch_reason = None if self.edge.ok else self.edge.reason
        self.horizon_ms = int(self._b.labels.horizon_bars) * MINUTE_MS

    @property
    def watch_only(self) -> bool:
        return self.watch_reason is not None

    @property
    def model_version(self) -> str:
        return self._b.version

    @property
    def bundle(self) -> Any:
        return self._b.bundle

    def status_line(self) -> str:
        """One line for the log/status: model, rule, mode."""
        mode = f"WATCH ONLY: {self.watch_reason}" if self.watch_reason else self.edge.reason
        src = " (the bundle's, chosen by research)" if self.rule_source != "config" else ""
        return f"model {self.model_version}; entry rule {self.rule.describe()}{src}; {mode}"

    def swap_bundle(self, bundle: Any, *, features: OnlineFeatureEngine | None = None) -> None:
        """Use another bundle from the next step on. Open positions keep their barriers.

        The feature engine is kept when the new bundle has the same feature config: its
        buffers do not depend on the regime model, and a refitted regime model (each retrain
        fits one) only re-runs the regime filter over the observations the engine kept
        (`OnlineFeatureEngine.regime_probs_under`). When the feature config differs, pass
        `features`, a new engine already warmed up to `last_ts`.
        """
        same_config = bundle.feature_config() == self._b.bundle.feature_config()
        if features is None and not same_config:
            raise ValueError("the new bundle's feature config differs: pass a warmed-up feature engine")
        if features is not None and (list(features.symbols) != self.symbols or features.last_ts != self.features.last_ts):
            raise ValueError("the new feature engine must have the same symbols and be warmed up to the same minute")
        # Check the new bundle fully before changing anything: a refused bundle leaves the
        # engine as it was (its bundle, its features, its rule).
        new = _Bundle(bundle, (features or self.features).names)
        regime = probs = None
        same_regime = True
        if features is None:
            same_regime = (bundle.manifest.get("regime") or None) == (self._b.manifest.get("regime") or None)
            if not same_regime:
                regime = bundle.regime_model()
                probs = self.features.regime_probs_under(regime)
        old, old_trailing = self._b, self.trailing
        self._b = new
        try:
            self._configure_rule()
        except BaseException:
            self._b = old
            self._configure_rule()
            self.trailing = old_trailing
            raise
        if features is not None:
            self.features = features
        elif not same_regime:
            self.features.set_regime(regime, probs)

    # --- the step ---------------------------------------------------------------------------

    def warm_up(self, history: Mapping[str, Any]) -> None:
        """Warm the online features (`OnlineFeatureEngine.warm_up`) and the return window from
        candles before the first step."""
        self.features.warm_up(history)
        for s, c in history.items():
            if s in self.index and len(c):
                self._last_close[self.index[s]] = float(c.close[-1])
        self._sync_from_features()

    def _sync_from_features(self) -> None:
        """Take the return window (and the minute) from the feature engine, which must be at the
        engine's minute: after a warm-up, or when a restart hands in warmed-up features."""
        w = self.features.returns_window(self._ret.capacity)
        for k in range(w.shape[1]):
            self._ret.push(w[:, k])
        np.copyto(self._prev_c, self._last_close)
        self.last_ts = self.features.last_ts

    def _push_returns(self, ts: int, close: np.ndarray) -> None:
        """1m log returns on the minute grid, as the feature engine keeps them (0 for a made-up
        minute of a started symbol, NaN before its first bar)."""
        if self.last_ts is not None and ts - self.last_ts > MINUTE_MS:
            started0 = np.where(np.isnan(self._prev_c), np.nan, 0.0)
            for _ in range(min((ts - self.last_ts) // MINUTE_MS - 1, self._ret.capacity)):
                self._ret.push(started0)
        r = self._r
        with np.errstate(invalid="ignore", divide="ignore"):
            np.log(close / self._prev_c, out=r)
        real = ~np.isnan(close)
        r[~real & ~np.isnan(self._prev_c)] = 0.0
        self._ret.push(r)
        np.copyto(self._prev_c, close, where=real)

    def score(self, feats: np.ndarray) -> dict[str, np.ndarray]:
        """One scoring call for a block of feature rows (any number of rows, full columns). Rows
        whose er cannot pass the entry rule get NaN for the other scores (`Predictor.predict`'s
        er gate): they never become candidates, and scoring them fully would cost 3x more."""
        x = np.ascontiguousarray(feats[:, self._b.cols], dtype=np.float32)
        return self._b.predictor.predict(x, er_gate=self.rule.er_threshold)

    def step(
        self,
        ts_ms: int,
        bars: np.ndarray,
        made_up: np.ndarray | None = None,
        *,
        feats: np.ndarray | None = None,
        scores: Mapping[str, np.ndarray] | None = None,
        warm: np.ndarray | None = None,
    ) -> StepResult:
        """Process the closed minute opening at `ts_ms` (see the package docstring).

        `bars` (S x OHLCV float64, NaN row = no candle), `made_up` (S,) bool: rows the caller
        made up (the feed's gap fill: not candles the exchange sent); they are never entered. `feats`/`scores`/`warm`: this
        minute's feature rows, their scores and the feature engine's warm flags, precomputed by a
        caller that ran `self.features` over a block of minutes (block scoring in the backtest).
        """
        ts = int(ts_ms)
        res = StepResult(ts)
        bars = np.asarray(bars, dtype=np.float64)
        missing = np.isnan(bars).any(axis=1)
        no_bar = missing if made_up is None else (missing | np.asarray(made_up, bool))
        # nothing trades on a made-up row: the broker and the exit rule see it as no candle,
        # exactly as the label treats a missing minute
        real = bars
        if made_up is not None and no_bar.any():
            real = bars.copy()
            real[no_bar] = np.nan
        # 1. the broker: entries decided last minute fill at this minute's open
        self._apply_broker(self.broker.poll(ts, real, self.index), res)
        # 2. exits of open positions on this bar, before any entry
        self._check_exits(ts, real, res)
        close = real[:, 3]
        np.copyto(self._last_close, close, where=~np.isnan(close))
        self._push_returns(ts, close)
        # 3. features, one scoring call, entries
        if feats is None:
            feats = self.features.update(ts, bars)
            warm = self.features.warm
        elif warm is None:
            raise ValueError("precomputed features need the warm flags of their minute")
        decided = self._entries(ts, bars, no_bar, feats, scores, warm, res)
        self.last_ts = ts
        res.equity = self.equity_point(ts)
        if not decided and self.trading.sizing == "risk":
            self.risk.update_equity(res.equity.equity, ts)  # the kill switch sees every minute
        self.skips.update(res.skips)
        return res

    def _apply_broker(self, up: BrokerUpdate, res: StepResult) -> None:
        for it, meta in getattr(up, "adopted", ()):
            self._adopt(it, meta)
        for cid, why in up.cancelled:
            meta = self._pending_meta.pop(cid, None)
            if meta is not None:
                self._pending_syms.discard(meta["symbol"])
                res.skips[why] += 1
                res.decisions.append(DecisionRow(meta["decision_ts"], meta["symbol"], "skip", why, meta["er"], meta["p"],
                                                 None, self.model_version, {"client_order_id": cid}))  # fmt: skip
            res.cancelled.append((cid, why))
        if up.fills:
            self.on_fills(up.fills, res)

    def cut_position(self, symbol: str, qty: float, ts: int, price: float | None = None) -> tuple[ClosedTrade | None, Position | None]:
        """Reconciliation found less of `symbol` on the exchange than the position (sold outside
        the bot, an exit the books missed): the exchange is the truth. The position is cut to
        `qty` (0: closed) and the difference recorded as a trade closed at `price` (default:
        the symbol's last close, i.e. the exchange's last price the engine saw) with exit reason
        'reconciled' and its share of the entry fee; the cash is the reconciliation's business.
        Returns (the closed part, the remaining position or None)."""
        pos = self.positions.get(symbol)
        if pos is None:
            return None, None
        qty = min(max(float(qty), 0.0), pos.qty)
        cut = pos.qty - qty
        if cut <= 0:
            return None, pos
        px = float(price) if price is not None and math.isfinite(price) and price > 0 else float(self._last_close[self.index[symbol]])
        if not (math.isfinite(px) and px > 0):
            px = pos.entry_price
        fee = pos.entry_fee * cut / pos.qty
        pnl = cut * (px - pos.entry_price) - fee
        cost = cut * pos.entry_price + fee
        trade = ClosedTrade(symbol, pos.decision_ts, pos.entry_ts, int(ts), cut, pos.entry_price, px, fee, pnl,
                            pnl / cost if cost > 0 else float("nan"), "reconciled", pos.er, pos.p, pos.model_version,
                            pos.entry_ref_price, px)  # fmt: skip
        self._close(symbol)
        rest = None
        if qty > 0:
            rest = replace(pos, qty=qty, entry_fee=pos.entry_fee - fee)
            self._open(rest)
        return trade, rest

    def pending_meta(self, client_order_id: str) -> dict[str, Any] | None:
        """The decision behind a pending entry (barrier fractions, er, p, decision minute): a live
        broker keeps it with the order, for `_adopt` after a crash."""
        meta = self._pending_meta.get(client_order_id)
        return dict(meta) if meta is not None else None

    def _adopt(self, it: OrderIntent, meta: Mapping[str, Any] | None) -> bool:
        """Wait for an order this engine never decided as for its own (sent by a process that died
        before it persisted the decision; after the restart the engine decided otherwise, e.g.
        no entry on a stale minute): the exchange will hold its fill, so the books must too. An
        entry opens its position, when it fills, with the barriers of its decision (`meta`);
        with no meta known, with no barriers and a hold that already ended, so the exit rule
        sells it at the next bar (gap_timeout). An exit closes the position it sells. An entry
        for a symbol already held or pending is not adopted (reconciliation reports the
        holding)."""
        cid, sym = it.client_order_id, it.symbol
        if it.leg != "entry":
            self._exit_reason.setdefault(cid, "reconciled")
            return True
        if sym not in self.index or sym in self.positions or sym in self._pending_syms:
            return False
        m = dict(meta or {})
        if "decision_ts" not in m:
            last = self.last_ts if self.last_ts is not None else int(it.decision_ts)
            m["decision_ts"] = int(it.decision_ts) if meta and it.decision_ts > 0 else last - self.horizon_ms
        for k in ("tp_frac", "sl_frac", "er", "p"):
            v = m.get(k)
            m[k] = float("nan") if v is None else float(v)
        m.setdefault("version", it.model_version or self.model_version)
        m["symbol"] = sym
        self._pending_meta[cid] = m
        self._pending_syms.add(sym)
        return True

    def on_fills(self, fills: Sequence[Fill], res: StepResult | None = None) -> None:
        """Book fills from the broker: entries open positions (with their barriers), exits close them."""
        for f in fills:
            if res is not None:
                res.fills.append(f)
            if f.side == "buy":
                meta = self._pending_meta.pop(f.client_order_id, None)
                if meta is None:
                    continue  # not ours / already booked
                self._pending_syms.discard(f.symbol)
                self.cash -= f.qty * f.price + f.fee
                ref = f.ref_price if f.ref_price == f.ref_price else f.price
                tp, sl = barrier_prices(ref, meta["tp_frac"], meta["sl_frac"])
                pos = Position(f.symbol, f.qty, f.price, f.ts, f.fee, tp, sl, meta["decision_ts"] + self.horizon_ms,
                               meta["decision_ts"], f.client_order_id, meta["version"], meta["er"], meta["p"], ref)  # fmt: skip
                self._open(pos)
                if res is not None:
                    res.opened.append(pos)
            else:
                pos = self.positions.get(f.symbol)
                if pos is None:
                    continue
                self.cash += f.qty * f.price - f.fee
                reason = self._exit_reason.pop(f.client_order_id, "exit")
                cost = pos.qty * pos.entry_price + pos.entry_fee
                pnl = f.qty * f.price - f.fee - cost
                eref = pos.entry_ref_price
                xref = f.ref_price if f.ref_price == f.ref_price else f.price
                if eref == eref and f.ref_price == f.ref_price:
                    ret = float(self.costs.net_return(eref, xref))
                else:
                    ret = pnl / cost if cost > 0 else float("nan")
                trade = ClosedTrade(pos.symbol, pos.decision_ts, pos.entry_ts, f.ts, pos.qty, pos.entry_price, f.price,
                                    pos.entry_fee + f.fee, pnl, ret, reason, pos.er, pos.p, pos.model_version, eref, xref)  # fmt: skip
                self._close(pos.symbol)
                self._feed_protections(trade)
                if res is not None:
                    res.closed.append(trade)

    def _feed_protections(self, trade: ClosedTrade) -> None:
        """The stop-loss guard and the low-profit lock learn from every trade the engine closed,
        at its exit time (`risk.protections`); in the backtest and the daemon alike, since both
        book their exits here. A cut by reconciliation (`cut_position`: sold outside the bot) is
        not one of the strategy's trades and is not fed."""
        self.risk.record_trade(trade.symbol, trade.exit_ts, trade.ret, trade.exit_reason == EXIT_NAMES[EXIT_SL])

    def _open(self, pos: Position) -> None:
        i = self.index[pos.symbol]
        self.positions[pos.symbol] = pos
        self._held[i] = True
        self._tp[i], self._sl[i], self._deadline[i], self._qty[i] = pos.tp_price, pos.sl_price, pos.expires_ts, pos.qty

    def _close(self, symbol: str) -> None:
        i = self.index[symbol]
        del self.positions[symbol]
        self._held[i] = False
        self._qty[i] = 0.0

    def _check_exits(self, ts: int, bars: np.ndarray, res: StepResult) -> None:
        if not self.positions:
            return
        rows = np.flatnonzero(self._held)
        kind, price = check_exits(ts, bars[rows], self._tp[rows], self._sl[rows], self._deadline[rows])
        hit = np.flatnonzero(kind)
        if not len(hit):
            return
        intents = []
        for j in hit.tolist():
            sym = self.symbols[rows[j]]
            intents.append(self._exit_intent(sym, ts, float(price[j]), EXIT_NAMES[int(kind[j])]))
            if kind[j] == EXIT_SL:
                self.risk.record_stop_loss(sym, ts)
        self._submit(intents, res)

    def _exit_intent(self, sym: str, ts: int, price: float, reason: str) -> OrderIntent:
        pos = self.positions[sym]
        cid = client_order_id(self.model_version, sym, pos.decision_ts, "exit")
        self._exit_reason[cid] = reason
        return OrderIntent(cid, sym, "sell", "exit", pos.qty, ts, price, reason, "limit", price, pos.model_version)

    def _submit(self, intents: list[OrderIntent], res: StepResult) -> None:
        if not intents:
            return
        res.orders.extend(intents)
        self.broker.submit(intents)
        self.risk.record_order(res.ts, len(intents))
        exits = [it for it in intents if it.leg == "exit"]
        if exits:
            for it in exits:
                res.decisions.append(DecisionRow(res.ts, it.symbol, "exit", it.reason, None, None, None, it.model_version,
                                                 {"price": it.ref_price, "client_order_id": it.client_order_id}))  # fmt: skip
            flush = getattr(self.broker, "flush", None)
            if flush is not None:  # paper: exits rest at the barrier that was touched and fill now
                self._apply_broker(flush(), res)

    def flatten(self, ts_ms: int, reason: str = "flatten", symbols: Sequence[str] | None = None) -> StepResult:
        """Close every open position (or those of `symbols`) at its last close (kill switch,
        end of a backtest, the operator's flatten and force-exit)."""
        res = StepResult(int(ts_ms))
        held = [s for s in self.positions if symbols is None or s in symbols]
        intents = [self._exit_intent(s, int(ts_ms), float(self._last_close[self.index[s]]), reason) for s in held]
        self._submit(intents, res)
        res.equity = self.equity_point(int(ts_ms))
        return res

    def close_out(self, ts_ms: int, reason: str, symbols: Sequence[str] | None = None) -> StepResult:
        """The operator's flatten / force-exit between two minutes (`bot.ops.control`): entries
        still waiting for their fill are dropped first (paper: they would fill at the next open;
        a live broker's entries are on the exchange already: what it filled is booked, so that
        it is sold too), then `flatten`. `ts_ms` is the last minute stepped."""
        ts = int(ts_ms)
        res = StepResult(ts)
        cancel = getattr(self.broker, "cancel_entries", None)
        if cancel is not None:
            wanted = set(self.trade_symbols if symbols is None else symbols)
            self._apply_broker(BrokerUpdate([], [(cid, reason) for cid in cancel(wanted)]), res)
        else:
            self._apply_broker(self.broker.poll(ts, np.full((len(self.symbols), 5), np.nan), self.index), res)
        out = self.flatten(ts, reason, symbols)
        for f in ("orders", "fills", "closed", "decisions", "cancelled"):
            getattr(res, f).extend(getattr(out, f))
        res.skips.update(out.skips)
        res.equity = out.equity
        return res

    # --- entries ---------------------------------------------------------------------------

    def _rule_mask(self, ts: int, er: np.ndarray, p: np.ndarray, q05: np.ndarray | None, ranked: np.ndarray) -> np.ndarray:
        """The one entry rule on this minute's cross-section (with its cadence / regime levers,
        the top k of the `ranked` rows and the trailing quantile), as `trade_sim.signal_mask`."""
        rule = self.rule
        n = len(er)
        decision = rule.cadence_minutes == 1 or bool(on_cadence(ts, rule.cadence_minutes))
        floor = None
        if self.trailing is not None:
            # the threshold is made of earlier decision minutes only; this minute's scores join after
            floor = np.full(n, self.trailing.threshold(ts) if decision else np.nan)
            if decision:
                self.trailing.push(ts, er[ranked])
        if rule.cadence_minutes == 1 and rule.regime_states is None:
            sig = rule.mask(er, p, q05, er_floor=floor)
        else:
            probs = self.features.regime_probs
            regime = -1 if probs is None or not np.isfinite(probs).all() else int(np.argmax(probs))
            sig = rule.mask(er, p, q05, ts=np.full(n, ts, np.int64), regime=np.full(n, regime, np.int64), er_floor=floor)
        if rule.top_k is not None:
            sig &= top_k_mask(self._zero_minute, er, ranked, rule.top_k)
        return sig

    def _entries(self, ts: int, bars: np.ndarray, made_up: np.ndarray, feats: np.ndarray,
                 scores: Mapping[str, np.ndarray] | None, warm: np.ndarray, res: StepResult) -> bool:  # fmt: skip
        """Entry candidates of this minute -> order intents. True if the risk manager decided."""
        atr = feats[:, self._atr_col].astype(np.float64)
        pct = feats[:, self._pct_col].astype(np.float64)
        tp_frac, sl_frac, bar_ok = entry_fractions(atr, pct, self._b.labels)
        usable = warm & bar_ok & self._tradable
        # reference freshness: remember the last minute each reference was made up (minutes the
        # clock jumped over, an exchange-wide outage, were made up for every symbol)
        if self.last_ts is not None and ts - self.last_ts > MINUTE_MS:
            self._ref_last_fill[:] = ts - MINUTE_MS
        ref_made_up = made_up[self._ref_rows]
        if ref_made_up.any():
            self._ref_last_fill[ref_made_up] = ts
        if not usable.any():
            return False
        if scores is None:
            scores = self.score(feats)
        er, p, q05 = scores["er"], scores["p"], scores.get("q05")
        # the cross-section a level-free rule compares with: real candles of traded symbols with
        # warm features and valid barriers (a made-up row is neither ranked nor counted)
        ranked = usable & ~made_up
        sig = self._rule_mask(ts, er, p, q05, ranked) & usable
        if not sig.any():
            return False
        cand = np.flatnonzero(sig)
        fresh = ts - self._ref_last_fill.max() >= self.trading.reference_fresh_minutes * MINUTE_MS
        skip: dict[int, str] = {}
        for i in cand.tolist():
            sym = self.symbols[i]
            if self.watch_reason is not None:
                skip[i] = SKIP_WATCH_ONLY
            elif self.stopping:
                skip[i] = SKIP_STOPPING
            elif self.paused:
                skip[i] = SKIP_PAUSED
            elif self.entry_block is not None:
                skip[i] = self.entry_block or SKIP_BLOCKED
            elif made_up[i]:
                skip[i] = SKIP_SYMBOL_FILLED
            elif not fresh:
                skip[i] = SKIP_REFERENCE_STALE
            elif self.no_entries_from_ts is not None and ts >= self.no_entries_from_ts:
                skip[i] = SKIP_END_OF_WINDOW
            elif sym in self._pending_syms:
                skip[i] = SKIP_PENDING
            elif self._held[i] and self.trading.sizing == "equal_slots":
                skip[i] = SKIP_HELD
        for i, why in skip.items():
            res.skips[why] += 1
            res.decisions.append(DecisionRow(ts, self.symbols[i], "skip", why, float(er[i]), _f(p[i]), None, self.model_version,
                                             {"reason_kind": "engine"}))  # fmt: skip
        go = np.array([i for i in cand.tolist() if i not in skip], np.int64)
        if not len(go):
            return False
        price = bars[go, 3]
        if self.trading.sizing == "equal_slots":
            qty = self.slot_notional / price
            taken = np.ones(len(go), bool)
            for i in go.tolist():
                res.decisions.append(DecisionRow(ts, self.symbols[i], "enter", "taken", float(er[i]), _f(p[i]),
                                                 self.slot_notional / self.initial_equity, self.model_version))  # fmt: skip
        else:
            qty, taken = self._risk_decide(ts, go, er, p, price, tp_frac, sl_frac, atr, res)
        intents = []
        for k, i in enumerate(go.tolist()):
            if not taken[k]:
                continue
            sym = self.symbols[i]
            cid = client_order_id(self.model_version, sym, ts, "entry")
            intents.append(OrderIntent(cid, sym, "buy", "entry", float(qty[k]), ts, float(price[k]), "signal",
                                       model_version=self.model_version))  # fmt: skip
            self._pending_syms.add(sym)
            self._pending_meta[cid] = {"symbol": sym, "decision_ts": ts, "tp_frac": float(tp_frac[i]), "sl_frac": float(sl_frac[i]),
                                       "er": float(er[i]), "p": _f(p[i]) if _f(p[i]) is not None else float("nan"),
                                       "version": self.model_version}  # fmt: skip
        self._submit(intents, res)
        return self.trading.sizing == "risk"

    def _risk_decide(self, ts: int, go: np.ndarray, er: np.ndarray, p: np.ndarray, price: np.ndarray, tp_frac: np.ndarray,
                     sl_frac: np.ndarray, atr: np.ndarray, res: StepResult) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        pp = p[go].astype(np.float64)
        pp = np.where(np.isnan(pp), self._b.base_rate, pp)  # no meta model: the calibration base rate
        payoff = np.full(len(go), self._b.payoff)
        cands = Candidates(go, er[go], pp, price, tp_frac[go], sl_frac[go], atr[go], payoff)
        eq = self.equity()
        held = tuple(OpenPosition(s, p_.qty, p_.entry_price, float(self._last_close[self.index[s]]))
                     for s, p_ in self.positions.items())  # fmt: skip
        port = Portfolio(max(eq, 0.0), max(self.cash, 0.0), held)
        window = self._ret.window(self._ret.capacity)
        dec = self.risk.decide(cands, port, window, ts)
        taken = dec.taken
        for d in dec.rows():
            res.decisions.append(DecisionRow(ts, d.symbol, d.action, d.reason.label, d.er, d.probability, d.size_fraction,
                                             self.model_version, d.details))  # fmt: skip
            if d.reason != Reason.TAKEN:
                res.skips[d.reason.label] += 1
        if dec.flatten and self.positions:
            fl = self.flatten(ts, "flatten")
            res.orders.extend(fl.orders)
            res.fills.extend(fl.fills)
            res.closed.extend(fl.closed)
            res.decisions.extend(fl.decisions)
        return dec.qty, taken

    # --- account ---------------------------------------------------------------------------

    def equity(self) -> float:
        if not self.positions:
            return self.cash
        m = self._held
        return float(self.cash + np.dot(self._qty[m], np.nan_to_num(self._last_close[m])))

    def equity_point(self, ts: int) -> EquityPoint:
        m = self._held
        gross = float(np.dot(self._qty[m], np.nan_to_num(self._last_close[m]))) if self.positions else 0.0
        return EquityPoint(ts, self.cash + gross, self.cash, gross, len(self.positions))

    # --- restart ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a restart needs besides the features (warmed again from the store):
        cash, positions with their barriers, orders still pending, risk limits, the last marks
        and reference-fill times, counters. JSON-safe."""
        pend = self.broker.pending() if hasattr(self.broker, "pending") else []
        return {
            "version": STATE_VERSION,
            "model_version": self.model_version,
            "last_ts": self.last_ts,
            "cash": self.cash,
            "positions": [asdict(p) for p in self.positions.values()],
            "pending": [{"intent": asdict(it), "meta": self._pending_meta.get(it.client_order_id)} for it in pend],
            "risk": self.risk.to_dict(),
            "skips": dict(self.skips),
            "marks": {s: float(v) for s, v in zip(self.symbols, self._last_close.tolist(), strict=True) if v == v},
            "reference_last_fill_ts": [int(x) for x in self._ref_last_fill.tolist()],
            "trailing_scores": None if self.trailing is None else self.trailing.to_dict(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output (positions keep their barriers). May be called before or
        after `warm_up`; the warm-up's newer closes and minute win over the saved ones."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"engine state version {state.get('version')!r} is not {STATE_VERSION}")
        self.cash = float(state["cash"])
        self.positions.clear()
        self._held[:] = False
        self._qty[:] = 0
        for d in state["positions"]:
            self._open(Position(**d))
            i = self.index[d["symbol"]]
            if np.isnan(self._last_close[i]):
                self._last_close[i] = d["entry_price"]
        pend = []
        self._pending_meta.clear()
        self._pending_syms.clear()
        for d in state.get("pending", []):
            it = OrderIntent(**d["intent"])
            pend.append(it)
            if d.get("meta"):
                self._pending_meta[it.client_order_id] = dict(d["meta"])
                self._pending_syms.add(it.symbol)
        restore = getattr(self.broker, "restore", None)
        if restore is not None:  # paper: resume them; live: report what became of them
            restore(pend)
        self.risk.load_dict(state["risk"])
        # marks and the clock: what a warm-up already brought is newer than the saved state
        for sym, v in (state.get("marks") or {}).items():
            if sym in self.index and np.isnan(self._last_close[self.index[sym]]):
                self._last_close[self.index[sym]] = float(v)
        rl = state.get("reference_last_fill_ts")
        if rl is not None and len(rl) == len(self._ref_last_fill):
            np.maximum(self._ref_last_fill, np.asarray(rl, np.int64), out=self._ref_last_fill)
        saved = state.get("last_ts")
        if self.last_ts is None or (saved is not None and saved > self.last_ts):
            self.last_ts = saved
        self.skips = Counter(state.get("skips", {}))
        # the quantile rule's trailing scores, if they are this model's under this rule
        tr = state.get("trailing_scores")
        if self.trailing is not None and tr and state.get("model_version") == self.model_version:
            restored = TrailingScores.from_dict(tr)
            if restored.same_rule(self.rule):
                self.trailing = restored

    @classmethod
    def from_state(cls, state: Mapping[str, Any], symbols: Sequence[str], bundle: Any, **kwargs: Any) -> Engine:
        """A restarted engine: `load_state(state)`; pass `features` already warmed up to the
        state's last minute (or call `warm_up` afterwards)."""
        eng = cls(symbols, bundle, **kwargs)
        eng.load_state(state)
        if kwargs.get("features") is not None and eng.features.last_ts is not None:
            if eng.features.last_ts != state.get("last_ts"):
                raise ValueError(f"the features are at {eng.features.last_ts}, the state at {state.get('last_ts')}")
            eng._sync_from_features()
        return eng


def _f(x: float) -> float | None:
    x = float(x)
    return x if x == x else None
