"""The `trading:` section of the config schema (owned by the engine, composed by `bot.config`).

The paper account's starting cash stays in `paper.initial_equity`; fees and slippage in
`costs`; sizing limits in `risk`. This section holds what the engine itself decides: the
"no edge, no trades" floor, the data-quality gates and the sizing mode.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TradingConfig(BaseModel):
    """How the engine turns scores into entries (see `bot.engine` for the order of the gates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_validation_pf: float = Field(
        1.05,
        ge=0,
        description="no edge, no trades: open positions only with a bundle whose out-of-sample (walk-forward) "
        "profit factor is at least this; otherwise watch only. Lower it knowingly.",
    )
    min_validation_trades: int = Field(
        300, ge=0, description="... and whose out-of-sample result has at least this many trades"
    )
    watch_only: bool = Field(False, description="never open positions (decisions are still made and recorded)")
    sizing: Literal["risk", "equal_slots"] = Field(
        "risk",
        description="risk = risk.RiskManager (Half Kelly and limits); equal_slots = the trainer's simulation "
        "(a fixed 1/N of the initial equity per symbol, no other limit), for comparisons",
    )
    reference_fresh_minutes: int = Field(
        1,
        ge=1,
        description="no symbol is entered unless every reference symbol (features.reference_symbols) had a "
        "real candle in each of the last N minutes (1 = the decision minute itself)",
    )
    min_q05: float | None = Field(None, description="optional entry gate on the 5% quantile of the net return")
    entry_cadence_minutes: int = Field(
        1, ge=1, le=1440,
        description="decide entries only at the close of bars ending a UTC-aligned period of this many minutes "
        "(15 / 60: fewer, non-overlapping decisions; a research lever of models.trading.rules.EntryRule)",
    )  # fmt: skip
    entry_cost_multiple: float | None = Field(
        None, gt=0, description="if set, er must exceed this multiple of the round-trip cost (replaces the bundle's er threshold)"
    )
    entry_top_k: int | None = Field(
        None, ge=1, description="only the k highest er of the traded cross-section at a minute may enter"
    )
    entry_regime_states: list[int] | None = Field(
        None, description="enter only while the regime model's most likely state is one of these (0 = calmest); None = any"
    )
    entry_floor: bool = Field(
        False, description="er > 0 instead of the bundle's er threshold: the predicted move must pay the round trip "
        "(the floor of the level-free rules entry_top_k / entry_quantile)",
    )  # fmt: skip
    entry_quantile: float | None = Field(
        None, gt=0, lt=1,
        description="enter only when er exceeds this quantile of the model's own scores at the decision minutes of "
        "the last entry_quantile_days (scores before the decision minute only; none for the first day)",
    )  # fmt: skip
    entry_quantile_days: float = Field(7.0, ge=1, le=90, description="length of the trailing score window of entry_quantile")
    entry_rule: Literal["bundle", "config"] = Field(
        "bundle",
        description="bundle = trade the entry rule a bundle records (bot research writes the rule it chose; bundles "
        "without one use the entry_* keys); config = always the entry_* keys",
    )  # fmt: skip
    paper_min_notional: float = Field(
        5.0, ge=0, description="paper/backtest orders below this value (USDT) are skipped, as Binance does"
    )
    paper_qty_step: float = Field(1e-8, gt=0, description="paper/backtest lot step when no market rules are known")
