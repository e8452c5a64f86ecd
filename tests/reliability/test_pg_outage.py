"""Postgres restarted and stalled under a running daemon (issue 15, `bot.store.outage`).

`bot run` in paper mode against the exchange simulator (real candles, fast clock) with a real
bundle, on its OWN Postgres cluster (not the session's: this test stops it). Mid-run:
1. a restart: `pg_ctl stop -m fast`, the clock runs on for several exchange minutes (longer
   than `feed.persist_buffer_minutes`, so the feed must drop candles from memory and fetch
   them again), then `pg_ctl start`;
2. a stall: every process of the cluster SIGSTOPped (connections hang, new ones too) for
   longer than `database.write_timeout_s`, then SIGCONT.
While it is down, `bot status` and the dashboard answer without crashing. Then the daemon must
still be the same process, stop cleanly on SIGTERM, and the store must show nothing lost or
doubled: the candles equal the source minute by minute, every minute was stepped once (one
equity row each), books consistent (cash = fills, no order twice), the daemon's own counts equal
the store's, entries paused during the outages (decision rows `store_unavailable`, no entry
taken among them), the lock taken again, the STORE lines in bot.log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from bot.store.embedded import EmbeddedPostgres
from models.timeutil import DAY_MS, MINUTE_MS
from tests.support.engine import SYMBOLS
from tests.support.paper_daemon import (
    Daemon,
    assert_books_consistent,
    bot_status,
    free_port,
    minutes_with_candles,
    promote_bundle,
    store_books,
    window,
)
from tests.support.pg import _migrate_sync, new_test_cluster
from tests.support.reliability_figures import record
from tests.support.shared_data import DATA_DIR, symbols30

pytestmark = pytest.mark.slow
SPEED = 120  # 2 exchange minutes per second
WRITE_TIMEOUT_S = 2.0
HELD_CANDLES = 3  # feed.persist_buffer_minutes: the restart below lasts longer
# Start 12 h into the bundle's test window: a stretch where the small bundle enters often (its
# backtest over these 5 symbols enters 14 times in the 50 minutes from there), so the run has
# entries before, between and after the outages, and candidates to pause during them.
TRADING_STRETCH_MS = 12 * 60 * MINUTE_MS


@pytest.fixture(scope="module")
def own_pg() -> Iterator[EmbeddedPostgres]:
    """A Postgres cluster of this module alone (the session's must not be stopped)."""
    base, server = new_test_cluster("bot-test-pg-outage-")
    try:
        yield server
    finally:
        for p in _cluster_procs(server):  # never leave it stopped by a failed test
            with contextlib.suppress(psutil.Error):
                p.resume()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _cluster_procs(server: EmbeddedPostgres) -> list[psutil.Process]:
    pid_file = server.data_dir / "postmaster.pid"
    if not pid_file.exists():
        return []
    pm = psutil.Process(int(pid_file.read_text().split()[0]))
    return [pm, *pm.children(recursive=True)]


@pytest.fixture
def outage_dsn(own_pg: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, migrated database on this module's cluster."""
    for p in _cluster_procs(own_pg):  # whatever an earlier failed test left stalled or stopped
        with contextlib.suppress(psutil.Error):
            p.resume()
    own_pg.start()
    name = "t_" + uuid.uuid4().hex[:12]
    own_pg.create_database(name)
    dsn = own_pg.dsn(name)
    _migrate_sync(dsn)
    try:
        yield dsn
    finally:
        if own_pg.running():
            own_pg.drop_database(name)


def write_config(home: Path, dsn: str, sim: ExchangeSimulator, dashboard_port: int, symbols: list[str],
                 backlog: int) -> Path:  # fmt: skip
    cfg = home / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": symbols,
        "database": {"dsn": dsn, "write_timeout_s": WRITE_TIMEOUT_S, "outage_buffer_minutes": backlog},
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "timeout_ms": 5000, "retry_base_s": 0.1, "retry_max_s": 1.0},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2, "stall_timeout_s": 5.0,
                 "persist_buffer_minutes": HELD_CANDLES},
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0},
        "risk": {"cooldown_after_stop_minutes": 0},
        "paths": {"data_dir": str(home / "var"), "models_dir": str(home / "var" / "models"), "logs_dir": str(home / "logs")},
        "logging": {"console": False},
        "dashboard": {"enabled": True, "port": dashboard_port},
    }))  # fmt: skip
    return cfg


async def preload(dsn: str, book: CandleBook, lo: int, hi: int, symbols: list[str]) -> None:
    """The warm-up history, so the daemon's start-up backfill has (almost) nothing to fetch."""
    from bot.store.db import Store

    s = await Store.connect(dsn)
    try:
        for sym in symbols:
            await s.write_candles(sym, book.range(sym, lo, hi))
    finally:
        await s.close()


async def run_clock(sim: ExchangeSimulator, minutes: float) -> None:
    """Let the exchange clock run `minutes` exchange minutes at SPEED, then hold it."""
    end = sim.clock.now_ms() + int(minutes * MINUTE_MS)
    sim.clock.set(speed=SPEED)
    while sim.clock.now_ms() < end:
        await asyncio.sleep(0.05)
    sim.clock.set(speed=0)


async def get(url: str, timeout: float = 30) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, s.get(url) as r:
        return r.status, await r.text()


async def store_rows(dsn: str, symbols: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        candles = {s: await conn.fetch("SELECT ts, open, high, low, close, volume FROM candles WHERE symbol = $1 ORDER BY ts", s)
                   for s in symbols}  # fmt: skip
        equity = [r["ts"] for r in await conn.fetch("SELECT ts FROM equity_snapshots WHERE mode = 'paper' ORDER BY ts")]
        decisions = [dict(r) for r in await conn.fetch(
            "SELECT ts, symbol, action, reason FROM decisions WHERE mode = 'paper' ORDER BY ts, symbol")]  # fmt: skip
        counts = {
            "orders": await conn.fetchval("SELECT count(*) FROM orders WHERE mode = 'paper'"),
            "opened": await conn.fetchval("SELECT count(*) FROM positions WHERE mode = 'paper'"),
            "closed": await conn.fetchval("SELECT count(*) FROM positions WHERE mode = 'paper' AND status = 'closed'"),
        }
        st = await conn.fetchrow("SELECT pid, details FROM daemon_status WHERE id")
    finally:
        await conn.close()
    return {"candles": candles, "equity": equity, "decisions": decisions, "counts": counts,
            "status": {"pid": st["pid"], **json.loads(st["details"])}}  # fmt: skip


async def live_setup(dsn: str, bundle: Path, tmp_path: Path, symbols: list[str]) -> tuple[CandleBook, int, ExchangeSimulator, Path]:
    """A live run's start: 8 days of history, the bundle promoted, the simulator (signed
    endpoints, clock held) at a trading stretch, the config with this module's write timeout."""
    from tests.support.live_daemon import sim_for
    from tests.support.live_daemon import write_config as live_config

    book = CandleBook.from_directory(DATA_DIR, symbols)
    start, _, _ = window(bundle, 1)
    start += TRADING_STRETCH_MS
    await preload(dsn, book, start - 8 * DAY_MS, start - MINUTE_MS, symbols)
    await promote_bundle(dsn, bundle)
    sim = sim_for(book, start)
    await sim.start()
    cfg = live_config(tmp_path, dsn, sim, "live")
    c = yaml.safe_load(cfg.read_text())
    c["database"]["write_timeout_s"] = WRITE_TIMEOUT_S
    cfg.write_text(yaml.safe_dump(c))
    return book, start, sim, cfg


async def finish_live_run(d: Any, sim: ExchangeSimulator) -> tuple[int, int]:
    """The end of a live run: 10 more exchange minutes, stepped; the last fills and one complete
    reconciliation at a slower clock; SIGTERM. Returns (exit status, the last minute checked)."""
    await run_clock(sim, 10)
    last = sim.clock.now_ms() // MINUTE_MS * MINUTE_MS - 2 * MINUTE_MS
    await d.wait_minute(last, timeout=120)
    n = len(d.events())
    sim.clock.set(speed=30)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(e["event"] == "reconcile_done" for e in d.events()[n:]):
        await asyncio.sleep(0.2)
    sim.clock.set(speed=0)
    await asyncio.sleep(1.0)
    return await d.terminate(), last


async def assert_live_books(dsn: str, sim: ExchangeSimulator, book: CandleBook, start: int, last: int) -> list[str]:
    """Every order on the exchange is in the store, none twice, positions equal the exchange's,
    every minute with candles stepped once (one equity row each). Returns the client ids placed."""
    from tests.support.live_daemon import duplicates, position_mismatches

    placed = [o.client_order_id for o in sim.account.orders.values()]
    conn = await asyncpg.connect(dsn)
    try:
        known = {r["client_order_id"] for r in await conn.fetch("SELECT client_order_id FROM orders WHERE mode = 'live'")}
        equity = [r["ts"] for r in await conn.fetch("SELECT ts FROM equity_snapshots WHERE mode = 'live' AND ts <= $1 ORDER BY ts", last)]
    finally:
        await conn.close()
    assert set(placed) <= known, f"orders on the exchange the store does not know: {sorted(set(placed) - known)[:5]}"
    assert duplicates([{"clientOrderId": x} for x in placed]) == 0
    assert await position_mismatches(dsn, sim) == []
    assert equity == sorted(minutes_with_candles(book, start, last + MINUTE_MS)), "a minute was lost or doubled"
    return placed


async def test_daemon_survives_a_postgres_restart_and_a_stall(own_pg: EmbeddedPostgres, outage_dsn: str,
                                                               bundle_path: Path, tmp_path: Path) -> None:  # noqa: F811  # fmt: skip
    """The fast case (make test): 5 symbols, a 12-minute restart (longer than the 8 minutes of
    trading records it may hold: the loop then waits and catches up) and a 10-minute stall."""
    await scenario(own_pg, outage_dsn, bundle_path, tmp_path, SYMBOLS, restart_min=12, stall_min=10, backlog=8,
                   figure="pg_outages")  # fmt: skip


@pytest.mark.reliability  # 15 s: make test's share of this suite stays under 2 minutes
async def test_a_database_that_is_down_at_start_is_waited_for(own_pg: EmbeddedPostgres, outage_dsn: str,
                                                              tmp_path: Path) -> None:
    """`bot run` against an external server that does not answer yet (rebooting with the PC):
    one clear line, retried with backoff, no exit; up as soon as the server answers; SIGTERM
    while waiting or after stops it cleanly."""
    from tests.support.paper_daemon import Daemon

    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": SYMBOLS,
        "database": {"dsn": outage_dsn},
        "exchange": {"urls": {"public": "http://127.0.0.1:9/api/v3", "private": "http://127.0.0.1:9/api/v3",
                              "ws": "ws://127.0.0.1:9/stream/ws"},
                     "retry_base_s": 0.2, "retry_max_s": 1.0},
        "paths": {"data_dir": str(tmp_path / "var"), "models_dir": str(tmp_path / "var" / "models"), "logs_dir": str(tmp_path / "logs")},
        "logging": {"console": False},
        "dashboard": {"enabled": False},
    }))  # fmt: skip
    await asyncio.to_thread(own_pg.stop)
    d = Daemon(cfg, tmp_path, outage_dsn)
    try:
        await d.start("--no-train")
        said = await d.wait_event("store_unreachable", timeout=60)
        await asyncio.sleep(6.0)  # past the first attempt (it tries for ~5 s) and into the next
        assert d.proc.returncode is None, "the daemon gave up on a database that was not up yet"
        assert sum(e["event"] == "store_unreachable" for e in d.events()) == 1  # said once, then debug
        await asyncio.to_thread(own_pg.start)
        await d.wait_event("daemon_up", timeout=90)
        rc = await d.terminate()
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        if not own_pg.running():
            await asyncio.to_thread(own_pg.start)
    assert rc == 0
    assert "does not answer" in said["text"] and "server not running" in said["text"], said
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


@pytest.mark.reliability
async def test_30_symbols_survive_long_postgres_outages(own_pg: EmbeddedPostgres, outage_dsn: str,
                                                        bundle_path: Path, tmp_path: Path) -> None:  # noqa: F811  # fmt: skip
    """The long case (make reliability): 30 symbols, a 40-minute restart (20 minutes of records
    held, then the loop waits) and a 20-minute stall."""
    await scenario(own_pg, outage_dsn, bundle_path, tmp_path, symbols30(), restart_min=40, stall_min=20, backlog=20,
                   figure="pg_outages_30")  # fmt: skip


async def scenario(own_pg: EmbeddedPostgres, dsn: str, bundle: Path, tmp_path: Path, symbols: list[str], *,
                   restart_min: int, stall_min: int, backlog: int, figure: str) -> None:  # fmt: skip
    t_begin = time.monotonic()
    book = CandleBook.from_directory(DATA_DIR, symbols)
    start, _, _ = window(bundle, 1)
    start += TRADING_STRETCH_MS
    await preload(dsn, book, start - 8 * DAY_MS, start - MINUTE_MS, symbols)
    await promote_bundle(dsn, bundle)
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    port = free_port()
    home = tmp_path
    os.chmod(home, 0o755)
    cfg = write_config(home, dsn, sim, port, symbols, backlog)
    d = Daemon(cfg, home, dsn)
    outages: list[tuple[str, int, int]] = []  # (kind, exchange time down, exchange time back)
    probes: dict[str, Any] = {}
    try:
        await d.start()
        await d.wait_event("engine_ready", timeout=180)
        await run_clock(sim, 8)
        await d.wait_minute(sim.clock.now_ms() - 2 * MINUTE_MS, timeout=60)

        # 1. restart: stopped for `restart_min` exchange minutes (> HELD_CANDLES: candles dropped, re-fetched)
        down = sim.clock.now_ms()
        await asyncio.to_thread(own_pg.stop)
        await run_clock(sim, restart_min / 2)
        probes["status_rc"], probes["status_out"] = await bot_status(cfg)
        probes["page_status"], _ = await get(f"http://127.0.0.1:{port}/api/state")
        await run_clock(sim, restart_min / 2)
        assert d.proc.returncode is None, "the daemon died while Postgres was down"
        await asyncio.to_thread(own_pg.start)
        outages.append(("restart", down, sim.clock.now_ms()))
        await run_clock(sim, 8)
        await d.wait_event("store_recovered", timeout=60)

        # 2. stall: every server process stopped (connections hang) for > write_timeout_s
        down = sim.clock.now_ms()
        n_events = len(d.events())
        procs = _cluster_procs(own_pg)
        for p in procs:
            p.suspend()
        try:
            await run_clock(sim, 4)
            await d.wait_event("store_outage", after=n_events, timeout=30)  # noticed: a write timed out
            probes["page_status_stalled"], _ = await get(f"http://127.0.0.1:{port}/api/state", timeout=10)
            await run_clock(sim, stall_min - 4)
            assert d.proc.returncode is None, "the daemon died while Postgres was stalled"
        finally:
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.resume()
        outages.append(("stall", down, sim.clock.now_ms()))
        await run_clock(sim, 8)
        last = sim.clock.now_ms() // MINUTE_MS * MINUTE_MS - 2 * MINUTE_MS  # checked through this minute
        await d.wait_minute(last, timeout=90)
        for _ in range(100):
            if sum(e["event"] == "store_recovered" for e in d.events()) >= 2:
                break
            await asyncio.sleep(0.2)
        st = await asyncio.to_thread(own_pg.psql, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7264002 AND granted")
        probes["lock_held_after"] = int(st)
        probes["page_status_after"], _ = await get(f"http://127.0.0.1:{port}/api/state")
        rc = await d.terminate()
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    elapsed = time.monotonic() - t_begin

    events = d.events()
    names = [e["event"] for e in events]
    stderr = (home / "stderr.txt").read_text()
    assert rc == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert names.count("daemon_up") == 1, "the daemon restarted"
    assert "daemon_lock_lost" not in names
    assert names.count("store_outage") >= 2 and names.count("store_recovered") >= 2, [e for e in events if e["event"].startswith("store")]
    assert "daemon_lock_retaken" in names, "the lock was not taken again after the restart"
    assert probes["lock_held_after"] == 1, "nobody holds the daemon lock after the outages"
    rec = [e for e in events if e["event"] == "store_recovered"]
    assert rec[0]["held_steps"] == backlog and rec[0]["held_candles"] > 0, rec[0]  # full: the loop waited, then caught up
    assert rec[0]["dropped_candles"] > 0 and rec[0]["refetched_candles"] >= rec[0]["dropped_candles"], rec[0]
    # `bot status` and the dashboard while the store was away: an answer, no crash
    assert probes["status_rc"] != 0 and "Traceback" not in probes["status_out"], probes["status_out"]
    assert "cannot read the store" in probes["status_out"], probes["status_out"]
    assert probes["page_status"] == 503 and probes["page_status_stalled"] == 503, probes
    assert probes["page_status_after"] == 200
    # the short lines in bot.log
    log = (home / "logs" / "bot.log").read_text().splitlines()
    assert sum(" STORE unavailable (" in ln for ln in log) >= 2, "no STORE unavailable line"
    assert sum(" STORE back after " in ln for ln in log) >= 2, "no STORE back line"
    assert any("LOCK taken again" in ln for ln in log)

    rows = await store_rows(dsn, symbols)
    # candles: the store equals the source minute by minute (dropped ones were fetched again)
    first = start - 8 * DAY_MS
    for sym in symbols:
        got = rows["candles"][sym]
        got = [r for r in got if r["ts"] <= last]
        want = book.range(sym, first, last)
        assert [r["ts"] for r in got] == [int(t) for t in want.ts], f"{sym}: candles lost or invented"
        assert [r["close"] for r in got] == [float(x) for x in want.close], f"{sym}: candle values differ"
    # every minute stepped exactly once (equity row per minute with candles), none lost
    stepped = [t for t in rows["equity"] if t <= last]
    assert stepped == sorted(minutes_with_candles(book, start, last + MINUTE_MS)), "a minute was lost or doubled"
    # nothing lost or doubled between the daemon's memory and the store
    books = await store_books(dsn)
    assert_books_consistent(books)
    s = rows["status"]
    assert s["pid"] == d.proc.pid and s["store_up"] is True and s["store_outages"] >= 2
    assert s["minutes_processed"] == len(rows["equity"])
    assert (s["orders"], s["trades_opened"], s["trades_closed"]) == (rows["counts"]["orders"], rows["counts"]["opened"],
                                                                     rows["counts"]["closed"]), (s, rows["counts"])  # fmt: skip
    # entries paused while the store was away: decisions say why, none taken among them
    paused = [r for r in rows["decisions"] if r["reason"] == "store_unavailable"]
    assert paused, "no decision row says store_unavailable"
    rel = {"paused": [(r["ts"] - start) // MINUTE_MS for r in paused],
           "entered": [(r["ts"] - start) // MINUTE_MS for r in rows["decisions"] if r["action"] == "enter"],
           "outages": [(k, (lo - start) // MINUTE_MS, (hi - start) // MINUTE_MS) for k, lo, hi in outages]}  # fmt: skip
    for i, (kind, lo, hi) in enumerate(outages):
        # this outage's pauses: from a little before it was caused (the loop may trail the clock by
        # a minute or two) until the next outage
        upto = outages[i + 1][1] - 3 * MINUTE_MS if i + 1 < len(outages) else hi + 60 * MINUTE_MS
        mine = [r["ts"] for r in paused if lo - 3 * MINUTE_MS <= r["ts"] < upto]
        assert mine, f"no entry paused during the {kind}: {rel}"
        taken = [r for r in rows["decisions"] if r["action"] == "enter" and min(mine) <= r["ts"] <= max(mine)]
        assert not taken, f"entries taken while the store was away ({kind}): {taken[:3]} {rel}"
    assert all(any(lo - 3 * MINUTE_MS <= r["ts"] <= hi + 20 * MINUTE_MS for _, lo, hi in outages) for r in paused), (
        "entries paused outside an outage", rel)
    from collections import Counter

    why = Counter((r["action"], r["reason"]) for r in rows["decisions"])
    assert rows["counts"]["orders"] > 0, f"no order at all: the run proves little {why}"
    figures = {"survived": len(outages), "kinds": [k for k, _, _ in outages], "minutes_down": [round((hi - lo) / MINUTE_MS) for _, lo, hi in outages],
               "held_steps": [e["held_steps"] for e in rec], "held_candles": [e["held_candles"] for e in rec],
               "dropped_candles": sum(e["dropped_candles"] for e in rec), "refetched_candles": sum(e["refetched_candles"] for e in rec),
               "entries_paused": len(paused), "backlog_minutes": backlog, "symbols": len(symbols), "candles_lost": 0, "crashes": 0, "seconds": round(elapsed, 1)}  # fmt: skip
    print("pg outages:", json.dumps(figures))
    record(figure, figures)


@pytest.mark.reliability
async def test_live_mode_sends_no_order_while_postgres_is_down(own_pg: EmbeddedPostgres, outage_dsn: str,
                                                               bundle_path: Path, tmp_path: Path) -> None:  # noqa: F811  # fmt: skip
    """Live mode against the simulator's signed endpoints, 30 symbols: Postgres stopped for 10
    exchange minutes, later stalled (SIGSTOP) for 8. No order reaches the exchange while it is
    down (each is written before it is sent), the loop holds and catches up after; no order
    twice, positions equal the exchange's."""
    from tests.support.live_daemon import LiveDaemon

    dsn, symbols = outage_dsn, symbols30()
    book, start, sim, cfg = await live_setup(dsn, bundle_path, tmp_path, symbols)
    d = LiveDaemon(cfg, tmp_path, dsn, "live")
    try:
        await d.start()
        await d.wait_event("engine_ready", timeout=180)
        await d.wait_event("reconcile_done", timeout=60)
        await run_clock(sim, 10)
        # every closed minute stepped (nothing in flight: a step whose order row fails half-way
        # starts the run over, the next test), then the store goes away
        await d.wait_minute(sim.clock.now_ms() // MINUTE_MS * MINUTE_MS - MINUTE_MS, timeout=90)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_pg.stop)
        before = len(sim.account.orders)
        await run_clock(sim, 10)
        assert d.proc.returncode is None, "the live daemon died while Postgres was down"
        during = len(sim.account.orders) - before
        await asyncio.to_thread(own_pg.start)
        await run_clock(sim, 10)
        # then a stall: every server process stopped (connections hang) for > write_timeout_s
        await d.wait_minute(sim.clock.now_ms() // MINUTE_MS * MINUTE_MS - MINUTE_MS, timeout=120)
        await asyncio.sleep(1.0)
        procs = _cluster_procs(own_pg)
        before = len(sim.account.orders)
        try:
            for p in procs:
                p.suspend()
            await run_clock(sim, 8)
            assert d.proc.returncode is None, "the live daemon died while Postgres was stalled"
            during += len(sim.account.orders) - before
        finally:
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.resume()
        rc, last = await finish_live_run(d, sim)
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    stderr = (tmp_path / "stderr.txt").read_text()
    names = [e["event"] for e in d.events()]
    assert rc == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert names.count("daemon_up") == 1 and "store_lost_mid_step" not in names
    assert "store_outage" in names and "store_recovered" in names
    assert during == 0, f"{during} order(s) reached the exchange while the store was down"
    placed = await assert_live_books(dsn, sim, book, start, last)
    assert placed, "no order at all: the run proves little"
    assert names.count("store_outage") >= 2 and names.count("store_recovered") >= 2, "the stall was not noticed"
    record("pg_outages_live", {"survived": 2, "kinds": ["restart", "stall"], "minutes_down": [10, 8], "symbols": len(symbols),
                               "orders_while_down": during, "orders": len(placed), "dropped_candles": 0,
                               "entries_paused": 0, "candles_lost": 0, "crashes": 0})  # fmt: skip


@pytest.mark.reliability
async def test_live_store_lost_inside_a_step_starts_over_in_the_same_process(own_pg: EmbeddedPostgres, outage_dsn: str,
                                                                            bundle_path: Path, tmp_path: Path) -> None:  # noqa: F811  # fmt: skip
    """Live mode: Postgres goes away *inside* a step, between the check before it and an entry's
    order row (the test hook pauses the daemon there, stops Postgres, resumes it). The row
    cannot be written, so the order is not sent; the daemon logs `store_lost_mid_step`, stays up,
    waits for the store and starts over from it in the same process (as a restart after a crash
    would): then no order twice, positions equal the exchange's, every minute stepped once."""
    import signal

    from tests.support.live_daemon import LiveDaemon

    dsn, symbols = outage_dsn, symbols30()
    book, start, sim, cfg = await live_setup(dsn, bundle_path, tmp_path, symbols)
    d = LiveDaemon(cfg, tmp_path, dsn, "live", env={"BOT_CRASH_POINT": "before_order_row:entry", "BOT_CRASH_ACTION": "pause"})
    try:
        await d.start()
        await d.wait_event("engine_ready", timeout=180)
        await d.wait_event("reconcile_done", timeout=60)
        proc = psutil.Process(d.proc.pid)
        sim.clock.set(speed=SPEED)
        deadline = time.monotonic() + 120
        while proc.status() != psutil.STATUS_STOPPED:
            assert time.monotonic() < deadline, "no entry order in 4 exchange hours: the run proves nothing"
            await asyncio.sleep(0.02)
        sim.clock.set(speed=0)
        paused = next(e for e in d.events() if e["event"] == "crash_point")["client_order_id"]
        before = len(sim.account.orders)
        await asyncio.to_thread(own_pg.stop)
        os.kill(proc.pid, signal.SIGCONT)
        lost = await d.wait_event("store_lost_mid_step", timeout=60)
        n = d.events().index(lost)
        await run_clock(sim, 5)
        assert d.proc.returncode is None, "the live daemon exited when the store went away inside a step"
        assert len(sim.account.orders) == before, "an order reached the exchange while the store was down"
        await asyncio.to_thread(own_pg.start)
        await d.wait_event("engine_ready", after=n, timeout=180)
        await d.wait_event("reconcile_done", after=n, timeout=60)
        rc, last = await finish_live_run(d, sim)
    finally:
        if d.proc is not None and d.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(d.proc.pid, signal.SIGCONT)
            d.proc.kill()
        await sim.stop()
    stderr = (tmp_path / "stderr.txt").read_text()
    names = [e["event"] for e in d.events()]
    assert rc == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert names.count("daemon_up") == 1 and names.count("store_lost_mid_step") == 1, names.count("daemon_up")
    assert names.count("engine_ready") == 2
    placed = await assert_live_books(dsn, sim, book, start, last)
    assert sum(x.split(".", 1)[0] == paused.split(".", 1)[0] for x in placed) <= 1
    from bot.store.db import Store
    from tests.support.feed_checks import assert_store_equals_source

    store = await Store.connect(dsn)
    try:
        await assert_store_equals_source(store, book, symbols, start, last)  # no candle lost while it was down
    finally:
        await store.close()
    record("pg_outage_live_mid_step", {"survived": 1, "kinds": ["stop inside a live step"], "minutes_down": [5],
                                       "symbols": len(symbols), "orders_while_down": 0, "orders": len(placed),
                                       "restarted_in_process": names.count("store_lost_mid_step"), "dropped_candles": 0,
                                       "entries_paused": 0, "candles_lost": 0, "crashes": 0})  # fmt: skip
