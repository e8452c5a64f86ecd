"""The feature set: the one ordered list of column names, the warm-up it needs, and the rules
both computation paths (`batch.compute_batch` for training, `online.OnlineFeatureEngine` for
live) follow. A test proves the two paths agree on real data; this module is what they agree on.

Time and missing minutes
------------------------
Features live on the continuous UTC minute grid. A minute in which a symbol has no candle is
treated exactly like a minute in which it did not trade, which is how Binance itself reports a
no-trade minute: a flat bar at the previous close (open = high = low = close = previous close,
volume 0). So a gap resets nothing; a return across a gap is 0 for every filled minute and the
whole move lands on the first real bar after it; windows keep counting minutes. The two
exchange-wide outages in the 2021 data (150 and 284 minutes) therefore appear as flat, zero-
volume stretches: realised volatility and ATR decay through them. Before a symbol's first real
bar there is nothing to fill from, so it is absent (NaN) until then.

* Batch: each series is reindexed onto the minute grid and filled that way; a row is emitted only
  for the symbol's real bars (row i of the output is bar i of the input `Candles`).
* Online: `update(ts, bars)` takes one (S, 5) matrix per minute; a symbol with no candle in that
  minute is a row of NaN (any NaN in a row makes the whole row missing) and is filled the same
  way. If `ts` jumps by more than one minute (an exchange-wide outage), the engine fills every
  skipped minute for every symbol first. The output row of a filled symbol is computed as usual
  and flagged in `OnlineFeatureEngine.filled`; the trainer never sees such rows, the daemon
  should not trade on them.

A row holds what is known at the close of its 1m bar: the bar itself and everything before it.
Higher timeframes (15m, 1h) are calendar-aligned bars built from the 1m bars; their block only
changes when such a bar completes (at the close of its last minute) and the unfinished bar is
never used. The volatility regime steps once per `regime_minutes`, at the same boundaries.

Warm-up
-------
`warmup_bars(cfg)` minutes after a symbol's (and each reference symbol's) first bar, every column
is defined and every recursive feature (EMA, Wilder ATR/RSI) has forgotten its seed to within
`cfg.settle_eps`. Rows before that are NaN in both paths. The online engine is initialised from
exactly that many minutes of history; after it, live values differ from ones computed over a
longer history by at most about `settle_eps` relative (percentile ranks by a few ranks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.features.config import FeatureConfig, TimeframeFeatures

# Columns the trainer's dynamic barriers read: ATR(14, Wilder) of the 1m bars as a fraction of
# the close, and its rolling percentile rank in percent (0..100, the units of
# `labels.high_vol_pct` / `labels.low_vol_pct`) over the last `timeframes[0].atr_pct_window` bars.
ATR_FRAC = "m1_atr_frac"
ATR_PERCENTILE = "m1_atr_pct"

REGIME_PREFIX = "regime_p"
EXTERNAL_PREFIX = "ext_"

# Per-timeframe column order (suffixes after the timeframe prefix); window lengths in names.
_TF_FIXED_AFTER_VOL = ("atr_frac", "atr_pct", "rsi")
_TF_TAIL = ("volz", "logrange", "closepos", "chanpos", "since_hi", "since_lo")


def tf_prefix(minutes: int) -> str:
    """`m1`, `m15`, `h1`, `h4`: the prefix of a timeframe block's columns."""
    return f"h{minutes // 60}" if minutes >= 60 and minutes % 60 == 0 else f"m{minutes}"


def ref_tag(symbol: str) -> str:
    return symbol.lower()


def timeframe_names(tf: TimeframeFeatures) -> list[str]:
    p = tf_prefix(tf.minutes)
    names = [f"{p}_ret_{h}" for h in tf.return_horizons]
    names += [f"{p}_rv_{n}" for n in tf.vol_windows]
    names += [f"{p}_{s}" for s in _TF_FIXED_AFTER_VOL]
    names += [f"{p}_ema_dist_{s}" for s in tf.ema_spans]
    names += [f"{p}_{s}" for s in _TF_TAIL]
    return names


def cross_names(cfg: FeatureConfig) -> list[str]:
    out: list[str] = []
    for ref in cfg.reference_symbols:
        t = ref_tag(ref)
        out += [f"xc_{t}_{w}" for w in cfg.corr_windows]
        out.append(f"xbrk_{t}")
    return out


def lead_names(cfg: FeatureConfig) -> list[str]:
    t = ref_tag(cfg.reference_symbols[0])
    return [f"lead_{t}_l{j}" for j in cfg.lead_lags]


def regime_names(cfg: FeatureConfig) -> list[str]:
    return [f"{REGIME_PREFIX}{k}" for k in range(cfg.regime_states)]


def external_names(cfg: FeatureConfig) -> list[str]:
    return [f"{EXTERNAL_PREFIX}{c}" for c in cfg.external_columns]


def feature_names(cfg: FeatureConfig, *, external: bool = False) -> list[str]:
    """The ordered column names of the feature matrix (both paths). `external=True` appends the
    external daily columns; without an external series they are omitted, never zero-filled."""
    return FeatureLayout.of(cfg, external=external).names


@dataclass(frozen=True)
class FeatureLayout:
    """Column slices of each block in the feature matrix, computed once per config."""

    names: list[str]
    timeframes: tuple[slice, ...]
    cross: slice
    lead: slice
    regime: slice
    external: slice | None

    @staticmethod
    def of(cfg: FeatureConfig, *, external: bool = False) -> FeatureLayout:
        names: list[str] = []
        tfs: list[slice] = []

        def add(block: list[str]) -> slice:
            s = slice(len(names), len(names) + len(block))
            names.extend(block)
            return s

        for tf in cfg.timeframes:
            tfs.append(add(timeframe_names(tf)))
        cross = add(cross_names(cfg))
        lead = add(lead_names(cfg))
        regime = add(regime_names(cfg))
        ext = add(external_names(cfg)) if external else None
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"feature names collide: {dup}; check features.timeframes minutes")
        return FeatureLayout(names, tuple(tfs), cross, lead, regime, ext)


# --- warm-up -----------------------------------------------------------------------------


def settle_wilder(period: int, eps: float) -> int:
    """Bars after its seed until a Wilder average's seed weight ((n-1)/n)^k falls below eps."""
    return math.ceil(math.log(eps) / math.log1p(-1.0 / period))


def settle_ema(span: int, eps: float) -> int:
    """Bars after its seed until an EMA's seed weight (1-alpha)^k falls below eps."""
    return math.ceil(math.log(eps) / math.log1p(-2.0 / (span + 1)))


def timeframe_need(tf: TimeframeFeatures, eps: float) -> int:
    """Bars of this timeframe (counting the symbol's first bar as 1) before its block is valid."""
    atr_settled = tf.atr_period + settle_wilder(tf.atr_period, eps)
    return max(
        max(tf.return_horizons) + 1,
        max(tf.vol_windows) + 1,
        atr_settled + tf.atr_pct_window - 1,
        tf.rsi_period + 1 + settle_wilder(tf.rsi_period, eps),
        max(settle_ema(s, eps) for s in tf.ema_spans) + 1,
        tf.volz_window,
        tf.channel_window,
    )


def warmup_bars(cfg: FeatureConfig) -> int:
    """Minutes of 1m history (the row's own bar included) before a row is fully valid.

    For a timeframe of m minutes that needs k bars the bound is m*(k+1): the symbol's first
    m-minute bar may be partial (the series can start mid-period).
    """
    per_tf = [tf.minutes * (timeframe_need(tf, cfg.settle_eps) + (tf.minutes > 1)) for tf in cfg.timeframes]
    cross = max(cfg.corr_windows) + 1
    lead = max(cfg.lead_lags) + 2
    regime = cfg.regime_minutes * 2 + cfg.regime_vol_window + 1
    return max(*per_tf, cross, lead, regime)


def base_returns_capacity(cfg: FeatureConfig, min_capacity: int = 1440) -> int:
    """1m returns kept by the online engine: the cross-symbol windows, lags and regime window,
    and at least `min_capacity` for `OnlineFeatureEngine.returns_window` (risk correlation)."""
    return max(max(cfg.corr_windows), max(cfg.lead_lags) + 1, cfg.regime_vol_window, min_capacity)
