"""Textbook references for every feature column, written independently of
`models/features/kernels.py`, `rolling.py`, `grid.py` and `batch.py`.

The batch and the online path share those kernels, so their parity test cannot see an error in
the kernels themselves (a window one bar short, a wrong sign). These references recompute each
column from its definition with plain Python loops, numpy row by row, or pandas rolling windows,
on higher-timeframe bars aggregated here by hand. `reference_column` resolves a column name of
the spec to its reference and raises for a name it does not know, so a column added to the spec
without a reference fails `tests/unit/models/test_features_reference.py`.

Assumes a gap-free stretch of 1m candles that starts on a UTC day boundary (no flat-filled
minutes, every higher-timeframe bar complete).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.candles import Candles

MIN_MS = 60_000  # written here on purpose: the references share nothing with the code they check

# --- the classic indicators -----------------------------------------------------------------


def ref_atr(h: list[float], lo: list[float], c: list[float], n: int) -> list[float]:
    """Wilder (1978): TR = max(H-L, |H-C_prev|, |L-C_prev|); first ATR = mean of the first n TR
    (the first bar's TR is H-L); then ATR = (ATR_prev * (n-1) + TR) / n."""
    tr = [h[0] - lo[0]] + [max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, len(c))]
    out = [math.nan] * len(c)
    out[n - 1] = sum(tr[:n]) / n
    for i in range(n, len(c)):
        out[i] = (out[i - 1] * (n - 1) + tr[i]) / n
    return out


def ref_rsi(c: list[float], n: int) -> list[float]:
    """Wilder RSI: average gain/loss of the first n changes, then Wilder smoothing;
    RSI = 100 - 100 / (1 + avg_gain / avg_loss)."""
    out = [math.nan] * len(c)
    gains = [max(c[i] - c[i - 1], 0.0) for i in range(1, len(c))]
    losses = [max(c[i - 1] - c[i], 0.0) for i in range(1, len(c))]
    ag, al = sum(gains[:n]) / n, sum(losses[:n]) / n
    for i in range(n, len(c)):
        if i > n:
            ag = (ag * (n - 1) + gains[i - 1]) / n
            al = (al * (n - 1) + losses[i - 1]) / n
        out[i] = 100.0 if al == 0 else 100.0 - 100.0 / (1.0 + ag / al)
    return out


def ref_ema(c: list[float], span: int) -> list[float]:
    """EMA with alpha = 2/(span+1), seeded with the first value."""
    a = 2.0 / (span + 1)
    out = [c[0]]
    for x in c[1:]:
        out.append(a * x + (1 - a) * out[-1])
    return out


def aggregate_by_hand(c: Candles, minutes: int) -> tuple[list[int], dict[str, list[float]]]:
    """Calendar bars: (grid index of each bar's last 1m bar, OHLCV lists). Complete bars only."""
    period = minutes * MIN_MS
    ends: list[int] = []
    bars: dict[str, list[float]] = {k: [] for k in ("open", "high", "low", "close", "volume")}
    i = 0
    n = len(c)
    while i < n:
        p = c.ts[i] // period
        j = i
        while j + 1 < n and c.ts[j + 1] // period == p:
            j += 1
        if (c.ts[j] + MIN_MS) % period == 0:  # the period's last minute is in the data
            bars["open"].append(float(c.open[i]))
            bars["high"].append(float(max(c.high[i : j + 1])))
            bars["low"].append(float(min(c.low[i : j + 1])))
            bars["close"].append(float(c.close[j]))
            bars["volume"].append(float(sum(c.volume[i : j + 1])))
            ends.append(j)
        i = j + 1
    return ends, bars


# --- one timeframe block, per bar of that timeframe ----------------------------------------


def _bars_since_extreme(x: np.ndarray, w: int, pick_max: bool) -> np.ndarray:
    """Bars since the most recent bar at the extreme of the last w bars (0 = this bar), row by row."""
    out = np.full(len(x), np.nan)
    for i in range(w - 1, len(x)):
        win = x[i - w + 1 : i + 1]
        at = np.flatnonzero(win == (win.max() if pick_max else win.min()))
        out[i] = (w - 1) - at[-1]
    return out


def _pct_rank(x: np.ndarray, w: int) -> np.ndarray:
    """Share (in percent) of the last w values, this one included, that are <= this one."""
    out = np.full(len(x), np.nan)
    for i in range(w - 1, len(x)):
        win = x[i - w + 1 : i + 1]
        if not np.isnan(win).any():
            out[i] = 100.0 * np.count_nonzero(win <= x[i]) / w
    return out


@dataclass(frozen=True)
class TfShape:
    """The windows of a timeframe block, read by the references from the config section."""

    atr_period: int
    atr_pct_window: int
    rsi_period: int
    volz_window: int
    channel_window: int


def timeframe_reference(bars: dict[str, list[float]], shape: TfShape, suffix: str) -> np.ndarray:
    """One column of a timeframe block (the name after `m1_`/`m15_`/`h1_`), per bar."""
    h, lo, c, v = (np.asarray(bars[k], dtype=np.float64) for k in ("high", "low", "close", "volume"))
    close = pd.Series(c)
    logret = np.log(close / close.shift(1))
    if m := re.fullmatch(r"ret_(\d+)", suffix):
        return np.log(close / close.shift(int(m[1]))).to_numpy()
    if m := re.fullmatch(r"rv_(\d+)", suffix):
        return np.sqrt((logret**2).rolling(int(m[1])).mean()).to_numpy()
    if m := re.fullmatch(r"ema_dist_(\d+)", suffix):
        return np.log(c / np.asarray(ref_ema(c.tolist(), int(m[1]))))
    atr_frac = np.asarray(ref_atr(h.tolist(), lo.tolist(), c.tolist(), shape.atr_period)) / c
    w = shape.channel_window
    if suffix == "atr_frac":
        return atr_frac
    if suffix == "atr_pct":
        return _pct_rank(atr_frac, shape.atr_pct_window)
    if suffix == "rsi":
        return np.asarray(ref_rsi(c.tolist(), shape.rsi_period))
    if suffix == "volz":
        vol = pd.Series(v)
        mean, sd = vol.rolling(shape.volz_window).mean(), vol.rolling(shape.volz_window).std(ddof=0)
        return np.where(sd > 0, (vol - mean) / sd, np.where(sd.isna(), np.nan, 0.0))
    if suffix == "logrange":
        return np.log(h / lo)
    if suffix == "closepos":
        rng = h - lo
        return np.where(rng > 0, (c - lo) / np.where(rng > 0, rng, 1.0), 0.5)
    if suffix == "chanpos":
        top = pd.Series(h).rolling(w).max().to_numpy()
        bottom = pd.Series(lo).rolling(w).min().to_numpy()
        rng = top - bottom
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rng > 0, (c - bottom) / rng, np.where(np.isnan(rng), np.nan, 0.5))
    if suffix == "since_hi":
        return _bars_since_extreme(h, w, pick_max=True)
    if suffix == "since_lo":
        return _bars_since_extreme(lo, w, pick_max=False)
    raise KeyError(f"no independent reference for timeframe column suffix {suffix!r}")


def on_minute_rows(per_bar: np.ndarray, ends: list[int], n_rows: int) -> np.ndarray:
    """Spread a higher-timeframe column over the 1m rows: each row shows the last bar that had
    closed by the row's close (NaN before the first), so the unfinished bar is never seen."""
    out = np.full(n_rows, np.nan)
    for k, e in enumerate(ends):
        stop = ends[k + 1] if k + 1 < len(ends) else n_rows
        out[e:stop] = per_bar[k]
    return out


# --- the regime filter and the external series ---------------------------------------------


def ref_regime_probs(btc: Candles, means, variances, transmat, startprob, minutes: int, vol_window: int) -> np.ndarray:  # noqa: ANN001
    """Forward filter of a Gaussian HMM, by hand, on log realised vol of BTC's 1m log returns
    over the last `vol_window` minutes, observed at the close of each `minutes` calendar
    boundary. Row i holds the state probabilities after the last boundary closed at or before
    row i (the stationary start before the first). A zero or undefined vol is missing: the
    step only propagates the transition."""
    k = len(means)
    c = btc.close.tolist()
    r2 = [math.nan] + [math.log(c[i] / c[i - 1]) ** 2 for i in range(1, len(c))]
    p = [float(x) for x in startprob]
    out = np.empty((len(c), k))
    for i in range(len(c)):
        if (int(btc.ts[i]) + MIN_MS) % (minutes * MIN_MS) == 0:
            pred = [sum(p[a] * float(transmat[a][b]) for a in range(k)) for b in range(k)]
            win = r2[i - vol_window + 1 : i + 1] if i >= vol_window - 1 else [math.nan]
            rv = math.sqrt(sum(win) / len(win)) if not any(math.isnan(x) for x in win) else math.nan
            if rv > 0:
                x = math.log(rv)
                like = [
                    math.exp(-((x - float(means[b])) ** 2) / (2 * float(variances[b]))) / math.sqrt(2 * math.pi * float(variances[b]))
                    for b in range(k)
                ]
                pred = [pred[b] * like[b] for b in range(k)]
            total = sum(pred)
            p = [q / total for q in pred]
        out[i] = p
    return out


def ref_external(ts: np.ndarray, days: list[tuple[str, float]], max_age_days: int) -> np.ndarray:
    """The value of UTC day D is known from D+1 00:00; a 1m bar closing at t sees the latest
    listed day known by t (an empty value stays empty, nothing is carried over it), and nothing
    once that day became known `max_age_days` or more days ago."""
    import datetime as dt

    known = [
        (int(dt.datetime.fromisoformat(d).replace(tzinfo=dt.UTC).timestamp() * 1000) + 86_400_000, v) for d, v in days
    ]
    known.sort()
    out = np.full(len(ts), np.nan)
    for i, t in enumerate(ts.tolist()):
        close = t + MIN_MS
        seen = [(k, v) for k, v in known if k <= close]
        if seen and close - seen[-1][0] < max_age_days * 86_400_000:
            out[i] = seen[-1][1]
    return out


# --- name -> reference ----------------------------------------------------------------------


@dataclass
class ReferenceInputs:
    """Everything the references need: the symbol's and the references' gap-free 1m candles
    (same minutes), the config's windows, a fitted regime model and the external rows."""

    sym: Candles
    refs: dict[str, Candles]
    timeframes: dict[str, tuple[int, TfShape]]  # column prefix -> (minutes, windows)
    corr_windows: tuple[int, int]
    break_level: float
    regime: object  # models.features.regime.RegimeModel
    regime_symbol: str
    regime_minutes: int
    regime_vol_window: int
    external_days: list[tuple[str, float]]
    external_max_age_days: int
    memo: dict[object, object] = field(default_factory=dict)  # hand-built bars, regime filter

    def once(self, key: object, make):  # noqa: ANN001,ANN201
        """`make()` the first time `key` is asked for; the same result afterwards."""
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]


def _log_returns(c: Candles) -> pd.Series:
    s = pd.Series(c.close)
    return np.log(s / s.shift(1))


def _ref_candles(inp: ReferenceInputs, tag: str) -> Candles:
    by_tag = {s.lower(): c for s, c in inp.refs.items()}
    if tag not in by_tag:
        raise KeyError(f"no reference symbol {tag!r}")
    return by_tag[tag]


def reference_column(name: str, inp: ReferenceInputs) -> np.ndarray:
    """The reference values of column `name` on every 1m row of `inp.sym`; KeyError if the name
    is not one this module knows how to compute."""
    n = len(inp.sym)
    prefix, _, rest = name.partition("_")
    if prefix in inp.timeframes:
        minutes, shape = inp.timeframes[prefix]
        if minutes == 1:
            bars = {k: getattr(inp.sym, k).tolist() for k in ("open", "high", "low", "close", "volume")}
            return timeframe_reference(bars, shape, rest)
        ends, bars = inp.once(("bars", minutes), lambda: aggregate_by_hand(inp.sym, minutes))
        return on_minute_rows(timeframe_reference(bars, shape, rest), ends, n)
    if m := re.fullmatch(r"xc_([a-z0-9]+)_(\d+)", name):
        ref = _log_returns(_ref_candles(inp, m[1]))
        return _log_returns(inp.sym).rolling(int(m[2])).corr(ref).to_numpy()
    if m := re.fullmatch(r"xbrk_([a-z0-9]+)", name):
        return corr_break_reference(m[1], inp)[0]
    if m := re.fullmatch(r"lead_([a-z0-9]+)_l(\d+)", name):
        return _log_returns(_ref_candles(inp, m[1])).shift(int(m[2])).to_numpy()
    if m := re.fullmatch(r"regime_p(\d+)", name):
        rg = inp.regime
        probs = inp.once("regime", lambda: ref_regime_probs(
            inp.refs[inp.regime_symbol], rg.means, rg.variances, rg.transmat, rg.startprob, inp.regime_minutes,
            inp.regime_vol_window))  # fmt: skip
        return probs[:, int(m[1])]
    if m := re.fullmatch(r"ext_([a-z0-9_]+)", name):
        return ref_external(inp.sym.ts, inp.external_days, inp.external_max_age_days)
    raise KeyError(f"no independent reference for feature column {name!r}")


def corr_break_reference(tag: str, inp: ReferenceInputs) -> tuple[np.ndarray, np.ndarray]:
    """(flag, distance of the nearer correlation to the level): 1 when the short-window
    correlation is below the level and the long-window one is not. The distance lets a caller
    skip rows where rounding alone could flip the flag."""
    short = reference_column(f"xc_{tag}_{inp.corr_windows[0]}", inp)
    long_ = reference_column(f"xc_{tag}_{inp.corr_windows[1]}", inp)
    lvl = inp.break_level
    flag = np.where(np.isnan(short) | np.isnan(long_), np.nan, ((short < lvl) & (long_ >= lvl)).astype(float))
    return flag, np.minimum(np.abs(short - lvl), np.abs(long_ - lvl))
