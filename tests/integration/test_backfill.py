"""`bot backfill`: real ccxt against the simulator, real Postgres; resumable after kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import yaml

from bot.config import Config
from bot.exchange_sim.faults import Fault
from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from bot.history.backfill import backfill, plan_range
from bot.marketdata.exchange import build_exchange
from bot.store.db import Store
from models.candles import Candles
from models.timeutil import MINUTE_MS
from tests.support.shared_data import DATA_DIR, ROOT, symbols30

DAY = 86_400_000
APR21_0000 = 1618963200000  # 2021-04-21 00:00 UTC: the 7 days before include the 04-20 outage


@pytest.fixture(scope="module")
def book30() -> CandleBook:
    return CandleBook.from_directory(DATA_DIR, symbols30())


def write_config(path: Path, sim: ExchangeSimulator, dsn: str, symbols: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "symbols": symbols,
        "database": {"dsn": dsn},
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "retry_base_s": 0.05, "retry_max_s": 0.5},
        "feed": {"backfill_days": 7},
        "paths": {"data_dir": str(path.parent / "var"), "logs_dir": str(path.parent / "logs")},
        "logging": {"console": False},
    }))  # fmt: skip
    return path


async def run_backfill(config: Path, *, kill_at_rows: int | None = None, dsn: str | None = None) -> tuple[int, str]:
    """Run `bot backfill` in a subprocess; SIGKILL it once the store holds `kill_at_rows`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), "backfill",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    out = b""
    if kill_at_rows is not None:
        conn = await asyncpg.connect(dsn)
        try:
            while proc.returncode is None:
                n = await conn.fetchval("SELECT count(*) FROM candles")
                if n >= kill_at_rows:
                    proc.send_signal(signal.SIGKILL)
                    break
                await asyncio.sleep(0.02)
        finally:
            await conn.close()
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(errors="replace")


async def table(dsn: str) -> np.ndarray:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT symbol, ts, open, high, low, close, volume FROM candles ORDER BY symbol, ts")
    finally:
        await conn.close()
    return np.array([tuple(r) for r in rows], dtype=object)


@pytest.fixture
def second_dsn(make_db):  # noqa: ANN001
    return make_db()


@pytest.mark.slow
async def test_backfill_30_symbols_7_days_survives_kill_9_identically(db_dsn, second_dsn, book30, tmp_path):
    symbols = symbols30()
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=APR21_0000 + 30_000))
    await sim.start()
    try:
        # Uninterrupted run into one database.
        full_cfg = write_config(tmp_path / "full" / "config.yaml", sim, db_dsn, symbols)
        rc, out = await run_backfill(full_cfg)
        assert rc == 0, out
        full = await table(db_dsn)

        # Killed half-way (SIGKILL, no cleanup), then rerun, into another.
        killed_cfg = write_config(tmp_path / "killed" / "config.yaml", sim, second_dsn, symbols)
        rc, out = await run_backfill(killed_cfg, kill_at_rows=len(full) // 2, dsn=second_dsn)
        assert rc == -signal.SIGKILL, out
        partial = await table(second_dsn)
        assert 0 < len(partial) < len(full)
        log_file = tmp_path / "killed" / "logs" / "bot.jsonl"
        log_offset = log_file.stat().st_size if log_file.exists() else 0
        rc, out = await run_backfill(killed_cfg)
        assert rc == 0, out
        resumed = await table(second_dsn)
    finally:
        await sim.stop()

    assert resumed.shape == full.shape and (resumed == full).all()
    # ... and both equal the source: 7 days up to the last closed minute, the outage excluded.
    start, end = APR21_0000 - 7 * DAY, APR21_0000 - MINUTE_MS
    expected = sum(len(book30.range(s, start, end)) for s in symbols)
    assert len(full) == expected
    for s in symbols[:5]:
        rows = full[full[:, 0] == s]
        src = book30.range(s, start, end)
        assert np.array_equal(rows[:, 1].astype(np.int64), src.ts)
        assert np.array_equal(rows[:, 5].astype(np.float64), src.close)
    # The rerun resumed: it fetched only what the killed run had not stored.
    events = [json.loads(line) for line in log_file.read_bytes()[log_offset:].decode().splitlines()]
    runs = [e for e in events if e.get("event") == "backfill_symbol"]
    assert sum(e["fetched"] for e in runs) == expected - len(partial)
    assert any(e["resumed"] for e in runs)
    full_events = [json.loads(line) for line in (tmp_path / "full" / "logs" / "bot.jsonl").read_text().splitlines()]
    full_runs = [e for e in full_events if e.get("event") == "backfill_symbol"]
    assert len(full_runs) == len(symbols) and not any(e["resumed"] for e in full_runs)
    assert sum(e["exchange_gap_minutes"] for e in full_runs) == 150 * len(symbols)  # the 04-20 outage, counted


async def test_backfill_retries_rest_faults_and_never_stores_a_bad_candle(db_dsn):
    symbols = ["BTCUSDT", "ETHUSDT"]
    book2 = CandleBook.from_directory(DATA_DIR, symbols)  # not book30: this test needs two symbols
    clock = APR21_0000 + 30_000
    # The exchange serves one bad candle (high < low) for ETHUSDT: it must be skipped, not stored.
    bad_ts = APR21_0000 - 3 * 60 * MINUTE_MS
    eth = book2.candles["ETHUSDT"]
    i = int(np.searchsorted(eth.ts, bad_ts))
    high = eth.high.copy()
    high[i] = eth.low[i] * 0.99
    book = CandleBook({"BTCUSDT": book2.candles["BTCUSDT"], "ETHUSDT": Candles(eth.ts, eth.open, high, eth.low, eth.close, eth.volume)})
    faults = [Fault(k, clock - 1) for k in ("rest_429", "rest_418", "rest_5xx", "rest_timeout", "rest_429")]
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=clock, timeout_delay_s=1.0, retry_after_s=0), faults)
    await sim.start()
    cfg = Config.model_validate({"symbols": symbols, "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "timeout_ms": 300}})
    ex = build_exchange(cfg)
    store = await Store.connect(db_dsn)
    try:
        await asyncio.sleep(0.1)  # the clock loop arms the REST faults
        reports = await backfill(ex, store, symbols, days=0.5, retry_base_s=0.01, retry_max_s=0.05, attempts=10)
        assert sim.faults.applied_counts()["rest_timeout"] == 1 and sim.faults.pending() == 0
        by = {r.symbol: r for r in reports}
        assert by["ETHUSDT"].invalid == 1 and by["BTCUSDT"].invalid == 0
        start, end = APR21_0000 - DAY // 2, APR21_0000 - MINUTE_MS
        for s in symbols:
            got = await store.read_candles(s, start, end + MINUTE_MS, dtype=np.float64)
            src = book.range(s, start, end)
            keep = (src.ts != bad_ts) if s == "ETHUSDT" else np.ones(len(src), dtype=bool)
            assert np.array_equal(got.ts, src.ts[keep])
            assert np.array_equal(got.high, src.high[keep]) and np.array_equal(got.volume, src.volume[keep])
        # Run again: nothing left to do (resumes after the last stored candle).
        again = await backfill(ex, store, symbols, days=0.5, retry_base_s=0.01, retry_max_s=0.05)
        assert all(r.fetched == 0 and r.resumed for r in again)
    finally:
        await ex.close()
        await store.close()
        await sim.stop()


async def test_plan_range_resumes_after_the_last_stored_candle(store):
    now = APR21_0000 + 45_000
    start, end, resumed = await plan_range(store, "BTCUSDT", now, days=2)
    assert (start, end, resumed) == (APR21_0000 - 2 * DAY, APR21_0000 - MINUTE_MS, False)
    one = np.array([1.0])
    await store.write_candles("BTCUSDT", Candles(np.array([APR21_0000 - 10 * MINUTE_MS]), one, one, one, one, one))
    start, end, resumed = await plan_range(store, "BTCUSDT", now, days=2)
    assert (start, end, resumed) == (APR21_0000 - 9 * MINUTE_MS, APR21_0000 - MINUTE_MS, True)
