"""The `exchange:` and `feed:` sections of the config schema."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ExchangeUrls(BaseModel):
    """Overrides of ccxt's endpoint URLs (point them at the exchange simulator, for example)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    public: str | None = None
    private: str | None = None
    ws: str | None = None


class ExchangeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field("binance", pattern=r"^[a-z0-9]+$")
    quote: str = Field("USDT", pattern=r"^[A-Z]{2,10}$")
    urls: ExchangeUrls = ExchangeUrls()
    timeout_ms: int = Field(10_000, ge=100)
    secrets_file: Path | None = Field(
        None, description="YAML file with api_key/api_secret; must be mode 0600"
    )


class FeedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_size: int = Field(256, ge=1)
    flush_interval_s: float = Field(1.0, gt=0)
    backfill_days: int = Field(7, ge=0)
    rest_poll_interval_s: float = Field(5.0, gt=0)
    reconnect_max_backoff_s: float = Field(60.0, gt=0)
