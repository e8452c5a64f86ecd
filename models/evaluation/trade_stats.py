"""Trade statistics: the one definition of the figures of a list of trades.

Used by the trainer's simulation (`models.evaluation.trade_sim`), the backtest report
(`bot.backtest.report.metrics`), `bot evaluate` and the research runner, so a PF, a t-statistic
or a bootstrap interval means the same thing (and needs the same number of trades) wherever it
is printed:
- `trade_stats`: trades, win rate, profit factor (None without losses), expectancy (mean net
  return per trade), average win / loss, sum of returns;
- `expectancy_inference`: Student t of the mean trade return with its two-sided p-value, and a
  percentile bootstrap 95 % interval of the mean (fixed seed: the same trades give the same
  interval). Trades are treated as independent, which overlapping trades in correlated symbols
  are not: read the interval as optimistic;
- `sharpe_stats`: per-trade Sharpe ratio (mean / sd of net trade returns), skew and kurtosis;
- `equity_stats`: daily Sharpe and max drawdown of an equity curve built from trade P&L;
- `by_month` / `stability`: the same figures per UTC calendar month of the trades' decision
  minutes, and how many months were profitable -- the months add up to the pooled figures
  (trades and sums of returns; tested).
Every statistic that needs a spread needs at least `MIN_TRADES` trades; below that it is None.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from models.timeutil import DAY_MS

MIN_TRADES = 2  # the fewest trades for a t-statistic, an interval or a Sharpe ratio
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240101


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def trade_stats(ret: np.ndarray) -> dict[str, float | int | None]:
    """Trades, win rate, profit factor (None without losses), expectancy, average win / loss."""
    ret = np.asarray(ret, dtype=np.float64)
    n = len(ret)
    wins, losses = ret[ret > 0], ret[ret <= 0]
    gross_loss = -losses.sum()
    pf = wins.sum() / gross_loss if gross_loss > 0 else (None if n == 0 or wins.sum() == 0 else math.inf)
    return {
        "trades": n,
        "win_rate": float(len(wins) / n) if n else None,
        "profit_factor": _finite_or_none(pf) if pf is not None else None,
        "expectancy": float(ret.mean()) if n else None,
        "avg_win": float(wins.mean()) if len(wins) else None,
        "avg_loss": float(losses.mean()) if len(losses) else None,
        "total_return": float(ret.sum()),
    }


def expectancy_inference(ret: np.ndarray) -> dict[str, Any]:
    """Is the mean net return per trade distinguishable from zero? (see the module docstring)
    Returns trades, expectancy_t, expectancy_p_value, expectancy_ci95 ([lo, hi] or None)."""
    ret = np.asarray(ret, dtype=np.float64)
    n = len(ret)
    out: dict[str, Any] = {"trades": n, "expectancy_t": None, "expectancy_p_value": None, "expectancy_ci95": None}
    if n < MIN_TRADES:
        return out
    sd = float(ret.std(ddof=1))
    if sd > 0:
        from scipy.special import stdtr  # a small C ufunc; scipy is already a dependency

        t = float(ret.mean() / (sd / math.sqrt(n)))
        out["expectancy_t"] = t
        out["expectancy_p_value"] = float(2.0 * stdtr(n - 1, -abs(t)))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = np.empty(BOOTSTRAP_RESAMPLES)
    chunk = max(1, min(BOOTSTRAP_RESAMPLES, 2_000_000 // n))  # bounded memory for many trades
    for lo in range(0, BOOTSTRAP_RESAMPLES, chunk):
        hi = min(BOOTSTRAP_RESAMPLES, lo + chunk)
        means[lo:hi] = ret[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    lo_q, hi_q = np.quantile(means, [0.025, 0.975])
    out["expectancy_ci95"] = [float(lo_q), float(hi_q)]
    return out


def sharpe_stats(ret: np.ndarray) -> dict[str, float | int | None]:
    """Per-trade Sharpe ratio (mean / sd of net trade returns), skew and (non-excess) kurtosis."""
    from scipy.stats import kurtosis, skew

    r = np.asarray(ret, dtype=np.float64)
    n = len(r)
    if n < MIN_TRADES or r.std(ddof=1) == 0:
        return {"n": n, "sharpe": None, "skew": None, "kurt": None}
    return {"n": n, "sharpe": float(r.mean() / r.std(ddof=1)), "skew": float(skew(r)), "kurt": float(kurtosis(r, fisher=False))}


def equity_stats(exit_ts: np.ndarray, pnl: np.ndarray, window: Any) -> dict[str, float | None]:
    """Daily Sharpe and max drawdown of an equity curve that starts at 1 and adds `pnl` at exits
    (`window`: anything with `start` / `end` in ms)."""
    days0 = window.start // DAY_MS
    n_days = max(1, int((window.end - 1) // DAY_MS - days0 + 1))
    daily = np.zeros(n_days)
    if len(pnl):
        np.add.at(daily, (np.asarray(exit_ts) // DAY_MS - days0).clip(0, n_days - 1), pnl)
    sd = daily.std(ddof=1) if n_days > 1 else 0.0
    sharpe = float(daily.mean() / sd * math.sqrt(365.0)) if sd > 0 else None
    order = np.argsort(exit_ts, kind="stable")
    eq = 1.0 + np.concatenate([[0.0], np.cumsum(np.asarray(pnl)[order])])
    peak = np.maximum.accumulate(eq)
    mdd = float(((peak - eq) / peak).max()) if len(eq) else 0.0
    return {"sharpe_daily": sharpe, "max_drawdown": mdd, "days": n_days}


# --- per calendar month -------------------------------------------------------------------


def month_of(ts: np.ndarray) -> np.ndarray:
    """'YYYY-MM' (UTC) of each epoch-ms time."""
    return np.asarray(np.asarray(ts, dtype="datetime64[ms]").astype("datetime64[M]").astype(str), dtype=object)


def months_between(start_ms: int, end_ms: int) -> list[str]:
    """Calendar months touched by [start_ms, end_ms)."""
    if end_ms <= start_ms:
        return []
    a = np.datetime64(int(start_ms), "ms").astype("datetime64[M]")
    b = np.datetime64(int(end_ms) - 1, "ms").astype("datetime64[M]")
    return [str(m) for m in np.arange(a, b + 1)]


def by_month(ts: np.ndarray, ret: np.ndarray, months: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """`trade_stats` of the trades decided in each UTC calendar month (`ts`: decision or entry
    minute); `months` adds months without trades (0 trades), so a period is complete."""
    ts = np.asarray(ts, dtype=np.int64)
    ret = np.asarray(ret, dtype=np.float64)
    key = month_of(ts) if len(ts) else np.empty(0, dtype=object)
    names = sorted(set(key.tolist()) | set(months))
    out = {}
    for m in names:
        st = trade_stats(ret[key == m])
        out[m] = {k: st[k] for k in ("trades", "profit_factor", "expectancy", "win_rate", "total_return")}
    return out


def stability(months: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """How often the edge held: the share of months with PF > 1 (a month without a trade, or
    with no loss and no win, counts as not profitable: it showed no edge), and the worst month
    (lowest PF among months with trades; its expectancy beside it)."""
    n = len(months)
    good = [m for m, f in months.items() if f["trades"] and (f["profit_factor"] is None and (f["expectancy"] or 0) > 0
                                                              or (f["profit_factor"] or 0) > 1)]  # fmt: skip
    traded = {m: f for m, f in months.items() if f["trades"]}

    def pf(f: Mapping[str, Any]) -> float:
        if f["profit_factor"] is not None:
            return float(f["profit_factor"])
        return math.inf if (f["expectancy"] or 0) > 0 else 0.0

    worst = min(traded, key=lambda m: (pf(traded[m]), traded[m]["expectancy"] or 0.0)) if traded else None
    return {
        "months": n,
        "months_pf_above_1": len(good),
        "share_pf_above_1": len(good) / n if n else None,
        "worst_month": worst,
        "worst_pf": None if worst is None else _finite_or_none(pf(traded[worst])),
        "worst_expectancy": None if worst is None else traded[worst]["expectancy"],
    }


def fmt_month(m: str) -> str:
    """'2021-04' -> 'Apr 2021'."""
    return dt.datetime.strptime(m, "%Y-%m").strftime("%b %Y")
