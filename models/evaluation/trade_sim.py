"""Simulated trading on a validation window, and the figures reported for it.

The simulation is deliberately simple and honest, and it is the one code path used by the
walk-forward folds, `bot evaluate`, the champion/challenger judge and every entry rule of a
research grid (`simulate`: a block's scores, `models.evaluation.scores.FoldScores`, and the one
entry rule, `models.trading.rules.EntryRule`, in; trades and their report out):
- one position per symbol at a time; a signal while the symbol's slot is busy is ignored;
- the entry is at the open of the bar after the signal, the exit is the triple barrier of the
  label (TP / SL / time-out), priced with `models.trading.costs` (fees both sides + slippage);
- equal capital per slot: each symbol trades a fixed 1/N of the starting capital, no
  compounding, so the portfolio return of a trade is its net return / N;
- a signal only counts if its whole horizon lies inside the window (labels masked with
  `Labels.known_before(window.end)`): no trade looks at data after the window.

Reported per symbol and overall (the statistics are `models.evaluation.trade_stats`'): trades,
win rate, profit factor, expectancy (mean net return per trade), daily Sharpe (annualised with
sqrt(365): crypto trades every day), max drawdown of the equity curve, exposure (share of
symbol-minutes with an open position). Beside it the
seed's own metric: PF and mean over *every* bar with er > threshold, trades overlapping, no
slot limit -- what the seed reported as PF 2.64 -- to show how much overlap inflates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.evaluation.scores import FoldScores
from models.evaluation.trade_stats import equity_stats, trade_stats
from models.timeutil import MINUTE_MS
from models.trading.rules import EntryRule, on_cadence, quantile_thresholds, top_k_mask
from models.training.splits import Window


@dataclass(frozen=True, slots=True)
class Trades:
    """Trades of one symbol: decision row, entry ts, exit ts, net return, minutes held."""

    rows: np.ndarray
    entry_ts: np.ndarray
    exit_ts: np.ndarray
    ret: np.ndarray
    hold: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def take_trades(
    signal: np.ndarray,
    ts: np.ndarray,
    ret_net: np.ndarray,
    exit_ts: np.ndarray,
    hold: np.ndarray,
) -> Trades:
    """One slot, one position at a time: walk the signals in time order.

    `signal[i]` is True where the strategy wants to enter after bar i closes and bar i has a
    label (valid inside the window). A trade decided at row i exits at the bar opening at
    `exit_ts[i]`; the slot is free again from that bar's close, so the next trade may be decided
    at that very bar (ts >= exit_ts). Rows need not be every minute: with decisions on 1h closes
    only those rows are kept, and the exit time (not a row offset) frees the slot.
    """
    cand = np.flatnonzero(signal)
    cand_ts = np.asarray(ts)[cand]
    rows: list[int] = []
    k = 0
    while k < len(cand):
        i = int(cand[k])
        rows.append(i)
        nxt = int(np.searchsorted(cand_ts, exit_ts[i], side="left"))
        k = nxt if nxt > k else k + 1  # an exit is always after its decision; be safe
    r = np.asarray(rows, dtype=np.int64)
    return Trades(
        rows=r,
        entry_ts=ts[r] + MINUTE_MS if len(r) else np.empty(0, np.int64),
        exit_ts=np.asarray(exit_ts)[r].astype(np.int64) if len(r) else np.empty(0, np.int64),
        ret=ret_net[r].astype(np.float64),
        hold=hold[r].astype(np.float64),
    )


@dataclass
class SymbolResult:
    """What the simulation needs from one symbol on one window, and the trades it took."""

    symbol: str
    trades: Trades
    seed_ret: np.ndarray = field(default_factory=lambda: np.empty(0))  # ret_net of every bar with er > thr


def report(results: list[SymbolResult], window: Window) -> dict:
    """Overall and per-symbol figures (see the module docstring) as plain JSON-able data."""
    n = max(1, len(results))
    minutes = (window.end - window.start) / MINUTE_MS
    per_symbol: dict[str, dict] = {}
    all_ret, all_exit, all_hold = [], [], []
    for r in results:
        t = r.trades
        st = trade_stats(t.ret)
        st.update(equity_stats(t.exit_ts, t.ret, window))
        st["exposure"] = float(t.hold.sum() / minutes) if minutes > 0 else 0.0
        per_symbol[r.symbol] = st
        all_ret.append(t.ret)
        all_exit.append(t.exit_ts)
        all_hold.append(t.hold)
    ret = np.concatenate(all_ret) if all_ret else np.empty(0)
    ex = np.concatenate(all_exit) if all_exit else np.empty(0, np.int64)
    hold = np.concatenate(all_hold) if all_hold else np.empty(0)
    overall = trade_stats(ret)
    overall.update(equity_stats(ex, ret / n, window))  # equal capital per slot
    overall["exposure"] = float(hold.sum() / (n * minutes)) if minutes > 0 else 0.0
    overall["portfolio_return"] = float(ret.sum() / n)
    seed = np.concatenate([r.seed_ret for r in results]) if results else np.empty(0)
    seed_stats = trade_stats(seed)
    return {
        "window": {"start": window.start, "end": window.end, "days": round(window.days, 3)},
        "symbols": len(results),
        "overall": overall,
        "per_symbol": per_symbol,
        "seed_metric": {
            "bars": seed_stats["trades"],
            "profit_factor": seed_stats["profit_factor"],
            "expectancy": seed_stats["expectancy"],
            "win_rate": seed_stats["win_rate"],
        },
    }


# --- the one simulation on a block's scores -------------------------------------------------


def signal_mask(fs: FoldScores, rule: EntryRule) -> np.ndarray:
    """Rows where `rule` wants to enter (before the one-position-per-symbol slot), exactly as the
    engine decides them: the rule's gates on each row; the cross-section's top k among the
    `scored` rows of the minute; the trailing quantile from the `scored` rows of earlier
    decision minutes; then only rows whose trade is known inside the block (`ok`)."""
    floor = None
    if rule.quantile is not None:
        floor = np.full(len(fs.er), np.nan)
        dec = np.flatnonzero(on_cadence(fs.ts, rule.cadence_minutes)) if rule.cadence_minutes > 1 else np.arange(len(fs.er))
        floor[dec] = quantile_thresholds(rule, fs.ts[dec], fs.er[dec], fs.scored[dec])
    sig = fs.scored & rule.mask(fs.er, fs.p, ts=fs.ts, regime=fs.regime, er_floor=floor)
    if rule.top_k is not None:
        sig &= top_k_mask(fs.ts // MINUTE_MS, fs.er, fs.scored, rule.top_k)
    return sig & fs.ok


def symbol_results(fs: FoldScores, sig: np.ndarray, seed_threshold: float | None = None) -> list[SymbolResult]:
    """One slot per symbol (`take_trades`) over the rows of `sig`; the seed metric's rows are
    those with er > `seed_threshold` (if given)."""
    out = []
    for i, (lo, hi) in enumerate(fs.bounds()):
        sl = slice(lo, hi)
        seed = np.empty(0)
        if seed_threshold is not None:
            with np.errstate(invalid="ignore"):
                m = fs.ok[sl] & (fs.er[sl] > seed_threshold)
            seed = fs.ret[sl][m].astype(np.float64)
        out.append(SymbolResult(fs.symbols[i], take_trades(sig[sl], fs.ts[sl], fs.ret[sl], fs.exit_ts[sl], fs.hold[sl]), seed))
    return out


def simulate(fs: FoldScores, rule: EntryRule, *, seed_threshold: float | None = None) -> dict:
    """The one simulation on `fs` with `rule`: `report` + signal rate + the trades' arrays."""
    sig = signal_mask(fs, rule)
    results = symbol_results(fs, sig, seed_threshold)
    rep = report(results, fs.window)
    n_ok = int(fs.ok.sum())
    rep["signal_rate"] = float(sig.sum() / n_ok) if n_ok else 0.0
    cat = lambda f, dt: np.concatenate([getattr(r.trades, f) for r in results]) if results else np.empty(0, dt)  # noqa: E731
    rep["trade_returns"] = cat("ret", np.float64)
    rep["trade_entry_ts"] = cat("entry_ts", np.int64)
    rep["trade_exit_ts"] = cat("exit_ts", np.int64)
    return rep
