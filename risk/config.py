"""The `risk:` section of the config schema (owned here, composed by `bot.config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ResetRule = Literal["next_utc_day", "manual"]

WEEK_MINUTES = 7 * 24 * 60


class StopLossGuardConfig(BaseModel):
    """Stop-loss guard: a run of stop-loss exits pauses entries (risk/protections.py); off while stop_losses is 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stop_losses: int = Field(
        0, ge=0, le=1000, description="this many stop-loss exits within window_minutes pause entries; 0 = off"
    )
    window_minutes: int = Field(60, ge=1, le=WEEK_MINUTES, description="the window the stop-losses are counted in")
    pause_minutes: int = Field(60, ge=1, le=WEEK_MINUTES, description="how long entries stay paused after the trip")
    scope: Literal["global", "symbol"] = Field(
        "global",
        description="global = the stop-losses of all symbols together pause every symbol; symbol = a symbol's own stop-losses pause "
        "only that symbol",
    )


class LowProfitLockConfig(BaseModel):
    """Low-profit lock: a symbol whose recent closed trades lost too much is locked (risk/protections.py); off while max_loss is 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_loss: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="lock a symbol when the net returns of its recent trades add up to a loss of more than this "
        "fraction (0.02 = -2 %); 0 = off",
    )
    trades: int = Field(
        3, ge=1, le=1000, description="its last this many closed trades (at least this many when window_minutes is set)"
    )
    window_minutes: int = Field(
        0,
        ge=0,
        le=WEEK_MINUTES,
        description="0 = the last `trades` trades whatever their age; > 0 = every trade closed within this many "
        "minutes, once there are at least `trades`",
    )
    lock_minutes: int = Field(240, ge=1, le=WEEK_MINUTES, description="how long the symbol stays locked")


class DrawdownLookbackConfig(BaseModel):
    """Drawdown lookback: a drawdown over the last hours pauses every entry (risk/protections.py); off while max_drawdown is 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_drawdown: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="pause entries when equity is this fraction below its highest value of the last `hours` "
        "(0.02 = 2 %); 0 = off; must be below max_drawdown (the kill switch's)",
    )
    hours: int = Field(6, ge=1, le=168, description="the lookback window")
    pause_minutes: int = Field(60, ge=1, le=WEEK_MINUTES, description="how long entries stay paused after the trip")


class RiskConfig(BaseModel):
    """Sizing rules and hard limits. Fractions are of current equity unless stated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kelly_multiplier: float = Field(0.5, gt=0, le=1, description="0.5 = Half Kelly")
    max_fraction_per_trade: float = Field(
        0.10, gt=0, le=1, description="cap on the Kelly fraction of equity for one new position"
    )
    risk_per_trade: float = Field(0.005, gt=0, le=0.1, description="equity lost if the SL barrier is hit")
    stop_atr_floor: float = Field(
        1.0,
        ge=0,
        description="sizing treats the stop as at least this many ATRs away (a 1m bar can gap "
        "through a tighter stop); 0 = use the SL barrier as is",
    )
    max_positions: int = Field(5, ge=1, le=100, description="open positions at once")
    max_gross_exposure: float = Field(1.0, gt=0, le=1, description="spot only: at most all equity")
    max_per_symbol: float = Field(0.20, gt=0, le=1, description="notional cap of one position")
    max_orders_per_minute: int = Field(
        10, ge=1, description="entries are refused once this many orders were sent in the last 60 s"
    )
    max_correlation: float = Field(
        0.80,
        gt=0,
        le=1,
        description="skip a candidate whose (signed) return correlation with an open position or "
        "a better candidate taken this bar exceeds this",
    )
    correlation_window: int = Field(
        240, ge=10, le=1440, description="1m bars of returns for the filter (at most a day: the engine keeps 1440)"
    )
    daily_loss_limit: float = Field(
        0.03, gt=0, le=1, description="kill switch: equity down this much from the UTC day's start"
    )
    max_drawdown: float = Field(0.15, gt=0, le=1, description="kill switch: equity down this much from its peak")
    kill_switch_flatten: bool = Field(False, description="when the kill switch trips, also close open positions")
    kill_switch_reset: ResetRule = Field(
        "next_utc_day", description="how a daily-loss trip clears: at the next UTC day, or only by hand"
    )
    drawdown_reset: ResetRule = Field(
        "manual",
        description="how a max-drawdown trip clears; a drawdown is a deeper failure than a bad day, "
        "so by default only a human clears it",
    )
    cooldown_after_stop_minutes: int = Field(30, ge=0, description="no new entry in a symbol this long after its stop-loss")
    min_probability: float = Field(0.55, ge=0, le=1, description="meta-label gate")
    stop_loss_guard: StopLossGuardConfig = StopLossGuardConfig()
    low_profit_lock: LowProfitLockConfig = LowProfitLockConfig()
    drawdown_lookback: DrawdownLookbackConfig = DrawdownLookbackConfig()

    @model_validator(mode="after")
    def _lookback_below_the_kill_switch(self) -> RiskConfig:
        # the drawdown from a peak of the last hours is never deeper than the one from the all-time
        # peak: at or above max_drawdown the lookback could never trip before the kill switch
        dd = self.drawdown_lookback.max_drawdown
        if dd > 0 and dd >= self.max_drawdown:
            raise ValueError(f"drawdown_lookback.max_drawdown ({dd:g}) must be < max_drawdown ({self.max_drawdown:g}): "
                             "the kill switch would always trip first")  # fmt: skip
        return self

    @field_validator("min_probability")
    @classmethod
    def _possible(cls, v: float) -> float:
        if v >= 1:
            raise ValueError(f"{v:g} makes every entry impossible (an entry needs p > the gate); 0.55 = the default")
        return v
