"""Config sections owned by `models/`: trading costs, triple-barrier labels and training; and
`Settings`, the sections the trainer reads (stored in every bundle)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.features.config import FeatureConfig


class CostConfig(BaseModel):
    """Fees and slippage. Applied in exactly one place: `models.trading.costs`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fee_rate: float = Field(0.001, ge=0, le=0.01, description="per side, 0.001 = 0.1 %")
    slippage_bps: float = Field(2.0, ge=0, le=100, description="per side, adverse")

    @field_validator("fee_rate", mode="before")
    @classmethod
    def _fraction(cls, v: object) -> object:
        """A fee typed in percent (0.1 for 0.1 %) is 100 times too high: say so, not just the bound."""
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0.01:
            raise ValueError(f"must be <= 0.01 (a fraction per side: 0.001 = 0.1 %), got {v!r}: a percentage?")
        return v


class LabelConfig(BaseModel):
    """Triple barrier with the seed's dynamic multipliers from the ATR percentile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_bars: int = Field(60, ge=1, le=1440, description="max holding time in 1m bars (minutes)")
    base_k_tp: float = Field(1.5, gt=0, description="base barrier width in ATRs (the seed's base_k_tp)")
    high_vol_pct: float = Field(80.0, gt=0, lt=100, description="ATR percentile above which barriers widen")
    low_vol_pct: float = Field(20.0, gt=0, lt=100, description="ATR percentile below which barriers tighten")
    high_vol_tp: float = Field(1.5, gt=0, description="TP multiple of base_k_tp when ATR pct > high_vol_pct")
    high_vol_sl: float = Field(1.0, gt=0, description="SL multiple of base_k_tp when ATR pct > high_vol_pct")
    mid_vol_tp: float = Field(1.0, gt=0, description="TP multiple of base_k_tp in between")
    mid_vol_sl: float = Field(0.8, gt=0, description="SL multiple of base_k_tp in between")
    low_vol_tp: float = Field(0.8, gt=0, description="TP multiple of base_k_tp when ATR pct < low_vol_pct")
    low_vol_sl: float = Field(0.6, gt=0, description="SL multiple of base_k_tp when ATR pct < low_vol_pct")
    target: Literal["absolute", "cross_sectional"] = Field(
        "absolute",
        description="what the return models learn: the trade's own net return, or its net return minus the mean of all "
        "symbols' at the same minute (ranking across symbols); simulated trades always earn the absolute return",
    )  # fmt: skip

    @model_validator(mode="after")
    def _pct_order(self) -> LabelConfig:
        if self.low_vol_pct >= self.high_vol_pct:
            raise ValueError(f"low_vol_pct ({self.low_vol_pct}) must be < high_vol_pct ({self.high_vol_pct})")
        return self


def default_threads() -> int:
    """All cores but one (the live event loop keeps a core), at least 1."""
    return max(1, (os.cpu_count() or 2) - 1)


class LightGBMParams(BaseModel):
    """LightGBM parameters shared by the four primary targets (Optuna may override some)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_leaves: int = Field(31, ge=2, le=4096)
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_boost_round: int = Field(400, ge=1, description="upper bound; early stopping on the calibration split")
    early_stopping_rounds: int = Field(30, ge=1)
    min_data_in_leaf: int = Field(200, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.7, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    max_bin: int = Field(63, ge=7, le=255, description="63 keeps each binned value in one byte")


class CatBoostParams(BaseModel):
    """CatBoost `er` model (the second ensemble member)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(300, ge=1)
    depth: int = Field(6, ge=1, le=12)
    learning_rate: float = Field(0.08, gt=0, le=1)
    border_count: int = Field(64, ge=8, le=255)
    max_rows: int = Field(
        1_000_000, ge=1000,
        description="CatBoost trains on at most this many rows (a time-aligned subsample of the LightGBM rows) to bound memory",
    )  # fmt: skip


class TrainConfig(BaseModel):
    """Batch trainer, walk-forward evaluation and leakage audit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int = Field(0, ge=0, description="worker threads for LightGBM/CatBoost; 0 = all cores but one")
    history_days: int = Field(42, ge=1, description="default training range: this many days before the last candle (from a UTC midnight)")
    folds: int = Field(2, ge=0, description="walk-forward folds (0 = fit only, no report)")
    fold_days: float = Field(14.0, gt=0, description="length of each walk-forward validation block")
    embargo_bars: int = Field(60, ge=0, description="gap between a training window and its validation block; must be >= labels.horizon_bars")
    calib_fraction: float = Field(
        0.2, gt=0, lt=0.5,
        description="tail of each training window (after an embargo) held out for early stopping, ensemble weights and the meta model",
    )  # fmt: skip
    row_stride: int = Field(5, ge=1, description="train on 1 row in N (aligned on the minute of ts): 1m rows with 60-bar labels are highly redundant")
    max_train_rows: int = Field(2_000_000, ge=10_000, description="the stride grows until the training rows fit under this")
    regime_fit_days: float = Field(14.0, gt=0, description="the regime model is fitted on the first N days of the training range")
    optuna_trials: int = Field(0, ge=0)
    er_threshold: float = Field(0.001, description="primary model gate, net return")
    meta_threshold: float = Field(0.55, ge=0, le=1, description="meta probability gate in the simulated trading (live gating: risk.min_probability)")
    meta_min_samples: int = Field(300, ge=10, description="fewer primary candidates than this in the calibration split: no meta model (gate open)")
    meta_candidate_quantile: float = Field(
        0.95, ge=0, lt=1,
        description="the meta model also learns from calibration rows whose er is in the top (1 - q) even below er_threshold, so it has enough candidates",
    )  # fmt: skip
    importance_cum: float = Field(0.999, gt=0, le=1, description="keep the features covering this share of total gain importance")
    seed_metric_threshold: float = Field(0.001, description="the seed's overlapping 'er > x' PF, reported beside the honest simulation")
    audit: bool = Field(True, description="run the leakage audit (permuted labels + feature look-ahead check)")
    audit_block_bars: int = Field(1440, ge=10, description="labels are permuted within blocks of this many bars per symbol")
    audit_max_pf: float = Field(1.2, gt=0, description="the audit fails if the permuted-label model trades with a PF above this")
    seed: int = Field(0, ge=0)
    lightgbm: LightGBMParams = LightGBMParams()
    catboost: CatBoostParams = CatBoostParams()

    @field_validator("meta_threshold")
    @classmethod
    def _possible(cls, v: float) -> float:
        if v >= 1:
            raise ValueError(f"{v:g} lets no simulated trade through (a trade needs p > the gate): every bundle "
                             "would validate with no trades")  # fmt: skip
        return v

    #: Keys older bundles recorded in their train config that moved elsewhere (the retrain cron
    #: became `daemon.retrain_cron`); dropped when such a bundle is read, so it stays usable.
    RETIRED_KEYS: ClassVar[tuple[str, ...]] = ("schedule_cron",)

    @classmethod
    def from_bundle(cls, data: dict[str, Any]) -> TrainConfig:
        """The train config a bundle recorded, without keys that no longer belong here."""
        return cls.model_validate({k: v for k, v in data.items() if k not in cls.RETIRED_KEYS})

    @property
    def n_threads(self) -> int:
        return self.threads or default_threads()


@dataclass(frozen=True)
class Settings:
    """The config sections the trainer reads (all stored in the bundle)."""

    features: FeatureConfig
    labels: LabelConfig
    costs: CostConfig
    train: TrainConfig

    @staticmethod
    def default() -> Settings:
        return Settings(FeatureConfig(), LabelConfig(), CostConfig(), TrainConfig())

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).model_dump(mode="json") for k in ("features", "labels", "costs", "train")}
