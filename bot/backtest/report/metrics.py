"""The figures of a backtest report, computed from the engine's records.

Every figure names its basis, because the same word means different things on different bases:
- `trades` blocks are **per-trade net returns** (`ClosedTrade.ret`: all costs in, relative to
  the cash the trade committed). Trades, win rate, profit factor and expectancy come from
  `models.evaluation.trade_stats.trade_stats`, the one definition the trainer's evaluation uses too, so a
  backtest PF and an evaluation PF are the same statistic; the expectancy's t-statistic and
  bootstrap interval are `models.evaluation.trade_stats.expectancy_inference`, as in `bot evaluate`. Quote-currency P&L and fees sit
  beside them.
- `portfolio` is the **portfolio equity curve** (`EquityPoint.equity`, marked to market each
  step): total and annualised return, daily Sharpe and Sortino (sqrt(365): crypto trades every
  day), max drawdown, exposure, turnover.
- per-symbol drawdown and Sharpe are of **the symbol's realised P&L** added to the initial
  equity at each exit (`models.evaluation.trade_stats.equity_stats`): what that symbol alone did to the
  account, not a mark-to-market curve.
- per-week buckets put each trade in the ISO week of its exit, and take the week's portfolio
  return from the equity curve.

Pure numpy: no I/O here (see `bot.backtest.report.writer`). Figures that are undefined (no trades, no
losses for a profit factor, a flat curve for a Sharpe) are None, never NaN or a made-up 0.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bot.engine.records import ClosedTrade, EquityPoint
from models.evaluation.trade_stats import equity_stats, expectancy_inference, trade_stats
from models.timeutil import DAY_MS, MINUTE_MS, fmt_ts, to_datetime
from models.training.splits import Window
from risk.reasons import PROTECTION_LABELS

BASIS_TRADES = "per-trade net returns (ClosedTrade.ret, fees and slippage in, relative to the cash committed)"
BASIS_PORTFOLIO = "portfolio equity curve (EquityPoint.equity, marked to market each step)"
BASIS_SYMBOL_DD = "the symbol's realised P&L added to the initial equity at each exit"
BASIS_WEEK = "trades bucketed by the ISO week (UTC) of their exit; return from the portfolio equity curve"

def _f(x: Any) -> float | None:
    """A finite float, or None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class TradeArrays:
    """Columns of a sequence of ClosedTrades, for vectorised figures."""

    def __init__(self, trades: Sequence[ClosedTrade]):
        self.symbol = np.array([t.symbol for t in trades], dtype=object)
        self.entry_ts = np.array([t.entry_ts for t in trades], dtype=np.int64)
        self.exit_ts = np.array([t.exit_ts for t in trades], dtype=np.int64)
        self.qty = np.array([t.qty for t in trades], dtype=np.float64)
        self.entry_price = np.array([t.entry_price for t in trades], dtype=np.float64)
        self.exit_price = np.array([t.exit_price for t in trades], dtype=np.float64)
        self.fees = np.array([t.fees for t in trades], dtype=np.float64)
        self.pnl = np.array([t.pnl for t in trades], dtype=np.float64)
        self.ret = np.array([t.ret for t in trades], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ret)

    def take(self, mask: np.ndarray) -> TradeArrays:
        out = object.__new__(TradeArrays)
        for k, v in vars(self).items():
            setattr(out, k, v[mask])
        return out

    @property
    def notional(self) -> np.ndarray:
        """Quote value bought plus quote value sold, per trade."""
        return self.qty * (self.entry_price + self.exit_price)

    @property
    def hold_minutes(self) -> np.ndarray:
        return (self.exit_ts - self.entry_ts) / MINUTE_MS


def trade_block(t: TradeArrays) -> dict[str, Any]:
    """Per-trade figures of a set of trades (see the module docstring for the basis)."""
    st: dict[str, Any] = {"basis": BASIS_TRADES, **trade_stats(t.ret)}
    st.pop("total_return", None)  # a sum of per-trade returns is not a return of anything
    st.update({k: v for k, v in expectancy_inference(t.ret).items() if k != "trades"})
    n = len(t)
    st["net_pnl"] = float(t.pnl.sum())
    st["fees_paid"] = float(t.fees.sum())
    gross_profit, gross_loss = float(t.pnl[t.pnl > 0].sum()), float(-t.pnl[t.pnl <= 0].sum())
    st["profit_factor_pnl"] = _f(gross_profit / gross_loss) if gross_loss > 0 else None
    st["avg_hold_minutes"] = float(t.hold_minutes.mean()) if n else None
    st["best_trade_ret"] = float(t.ret.max()) if n else None
    st["worst_trade_ret"] = float(t.ret.min()) if n else None
    return st


def tested_window(meta: Mapping[str, Any], t: TradeArrays, eq_ts: np.ndarray) -> tuple[int, int] | None:
    """The tested window [from, to): from the meta, else from what the records cover."""
    los: list[int] = []
    his: list[int] = []
    if len(eq_ts):
        los.append(int(eq_ts[0]))
        his.append(int(eq_ts[-1]) + MINUTE_MS)
    if len(t):
        los.append(int(t.entry_ts.min()))
        his.append(int(t.exit_ts.max()) + MINUTE_MS)
    lo = int(meta["from_ts"]) if meta.get("from_ts") is not None else (min(los) if los else None)
    hi = int(meta["to_ts"]) if meta.get("to_ts") is not None else (max(his) if his else None)
    if lo is None or hi is None or hi <= lo:
        return None
    return lo, hi


def equity_curve(equity: Sequence[EquityPoint], initial: float | None, start: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ts, equity) of the account, starting with the initial equity at the window's start."""
    ts = np.array([p.ts for p in equity], dtype=np.int64)
    eq = np.array([p.equity for p in equity], dtype=np.float64)
    if initial is not None and start is not None and (len(ts) == 0 or start < ts[0]):
        ts = np.concatenate([[start], ts])
        eq = np.concatenate([[initial], eq])
    return ts, eq


def drawdown(eq: np.ndarray) -> np.ndarray:
    """Drawdown below the running peak, as a fraction of the peak (0 at a new high)."""
    if len(eq) == 0:
        return np.empty(0)
    peak = np.maximum.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, (peak - eq) / peak, 0.0)


def daily_returns(ts: np.ndarray, eq: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Returns of the equity between consecutive UTC day ends over the window's days.

    The first day's return is from the curve's first value (the initial equity); a day without
    a snapshot keeps the last known equity (return 0).
    """
    d0, d1 = lo // DAY_MS, (hi - 1) // DAY_MS
    ends = (np.arange(d0, d1 + 1, dtype=np.int64) + 1) * DAY_MS
    idx = np.searchsorted(ts, ends, side="left") - 1  # last snapshot strictly before the day's end
    closes = eq[np.clip(idx, 0, len(eq) - 1)]
    prev = np.concatenate([[eq[0]], closes[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0, closes / prev - 1.0, 0.0)


def sharpe_sortino(daily: np.ndarray) -> tuple[float | None, float | None]:
    """Annualised (sqrt(365)) Sharpe and Sortino of daily returns; None when undefined.

    Sortino's downside deviation is sqrt(mean(min(r, 0)^2)) over all days (target 0).
    """
    if len(daily) < 2:
        return None, None
    mean = float(daily.mean())
    sd = float(daily.std(ddof=1))
    down = float(np.sqrt(np.mean(np.minimum(daily, 0.0) ** 2)))
    sharpe = mean / sd * math.sqrt(365.0) if sd > 1e-15 else None
    sortino = mean / down * math.sqrt(365.0) if down > 1e-15 else None
    return _f(sharpe), _f(sortino)


def portfolio_block(
    ts: np.ndarray,
    eq: np.ndarray,
    equity: Sequence[EquityPoint],
    t: TradeArrays,
    window: tuple[int, int] | None,
    initial: float | None,
) -> dict[str, Any]:
    """Figures of the portfolio equity curve (see the module docstring)."""
    out: dict[str, Any] = {
        "basis": BASIS_PORTFOLIO,
        "initial_equity": _f(initial),
        "final_equity": None,
        "net_pnl": None,
        "total_return": None,
        "annualised_return": None,
        "sharpe_daily": None,
        "sortino_daily": None,
        "max_drawdown": None,
        "max_drawdown_quote": None,
        "max_drawdown_peak_ts": None,
        "max_drawdown_trough_ts": None,
        "exposure": None,
        "time_in_market": None,
        "max_open_positions": None,
        "turnover": None,
        "turnover_per_day": None,
        "fees_paid": float(t.fees.sum()),
        "days": None,
        "snapshots": len(equity),
        "notes": {
            "exposure": "mean over the snapshots of gross exposure / equity",
            "time_in_market": "share of the snapshots with at least one open position",
            "turnover": "quote value bought + sold over the mean equity of the window",
            "annualised_return": "total return compounded to 365 days; noisy on short windows",
            "sharpe_daily": "mean / stdev of daily returns x sqrt(365)",
            "sortino_daily": "mean / downside deviation (target 0) of daily returns x sqrt(365)",
        },
    }
    if window is not None:
        out["days"] = (window[1] - window[0]) / DAY_MS
    if len(eq) == 0:
        return out
    start = initial if initial is not None else float(eq[0])
    final = float(eq[-1])
    out["initial_equity"] = start
    out["final_equity"] = final
    out["net_pnl"] = final - start
    out["total_return"] = final / start - 1.0 if start > 0 else None
    days = out["days"]
    if days and days > 0 and start > 0:
        out["annualised_return"] = _f((final / start) ** (365.0 / days) - 1.0) if final > 0 else -1.0
    if window is not None:
        out["sharpe_daily"], out["sortino_daily"] = sharpe_sortino(daily_returns(ts, eq, *window))
    dd = drawdown(eq)
    k = int(np.argmax(dd))
    out["max_drawdown"] = float(dd[k])
    if dd[k] > 0:
        p = int(np.argmax(eq[: k + 1]))
        out["max_drawdown_quote"] = float(eq[p] - eq[k])
        out["max_drawdown_peak_ts"] = int(ts[p])
        out["max_drawdown_trough_ts"] = int(ts[k])
    else:
        out["max_drawdown_quote"] = 0.0
    if equity:
        e = np.array([p.equity for p in equity], dtype=np.float64)
        g = np.array([p.gross_exposure for p in equity], dtype=np.float64)
        n_open = np.array([p.open_positions for p in equity], dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(e > 0, g / e, np.nan)
        out["exposure"] = _f(np.nanmean(frac)) if np.isfinite(frac).any() else None
        out["time_in_market"] = float((n_open > 0).mean())
        out["max_open_positions"] = int(n_open.max())
    mean_eq = float(eq.mean())
    if mean_eq > 0:
        out["turnover"] = float(t.notional.sum() / mean_eq)
        if days:
            out["turnover_per_day"] = out["turnover"] / days
    return out


def symbol_block(t: TradeArrays, window: tuple[int, int] | None, initial: float | None) -> dict[str, Any]:
    """Per-trade figures of one symbol, its exposure and its realised-P&L drawdown."""
    st = trade_block(t)
    st["exposure"] = None
    st["max_drawdown"] = None
    st["sharpe_daily"] = None
    st["drawdown_basis"] = BASIS_SYMBOL_DD
    if window is not None:
        minutes = (window[1] - window[0]) / MINUTE_MS
        st["exposure"] = float(t.hold_minutes.sum() / minutes) if minutes > 0 else None
        if initial and initial > 0:
            es = equity_stats(t.exit_ts, t.pnl / initial, Window(*window))
            st["max_drawdown"] = _f(es["max_drawdown"])
            st["sharpe_daily"] = _f(es["sharpe_daily"])
    return st


def iso_week(ms: int) -> str:
    """'2021-W17' for a UTC epoch ms (ISO year and week)."""
    y, w, _ = to_datetime(ms).isocalendar()
    return f"{y}-W{w:02d}"


def _week_start(ms: int) -> int:
    d = to_datetime(ms)
    monday = (d - dt.timedelta(days=d.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(monday.timestamp() * 1000)


def week_blocks(ts: np.ndarray, eq: np.ndarray, t: TradeArrays, window: tuple[int, int] | None) -> dict[str, Any]:
    """ISO weeks touched by the window: the trades that exited in it and the week's return."""
    if window is None:
        return {}
    lo, hi = window
    out: dict[str, Any] = {}
    wk = np.array([iso_week(int(x)) for x in t.exit_ts], dtype=object)
    start = _week_start(lo)
    while start < hi:
        end = start + 7 * DAY_MS
        name = iso_week(start)
        a, b = max(start, lo), min(end, hi)
        st = trade_block(t.take(wk == name))
        st = {k: st[k] for k in ("trades", "win_rate", "profit_factor", "expectancy", "net_pnl", "fees_paid")}
        st.update({"from_ts": a, "to_ts": b, "from": fmt_ts(a), "to": fmt_ts(b), "return": None, "max_drawdown": None})
        if len(eq):
            i0 = int(np.searchsorted(ts, a, side="right")) - 1  # equity as the week starts
            i1 = int(np.searchsorted(ts, b, side="left")) - 1  # last snapshot inside the week
            if i1 >= 0:
                e0 = float(eq[max(i0, 0)])
                seg = eq[max(i0, 0) : i1 + 1]
                st["return"] = float(eq[i1] / e0 - 1.0) if e0 > 0 else None
                st["max_drawdown"] = float(drawdown(seg).max()) if len(seg) else None
        out[name] = st
        start = end
    return out


def benchmark_curve(benchmark: tuple[np.ndarray, np.ndarray] | None, window: tuple[int, int] | None,
                    initial: float | None) -> tuple[np.ndarray, np.ndarray] | None:
    """BTC bought with the initial equity at the first close in the window and held (no costs),
    as (ts, equity); None without a benchmark or with fewer than two closes in the window."""
    if benchmark is None or initial is None:
        return None
    bts = np.asarray(benchmark[0], dtype=np.int64)
    close = np.asarray(benchmark[1], dtype=np.float64)
    keep = np.isfinite(close) & (close > 0)
    if window is not None:
        keep &= (bts >= window[0]) & (bts < window[1])
    bts, close = bts[keep], close[keep]
    if len(close) < 2:
        return None
    return bts, initial * close / close[0]


def benchmark_block(curve: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any] | None:
    """Return and drawdown of the buy-and-hold curve."""
    if curve is None:
        return None
    eq = curve[1]
    return {
        "basis": "BTC buy-and-hold of the initial equity from the first close in the window, no costs",
        "total_return": float(eq[-1] / eq[0] - 1.0),
        "final_equity": float(eq[-1]),
        "max_drawdown": float(drawdown(eq).max()),
    }


def compute_metrics(
    trades: Sequence[ClosedTrade],
    equity: Sequence[EquityPoint],
    benchmark: tuple[np.ndarray, np.ndarray] | None,
    skips: Mapping[str, int],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything `metrics.json` holds, as JSON-able data (None where undefined)."""
    t = TradeArrays(trades)
    initial = _f(meta.get("initial_equity"))
    eq_ts_raw = np.array([p.ts for p in equity], dtype=np.int64)
    window = tested_window(meta, t, eq_ts_raw)
    if initial is None and equity:
        initial = float(equity[0].equity)
    ts, eq = equity_curve(equity, initial, window[0] if window else None)
    symbols = sorted(set(t.symbol.tolist()) | set(meta.get("symbols") or []))
    per_symbol = {s: symbol_block(t.take(t.symbol == s), window, initial) for s in symbols}
    skip_counts = {str(k): int(v) for k, v in sorted(skips.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))}
    return {
        "bases": {
            "overall.trades": BASIS_TRADES, "overall.portfolio": BASIS_PORTFOLIO,
            "per_symbol": f"{BASIS_TRADES}; drawdown and Sharpe of {BASIS_SYMBOL_DD}", "per_week": BASIS_WEEK,
            "benchmark": "BTC buy-and-hold of the initial equity over the window, no costs",
        },
        "window": None if window is None else {
            "from_ts": window[0], "to_ts": window[1], "from": fmt_ts(window[0]), "to": fmt_ts(window[1]),
            "days": (window[1] - window[0]) / DAY_MS,
        },
        "overall": {"trades": trade_block(t), "portfolio": portfolio_block(ts, eq, equity, t, window, initial)},
        "benchmark": benchmark_block(benchmark_curve(benchmark, window, initial)),
        "per_symbol": per_symbol,
        "per_week": week_blocks(ts, eq, t, window),
        "skips": {"counts": skip_counts, "total": int(sum(skip_counts.values())),
                  "protections": int(sum(skip_counts.get(k, 0) for k in PROTECTION_LABELS))},
    }


def json_safe(x: Any) -> Any:
    """Plain JSON data: numpy scalars to Python, NaN / inf to None, tuples to lists."""
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [json_safe(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return _f(x)
    return x
