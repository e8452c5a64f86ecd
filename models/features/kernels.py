"""The arithmetic of every feature, written once and used by both paths.

Window kernels take 2-D arrays of windows, shape (rows, w), oldest value first along the last
axis; the current value is `[..., -1]`. The online engine passes ring-buffer views (rows =
symbols), the batch path passes sliding-window views (rows = time). Recursive steps are plain
arithmetic on floats or arrays in one fixed order, so the batch loop (Python floats) and the
online update (numpy, vectorised across symbols) produce the same IEEE doubles.

All inputs are float64; NaN means "not available yet" and propagates.
"""

from __future__ import annotations

import numpy as np

# A window whose variance is below this fraction of its squared mean is treated as constant:
# only exactly-constant windows (e.g. zero volume) get there, and there the z-score is 0.
_CONST_REL = 1e-24


def rms(r2w: np.ndarray) -> np.ndarray:
    """Realised volatility from a window of squared log returns: sqrt(mean(r^2))."""
    return np.sqrt(np.add.reduce(r2w, axis=-1) / r2w.shape[-1])


def zscore_last(w: np.ndarray) -> np.ndarray:
    """(x_now - mean) / std over the window (population std); 0 for a constant window."""
    n = w.shape[-1]
    m = np.add.reduce(w, axis=-1) / n
    d = w - m[..., None]
    var = np.add.reduce(d * d, axis=-1) / n
    z = d[..., -1] / np.sqrt(var)
    return np.where(var <= _CONST_REL * m * m, 0.0, z)


def pct_rank_last(w: np.ndarray) -> np.ndarray:
    """Percentile rank (0..100] of the current value in its window: 100 * #(x <= x_now) / w."""
    return np.add.reduce(w <= w[..., -1:], axis=-1, dtype=np.int64) * (100.0 / w.shape[-1])


def chan_pos(hw: np.ndarray, lw: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Position of the close in the window's high-low channel, 0..1 (0.5 for a flat channel)."""
    hi = hw.max(axis=-1)
    lo = lw.min(axis=-1)
    rng = hi - lo
    return np.where(rng > 0, (close - lo) / rng, np.where(np.isnan(rng), np.nan, 0.5))


def bars_since_max(w: np.ndarray) -> np.ndarray:
    """Bars since the most recent bar at the window's maximum (0 = the current bar)."""
    return np.argmax(w[..., ::-1], axis=-1).astype(np.float64)


def bars_since_min(w: np.ndarray) -> np.ndarray:
    """Bars since the most recent bar at the window's minimum (0 = the current bar)."""
    return np.argmin(w[..., ::-1], axis=-1).astype(np.float64)


def deviations(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w - mean, sum of squared deviations) per row: the shared half of a correlation."""
    d = w - (np.add.reduce(w, axis=-1) / w.shape[-1])[..., None]
    return d, np.add.reduce(d * d, axis=-1)


def corr_dev(dx: np.ndarray, ssx: np.ndarray, dy: np.ndarray, ssy: np.ndarray) -> np.ndarray:
    """Pearson correlation per row from `deviations` of both sides (dy/ssy may broadcast).
    NaN when either side is constant over the window (e.g. a flat-filled outage)."""
    cov = np.add.reduce(dx * dy, axis=-1)
    den = np.sqrt(ssx * ssy)
    ok = den > 0
    c = np.where(ok, cov / np.where(ok, den, 1.0), np.nan)
    return np.minimum(np.maximum(c, -1.0), 1.0)


def corr_to_rows(dx: np.ndarray, ss: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Correlation of every row's window with the windows of `rows` (e.g. the reference
    symbols), shape (S, len(rows)), from `deviations`; one matrix product for all pairs."""
    cov = dx @ dx[rows].T
    den = np.sqrt(ss[:, None] * ss[rows][None, :])
    ok = den > 0
    c = np.where(ok, cov / np.where(ok, den, 1.0), np.nan)
    return np.minimum(np.maximum(c, -1.0), 1.0)


def corr(xw: np.ndarray, yw: np.ndarray) -> np.ndarray:
    """Pearson correlation per row of two window arrays (yw may broadcast, e.g. (1, w))."""
    dx, ssx = deviations(xw)
    dy, ssy = deviations(yw)
    return corr_dev(dx, ssx, dy, ssy)


def corr_break(c_short: np.ndarray, c_long: np.ndarray, level: float) -> np.ndarray:
    """1 when the short-window correlation fell below `level` while the long one did not
    (the usual co-movement just broke), else 0; NaN when either is undefined."""
    flag = ((c_short < level) & (c_long >= level)).astype(np.float64)
    return np.where(np.isnan(c_short) | np.isnan(c_long), np.nan, flag)


def true_range(high: np.ndarray, low: np.ndarray, prev_close: np.ndarray) -> np.ndarray:
    """Wilder's true range; on a series' first bar (no previous close) it is high - low."""
    return np.fmax(high - low, np.fmax(np.abs(high - prev_close), np.abs(low - prev_close)))


def gain_loss(close: np.ndarray, prev_close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = close - prev_close
    return np.maximum(d, 0.0), np.maximum(-d, 0.0)


def rsi(avg_gain: np.ndarray, avg_loss: np.ndarray) -> np.ndarray:
    """Wilder RSI 0..100 from the smoothed gains/losses (= 100 - 100/(1+RS)); 50 when both are 0."""
    tot = avg_gain + avg_loss
    return np.where(tot > 0, 100.0 * avg_gain / np.where(tot > 0, tot, 1.0), np.where(np.isnan(tot), np.nan, 50.0))


def log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.log(a / b)


def close_pos(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Where the bar closed inside its own range, 0..1 (0.5 for a flat bar)."""
    rng = high - low
    return np.where(rng > 0, (close - low) / np.where(rng > 0, rng, 1.0), np.where(np.isnan(rng), np.nan, 0.5))


# --- recursions: one step, identical for floats and arrays ---------------------------------


def ema_coefs(span: int) -> tuple[float, float]:
    """(alpha, 1 - alpha) for an EMA of this span, alpha = 2 / (span + 1)."""
    alpha = 2.0 / (span + 1.0)
    return alpha, 1.0 - alpha


def ema_next(prev, x, alpha: float, decay: float):  # noqa: ANN001,ANN201 - float or ndarray
    return prev * decay + x * alpha


def wilder_coefs(n: int) -> tuple[float, float]:
    """(1/n, (n-1)/n): Wilder's (prev*(n-1) + x)/n written as prev*decay + x*gain."""
    return 1.0 / n, (n - 1.0) / n


def wilder_next(prev, x, gain: float, decay: float):  # noqa: ANN001,ANN201 - float or ndarray
    return prev * decay + x * gain


def _first_order(x: np.ndarray, y0: float, gain: float, decay: float) -> np.ndarray:
    """y_k = y_(k-1)*decay + x_k*gain for the values of x, starting after y0 (x has no NaN)."""
    if len(x) == 0:
        return np.empty(0)
    try:
        from scipy.signal import lfilter  # batch only; the live engine never imports scipy
    except ImportError:  # pragma: no cover - scipy comes with lightgbm/catboost
        res = []
        app = res.append
        v = y0
        for xi in x.tolist():
            v = v * decay + xi * gain
            app(v)
        return np.asarray(res, dtype=np.float64)
    y, _ = lfilter([gain], [1.0, -decay], x, zi=[y0 * decay])
    return y


def _dense_from(x: np.ndarray) -> int | None:
    """Index of the first non-NaN value if there is no NaN after it (the usual case on the
    minute grid), else None (the general, NaN-skipping loop is needed)."""
    bad = np.isnan(x)
    if bad.all():
        return None
    f = int(np.argmax(~bad))
    return None if bad[f:].any() else f


def ema_series(x: np.ndarray, span: int) -> np.ndarray:
    """EMA over a series seeded with its first non-NaN value (pandas `adjust=False`); NaN inputs
    are skipped (the value carries), like the online engine's missing symbols."""
    alpha, decay = ema_coefs(span)
    f = _dense_from(x)
    if f is not None:
        out = np.full(len(x), np.nan)
        out[f] = x[f]
        out[f + 1 :] = _first_order(x[f + 1 :], float(x[f]), alpha, decay)
        return out
    res = [np.nan] * len(x)
    v = np.nan
    started = False
    for i, xi in enumerate(x.tolist()):
        if xi == xi:  # not NaN
            if started:
                v = v * decay + xi * alpha
            else:
                v = xi
                started = True
        res[i] = v
    return np.asarray(res, dtype=np.float64)


def wilder_series(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's smoothing: NaN until n values were seen, then their mean (sequential sum / n),
    then prev*(n-1)/n + x/n. NaN inputs are skipped and not counted."""
    gain, decay = wilder_coefs(n)
    nf = float(n)
    f = _dense_from(x)
    if f is not None:
        out = np.full(len(x), np.nan)
        if len(x) - f < n:
            return out
        acc = 0.0
        for xi in x[f : f + n].tolist():
            acc = acc + xi
        v = acc / nf
        out[f + n - 1] = v
        out[f + n :] = _first_order(x[f + n :], v, gain, decay)
        return out
    res = [np.nan] * len(x)
    v = np.nan
    acc = 0.0
    k = 0
    for i, xi in enumerate(x.tolist()):
        if xi == xi:
            k += 1
            if k < n:
                acc = acc + xi
            elif k == n:
                acc = acc + xi
                v = acc / nf
            else:
                v = v * decay + xi * gain
        res[i] = v
    return np.asarray(res, dtype=np.float64)


class OnlineEma:
    """EMA state for S series; same arithmetic as `ema_series` (NaN input: value carries)."""

    def __init__(self, n: int, span: int):
        self.alpha, self.decay = ema_coefs(span)
        self.value = np.full(n, np.nan)
        self._all_started = False

    def step(self, x: np.ndarray) -> np.ndarray:
        v = self.value
        if self._all_started and not np.isnan(x).any():  # the usual case: one expression
            np.copyto(v, ema_next(v, x, self.alpha, self.decay))
            return v
        has = ~np.isnan(x)
        new = has & np.isnan(v)
        run = has & ~new
        np.copyto(v, ema_next(v, x, self.alpha, self.decay), where=run)
        np.copyto(v, x, where=new)
        self._all_started = bool(has.all() and not np.isnan(v).any())
        return v


class OnlineWilder:
    """Wilder smoothing state for S series; same arithmetic and seeding as `wilder_series`
    (NaN input: not counted, value carries)."""

    def __init__(self, n_series: int, period: int):
        self.n = period
        self.nf = float(period)
        self.gain, self.decay = wilder_coefs(period)
        self.value = np.full(n_series, np.nan)
        self.acc = np.zeros(n_series)
        self.count = np.zeros(n_series, dtype=np.int64)
        self._all_running = False

    def step(self, x: np.ndarray) -> np.ndarray:
        v = self.value
        if self._all_running and not np.isnan(x).any():  # the usual case: one expression
            np.copyto(v, wilder_next(v, x, self.gain, self.decay))
            self.count += 1
            return v
        has = ~np.isnan(x)
        self.count += has
        seeding = has & (self.count <= self.n)
        run = has & (self.count > self.n)
        np.copyto(v, wilder_next(v, x, self.gain, self.decay), where=run)
        np.add(self.acc, x, out=self.acc, where=seeding)
        seed_now = has & (self.count == self.n)
        np.copyto(v, self.acc / self.nf, where=seed_now)
        self._all_running = bool((self.count > self.n).all())
        return v
