"""Live mode across a crash, against the exchange simulator (30 symbols, real candles, real ccxt
on the signed endpoints, a real Postgres and a real bundle), the clock moved minute by minute:

- `BOT_CRASH_POINT` (`bot.runtime.crashpoint`) makes the daemon kill -9 itself between an order's
  submission and the persisting of its fill; restarted without it, the daemon recovers with no
  manual step: exactly one order on the exchange for that decision, and positions, cash and
  open orders in the store equal the exchange's after reconciliation;
- restarted long after the crash, the minutes it missed are re-stepped without new entries
  (`live.max_entry_lag_s`, reason `catch_up` in the decision log), the order sent before the
  crash for one of those minutes is booked anyway (the exchange holds it), and entries resume
  on the current minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.exchange_sim.server import ExchangeSimulator
from models.timeutil import MINUTE_MS
from tests.support.live_daemon import (
    LiveDaemon,
    duplicates,
    position_mismatches,
    sim_for,
    write_config,
)
from tests.support.paper_daemon import minutes_with_candles, promote_bundle, window

pytestmark = pytest.mark.slow
LAG_S = 90.0  # the default: the clock here is moved by hand, one minute at a time


def decision_minute(cid: str) -> int:
    """The decision minute inside one of our client order ids (E|X-SYMBOL-MINUTE-HASH[.n])."""
    return int(cid.split("-")[2]) * MINUTE_MS


def of_decision(position: dict[str, Any], cid: str) -> bool:
    """Is this position the one that order `cid` (its entry or its exit) is for?"""
    return position["symbol"] == cid.split("-")[1] and position["decision_ts"] == decision_minute(cid)


async def stepped_through(dsn: str) -> int | None:
    """The last minute the daemon is done with: its last persisted step, or the anchor of its
    warm-up (a store where no step was ever persisted starts after the last closed minute)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            """SELECT greatest((SELECT last_minute_ts FROM engine_state WHERE mode = 'live'),
                               (SELECT last_minute_ts FROM daemon_status WHERE id))""")
    finally:
        await conn.close()


async def lockstep(d: LiveDaemon, sim: ExchangeSimulator, minutes: range, real: set[int]) -> int | None:
    """Move the exchange clock one minute at a time (1 s into the next minute) and wait until the
    daemon has stepped each minute; returns the minute in flight when the daemon died, else None."""
    for m in minutes:
        sim.clock.set(m + MINUTE_MS + 1_000, 0)
        if m not in real:
            continue
        deadline = time.monotonic() + 60
        while True:
            if d.proc.returncode is not None:
                return m
            last = await stepped_through(d.dsn)
            if last is not None and last >= m:
                break
            assert time.monotonic() < deadline, f"minute {m} never stepped"
            await asyncio.sleep(0.05)
    return None


async def final_reconciliation(d: LiveDaemon) -> dict[str, Any]:
    """Wait for a complete reconciliation (nothing in flight) after the run's last minute."""
    n = len(d.events())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ev = next((e for e in d.events()[n:] if e["event"] == "reconcile_done"), None)
        if ev is not None:
            return ev
        await asyncio.sleep(0.2)
    raise AssertionError("no complete reconciliation after the last minute")


async def store_view(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        st = await conn.fetchrow("SELECT cash, state FROM engine_state WHERE mode = 'live'")
        open_orders = {r["client_order_id"] for r in await conn.fetch(
            "SELECT client_order_id FROM orders WHERE mode = 'live' AND status NOT IN ('filled', 'cancelled', 'rejected', 'expired')")}  # fmt: skip
        orders = {r["client_order_id"]: dict(r) for r in await conn.fetch(
            "SELECT client_order_id, status, filled_qty, symbol FROM orders WHERE mode = 'live'")}  # fmt: skip
        positions = [dict(r) for r in await conn.fetch(
            "SELECT symbol, status, entry_order_id, exit_reason, qty, (details->>'decision_ts')::bigint AS decision_ts "
            "FROM positions WHERE mode = 'live'")]  # fmt: skip
        waiting = [p["intent"]["client_order_id"] for p in json.loads(st["state"])["pending"]] if st else []
        # fills of the orders the persisted state still waits for (booked at its next step)
        cash_adj = await conn.fetchval(
            """SELECT coalesce(sum(CASE WHEN o.side = 'buy' THEN -1 ELSE 1 END * f.qty * f.price
                                   - CASE WHEN f.fee_asset = 'USDT' THEN f.fee ELSE 0 END), 0)
               FROM orders o JOIN fills f ON f.order_id = o.id
               WHERE o.mode = 'live' AND split_part(o.client_order_id, '.', 1) = ANY($1::text[])""", waiting)  # fmt: skip
        skips = [dict(r) for r in await conn.fetch(
            "SELECT ts, symbol, reason FROM decisions WHERE mode = 'live' AND action = 'skip' AND reason = 'catch_up'")]  # fmt: skip
    finally:
        await conn.close()
    return {"cash": float(st["cash"]) + float(cash_adj) if st else None, "state": json.loads(st["state"]) if st else None, "open_orders": open_orders, "orders": orders,
            "positions": positions, "catch_up_skips": skips}  # fmt: skip


def exchange_open_orders(sim: ExchangeSimulator) -> set[str]:
    return {o.client_order_id for o in sim.account.orders.values() if o.status in ("NEW", "PARTIALLY_FILLED")}


async def live_run_setup(book: Any, bundle: Path, dsn: str, home: Path) -> tuple[int, set[int], ExchangeSimulator, Path, LiveDaemon]:
    """The simulator at the bundle's 3-day window (clock held), the bundle promoted, the live
    config (equal slots, this module's catch-up limit) and its daemon, not started yet."""
    start, end, _ = window(bundle, 3)
    real = minutes_with_candles(book, start, end)
    sim = sim_for(book, start)
    await sim.start()
    await promote_bundle(dsn, bundle)
    cfg = write_config(home, dsn, sim, "live", sizing="equal_slots", max_entry_lag_s=LAG_S)
    return start, real, sim, cfg, LiveDaemon(cfg, home, dsn, "live")


# (crash point, minutes of trading persisted before the hooked start, exchange minutes the daemon
# stays down): a crash in the very first step (no engine state at all), quick restart; a crash
# later on, restart 45 minutes later (the crashed minute and the missed ones are stale)
@pytest.mark.parametrize(("point", "prelude", "down_minutes"), [("after_submit", 0, 0), ("after_fill:entry", 5, 45)])
async def test_kill_between_submit_and_fill_persist_recovers_from_the_exchange(
    point: str, prelude: int, down_minutes: int, db_dsn: str, book30, bundle_path: Path, tmp_path: Path  # noqa: F811
) -> None:  # fmt: skip
    start, real, sim, cfg, d = await live_run_setup(book30, bundle_path, db_dsn, tmp_path)
    try:
        first = start
        if prelude:
            await d.start()
            await d.wait_event("engine_ready")
            assert await lockstep(d, sim, range(start, start + prelude * MINUTE_MS, MINUTE_MS), real) is None
            assert await d.terminate() == 0
            first = start + prelude * MINUTE_MS
        d.env = {"BOT_CRASH_POINT": point}
        n = len(d.events())
        await d.start()
        await d.wait_event("engine_ready", after=n)
        await d.wait_event("reconcile_done", after=n)
        died_at = await lockstep(d, sim, range(first, first + 120 * MINUTE_MS, MINUTE_MS), real)
        assert died_at is not None, f"the crash point {point} was never reached in 2 hours of trading"
        assert await d.proc.wait() == -9
        crash = next(e for e in d.events() if e["event"] == "crash_point")
        assert crash["point"] == point.split(":")[0]
        cid = crash["client_order_id"]
        eid = cid.split(".", 1)[0]
        if cid.startswith("E-"):  # an exit's id carries its position's decision minute
            assert decision_minute(cid) == died_at  # killed inside the step that decided it
        # the exchange has it; the store knows the id (written before it was sent) but not its booking
        assert [o.client_order_id for o in sim.account.orders.values()].count(cid) == 1
        before = await store_view(db_dsn)
        assert cid in before["orders"]
        assert not any(of_decision(p, cid) and p["status"] == "closed" for p in before["positions"])
        # restart without the hook, after `down_minutes` of exchange time
        resume_at = died_at + down_minutes * MINUTE_MS
        sim.clock.set(resume_at + MINUTE_MS + 1_000, 0)
        d.env = {}
        n = len(d.events())
        await d.start()
        await d.wait_event("engine_ready", after=n)
        await lockstep(d, sim, range(resume_at, resume_at + 40 * MINUTE_MS, MINUTE_MS), real)
        sim.clock.set(speed=30)  # delayed fills end and a reconciliation finds nothing in flight
        final = await final_reconciliation(d)
        sim.clock.set(speed=0)
        await asyncio.sleep(1.0)
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    after = await store_view(db_dsn)
    placed = [o.client_order_id for o in sim.account.orders.values()]
    mism = await position_mismatches(db_dsn, sim)
    usdt = float(sim.account.free.get("USDT", 0.0)) + float(sim.account.locked.get("USDT", 0.0))
    entries = sorted(decision_minute(c) for c in placed if c.startswith("E-"))
    resumed = [m for m in entries if m > resume_at - 2 * MINUTE_MS]
    stale = [m for m in entries if died_at < m <= resume_at - 2 * MINUTE_MS]
    print(f"\nCRASH {point} at {died_at} on {cid} (down {down_minutes} min): {len(placed)} orders on the exchange, "
          f"{duplicates([{'clientOrderId': c} for c in placed])} duplicates, {len(mism)} position mismatches, "
          f"cash store {after['cash']:.4f} vs exchange {usdt:.4f}, open orders store {len(after['open_orders'])} vs "
          f"exchange {len(exchange_open_orders(sim))}, {len(after['catch_up_skips'])} catch-up skips, "
          f"entries on stale minutes {len(stale)}, entries after the catch-up {len(resumed)}, "
          f"final reconciliation {final['mismatches']} mismatch(es)")  # fmt: skip
    assert sum(1 for c in placed if c.split(".", 1)[0] == eid) == 1  # exactly one order for that decision
    assert duplicates([{"clientOrderId": c} for c in placed]) == 0
    assert after["orders"][cid]["status"] == "filled"
    booked = [p for p in after["positions"] if of_decision(p, cid)]
    assert len(booked) == 1, after["positions"]  # an entry's fill is on the books (open, or closed by its exit)
    if cid.startswith("X-"):
        assert booked[0]["status"] == "closed"  # an exit's fill closed its position
    assert mism == []
    assert abs(after["cash"] - usdt) < 0.01
    assert after["open_orders"] == exchange_open_orders(sim)
    if down_minutes:
        # the missed minutes: candidates skipped with the reason, no entry sent for any of them
        assert after["catch_up_skips"], "no candidate on 45 stale minutes: the gate proves nothing"
        assert all(died_at <= s["ts"] <= resume_at - MINUTE_MS for s in after["catch_up_skips"])
        assert stale == []
        assert resumed, "entries never resumed after the catch-up"
        names = [e["event"] for e in d.events()[n:]]
        assert "live_catch_up" in names and "live_caught_up" in names
        # the entries sent in the crashed step were not decided again (stale minute): booked anyway
        crashed_entries = [c.split(".", 1)[0] for c in placed if c.startswith("E-") and decision_minute(c) == died_at]
        booked_ids = {p["entry_order_id"] for p in after["positions"]}
        assert cid.startswith("E-") and eid in crashed_entries, (cid, crashed_entries)  # the crash point's own entry
        assert all(e in booked_ids for e in crashed_entries), (crashed_entries, booked_ids)
        assert "orphan_order" in {e.get("kind") for e in d.events()[n:]}  # adopted as an orphan, never re-sent
    else:
        assert not after["catch_up_skips"]


async def test_a_position_cut_by_reconciliation_is_a_reconciled_trade(db_dsn: str, book30, bundle_path: Path,  # noqa: F811
                                                                      tmp_path: Path) -> None:  # fmt: skip
    """Coins of a held position leave the account outside the bot (sold by hand): the rule cuts
    the position to what the exchange holds, and the cut is a closed trade (exit reason
    'reconciled', PnL at the last price), so `bot status` and the reports agree with the exchange."""
    import subprocess
    import sys

    from tests.support.paper_daemon import ROOT

    start, real, sim, cfg, d = await live_run_setup(book30, bundle_path, db_dsn, tmp_path)
    try:
        await d.start()
        await d.wait_event("engine_ready")
        await lockstep(d, sim, range(start, start + 3 * MINUTE_MS, MINUTE_MS), real)
        await final_reconciliation(d)  # nothing in flight: the store's positions are the exchange's
        held = {p["symbol"]: p for p in (await store_view(db_dsn))["state"]["positions"]}
        assert len(held) >= 2, "the bundle opened fewer than 2 positions in 3 minutes"
        full, part = sorted(held)[:2]
        # by hand: all of one coin sold, 60 % of another
        sim.account._add(full[:-4], -float(sim.account.free.get(full[:-4], 0.0)))
        sim.account._add(part[:-4], -0.6 * float(held[part]["qty"]))
        ev = await final_reconciliation(d)
        assert ev["mismatches"] >= 2
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    after = await store_view(db_dsn)
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = [dict(r) for r in await conn.fetch(
            "SELECT symbol, status, qty, entry_price, exit_price, exit_reason, pnl, details FROM positions "
            "WHERE mode = 'live' AND exit_reason = 'reconciled' ORDER BY symbol")]  # fmt: skip
        # PnL at a price the exchange printed: the symbol's close in a minute of this run
        printed = {r["symbol"]: await conn.fetchval("SELECT count(*) FROM candles WHERE symbol = $1 AND close = $2 AND ts >= $3",
                                                    r["symbol"], r["exit_price"], start) for r in rows}  # fmt: skip
    finally:
        await conn.close()
    out = subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), "status", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env={**os.environ, **d.keys_env()})  # fmt: skip
    assert out.returncode == 3, out.stdout + out.stderr  # 3: no daemon running (it was stopped)
    status = json.loads(out.stdout)
    by_sym = {r["symbol"]: r for r in rows}
    print(f"\nRECONCILED TRADES: {[(r['symbol'], round(r['qty'], 6), round(r['pnl'], 4)) for r in rows]}; "
          f"status positions {[p['symbol'] for p in status['positions']]}")  # fmt: skip
    assert set(by_sym) == {full, part}
    for sym, cut in ((full, held[full]["qty"]), (part, 0.6 * held[part]["qty"])):
        r = by_sym[sym]
        p = held[sym]
        # the exchange keeps fee and lot dust beyond the books: the cut is what the books held beyond it
        assert r["status"] == "closed" and r["qty"] == pytest.approx(cut, rel=5e-3)
        fee = p["entry_fee"] * r["qty"] / p["qty"]
        assert r["pnl"] == pytest.approx(r["qty"] * (r["exit_price"] - p["entry_price"]) - fee, rel=1e-9, abs=1e-9)
        assert json.loads(r["details"])["trade"]["exit_reason"] == "reconciled"
        assert printed[sym] >= 1
    engine = {p["symbol"]: p["qty"] for p in after["state"]["positions"]}
    assert full not in engine and engine[part] == pytest.approx(0.4 * held[part]["qty"], rel=1e-2)
    assert engine[part] + by_sym[part]["qty"] == pytest.approx(held[part]["qty"], rel=1e-9)
    shown = {p["symbol"]: p["qty"] for p in status["positions"]}
    assert shown == pytest.approx(engine)  # bot status == the engine (== the exchange, checked next)
    assert await position_mismatches(db_dsn, sim) == []
