"""The live-mode daemon as a real process against the simulator's signed endpoints: config with fake
keys, the order-book checks after a run (duplicates, positions against the exchange)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from tests.support.paper_daemon import ROOT, Daemon
from tests.support.shared_data import symbols30

FAKE_KEY = "FAKEKEY9live9test" + "K" * 47


FAKE_SECRET = "FAKESECRET9live9test" + "S" * 44


ORDER_FAULTS = ("order_lost_response", "order_partial", "order_delayed", "order_reject_balance", "order_reject_filter",
                "order_429", "order_418", "order_5xx")  # fmt: skip


def write_config(home: Path, dsn: str, sim: ExchangeSimulator, mode: str, *, sizing: str = "risk",
                 max_entry_lag_s: float = 3600.0) -> Path:
    """The test daemon's config. `max_entry_lag_s`: 3600 exchange seconds are 30 real seconds at
    the faulted run's 120x clock, which turns a restart after a kill -9 (8-40 real seconds on a
    2-core machine shared with other test runs) into 16-80 exchange minutes of catch-up: only
    the longest are caught up without entries (in production the default 90 s is several
    restarts long); tests/integration/test_live_restart.py tests the gate itself with the default."""
    cfg = home / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "mode": mode,
        "symbols": symbols30(),
        "database": {"dsn": dsn},
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "timeout_ms": 1500, "retry_base_s": 0.1, "retry_max_s": 1.0},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2, "stall_timeout_s": 5.0},
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0, "sizing": sizing},
        "risk": {"cooldown_after_stop_minutes": 0},
        "costs": {"fee_rate": 0.001, "slippage_bps": 0.0},
        "paper": {"initial_equity": 10_000.0},
        "live": {"reconcile_interval_s": 3.0, "fill_poll_interval_s": 0.3, "recv_window_ms": 1000, "retry_base_s": 0.05,
                 "retry_max_s": 0.2, "submit_timeout_s": 20.0, "max_entry_lag_s": max_entry_lag_s},
        "paths": {"data_dir": str(home / "var"), "models_dir": str(home / "var" / "models"), "logs_dir": str(home / "logs")},
        "logging": {"console": False},
        "dashboard": {"enabled": False},
    }))  # fmt: skip
    return cfg


class LiveDaemon(Daemon):
    """`bot run --confirm-live` with the fake keys in its environment."""

    def __init__(self, cfg: Path, home: Path, dsn: str, mode: str, env: dict[str, str] | None = None):
        super().__init__(cfg, home, dsn)
        self.mode = mode
        self.env = dict(env or {})  # e.g. BOT_CRASH_POINT for the next start only

    async def start(self) -> None:
        args = ["run", "--confirm-live"] if self.mode == "live" else ["run"]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(self.cfg), *args, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=open(self.home / "stderr.txt", "ab"),  # noqa: SIM115
            env={**os.environ, "BOT_API_KEY": FAKE_KEY, "BOT_API_SECRET": FAKE_SECRET, **self.env},
        )  # fmt: skip

    @staticmethod
    def keys_env() -> dict[str, str]:
        return {"BOT_API_KEY": FAKE_KEY, "BOT_API_SECRET": FAKE_SECRET}

    async def last_minute(self) -> int | None:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval("SELECT last_minute_ts FROM engine_state WHERE mode = $1", self.mode)
        finally:
            await conn.close()


def sim_for(book: Any, start: int, **kw: Any) -> ExchangeSimulator:
    return ExchangeSimulator(book, SimSettings(speed=0, start_ms=start, update_interval_s=0.5, timeout_delay_s=3.0,
                                                 api_keys={FAKE_KEY: FAKE_SECRET}, balances={"USDT": 10_000.0},
                                                 **kw))  # fmt: skip


def duplicates(orders: list[dict[str, Any]]) -> int:
    """Decisions (engine ids: the client id without its attempt suffix) placed more than once."""
    per = Counter(o["clientOrderId"].split(".", 1)[0] for o in orders)
    return sum(n - 1 for n in per.values() if n > 1)


async def position_mismatches(dsn: str, sim: ExchangeSimulator, mode: str = "live") -> list[tuple[str, float, float]]:
    """Symbols whose position in the store differs from the exchange's balance by more than 1 USDT
    of value (dust of fee and lot rounding stays below it). The store's side is the persisted
    engine state plus the fills of the orders it still waits for (booked at its next step)."""
    conn = await asyncpg.connect(dsn)
    try:
        st = json.loads(await conn.fetchval("SELECT state FROM engine_state WHERE mode = $1", mode))
        waiting = [p["intent"]["client_order_id"] for p in st["pending"]]
        fills = await conn.fetch(
            """SELECT o.symbol, o.side, f.qty, f.fee, f.fee_asset FROM orders o JOIN fills f ON f.order_id = o.id
               WHERE o.mode = $1 AND split_part(o.client_order_id, '.', 1) = ANY($2::text[])""", mode, waiting)
    finally:
        await conn.close()
    held = {p["symbol"]: float(p["qty"]) for p in st["positions"]}
    for f in fills:
        base = f["symbol"][:-4]
        net = f["qty"] - (f["fee"] if f["fee_asset"] == base else 0.0)
        held[f["symbol"]] = held.get(f["symbol"], 0.0) + (net if f["side"] == "buy" else -f["qty"])
    out = []
    for sym in symbols30():
        base = sym[:-4]
        ex = float(sim.account.free.get(base, 0.0)) + float(sim.account.locked.get(base, 0.0))
        step = float(next(f["stepSize"] for f in sim._symbol_info(sym)["filters"] if f["filterType"] == "LOT_SIZE"))
        # each sale leaves less than one lot step unsold (the fee taken in the coin makes the
        # holding a non-multiple of the step): that dust stays on the exchange, by the rule
        sells = sum(1 for o in sim.account.orders.values() if o.symbol == sym and o.side == "SELL" and o.executed_qty > 0)
        diff = ex - held.get(sym, 0.0)
        if diff < -step * 1.001 or diff > step * (sells + 1):
            out.append((sym, held.get(sym, 0.0), ex))
    return out


async def all_table_text(dsn: str) -> str:
    """Every row of every table, as text (what a database dump would show)."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        parts = []
        for t in tables:
            parts.extend(r["x"] for r in await conn.fetch(f'SELECT t::text AS x FROM "{t}" t'))
        return "\n".join(parts)
    finally:
        await conn.close()


def assert_no_secret(home: Path, *texts: str) -> int:
    files = [p for p in home.rglob("*") if p.is_file() and (p.suffix in (".jsonl", ".log", ".txt") or "logs" in p.parts)]
    assert any(p.name == "bot.jsonl" for p in files)
    for p in files:
        body = p.read_text(errors="replace")
        assert FAKE_KEY not in body and FAKE_SECRET not in body, p
        assert FAKE_KEY[:24] not in body and FAKE_SECRET[:24] not in body, p
    for t in texts:
        assert FAKE_KEY not in t and FAKE_SECRET not in t
    return len(files)
