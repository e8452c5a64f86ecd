"""Frozen baselines the benchmarks compare against (code as it was, kept only to be measured).

`triple_barrier_loop`: the horizon-loop labeller of main 6b68350 (H vectorised passes over the
rows), the baseline of `bench research`'s label figure; `models.labels.triple_barrier` replaced it
with an O(n log H) search that gives the same labels (the bench checks they are equal).
"""

from __future__ import annotations

import numpy as np

from models.candles import Candles
from models.config import LabelConfig
from models.labels.triple_barrier import (
    EXIT_GAP_TIMEOUT,
    EXIT_SL,
    EXIT_TIMEOUT,
    EXIT_TP,
    Labels,
    finish_labels,
    trade_setup,
)
from models.trading.costs import Costs


def triple_barrier_loop(
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
    st = trade_setup(candles, atr_frac, atr_pct, cfg)
    n, ts, o, hi, lo, cl, horizon = st.n, st.ts, st.o, st.hi, st.lo, st.cl, st.horizon
    entry, deadline, ok, tp, sl = st.entry, st.deadline, st.ok, st.tp, st.sl

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

    return finish_labels(st, costs, exit_px, exit_off, exit_kind, at_open, worst)
