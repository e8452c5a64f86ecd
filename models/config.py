"""Config sections owned by `models/`: trading costs, triple-barrier labels and training."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field


class CostConfig(BaseModel):
    """Fees and slippage. Applied in exactly one place: `models.costs`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fee_rate: float = Field(0.001, ge=0, le=0.01, description="per side, 0.001 = 0.1 %")
    slippage_bps: float = Field(2.0, ge=0, le=100, description="per side, adverse")


class LabelConfig(BaseModel):
    """Triple barrier with the seed's dynamic multipliers from the ATR percentile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_bars: int = Field(60, ge=1, le=1440)
    base_k_tp: float = Field(1.5, gt=0)
    high_vol_pct: float = Field(80.0, gt=0, lt=100)
    low_vol_pct: float = Field(20.0, gt=0, lt=100)


def _default_threads() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int = Field(default_factory=_default_threads, ge=1)
    schedule_cron: str = Field("0 3 * * 6", description="APScheduler cron (UTC) for retraining")
    history_days: int = Field(42, ge=1)
    folds: int = Field(3, ge=1)
    optuna_trials: int = Field(0, ge=0)
    er_threshold: float = Field(0.001, description="primary model gate, net return")
