"""Online path: one closed 1m bar for every symbol in, one (symbols x features) matrix out.

State is preallocated at construction: ring buffers (`ringbuffer.RingBuffer`) for window
features, per-symbol recursion state for EMA / Wilder ATR and RSI / the HMM filter, and
accumulators that build the 15m and 1h bars from the 1m bars (a higher-timeframe block only
changes when its bar completes). Each update is a fixed number of numpy operations over arrays
of S symbols (windows are O(window)); nothing grows. The rules it follows, and the batch path it
must equal, are in `spec` and `batch`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from models.candles import Candles
from models.features import kernels as K
from models.features.batch import check_regime
from models.features.config import FeatureConfig, TimeframeFeatures
from models.features.errors import BarOrderError, MissingReferenceError
from models.features.external import ExternalDaily, check_external
from models.features.regime import RegimeModel
from models.features.ringbuffer import RingBuffer
from models.features.spec import FeatureLayout, base_returns_capacity, warmup_bars
from models.timeutil import MINUTE_MS


class _TimeframeState:
    """Rings and recursions of one timeframe's block for S symbols; `push` takes one
    completed bar per symbol (NaN for a symbol that has not started) and writes the block."""

    def __init__(self, n: int, tf: TimeframeFeatures, out: np.ndarray):
        self.tf = tf
        self.out = out  # view (S, F_tf) into the engine's float64 staging matrix
        self.close = RingBuffer(n, max(tf.return_horizons) + 1)
        self.high = RingBuffer(n, tf.channel_window)
        self.low = RingBuffer(n, tf.channel_window)
        self.volume = RingBuffer(n, tf.volz_window)
        self.r2 = RingBuffer(n, max(tf.vol_windows))
        self.atrf = RingBuffer(n, tf.atr_pct_window)
        self.atr = K.OnlineWilder(n, tf.atr_period)
        self.gain = K.OnlineWilder(n, tf.rsi_period)
        self.loss = K.OnlineWilder(n, tf.rsi_period)
        self.emas = [K.OnlineEma(n, s) for s in tf.ema_spans]
        self.count = np.zeros(n, dtype=np.int64)
        self.prev_close = np.full(n, np.nan)

    def push(self, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        tf, out = self.tf, self.out
        prev_c = self.prev_close
        self.count += ~np.isnan(c)
        self.close.push(c)
        self.high.push(h)
        self.low.push(lo)
        self.volume.push(v)
        r = K.log_ratio(c, prev_c)
        self.r2.push(r * r)
        j = 0
        for hz in tf.return_horizons:
            out[:, j] = K.log_ratio(c, self.close.last(hz))
            j += 1
        for n in tf.vol_windows:
            out[:, j] = K.rms(self.r2.window(n))
            j += 1
        atr = self.atr.step(K.true_range(h, lo, prev_c))
        atrf = atr / c
        self.atrf.push(atrf)
        out[:, j] = atrf
        pct = K.pct_rank_last(self.atrf.window(tf.atr_pct_window))
        n_atr = self.count - tf.atr_period + 1
        out[:, j + 1] = np.where(n_atr >= tf.atr_pct_window, pct, np.nan)
        gain, loss = K.gain_loss(c, prev_c)
        out[:, j + 2] = K.rsi(self.gain.step(gain), self.loss.step(loss))
        j += 3
        for ema in self.emas:
            out[:, j] = K.log_ratio(c, ema.step(c))
            j += 1
        out[:, j] = K.zscore_last(self.volume.window(tf.volz_window))
        out[:, j + 1] = K.log_ratio(h, lo)
        out[:, j + 2] = K.close_pos(h, lo, c)
        cw = tf.channel_window
        hw, lw = self.high.window(cw), self.low.window(cw)
        out[:, j + 3] = K.chan_pos(hw, lw, c)
        full = self.count >= cw
        out[:, j + 4] = np.where(full, K.bars_since_max(hw), np.nan)
        out[:, j + 5] = np.where(full, K.bars_since_min(lw), np.nan)
        np.copyto(prev_c, c)


class _BarBuilder:
    """Accumulates 1m bars into the current calendar-aligned m-minute bar for S symbols,
    with the same arithmetic as `grid.aggregate` (fmax/fmin, volumes summed left to right)."""

    def __init__(self, n: int, minutes: int):
        self.period_ms = minutes * MINUTE_MS
        self.o, self.h, self.lo, self.c, self.v = (np.full(n, np.nan) for _ in range(5))
        self._newv = np.zeros(n, dtype=bool)

    def add(self, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        np.copyto(self.o, o, where=np.isnan(self.o))
        np.fmax(self.h, h, out=self.h)
        np.fmin(self.lo, lo, out=self.lo)
        np.copyto(self.c, c)
        np.isnan(self.v, out=self._newv)
        np.add(self.v, v, out=self.v, where=~self._newv)
        np.copyto(self.v, v, where=self._newv)

    def completes(self, ts_ms: int) -> bool:
        return (ts_ms + MINUTE_MS) % self.period_ms == 0

    def reset(self) -> None:
        for a in (self.o, self.h, self.lo, self.c, self.v):
            a.fill(np.nan)


class OnlineFeatureEngine:
    """Incremental features for a fixed list of symbols, one closed 1m bar at a time.

    `update(ts_ms, bars)` returns the (S, F) float32 feature matrix (rows in `symbols` order,
    columns `feature_names(cfg, external=external is not None)`). It is a view into a buffer
    the next update overwrites: copy it to keep it. Rows of symbols that are not `warm` are NaN.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        cfg: FeatureConfig,
        regime: RegimeModel | None = None,
        external: ExternalDaily | None = None,
        *,
        returns_capacity: int = 1440,
    ):
        self.symbols = list(symbols)
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("OnlineFeatureEngine: symbols must be unique")
        missing = [r for r in cfg.reference_symbols if r not in self.symbols]
        if missing:
            raise MissingReferenceError(
                f"reference symbol(s) {missing} must be among the engine's symbols "
                f"(add them to `symbols` or change features.reference_symbols)"
            )
        check_regime(regime, cfg)
        check_external(external, cfg)
        self.cfg = cfg
        self.regime = regime
        self.external = external
        self.layout = FeatureLayout.of(cfg, external=external is not None)
        self.warmup = warmup_bars(cfg)
        n, f = len(self.symbols), len(self.layout.names)
        self._ref_idx = [self.symbols.index(r) for r in cfg.reference_symbols]
        self._ref_rows = np.asarray(self._ref_idx, dtype=np.intp)
        self._out64 = np.full((n, f), np.nan)
        self._out32 = np.full((n, f), np.nan, dtype=np.float32)
        self._tfs = [
            _TimeframeState(n, tf, self._out64[:, sl])
            for tf, sl in zip(cfg.timeframes, self.layout.timeframes, strict=True)
        ]
        self._builders = [_BarBuilder(n, tf.minutes) for tf in cfg.timeframes[1:]]
        self._ret = RingBuffer(n, base_returns_capacity(cfg, returns_capacity))
        self._prev_close = np.full(n, np.nan)
        self._first = np.full(n, -1, dtype=np.int64)
        self._n = 0
        self._last_ts: int | None = None
        self._work = np.empty((n, 5))
        self._nan_bars = np.full((n, 5), np.nan)
        self._missing = np.zeros(n, dtype=bool)
        self._filled = np.zeros(n, dtype=bool)
        self._warm = np.zeros(n, dtype=bool)
        self._all_warm = False
        self._regime_period = cfg.regime_minutes * MINUTE_MS
        self._probs = regime.initial() if regime is not None else None
        # the regime filter's observations (one per regime period, with or without a model),
        # kept over two warm-ups: enough to re-run the filter under another regime model when a
        # bundle with the same feature config but a refitted regime is swapped in
        self._regime_obs: deque[float] = deque(maxlen=2 * self.warmup // cfg.regime_minutes + 1)
        self._ext_buf = np.full(len(cfg.external_columns), np.nan)
        if self._probs is not None:
            self._out64[:, self.layout.regime] = self._probs

    # --- public state ----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return self.layout.names

    @property
    def warm(self) -> np.ndarray:
        """(S,) bool: the symbol (and every reference symbol) has `warmup` minutes of history."""
        return self._warm

    @property
    def filled(self) -> np.ndarray:
        """(S,) bool: the symbol had no bar in the last minute and was filled flat."""
        return self._filled

    @property
    def last_ts(self) -> int | None:
        """Open time (epoch ms) of the last minute processed."""
        return self._last_ts

    @property
    def regime_probs(self) -> np.ndarray | None:
        """Current filtered regime probabilities (K,), or None without a regime model."""
        return None if self._probs is None else self._probs.copy()

    # --- another regime model ----------------------------------------------------------------

    def regime_probs_under(self, regime: RegimeModel | None) -> np.ndarray | None:
        """The filtered probabilities `regime` would give now: its filter run from its
        stationary distribution over the observations kept (nothing is changed here).

        Exactly what an engine built with `regime` and fed the same minutes holds, as long as
        this one has seen at most two warm-ups of minutes; beyond that the filter starts two
        warm-ups back (a rebuilt engine's warm-up starts only one back)."""
        check_regime(regime, self.cfg)
        if regime is None:
            return None
        p = regime.initial()
        for x in self._regime_obs:
            regime.step(p, x, out=p)
        return p

    def set_regime(self, regime: RegimeModel | None, probs: np.ndarray | None) -> None:
        """Use `regime` from the next minute on, with `probs` from `regime_probs_under(regime)`.
        Every other buffer is kept: they do not depend on the regime model."""
        if (regime is None) != (probs is None):
            raise ValueError("set_regime: pass the probabilities regime_probs_under(regime) returned")
        self.regime = regime
        self._probs = None if probs is None else np.array(probs, dtype=np.float64)
        cols = self.layout.regime
        self._out64[:, cols] = np.nan if self._probs is None else self._probs
        self._out32[:, cols] = self._out64[:, cols]
        if not self._all_warm:
            self._out32[~self._warm] = np.nan

    def returns_window(self, n: int) -> np.ndarray:
        """(S, n) copy of the last n 1m log returns, oldest first (0 for filled minutes, NaN
        before a symbol's first bar)."""
        return self._ret.window(n).copy()

    # --- feeding -----------------------------------------------------------------------------

    def warm_up(self, history: Mapping[str, Candles]) -> None:
        """Initialise from the last `warmup` minutes of history (by replaying them through
        `update`, so the state is exactly what live updates would have built). Symbols absent
        from `history` start when their first live bar arrives. Call once, before `update`."""
        if self._last_ts is not None:
            raise BarOrderError("warm_up must be called before the first update")
        ends = [int(c.ts[-1]) for s, c in history.items() if s in self.symbols and len(c)]
        if not ends:
            return
        end = max(ends)
        start = end - (self.warmup - 1) * MINUTE_MS
        w = self.warmup
        bars = np.full((w, len(self.symbols), 5), np.nan)
        for i, s in enumerate(self.symbols):
            c = history.get(s)
            if c is None or len(c) == 0:
                continue
            part = c.between(start, end + MINUTE_MS)
            pos = (part.ts - start) // MINUTE_MS
            for k, col in enumerate((part.open, part.high, part.low, part.close, part.volume)):
                bars[pos, i, k] = col
        first = int(np.argmax((~np.isnan(bars[:, :, 3])).any(axis=1)))
        for t in range(first, w):
            self.update(start + t * MINUTE_MS, bars[t])

    def update(self, ts_ms: int, bars: np.ndarray) -> np.ndarray:
        """Process the closed 1m bar opened at `ts_ms` for every symbol. `bars` is float64
        (S, 5) open/high/low/close/volume in `symbols` order; a row with any NaN means the
        symbol had no candle this minute. Minutes skipped since the previous call are filled
        flat for every symbol first. Returns the (S, F) float32 feature matrix (a view)."""
        ts_ms = int(ts_ms)
        bars = np.asarray(bars, dtype=np.float64)
        if bars.shape != self._work.shape:
            raise ValueError(f"bars must have shape {self._work.shape} (symbols x OHLCV), got {bars.shape}")
        if ts_ms % MINUTE_MS:
            raise BarOrderError(f"ts {ts_ms} is not on a whole minute (epoch ms of the candle open)")
        if self._last_ts is not None:
            if ts_ms <= self._last_ts:
                raise BarOrderError(
                    f"bar at ts {ts_ms} is not after the last processed minute {self._last_ts}; "
                    "the feed must deliver each minute once, in order"
                )
            for t in range(self._last_ts + MINUTE_MS, ts_ms, MINUTE_MS):
                self._step(t, self._nan_bars)
        self._step(ts_ms, bars)
        return self._out32

    # --- one minute ------------------------------------------------------------------------

    def _step(self, ts: int, bars: np.ndarray) -> None:
        work, missing, cfg = self._work, self._missing, self.cfg
        np.copyto(work, bars)
        np.isnan(work).any(axis=1, out=missing)
        if (work[:, :4] <= 0).any():
            bad = [self.symbols[i] for i in np.flatnonzero((work[:, :4] <= 0).any(axis=1))]
            raise ValueError(f"non-positive price in the bar at {ts} for {bad}; repair candles before features")
        started = self._first >= 0
        self._first[~missing & ~started] = self._n
        np.logical_and(missing, started, out=self._filled)
        if missing.any():
            pc = self._prev_close
            fill = self._filled
            work[missing] = np.nan
            work[fill, 0] = pc[fill]
            work[fill, 1] = pc[fill]
            work[fill, 2] = pc[fill]
            work[fill, 3] = pc[fill]
            work[fill, 4] = 0.0
        o, h, lo, c, v = work[:, 0], work[:, 1], work[:, 2], work[:, 3], work[:, 4]
        out = self._out64
        with np.errstate(invalid="ignore", divide="ignore"):
            self._ret.push(K.log_ratio(c, self._prev_close))
            np.copyto(self._prev_close, c)
            self._tfs[0].push(o, h, lo, c, v)
            for st, b in zip(self._tfs[1:], self._builders, strict=True):
                b.add(o, h, lo, c, v)
                if b.completes(ts):
                    st.push(b.o, b.h, b.lo, b.c, b.v)
                    b.reset()
            short, long_ = cfg.corr_windows
            col = self.layout.cross.start  # per reference: corr short, corr long, break flag
            dxs, sss = K.deviations(self._ret.window(short))
            dxl, ssl = K.deviations(self._ret.window(long_))
            cs = K.corr_to_rows(dxs, sss, self._ref_rows)
            cl = K.corr_to_rows(dxl, ssl, self._ref_rows)
            out[:, col : col + 3 * len(self._ref_rows) : 3] = cs
            out[:, col + 1 : col + 3 * len(self._ref_rows) : 3] = cl
            out[:, col + 2 : col + 3 * len(self._ref_rows) : 3] = K.corr_break(cs, cl, cfg.corr_break_level)
            r0 = self._ref_idx[0]
            for k, lag in enumerate(cfg.lead_lags):
                out[:, self.layout.lead.start + k] = self._ret.last(lag)[r0]
            if (ts + MINUTE_MS) % self._regime_period == 0:
                w = self._ret.window(cfg.regime_vol_window)[r0 : r0 + 1]
                rv = float(K.rms(w * w)[0])
                x = float(np.log(rv)) if rv > 0 else float("nan")
                self._regime_obs.append(x)
                if self._probs is not None:
                    self.regime.step(self._probs, x, out=self._probs)  # type: ignore[union-attr]
                    out[:, self.layout.regime] = self._probs
        if self.external is not None and self.layout.external is not None:
            self.external.asof_one(ts + MINUTE_MS, self._ext_buf)
            out[:, self.layout.external] = self._ext_buf
        self._n += 1
        self._last_ts = ts
        self._update_warm()
        np.copyto(self._out32, out, casting="same_kind")
        if not self._all_warm:
            self._out32[~self._warm] = np.nan

    def _update_warm(self) -> None:
        if self._all_warm:
            return
        f = self._first
        age = np.where(f >= 0, self._n - f, 0)
        np.greater_equal(age, self.warmup, out=self._warm)
        if not self._warm[self._ref_idx].all():
            self._warm[:] = False
        self._all_warm = bool(self._warm.all())
