"""The `features:` section of the config schema.

Every window and period of the feature set is here, so a model bundle that stores this section
(plus `spec.feature_names`) fully describes the columns it was trained on. Window lengths are
counted in bars of the block's own timeframe (a 15m block's `vol_windows=(16,)` is 16 x 15m).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ALLOWED_MINUTES = (1, 5, 15, 30, 60, 120, 240)


class TimeframeFeatures(BaseModel):
    """The per-symbol block computed on one timeframe (1m, or 15m/1h bars built from 1m)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minutes: int = Field(description="bar length; 1 = the base 1m bars, else calendar-aligned bars built from 1m")
    return_horizons: tuple[int, ...] = Field(description="log return over h bars, one column each")
    vol_windows: tuple[int, ...] = Field(description="realised vol (RMS of 1-bar log returns) over n bars")
    atr_period: int = Field(14, ge=2, le=200, description="Wilder ATR period")
    atr_pct_window: int = Field(
        description="bars of ATR/close history for its rolling percentile (0..100); include the current bar"
    )
    rsi_period: int = Field(14, ge=2, le=200, description="Wilder RSI period")
    ema_spans: tuple[int, ...] = Field(description="log(close / EMA(span)), EMA with alpha = 2/(span+1)")
    volz_window: int = Field(ge=2, description="volume z-score window (population std), current bar included")
    channel_window: int = Field(ge=2, description="window of the channel position and bars-since-high/low")

    @field_validator("minutes")
    @classmethod
    def _minutes(cls, v: int) -> int:
        if v not in ALLOWED_MINUTES:
            raise ValueError(f"must be one of {ALLOWED_MINUTES} (divides a UTC day), got {v}")
        return v

    @field_validator("return_horizons", "vol_windows", "ema_spans")
    @classmethod
    def _positive_unique(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("must list at least one value")
        if any(x < 1 for x in v):
            raise ValueError(f"values must be >= 1, got {list(v)}")
        if len(set(v)) != len(v):
            raise ValueError(f"values must be unique, got {list(v)}")
        return v

    @field_validator("vol_windows", "ema_spans")
    @classmethod
    def _at_least_two(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(x < 2 for x in v):
            raise ValueError(f"values must be >= 2, got {list(v)}")
        return v

    @field_validator("atr_pct_window")
    @classmethod
    def _pct_window(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"must be >= 2, got {v}")
        return v


# Defaults: the 1m block looks back up to 4 hours (percentile: 1 day), the 15m block up to
# 1 day, the 1h block up to 1 day. Longer recursive windows on 1h bars would push the warm-up
# (see spec.warmup_bars) past a week of the 6 weeks of history the trainer has.
M1 = TimeframeFeatures(
    minutes=1,
    return_horizons=(1, 5, 15, 60, 240),
    vol_windows=(15, 60, 240),
    atr_pct_window=1440,
    ema_spans=(20, 60, 240),
    volz_window=240,
    channel_window=60,
)
M15 = TimeframeFeatures(
    minutes=15,
    return_horizons=(1, 4, 16),
    vol_windows=(16, 96),
    atr_pct_window=96,
    ema_spans=(20, 50),
    volz_window=96,
    channel_window=16,
)
H1 = TimeframeFeatures(
    minutes=60,
    return_horizons=(1, 4, 24),
    vol_windows=(24,),
    atr_pct_window=24,
    ema_spans=(12, 24),
    volz_window=24,
    channel_window=24,
)


class FeatureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference_symbols: tuple[str, ...] = Field(
        ("BTCUSDT", "ETHUSDT"),
        min_length=1,
        description="cross-symbol references; the first also drives lead-lag and the regime",
    )
    timeframes: tuple[TimeframeFeatures, ...] = Field(
        (M1, M15, H1), min_length=1, description="per-symbol blocks; the first must be minutes=1"
    )
    corr_windows: tuple[int, int] = Field(
        (60, 240), description="short and long windows (1m bars) of return correlation with each reference"
    )
    corr_break_level: float = Field(
        0.3,
        gt=-1,
        lt=1,
        description="correlation-break flag: short-window corr below this while the long-window corr is not",
    )
    lead_lags: tuple[int, ...] = Field(
        (1, 2, 3, 4, 5), description="1m log returns of the first reference symbol at these lags (0 = same minute)"
    )
    regime_states: int = Field(3, ge=2, le=3, description="states of the volatility-regime HMM")
    regime_minutes: int = Field(15, description="the HMM filter steps once per this many minutes (calendar-aligned)")
    regime_vol_window: int = Field(
        60, ge=2, le=1440, description="1m returns in the realised vol whose log is the HMM observation"
    )
    settle_eps: float = Field(
        1e-3,
        gt=0,
        lt=0.5,
        description="warm-up lasts until the seed of every recursive feature (EMA, Wilder) has decayed "
        "below this fraction",
    )
    external_daily_file: str | None = Field(None, description="optional CSV of a daily series (e.g. Fear & Greed)")
    external_columns: tuple[str, ...] = Field(
        ("fear_greed",), description="columns of external_daily_file used as features (ext_<name>)"
    )
    external_max_age_days: int = Field(
        3, ge=1, le=60, description="an external value older than this many days is treated as missing"
    )

    @field_validator("reference_symbols")
    @classmethod
    def _refs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(s.replace("/", "").strip().upper() for s in v)
        if len(set(out)) != len(out):
            raise ValueError(f"reference symbols must be unique, got {list(v)}")
        return out

    @field_validator("corr_windows")
    @classmethod
    def _corr(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not (2 <= v[0] < v[1] <= 1440):
            raise ValueError(f"must be (short, long) with 2 <= short < long <= 1440, got {list(v)}")
        return v

    @field_validator("lead_lags")
    @classmethod
    def _lags(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v) or any(not 0 <= x <= 240 for x in v):
            raise ValueError(f"must be unique lags in 0..240, got {list(v)}")
        return v

    @field_validator("regime_minutes")
    @classmethod
    def _regime_minutes(cls, v: int) -> int:
        if v not in ALLOWED_MINUTES:
            raise ValueError(f"must be one of {ALLOWED_MINUTES}, got {v}")
        return v

    @field_validator("external_columns")
    @classmethod
    def _ext_cols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("must list at least one column")
        bad = [c for c in v if not c.replace("_", "").isalnum() or c.lower() != c]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"must be unique lower_case names, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _timeframes(self) -> FeatureConfig:
        mins = [t.minutes for t in self.timeframes]
        if mins[0] != 1:
            raise ValueError(f"timeframes[0].minutes must be 1 (the base 1m block), got {mins[0]}")
        if any(b <= a for a, b in zip(mins, mins[1:], strict=False)):
            raise ValueError(f"timeframes must have strictly increasing minutes, got {mins}")
        return self
