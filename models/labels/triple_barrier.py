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
from typing import Any

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
CHUNK_ROWS = 65_536  # rows labelled per pass (the sparse tables span chunk + horizon rows)


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
    *,
    chunk: int = CHUNK_ROWS,
) -> Labels:
    """Label every row of one symbol (see the module docstring for the exact rules).

    `atr_frac` (ATR as a fraction of the close) and `atr_pct` (its rolling percentile, 0..100)
    are the values known at each row's close. Prices are used in float64 whatever their dtype.

    Cost: O(n log H), not O(n H). A row's first barrier touch is the first bar of its window
    whose min(open, low) <= SL or max(open, high) >= TP; it is found by binary lifting over
    sparse tables of block minima / maxima (log2(H) vectorised steps), and the max adverse
    excursion is a range minimum over the same tables. Rows are done in chunks of `chunk`
    (tables over chunk + H rows), so memory stays bounded for a year of 1m bars and H = 1440.
    """
    st = trade_setup(candles, atr_frac, atr_pct, cfg)
    n, ts, o, lo, cl, horizon = st.n, st.ts, st.o, st.lo, st.cl, st.horizon
    tp, sl, entry, deadline, ok = st.tp, st.sl, st.entry, st.deadline, st.ok
    # the last bar inside each row's hold: opening at or before the deadline (>= i + 1 where ok)
    last_in = np.searchsorted(ts, deadline, side="right") - 1

    exit_px = np.full(n, np.nan)
    exit_off = np.zeros(n, dtype=np.int32)
    exit_kind = np.zeros(n, dtype=np.int8)
    at_open = np.zeros(n, dtype=bool)
    worst = np.full(n, np.nan)
    # a bar touches the stop when its open or its low reaches it, the take profit when its open
    # or its high does (NaN-free prices: fmin/fmax only guard against a missing value)
    touch_sl = np.fmin(o, lo)
    touch_tp = np.fmax(o, st.hi)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        rows = np.flatnonzero(ok[a:b]) + a
        if len(rows):
            _label_rows(rows, o, lo, cl, touch_sl, touch_tp, tp, sl, entry, ts, deadline, last_in, horizon,
                        exit_px, exit_off, exit_kind, at_open, worst)  # fmt: skip

    return finish_labels(st, costs, exit_px, exit_off, exit_kind, at_open, worst)


@dataclass(frozen=True)
class TradeSetup:
    """What every row's label trade starts from: prices, entry, barriers, deadline, validity."""

    n: int
    ts: np.ndarray
    o: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    cl: np.ndarray
    horizon: int
    tp_frac: np.ndarray
    sl_frac: np.ndarray
    entry: np.ndarray
    entry_ts: np.ndarray
    deadline: np.ndarray
    resolve_row: np.ndarray
    ok: np.ndarray  # the row has a label trade: next minute present, horizon inside the data, valid barriers
    tp: np.ndarray
    sl: np.ndarray


def trade_setup(candles: Candles, atr_frac: np.ndarray, atr_pct: np.ndarray, cfg: LabelConfig) -> TradeSetup:
    n = len(candles)
    if len(atr_frac) != n or len(atr_pct) != n:
        raise ValueError(f"atr arrays have {len(atr_frac)}/{len(atr_pct)} rows, candles have {n}")
    ts = candles.ts.astype(np.int64, copy=False)
    o = candles.open.astype(np.float64, copy=False)
    horizon = int(cfg.horizon_bars)
    tp_frac, sl_frac = barrier_fractions(atr_frac, atr_pct, cfg)
    entry = np.full(n, np.nan)
    entry[:-1] = o[1:]
    entry_ts = np.full(n, NO_TS, dtype=np.int64)
    entry_ts[:-1] = ts[1:]
    deadline = ts + horizon * MINUTE_MS
    resolve_row = np.searchsorted(ts, deadline, side="left")
    with np.errstate(invalid="ignore"):
        ok = (
            (entry_ts - ts == MINUTE_MS)
            & (resolve_row < n)
            & np.isfinite(tp_frac) & np.isfinite(sl_frac)
            & (tp_frac > 0) & (sl_frac > 0) & (sl_frac < 1)
            & np.isfinite(entry) & (entry > 0)
        )  # fmt: skip
    return TradeSetup(n, ts, o, candles.high.astype(np.float64, copy=False), candles.low.astype(np.float64, copy=False),
                      candles.close.astype(np.float64, copy=False), horizon, tp_frac, sl_frac, entry, entry_ts, deadline,
                      resolve_row, ok, entry * (1.0 + tp_frac), entry * (1.0 - sl_frac))  # fmt: skip


def finish_labels(st: TradeSetup, costs: Costs, exit_px: np.ndarray, exit_off: np.ndarray, exit_kind: np.ndarray,
                  at_open: np.ndarray, worst: np.ndarray) -> Labels:  # fmt: skip
    """The label arrays from each row's exit (price, offset, kind, at an open or not, worst price)."""
    ts, entry, entry_ts = st.ts, st.entry, st.entry_ts
    valid = exit_kind != EXIT_NONE
    vi = np.flatnonzero(valid)
    ret = np.full(st.n, np.nan, dtype=np.float32)
    ret[vi] = costs.net_return(entry[vi], exit_px[vi])
    y = np.full(st.n, np.nan, dtype=np.float32)
    y[vi] = exit_kind[vi] == EXIT_TP
    mae = np.full(st.n, np.nan, dtype=np.float32)
    mae[vi] = np.maximum(0.0, 1.0 - worst[vi] / entry[vi])
    hold = np.full(st.n, np.nan, dtype=np.float32)
    exit_row = vi + exit_off[vi]
    hold[vi] = (ts[exit_row] - entry_ts[vi]) / MINUTE_MS + np.where(at_open[vi], 0.0, 1.0)
    resolved_ts = np.full(st.n, NO_TS, dtype=np.int64)
    resolved_ts[vi] = ts[st.resolve_row[vi]]
    exit_off[~valid] = 0
    return Labels(ret_net=ret, y=y, mae=mae, hold=hold, exit_offset=exit_off, exit_kind=exit_kind, resolved_ts=resolved_ts,
                  tp_frac=st.tp_frac.astype(np.float32), sl_frac=st.sl_frac.astype(np.float32))  # fmt: skip


class _Sparse:
    """Block minima (or maxima) of `x[base:stop]` over lengths 1, 2, 4, ... (a sparse table)."""

    def __init__(self, x: np.ndarray, base: int, stop: int, levels: int, reduce: np.ufunc):
        self.base = base
        self.reduce = reduce
        t = [np.array(x[base:stop], dtype=np.float64)]
        for lev in range(1, levels + 1):
            prev = t[-1]
            w = 1 << (lev - 1)
            if len(prev) <= w:
                break
            t.append(reduce(prev[:-w], prev[w:]))
        self.t = t

    def first_hit(self, start: np.ndarray, last: np.ndarray, beats: Any) -> np.ndarray:
        """Per row, the first index j in [start, last] with beats(value[j]) (else last + 1):
        greedy skips of 2^L bars that hold no hit, longest first (binary lifting)."""
        pos = start.copy()
        for lev in range(len(self.t) - 1, -1, -1):
            w = 1 << lev
            fits = pos + (w - 1) <= last
            if not fits.any():
                continue
            tab = self.t[lev]
            k = np.flatnonzero(fits)
            idx = pos[k] - self.base
            inside = idx < len(tab)
            k, idx = k[inside], idx[inside]
            skip = ~beats(tab[idx], k)
            pos[k[skip]] += w
        return pos

    def range_reduce(self, a: np.ndarray, b: np.ndarray, empty: float) -> np.ndarray:
        """reduce(x[a..b]) per row (inclusive; `empty` where b < a)."""
        out = np.full(len(a), empty)
        k = np.flatnonzero(b >= a)
        if not len(k):
            return out
        length = b[k] - a[k] + 1
        lev = np.minimum(np.frexp(length)[1].astype(np.int64) - 1, len(self.t) - 1)  # floor(log2(length))
        for L in np.unique(lev).tolist():
            m = k[lev == L]
            tab = self.t[L]
            w = 1 << L
            out[m] = self.reduce(tab[a[m] - self.base], tab[b[m] - w + 1 - self.base])
        return out


def _label_rows(rows: np.ndarray, o: np.ndarray, lo: np.ndarray, cl: np.ndarray, touch_sl: np.ndarray,
                touch_tp: np.ndarray, tp: np.ndarray, sl: np.ndarray, entry: np.ndarray, ts: np.ndarray,
                deadline: np.ndarray, last_in: np.ndarray, horizon: int, exit_px: np.ndarray, exit_off: np.ndarray,
                exit_kind: np.ndarray, at_open: np.ndarray, worst: np.ndarray) -> None:  # fmt: skip
    """Label `rows` (all with a valid setup) in place: the module docstring's rules, vectorised."""
    first = rows + 1
    last = last_in[rows]
    base, stop = int(first[0]), int(last.max()) + 1
    levels = max(1, int(horizon).bit_length())
    t_sl = _Sparse(touch_sl, base, stop, levels, np.fmin)
    t_tp = _Sparse(touch_tp, base, stop, levels, np.fmax)
    slv, tpv = sl[rows], tp[rows]
    j_sl = t_sl.first_hit(first, last, lambda v, k: v <= slv[k])
    j_tp = t_tp.first_hit(first, last, lambda v, k: v >= tpv[k])
    j = np.minimum(j_sl, j_tp)
    hit = j <= last
    # the exit bar of a barrier hit, in the bar's own order: a gap at the open through the stop,
    # then through the take profit, then the stop by the low, then the take profit by the high
    h = np.flatnonzero(hit)
    jh = j[h]
    oj, lj = o[jh], lo[jh]
    s, t = slv[h], tpv[h]
    gap_sl = oj <= s
    gap_tp = ~gap_sl & (oj >= t)
    bar_sl = ~gap_sl & ~gap_tp & (lj <= s)
    px = np.where(gap_sl | gap_tp, oj, np.where(bar_sl, s, t))
    kind = np.where(gap_sl | bar_sl, EXIT_SL, EXIT_TP).astype(np.int8)
    seen = np.where(gap_sl | gap_tp, oj, np.where(bar_sl, s, lj))  # worst price on the exit bar
    r = rows[h]
    exit_px[r] = px
    exit_kind[r] = kind
    exit_off[r] = jh - r
    at_open[r] = gap_sl | gap_tp
    t_lo = _Sparse(lo, base, stop, levels, np.fmin)
    before = t_lo.range_reduce(first[h], jh - 1, np.inf)
    worst[r] = np.fmin(np.fmin(entry[r], before), seen)
    # no barrier inside the hold: time out at the close of the bar opening at the deadline, or,
    # when the hold ended inside an outage, at the open of the first bar after it
    q = np.flatnonzero(~hit)
    if len(q):
        r = rows[q]
        lq = last[q]
        low_all = t_lo.range_reduce(first[q], lq, np.inf)
        exact = ts[lq] == deadline[r]
        re, rg = r[exact], r[~exact]
        exit_px[re] = cl[lq[exact]]
        exit_kind[re] = EXIT_TIMEOUT
        exit_off[re] = lq[exact] - re
        worst[re] = np.fmin(entry[re], low_all[exact])
        jn = lq[~exact] + 1  # exists: it is the resolving row
        exit_px[rg] = o[jn]
        exit_kind[rg] = EXIT_GAP_TIMEOUT
        exit_off[rg] = jn - rg
        at_open[rg] = True
        worst[rg] = np.fmin(np.fmin(entry[rg], low_all[~exact]), o[jn])
