"""The `risk:` section of the config schema (owned here, composed by `bot.config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RiskConfig(BaseModel):
    """Sizing rules and hard limits. Fractions are of current equity unless stated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kelly_multiplier: float = Field(0.5, gt=0, le=1, description="0.5 = Half Kelly")
    max_fraction_per_trade: float = Field(0.10, gt=0, le=1)
    risk_per_trade: float = Field(0.005, gt=0, le=0.1, description="equity lost if the SL barrier is hit")
    max_positions: int = Field(5, ge=1, le=100)
    max_gross_exposure: float = Field(1.0, gt=0, le=1, description="spot only: at most all equity")
    max_per_symbol: float = Field(0.20, gt=0, le=1)
    max_orders_per_minute: int = Field(10, ge=1)
    max_correlation: float = Field(0.80, gt=0, le=1)
    correlation_window: int = Field(240, ge=10, description="1m bars of returns for the filter")
    daily_loss_limit: float = Field(0.03, gt=0, le=1)
    max_drawdown: float = Field(0.15, gt=0, le=1)
    kill_switch_flatten: bool = False
    kill_switch_reset: Literal["next_utc_day", "manual"] = "next_utc_day"
    cooldown_after_stop_minutes: int = Field(30, ge=0)
    min_probability: float = Field(0.55, ge=0, le=1, description="meta-label gate")
