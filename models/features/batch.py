"""Batch path: the feature matrix of one symbol's whole history, vectorised over time.

Used by the trainer, one symbol at a time (memory stays at a few arrays of the symbol's length).
Follows the rules in `spec` (minute grid, flat fill, completed higher-timeframe bars, warm-up)
with the kernels of `kernels` (recursions, ranks, extremes: the same doubles as online) and
their O(n) running-sum forms in `rolling` (volatility, volume z-score, correlation: equal to
rounding), so `online.OnlineFeatureEngine` fed the same candles minute by minute gives the same
numbers; `tests/unit/models/test_features_parity.py` proves it on the real data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models.candles import Candles
from models.features import kernels as K
from models.features.config import FeatureConfig, TimeframeFeatures
from models.features.errors import MissingReferenceError, RegimeModelError
from models.features.external import ExternalDaily, check_external
from models.features.grid import GridBars, TfBars, aggregate, to_grid
from models.features.regime import RegimeModel
from models.features.rolling import (
    apply_windows,
    rolling_corrs,
    rolling_pct_rank,
    rolling_rms,
    rolling_zscore,
)
from models.features.spec import FeatureLayout, timeframe_names, warmup_bars
from models.timeutil import MINUTE_MS


def shift(a: np.ndarray, k: int) -> np.ndarray:
    """a[i - k] at i (NaN where i < k)."""
    out = np.full(len(a), np.nan)
    if k < len(a):
        out[k:] = a[: len(a) - k]
    return out


def _first_valid(a: np.ndarray) -> int:
    ok = ~np.isnan(a)
    return int(np.argmax(ok)) if ok.any() else len(a)


def timeframe_block(b: TfBars, tf: TimeframeFeatures) -> np.ndarray:
    """Feature block (n_bars, len(timeframe_names(tf))) float64 of one timeframe's bars."""
    h, lo, c, v = b.high, b.low, b.close, b.volume
    nb = len(c)
    out = np.empty((nb, len(timeframe_names(tf))))
    idx = np.arange(nb)
    first = _first_valid(c)
    count = idx - first + 1  # bars seen by the symbol including this one
    prev_c = shift(c, 1)
    j = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        for hz in tf.return_horizons:
            out[:, j] = K.log_ratio(c, shift(c, hz))
            j += 1
        r = K.log_ratio(c, prev_c)
        r2 = r * r
        for n in tf.vol_windows:
            out[:, j] = rolling_rms(r2, n)
            j += 1
        atr = K.wilder_series(K.true_range(h, lo, prev_c), tf.atr_period)
        atrf = atr / c
        out[:, j] = atrf
        pct = rolling_pct_rank(atrf, tf.atr_pct_window)
        n_atr = count - tf.atr_period + 1  # atr values available including this one
        out[:, j + 1] = np.where(n_atr >= tf.atr_pct_window, pct, np.nan)
        gain, loss = K.gain_loss(c, prev_c)
        out[:, j + 2] = K.rsi(K.wilder_series(gain, tf.rsi_period), K.wilder_series(loss, tf.rsi_period))
        j += 3
        for s in tf.ema_spans:
            out[:, j] = K.log_ratio(c, K.ema_series(c, s))
            j += 1
        out[:, j] = rolling_zscore(v, tf.volz_window)
        out[:, j + 1] = K.log_ratio(h, lo)
        out[:, j + 2] = K.close_pos(h, lo, c)
        cw = tf.channel_window
        full = count >= cw
        out[:, j + 3] = apply_windows(lambda hw, lw, cwin: K.chan_pos(hw, lw, cwin[:, -1]), [h, lo, c], cw)
        out[:, j + 4] = np.where(full, apply_windows(K.bars_since_max, [h], cw), np.nan)
        out[:, j + 5] = np.where(full, apply_windows(K.bars_since_min, [lo], cw), np.nan)
    return out


def _returns(g: GridBars) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return K.log_ratio(g.close, shift(g.close, 1))


def _regime_positions(t0_min: int, n: int, minutes: int) -> np.ndarray:
    """Grid indices whose 1m bar closes a `minutes` boundary (the regime filter steps there)."""
    first = (-(t0_min + 1)) % minutes
    return np.arange(first, n, minutes)


def _regime_x(r: np.ndarray, pos: np.ndarray, window: int) -> np.ndarray:
    """log realised vol over `window` 1m returns ending at each position; NaN if undefined or 0."""
    x = np.full(len(pos), np.nan)
    ok = pos >= window - 1
    if ok.any():
        r2 = r * r
        wins = sliding_window_view(r2, window)[pos[ok] - window + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            rv = K.rms(wins)
            x[ok] = np.log(np.where(rv > 0, rv, np.nan))
    return x


def regime_observations(ref: Candles, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """The HMM's observation sequence from the regime symbol's candles (the first reference
    symbol): (ts_ms of the closing 1m bar's open at each boundary, x). Fit `RegimeModel` on
    the part of this that lies in the training window only."""
    if len(ref) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    t0 = int(ref.ts[0] // MINUTE_MS)
    n = int(ref.ts[-1] // MINUTE_MS) - t0 + 1
    g = to_grid(ref, t0, n, what=cfg.reference_symbols[0])
    pos = _regime_positions(t0, n, cfg.regime_minutes)
    return (t0 + pos) * MINUTE_MS, _regime_x(_returns(g), pos, cfg.regime_vol_window)


def regime_meta(cfg: FeatureConfig) -> dict[str, object]:
    """What the observation is; stored in the model so a mismatched config is caught at load."""
    return {
        "observable": "log_realised_vol_1m",
        "symbol": cfg.reference_symbols[0],
        "minutes": cfg.regime_minutes,
        "vol_window": cfg.regime_vol_window,
    }


def fit_regime(ref: Candles, cfg: FeatureConfig, *, seed: int = 0) -> RegimeModel:
    """Fit the regime HMM on the regime symbol's candles (pass training data only)."""
    _, x = regime_observations(ref, cfg)
    return RegimeModel.fit(x, n_states=cfg.regime_states, seed=seed, meta=regime_meta(cfg))


def check_regime(regime: RegimeModel | None, cfg: FeatureConfig) -> None:
    if regime is None:
        return
    if regime.n_states != cfg.regime_states:
        raise RegimeModelError(
            f"regime model has {regime.n_states} states but features.regime_states is {cfg.regime_states}"
        )
    want = regime_meta(cfg)
    bad = {k: regime.meta[k] for k in want if k in regime.meta and regime.meta[k] != want[k]}
    if bad:
        raise RegimeModelError(f"regime model was fitted on a different observation {bad}; config wants {want}")


_REGIME_CACHE: list[tuple[object, ...]] = []


def _regime_probs(
    regime: RegimeModel, ref0: Candles, t0: int, n: int, cfg: FeatureConfig, obs: Callable[[], np.ndarray]
) -> np.ndarray:
    """The regime filter over the grid. It depends only on the regime symbol's candles, so the
    last result is kept for the next symbol of a training run (same model, same candles object,
    same grid). The cache holds its keys, so identity comparisons cannot be fooled by reuse."""
    key = (regime, ref0.close, ref0.ts, t0, n, cfg.regime_minutes, cfg.regime_vol_window)
    if _REGIME_CACHE:
        old = _REGIME_CACHE[0]
        if all(a is b if isinstance(a, (RegimeModel, np.ndarray)) else a == b for a, b in zip(old[:-1], key, strict=True)):
            return old[-1]  # type: ignore[return-value]
    probs = regime.filter(obs())
    probs.flags.writeable = False
    _REGIME_CACHE[:] = [(*key, probs)]
    return probs


def compute_batch(
    sym: Candles,
    refs: Mapping[str, Candles],
    cfg: FeatureConfig,
    regime: RegimeModel | None = None,
    external: ExternalDaily | None = None,
) -> np.ndarray:
    """Features of every bar of `sym`: float32 (len(sym), len(feature_names(cfg, external=...))).

    Row i holds what is known at the close of sym's bar i, so labels computed on the same
    Candles align row for row. `refs` maps each of `cfg.reference_symbols` to its candles (the
    symbol itself may be one of them; pass its candles there too). Rows in the first
    `warmup_bars(cfg)` minutes of sym's or a reference's history are NaN. Without a regime
    model the regime columns are NaN; without an external series its columns are omitted.
    """
    layout = FeatureLayout.of(cfg, external=external is not None)
    check_regime(regime, cfg)
    check_external(external, cfg)
    missing = [r for r in cfg.reference_symbols if r not in refs]
    if missing:
        raise MissingReferenceError(
            f"compute_batch needs candles of the reference symbol(s) {missing} "
            f"(features.reference_symbols = {list(cfg.reference_symbols)})"
        )
    n_rows = len(sym)
    out = np.full((n_rows, len(layout.names)), np.nan, dtype=np.float32)
    if n_rows == 0:
        return out
    ref_c = [refs[r] for r in cfg.reference_symbols]
    t0 = int(min([sym.ts[0], *(c.ts[0] for c in ref_c if len(c))]) // MINUTE_MS)
    n = int(sym.ts[-1] // MINUTE_MS) - t0 + 1
    gs = to_grid(sym, t0, n, what="sym")
    grs = [to_grid(c, t0, n, what=name) for c, name in zip(ref_c, cfg.reference_symbols, strict=True)]
    rows = (sym.ts // MINUTE_MS - t0).astype(np.int64)

    for tf, sl in zip(cfg.timeframes, layout.timeframes, strict=True):
        bars = aggregate(gs, tf.minutes)
        block = timeframe_block(bars, tf)
        if tf.minutes == 1:
            out[:, sl] = block[rows]
        else:
            idx = np.searchsorted(bars.end_pos, rows, side="right") - 1
            ok = idx >= 0
            out[ok, sl] = block[idx[ok]]

    r_sym = _returns(gs)
    r_refs = [_returns(g) for g in grs]
    short, long_ = cfg.corr_windows
    col = layout.cross.start
    with np.errstate(invalid="ignore", divide="ignore"):
        c_short = rolling_corrs(r_sym, r_refs, short)
        c_long = rolling_corrs(r_sym, r_refs, long_)
        for cs_all, cl_all in zip(c_short, c_long, strict=True):
            cs, cl = cs_all[rows], cl_all[rows]
            out[:, col] = cs
            out[:, col + 1] = cl
            out[:, col + 2] = K.corr_break(cs, cl, cfg.corr_break_level)
            col += 3
    for k, lag in enumerate(cfg.lead_lags):
        out[:, layout.lead.start + k] = shift(r_refs[0], lag)[rows]

    if regime is not None:
        pos = _regime_positions(t0, n, cfg.regime_minutes)
        probs = _regime_probs(regime, ref_c[0], t0, n, cfg, lambda: _regime_x(r_refs[0], pos, cfg.regime_vol_window))
        idx = np.searchsorted(pos, rows, side="right") - 1
        reg = np.broadcast_to(regime.startprob, (n_rows, regime.n_states)).copy()
        ok = idx >= 0
        reg[ok] = probs[idx[ok]]
        out[:, layout.regime] = reg

    if external is not None and layout.external is not None:
        out[:, layout.external] = external.asof(sym.ts + MINUTE_MS)

    w = warmup_bars(cfg)
    valid = rows - gs.first + 1 >= w
    for g in grs:
        valid &= rows - g.first + 1 >= w
    out[~valid] = np.nan
    return out
