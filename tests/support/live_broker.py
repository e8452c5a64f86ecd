"""Shared set-up of the live-broker tests: the simulator with signed endpoints, a ccxt client
from a config, a live executor over a real Postgres; and a child process (`python -m
tests.support.live_broker URLS_JSON DSN CID`) that sends one order and waits for its answer,
to be killed with -9 while it waits."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import asyncpg
from pydantic import SecretStr

from bot.config import Config, Secrets
from bot.engine.records import OrderIntent
from bot.execution.config import LiveConfig
from bot.execution.live_broker import LiveExecutor
from bot.execution.orders import OrderStore
from bot.marketdata.exchange import build_exchange

KEY, SECRET = "livekey-" + "k" * 56, "livesecret-" + "s" * 53
APR10_1200 = 1618056000000  # 2021-04-10 12:00 UTC
SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT"]


def client(urls: dict[str, str], timeout_ms: int = 1500) -> Any:
    cfg = Config.model_validate({"symbols": SYMBOLS, "exchange": {"urls": urls, "rate_limit_ms": 0, "timeout_ms": timeout_ms}})
    cfg = cfg.model_copy(update={"secrets": Secrets(api_key=SecretStr(KEY), api_secret=SecretStr(SECRET))})
    return build_exchange(cfg)


async def executor(urls: dict[str, str], dsn: str, timeout_ms: int = 1500, **live: Any) -> tuple[LiveExecutor, asyncpg.Pool]:
    ex = client(urls, timeout_ms)
    await ex.load_markets()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    cfg = LiveConfig(**{"recv_window_ms": 1000, "retry_base_s": 0.05, "submit_timeout_s": 20, **live})
    return LiveExecutor(ex, OrderStore(pool), cfg), pool


def intent(cid_minute: int = 26967600, symbol: str = "BTCUSDT", side: str = "buy", qty: float = 0.01,
           leg: str = "entry") -> OrderIntent:  # fmt: skip
    from bot.engine import client_order_id

    ts = cid_minute * 60_000
    return OrderIntent(client_order_id("v-test", symbol, ts, leg), symbol, side, leg, qty, ts, 60_000.0,  # type: ignore[arg-type]
                       "signal" if leg == "entry" else "tp", model_version="v-test")  # fmt: skip


async def sim_orders(base_url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"{base_url}/_sim/orders") as r:
        return await r.json()


async def _child(urls: dict[str, str], dsn: str) -> None:
    ex, pool = await executor(urls, dsn, timeout_ms=120_000, submit_timeout_s=600)
    await ex.place(intent())
    print("answered", flush=True)  # never reached in the test: it is killed while waiting


if __name__ == "__main__":
    asyncio.run(_child(json.loads(sys.argv[1]), sys.argv[2]))
