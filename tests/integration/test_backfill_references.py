"""`bot backfill` fetches the features' reference symbols even when they are not traded (issue
21): the daemon's first training did already, the command did not, and `bot train` on its
store then failed with "no candles for BTCUSDT"."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from tests.support.shared_data import ROOT, shared_data_or_skip

APR10_0000 = 1618012800000


async def test_backfill_fetches_untraded_references(db_dsn, tmp_path) -> None:
    book = CandleBook.from_directory(shared_data_or_skip(), ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=APR10_0000))
    await sim.start()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": ["SOLUSDT"], "features": {"reference_symbols": ["BTCUSDT", "ETHUSDT"]}, "database": {"dsn": db_dsn},
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "retry_base_s": 0.05, "retry_max_s": 0.5},
        "paths": {"data_dir": str(tmp_path / "var"), "logs_dir": str(tmp_path / "logs")},
        "logging": {"console": False}, "dashboard": {"enabled": False},
    }))  # fmt: skip
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(cfg), "backfill", "--days", "0.05", cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"},
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await sim.stop()
    assert proc.returncode == 0, out.decode(errors="replace")
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = dict(await conn.fetch("SELECT symbol, count(*) FROM candles GROUP BY symbol"))
    finally:
        await conn.close()
    assert set(rows) == {"SOLUSDT", "BTCUSDT", "ETHUSDT"}, rows
    assert rows["BTCUSDT"] == rows["SOLUSDT"] == 72, rows  # 0.05 days = 72 minutes each
