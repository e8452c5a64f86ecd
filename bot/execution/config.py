"""The `live:` section of the config: how the live broker sends, looks up and reconciles orders."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reconcile_interval_s: float = Field(
        180.0, gt=0, description="seconds between reconciliations with the exchange (open orders, balances, positions)"
    )
    fill_poll_interval_s: float = Field(2.0, gt=0, description="seconds between look-ups of orders still open (fills)")
    watch_orders: bool = Field(
        True, description="fills from the exchange's user data stream (ccxt watch_orders) where it has one; polling "
        "stays as the safety net"
    )  # fmt: skip
    stream_poll_interval_s: float = Field(
        30.0, gt=0, description="seconds between look-ups of orders still open while the user data stream is up "
        "(fill_poll_interval_s while it is down)"
    )  # fmt: skip
    recv_window_ms: int = Field(
        5000, ge=1000, le=60_000,
        description="Binance recvWindow sent with each order: an order the exchange does not know this long (+1 s) "
        "after it was signed can never be placed any more, so it is final ('not placed')",
    )  # fmt: skip
    retry_attempts: int = Field(5, ge=1, description="sends of one order after 429/418 (rate limit) before it is dropped")
    retry_base_s: float = Field(0.5, gt=0, description="first backoff after a 429/418; doubles per attempt")
    retry_max_s: float = Field(10.0, gt=0, description="cap of that backoff")
    max_entry_lag_s: float = Field(
        90.0, gt=0,
        description="no new entry on a minute that closed more than this many seconds before the exchange's "
        "clock (minutes re-stepped after a restart or an outage: their signal is old, the price is today's); "
        "exits still run",
    )  # fmt: skip
    limit_time_in_force: Literal["GTC", "IOC", "FOK"] = Field(
        "GTC", description="time in force of a limit order (sent for an entry the engine asks as a limit order; "
        "exits are market orders)"
    )  # fmt: skip
    limit_ttl_s: float = Field(
        60.0, gt=0, description="a resting limit order not filled this many seconds after it was sent is cancelled "
        "(what filled of it stays)"
    )  # fmt: skip
    submit_timeout_s: float = Field(
        60.0, gt=0, description="how long an engine step waits for its orders to be sent and answered; orders still "
        "unresolved then stay tracked and are resolved by look-up"
    )  # fmt: skip
