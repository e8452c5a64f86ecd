"""The `features:` section of the config schema."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FeatureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference_symbols: tuple[str, ...] = Field(("BTCUSDT", "ETHUSDT"), min_length=1)
    external_daily_file: str | None = Field(None, description="optional CSV of a daily series (e.g. Fear & Greed)")
