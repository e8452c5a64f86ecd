"""The `telegram:` config section. The bot token and chat id are secrets: they come from
$BOT_TELEGRAM_TOKEN / $BOT_TELEGRAM_CHAT_ID or the 0600 `exchange.secrets_file`
(`telegram_token:` / `telegram_chat_id:`), never from config.yaml, and are never logged."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TelegramConfig(BaseModel):
    """Telegram push of the short log lines, and the owner's chat commands (off by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="push lines to Telegram (needs BOT_TELEGRAM_TOKEN and BOT_TELEGRAM_CHAT_ID)")
    api_base: str = Field("https://api.telegram.org", description="Bot API server (a local Bot API server or a test fake)")
    level: Literal["info", "warning", "error"] = Field("info", description="lowest level pushed")
    min_interval_s: float = Field(1.0, ge=0.05, le=60, description="at most one message per this many seconds (Telegram: ~1/s per chat)")
    max_pending: int = Field(500, ge=10, le=100_000, description="lines waiting to be sent; more are dropped and counted")
    max_message_chars: int = Field(4000, ge=200, le=4096, description="lines are batched into messages up to this size")
    timeout_s: float = Field(10.0, gt=0, le=120, description="per request")
    commands: bool = Field(True, description="answer the owner chat's commands: /status /positions /pnl /tail, and the "
                           "operator's /pause /resume /flatten /force_exit /retrain /reload /daily /weekly /performance")
    poll_timeout_s: int = Field(25, ge=0, le=60, description="long-poll wait for chat commands")

    @field_validator("api_base")
    @classmethod
    def _http(cls, v: str) -> str:
        if not (v.startswith(("http://", "https://")) and len(v.split("://", 1)[1]) > 0):
            raise ValueError(f"must be an http:// or https:// URL, got {v!r}")
        return v
