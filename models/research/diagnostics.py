"""Signal before trading: does the score rank the realised returns at all, and by how much?

- pooled rank IC: Spearman correlation of predicted er and the realised net return over all
  labelled symbol-minutes of a block;
- cross-sectional rank IC: the Spearman correlation across symbols at each minute, averaged;
- t-statistics that respect overlapping labels: labels of neighbouring minutes share most of
  their horizon, so row-level standard errors would be wildly optimistic. The IC is computed
  per UTC day (pooled: within the day; cross-sectional: the mean of that day's minutes), and the
  t-statistic is mean / (sd / sqrt(days)) over the daily values. A label can run into the next
  day, so adjacent days are still slightly dependent; with horizons up to 12 hours this is the
  honest-enough block (Newey-West with one lag is reported beside it);
- deciles of the score (pooled over the block): mean realised gross return (price move, no
  costs) and net return per decile -- the gap between the top decile's gross return and the
  round-trip cost is what decides whether the signal can pay for its trades.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

from models.candles import MINUTE_MS
from models.evaluation.scores import FoldScores
from models.trading.costs import Costs
from models.training.splits import DAY_MS


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return float("nan")
    return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))


def _t_stats(daily: np.ndarray) -> dict[str, float | int | None]:
    d = daily[np.isfinite(daily)]
    n = len(d)
    if n < 2:
        return {"days": n, "mean": float(d.mean()) if n else None, "t": None, "t_nw1": None}
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    t = mean / (sd / math.sqrt(n)) if sd > 0 else None
    # Newey-West, one lag (Bartlett weight 1/2)
    x = d - mean
    gamma0 = float((x * x).mean())
    gamma1 = float((x[1:] * x[:-1]).mean()) if n > 2 else 0.0
    var_nw = (gamma0 + 2 * 0.5 * gamma1) / n
    t_nw = mean / math.sqrt(var_nw) if var_nw > 0 else None
    return {"days": n, "mean": mean, "t": t, "t_nw1": t_nw}


def cross_sectional_ic_by_minute(ts: np.ndarray, sym: np.ndarray, er: np.ndarray, ret: np.ndarray, n_sym: int,
                                 min_symbols: int = 5) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(minute ts, Spearman IC across symbols) for every minute with >= min_symbols scored symbols."""
    minute = ts // MINUTE_MS
    m0 = int(minute.min())
    n_min = int(minute.max()) - m0 + 1
    a = np.full((n_min, n_sym), np.nan)
    b = np.full((n_min, n_sym), np.nan)
    a[minute - m0, sym] = er
    b[minute - m0, sym] = ret
    have = np.isfinite(a) & np.isfinite(b)
    keep = have.sum(axis=1) >= min_symbols
    a, b, have = a[keep], b[keep], have[keep]
    a[~have] = np.nan
    b[~have] = np.nan
    ra = rankdata(a, axis=1, nan_policy="omit")
    rb = rankdata(b, axis=1, nan_policy="omit")
    ra = ra - np.nanmean(ra, axis=1, keepdims=True)
    rb = rb - np.nanmean(rb, axis=1, keepdims=True)
    num = np.nansum(ra * rb, axis=1)
    den = np.sqrt(np.nansum(ra * ra, axis=1) * np.nansum(rb * rb, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ic = np.where(den > 0, num / den, np.nan)
    minutes = (np.flatnonzero(keep) + m0) * MINUTE_MS
    return minutes.astype(np.int64), ic


def signal_diagnostics(fs: FoldScores, costs: Costs) -> dict[str, Any]:
    """IC (pooled and cross-sectional, daily t-stats) and score deciles for one block."""
    m = fs.ok & np.isfinite(fs.er) & np.isfinite(fs.ret)
    er = fs.er[m].astype(np.float64)
    ret = fs.ret[m].astype(np.float64)
    ts = fs.ts[m]
    sym = fs.sym[m].astype(np.int64)
    out: dict[str, Any] = {"rows": int(m.sum())}
    if len(er) < 30:
        out["note"] = "too few labelled rows"
        return out
    day = ts // DAY_MS
    daily_pooled = np.array([_spearman(er[day == d], ret[day == d]) for d in np.unique(day)])
    out["ic_pooled"] = _spearman(er, ret)
    out["ic_pooled_daily"] = _t_stats(daily_pooled)
    mins, ic = cross_sectional_ic_by_minute(ts, sym, er, ret, len(fs.symbols))
    if len(ic):
        mday = mins // DAY_MS
        daily_cs = np.array([np.nanmean(ic[mday == d]) if np.isfinite(ic[mday == d]).any() else np.nan for d in np.unique(mday)])
        out["ic_cross_sectional"] = float(np.nanmean(ic))
        out["ic_cross_sectional_daily"] = _t_stats(daily_cs)
        out["cs_minutes"] = int(np.isfinite(ic).sum())
    edges = np.quantile(er, np.linspace(0, 1, 11))
    dec = np.clip(np.searchsorted(edges[1:-1], er, side="right"), 0, 9)
    gross = np.asarray(costs.gross_return(ret))
    out["deciles"] = [
        {"decile": int(k + 1), "rows": int((dec == k).sum()), "er_mean": float(er[dec == k].mean()),
         "gross_mean": float(gross[dec == k].mean()), "net_mean": float(ret[dec == k].mean())}
        for k in range(10) if (dec == k).any()
    ]  # fmt: skip
    out["round_trip"] = costs.round_trip
    return out


def monthly_ic(blocks: list[FoldScores]) -> dict[str, dict[str, Any]]:
    """Rank IC per UTC calendar month of the blocks (e.g. a variant's inner folds, which share
    their symbols): pooled (Spearman over the month's labelled symbol-minutes) and
    cross-sectional (mean over the month's minutes of the IC across symbols)."""
    from models.evaluation.trade_stats import month_of

    def col(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name)[b.ok & np.isfinite(b.er) & np.isfinite(b.ret)] for b in blocks])

    er, ret, ts, sym = col("er").astype(np.float64), col("ret").astype(np.float64), col("ts"), col("sym").astype(np.int64)
    n_sym = max(len(b.symbols) for b in blocks)
    out: dict[str, dict[str, Any]] = {}
    if not len(er):
        return out
    month = month_of(ts)
    mins, ic = cross_sectional_ic_by_minute(ts, sym, er, ret, n_sym) if len(er) >= 30 else (np.empty(0, np.int64), np.empty(0))
    ic_month = month_of(mins) if len(mins) else np.empty(0, dtype=object)
    for k in sorted(set(month.tolist())):
        sel = month == k
        cs = ic[ic_month == k] if len(ic) else np.empty(0)
        cs = cs[np.isfinite(cs)]
        out[k] = {"rows": int(sel.sum()), "ic_pooled": _nan_none(_spearman(er[sel], ret[sel])),
                  "ic_cross_sectional": float(cs.mean()) if len(cs) else None}  # fmt: skip
    return out


def _nan_none(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)
