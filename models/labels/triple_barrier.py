"""Triple-barrier labels for long entries, vectorised, one pass per symbol, float32 out.

The trade a label describes (row i = the bar whose close is the decision time):
- entry at the **open of the next bar** (row i+1), which must be the very next minute;
- take profit TP = entry x (1 + k_tp x ATR%), stop loss SL = entry x (1 - k_sl x ATR%), with
  k_tp / k_sl from the ATR percentile by the seed's dynamic rule (`barrier_multipliers`);
- held at most H minutes: the hold covers the bars opening at ts_i + 1 .. ts_i + H minutes.

Inside a bar the order of events is: the open (a gap through a barrier fills at the open,
which is worse than the SL level or better than the TP level), then SL if the low reaches it,
then TP if the high reaches it. So when TP and SL are both inside one bar, SL comes first.
Without a barrier hit the trade exits at the close of the bar opening at ts_i + H minutes.

Missing minutes (the exchange-wide outages in the data) are handled in time, not in rows:
- the decision bar must be followed by the next minute, else there is no label (nobody can
  enter at the open of a bar that does not exist; the decision would be stale);
- a hold that runs into an outage keeps the position: the first bar after the outage is
  checked at its open for a barrier gap, and if the horizon ended during the outage the trade
  exits at that bar's open (the first price anyone could have sold at).

End of the data: a label exists only if the data reaches the end of its horizon
(`resolved_ts`, the open time of the first bar at or after ts_i + H minutes, is present). A
trade that happens to hit a barrier early is still unlabelled if the horizon runs past the end,
so the labels at the end of a window are not biased towards quick exits, and a label never
depends on data after `resolved_ts`. Consequences used elsewhere:
- computing labels on all the data and keeping rows with `resolved_ts < T` gives exactly the
  labels computed on the data truncated at T (`Labels.known_before`);
- purging a training window ending at T means keeping rows with `resolved_ts < T`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.candles import Candles
from models.config import LabelConfig
from models.timeutil import MINUTE_MS
from models.trading.costs import Costs

EXIT_NONE = 0
EXIT_TP = 1
EXIT_SL = 2
EXIT_TIMEOUT = 3
EXIT_GAP_TIMEOUT = 4  # the horizon ended inside an outage: sold at the next bar's open

NO_TS = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class Labels:
    """One symbol's labels, aligned with its candles (NaN / EXIT_NONE where there is none)."""

    ret_net: np.ndarray  # float32: net return of the trade, all costs in
    y: np.ndarray  # float32: 1 if TP was hit first, 0 if SL or timeout
    mae: np.ndarray  # float32: max adverse excursion, 1 - worst low / entry (>= 0)
    hold: np.ndarray  # float32: minutes from the entry open to the exit
    exit_offset: np.ndarray  # int32: rows from the decision row to the exit row
    exit_kind: np.ndarray  # int8: EXIT_*
    resolved_ts: np.ndarray  # int64: open time of the bar that closes the horizon (NO_TS if none)
    tp_frac: np.ndarray  # float32: TP distance as a fraction of the entry price
    sl_frac: np.ndarray  # float32: SL distance as a fraction of the entry price

    def __len__(self) -> int:
        return len(self.ret_net)

    @property
    def valid(self) -> np.ndarray:
        return self.exit_kind != EXIT_NONE

    def known_before(self, end_ms: int) -> np.ndarray:
        """Rows whose label is fully determined by bars opening before `end_ms`."""
        return self.valid & (self.resolved_ts < end_ms)

    def take(self, idx: np.ndarray | slice) -> Labels:
        return Labels(*(getattr(self, f)[idx] for f in self.__slots__))


def barrier_multipliers(atr_pct: np.ndarray, cfg: LabelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(k_tp, k_sl) per row from the ATR percentile (0..100): the seed's `get_dynamic_barriers`.

    pct > high_vol_pct: high volatility, widen (defaults 1.5 x base, 1.0 x base);
    pct < low_vol_pct: low volatility, tighten (0.8 x base, 0.6 x base);
    otherwise base, 0.8 x base. NaN percentile -> NaN (no label, no trade).
    """
    pct = np.asarray(atr_pct, dtype=np.float64)
    base = cfg.base_k_tp
    hi = pct > cfg.high_vol_pct
    lo = pct < cfg.low_vol_pct
    k_tp = np.where(hi, base * cfg.high_vol_tp, np.where(lo, base * cfg.low_vol_tp, base * cfg.mid_vol_tp))
    k_sl = np.where(hi, base * cfg.high_vol_sl, np.where(lo, base * cfg.low_vol_sl, base * cfg.mid_vol_sl))
    nan = np.isnan(pct)
    k_tp[nan] = np.nan
    k_sl[nan] = np.nan
    return k_tp, k_sl


def barrier_fractions(atr_frac: np.ndarray, atr_pct: np.ndarray, cfg: LabelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(tp_frac, sl_frac): barrier distances as fractions of the entry price (also used live)."""
    k_tp, k_sl = barrier_multipliers(atr_pct, cfg)
    atr = np.asarray(atr_frac, dtype=np.float64)
    return k_tp * atr, k_sl * atr


def triple_barrier(
    candles: Candles,
    atr_frac: np.ndarray,
    atr_pct: np.ndarray,
    cfg: LabelConfig,
    costs: Costs,
) -> Labels:
    """Label every row of one symbol (see the module docstring for the exact rules).

    `atr_frac` (ATR as a fraction of the close) and `atr_pct` (its rolling percentile, 0..100)
    are the values known at each row's close. Prices are used in float64 whatever their dtype.
    Cost: H vectorised passes over the rows (H = horizon_bars).
    """
    n = len(candles)
    if len(atr_frac) != n or len(atr_pct) != n:
        raise ValueError(f"atr arrays have {len(atr_frac)}/{len(atr_pct)} rows, candles have {n}")
    ts = candles.ts.astype(np.int64, copy=False)
    o = candles.open.astype(np.float64, copy=False)
    hi = candles.high.astype(np.float64, copy=False)
    lo = candles.low.astype(np.float64, copy=False)
    cl = candles.close.astype(np.float64, copy=False)
    horizon = int(cfg.horizon_bars)

    tp_frac, sl_frac = barrier_fractions(atr_frac, atr_pct, cfg)
    entry = np.full(n, np.nan)
    entry[:-1] = o[1:]
    entry_ts = np.full(n, NO_TS, dtype=np.int64)
    entry_ts[:-1] = ts[1:]
    deadline = ts + horizon * MINUTE_MS
    resolve_row = np.searchsorted(ts, deadline, side="left")
    resolved = resolve_row < n

    with np.errstate(invalid="ignore"):
        ok = (
            (entry_ts - ts == MINUTE_MS)
            & resolved
            & np.isfinite(tp_frac) & np.isfinite(sl_frac)
            & (tp_frac > 0) & (sl_frac > 0) & (sl_frac < 1)
            & np.isfinite(entry) & (entry > 0)
        )  # fmt: skip
    tp = entry * (1.0 + tp_frac)
    sl = entry * (1.0 - sl_frac)

    active = ok.copy()
    exit_px = np.full(n, np.nan)
    exit_off = np.zeros(n, dtype=np.int32)
    exit_kind = np.zeros(n, dtype=np.int8)
    at_open = np.zeros(n, dtype=bool)
    worst = np.where(ok, entry, np.nan)
    last_in = np.zeros(n, dtype=np.int32)

    for k in range(1, horizon + 1):
        m = n - k
        if m <= 0:
            break
        act = active[:m]
        in_win = act & (ts[k:] <= deadline[:m])
        if not in_win.any():
            break  # windows only shrink with k: nothing is in any window from here on
        oj, hj, lj = o[k:], hi[k:], lo[k:]
        tpv, slv = tp[:m], sl[:m]
        gap_sl = in_win & (oj <= slv)
        gap_tp = in_win & ~gap_sl & (oj >= tpv)
        rest = in_win & ~gap_sl & ~gap_tp
        bar_sl = rest & (lj <= slv)
        bar_tp = rest & ~bar_sl & (hj >= tpv)

        # worst price seen while holding: the open for gap exits, the SL level for an SL fill,
        # otherwise the bar's low (for a TP bar, assume its low came first: conservative)
        seen = np.where(gap_sl | gap_tp, oj, np.where(bar_sl, slv, lj))
        np.minimum(worst[:m], seen, out=worst[:m], where=in_win)
        last_in[:m][in_win] = k

        for mask, price, kind, opened in (
            (gap_sl, oj, EXIT_SL, True),
            (gap_tp, oj, EXIT_TP, True),
            (bar_sl, slv, EXIT_SL, False),
            (bar_tp, tpv, EXIT_TP, False),
        ):
            if mask.any():
                idx = np.flatnonzero(mask)
                exit_px[idx] = price[idx]
                exit_kind[idx] = kind
                exit_off[idx] = k
                at_open[idx] = opened
        act &= ~(gap_sl | gap_tp | bar_sl | bar_tp)

    # still open after the last bar of the horizon: time out
    rem = np.flatnonzero(active)
    if rem.size:
        last = rem + last_in[rem]  # last_in >= 1: the entry bar is always inside the window
        exact = ts[last] == deadline[rem]
        r_exact, r_gap = rem[exact], rem[~exact]
        j = last[exact]
        exit_px[r_exact] = cl[j]
        exit_kind[r_exact] = EXIT_TIMEOUT
        exit_off[r_exact] = last_in[r_exact]
        # the horizon ended during an outage: sell at the open of the first bar after it
        jn = last[~exact] + 1  # exists: it is the resolving row
        exit_px[r_gap] = o[jn]
        exit_kind[r_gap] = EXIT_GAP_TIMEOUT
        exit_off[r_gap] = last_in[r_gap] + 1
        at_open[r_gap] = True
        worst[r_gap] = np.minimum(worst[r_gap], o[jn])

    valid = exit_kind != EXIT_NONE
    vi = np.flatnonzero(valid)
    ret = np.full(n, np.nan, dtype=np.float32)
    ret[vi] = costs.net_return(entry[vi], exit_px[vi])
    y = np.full(n, np.nan, dtype=np.float32)
    y[vi] = exit_kind[vi] == EXIT_TP
    mae = np.full(n, np.nan, dtype=np.float32)
    mae[vi] = np.maximum(0.0, 1.0 - worst[vi] / entry[vi])
    hold = np.full(n, np.nan, dtype=np.float32)
    exit_row = vi + exit_off[vi]
    hold[vi] = (ts[exit_row] - entry_ts[vi]) / MINUTE_MS + np.where(at_open[vi], 0.0, 1.0)
    resolved_ts = np.full(n, NO_TS, dtype=np.int64)
    resolved_ts[vi] = ts[resolve_row[vi]]
    exit_off[~valid] = 0
    return Labels(
        ret_net=ret,
        y=y,
        mae=mae,
        hold=hold,
        exit_offset=exit_off,
        exit_kind=exit_kind,
        resolved_ts=resolved_ts,
        tp_frac=tp_frac.astype(np.float32),
        sl_frac=sl_frac.astype(np.float32),
    )
