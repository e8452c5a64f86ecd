"""The `exchange:` and `feed:` sections of the config schema."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Exchange ids the market-data adapter (`bot.marketdata.exchange`) speaks.
SUPPORTED_EXCHANGES = ("binance",)


class ExchangeUrls(BaseModel):
    """Overrides of ccxt's endpoint URLs (point them at the exchange simulator, for example)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    public: str | None = Field(None, description="REST base for public endpoints, e.g. http://127.0.0.1:8900/api/v3")
    private: str | None = Field(None, description="REST base for signed endpoints (usually the same as public)")
    ws: str | None = Field(None, description="spot websocket base; must contain /stream, e.g. ws://127.0.0.1:8900/stream/ws")
    ws_api: str | None = Field(
        None, description="spot WebSocket API (the live broker's user data stream, watch_orders), e.g. ws://127.0.0.1:8900/ws-api/v3"
    )

    @field_validator("public", "private")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith(("http://", "https://")) and len(v.split("://", 1)[1]) > 0):
            raise ValueError(f"must be an http:// or https:// URL, got {v!r}")
        if v is not None and not v.rstrip("/").endswith("/api/v3"):
            # ccxt appends the endpoint (/exchangeInfo, /klines) to this base: without the path
            # every request is a 404, retried forever as "exchange unavailable"
            raise ValueError(f"must be the REST base ending in /api/v3 (e.g. http://127.0.0.1:8900/api/v3), got {v!r}")
        return v

    @field_validator("ws_api")
    @classmethod
    def _ws_api(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("ws://", "wss://")):
            raise ValueError(f"must be a ws:// or wss:// URL, got {v!r}")
        return v

    @field_validator("ws")
    @classmethod
    def _ws(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith(("ws://", "wss://")) and "/stream" in v):
            raise ValueError(f"must be a ws:// or wss:// URL containing /stream, got {v!r}")
        return v


class ExchangeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field("binance", pattern=r"^[a-z0-9]+$")
    quote: str = Field("USDT", pattern=r"^[A-Z]{2,10}$")
    urls: ExchangeUrls = ExchangeUrls()
    timeout_ms: int = Field(10_000, ge=100)
    secrets_file: Path | None = Field(
        None, description="YAML file with api_key/api_secret; must be mode 0600"
    )
    rate_limit_ms: int | None = Field(
        None, ge=0,
        description="minimum ms between REST requests (ccxt's limiter); null = ccxt's value for the exchange",
    )  # fmt: skip
    retry_base_s: float = Field(0.5, gt=0, description="first retry delay after a 429/418/5xx/timeout; doubles per attempt, with jitter")
    retry_max_s: float = Field(30.0, gt=0, description="cap of the retry delay")
    retry_attempts: int = Field(8, ge=1, description="attempts per request for one-shot commands (backfill); the live feed retries forever")

    @field_validator("secrets_file")
    @classmethod
    def _home(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser()

    @field_validator("id")
    @classmethod
    def _supported(cls, v: str) -> str:
        if v not in SUPPORTED_EXCHANGES:
            raise ValueError(f"exchange {v!r} is not supported: the market-data adapter speaks {', '.join(SUPPORTED_EXCHANGES)}")
        return v

    @model_validator(mode="after")
    def _retry_order(self) -> ExchangeConfig:
        if self.retry_max_s < self.retry_base_s:
            raise ValueError(f"retry_max_s ({self.retry_max_s:g}) must be >= retry_base_s ({self.retry_base_s:g})")
        return self


class FeedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_size: int = Field(256, ge=1)
    flush_interval_s: float = Field(1.0, gt=0)
    backfill_days: int = Field(7, ge=0)
    rest_poll_interval_s: float = Field(5.0, gt=0)
    reconnect_max_backoff_s: float = Field(60.0, gt=0)
    reconnect_base_s: float = Field(1.0, gt=0, description="first websocket reconnect delay; doubles per failure up to reconnect_max_backoff_s, with jitter")
    stall_timeout_s: float = Field(
        30.0, gt=0,
        description="websocket silent this long (no kline at all) = stalled: close it, poll REST, reconnect",
    )  # fmt: skip
    rest_concurrency: int = Field(4, ge=1, le=32, description="REST gap-fill requests in flight at once")
    flush_max_rows: int = Field(5_000, ge=1, description="persist early once this many candles are buffered")
    persist_buffer_minutes: int = Field(
        1440, ge=1, le=100_000,
        description="candles per symbol held in memory while the store cannot be written; beyond that the oldest are "
                    "dropped and fetched again from the exchange once the store is back",
    )  # fmt: skip
    minute_timeout_s: float = Field(
        10.0, gt=0,
        description="minute assembler: release minute t with NaN rows for symbols still missing after this long",
    )  # fmt: skip

    @model_validator(mode="after")
    def _backoff_order(self) -> FeedConfig:
        if self.reconnect_max_backoff_s < self.reconnect_base_s:
            raise ValueError(f"reconnect_max_backoff_s ({self.reconnect_max_backoff_s:g}) must be >= "
                             f"reconnect_base_s ({self.reconnect_base_s:g})")  # fmt: skip
        return self
