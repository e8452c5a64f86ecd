"""The `dashboard:` section of the config schema (composed into `bot.config.Config`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class DashboardConfig(BaseModel):
    """The local read-only dashboard and Prometheus /metrics that `bot run` serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="serve the dashboard page and /metrics while the daemon runs")
    host: str = Field("127.0.0.1", description="loopback only (127.0.0.1, ::1, localhost); reach it from elsewhere through an SSH tunnel")
    port: int = Field(8787, ge=1, le=65535, description="TCP port of the page (/), its data (/api/state) and /metrics")
    refresh_s: float = Field(5.0, ge=1.0, le=3600.0, description="how often the open page reloads its data")
    equity_hours: float = Field(0.0, ge=0, le=24 * 3650, description="span of the equity chart in hours of exchange time back "
                                "from the last processed minute; 0 = the whole run")

    @field_validator("host")
    @classmethod
    def _loopback(cls, v: str) -> str:
        if v not in LOOPBACK:
            raise ValueError(f"must be a loopback address ({', '.join(LOOPBACK)}): the page shows positions and has no login, got {v!r}")
        return v
