"""`bot run --confirm-live` with `mode: live` against the exchange simulator (30 symbols, real
candles, fast clock, a real bundle that trades with the no-edge floor lowered in the test's own
config), through real ccxt on the simulator's signed endpoints:
- with order faults injected (lost answers, partial and delayed fills, rejections, 429/418/5xx)
  and `kill -9` restarts at random points: no decision ever becomes two orders, the positions
  equal the exchange's balances after the final reconciliation, nothing crashes but the kills;
- the API key and secret (recognisable fakes) appear in no log file, no table, no stderr;
- with no order faults, the same minutes give the same trades in paper and in live mode.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from bot.exchange_sim.faults import Fault
from models.timeutil import MINUTE_MS
from tests.support.live_daemon import (
    ORDER_FAULTS,
    LiveDaemon,
    all_table_text,
    assert_no_secret,
    duplicates,
    position_mismatches,
    sim_for,
    write_config,
)
from tests.support.paper_daemon import promote_bundle, window

pytestmark = pytest.mark.slow
















async def test_live_run_with_order_faults_and_kill_9_restarts(db_dsn, book30, bundle_path, tmp_path) -> None:  # noqa: F811
    start, end, _ = window(bundle_path, 3)
    rng = random.Random(11)
    minutes = list(range(start + 5 * MINUTE_MS, end - 40 * MINUTE_MS, MINUTE_MS))
    plan = [Fault(ORDER_FAULTS[k % len(ORDER_FAULTS)], rng.choice(minutes) + rng.randrange(1_000, 59_000)) for k in range(64)]
    sim = sim_for(book30, start)
    sim.add_faults(plan)
    await sim.start()
    await promote_bundle(db_dsn, bundle_path)
    cfg = write_config(tmp_path, db_dsn, sim, "live")
    d = LiveDaemon(cfg, tmp_path, db_dsn, "live")
    kills = crashes = 0
    try:
        await d.start()
        await d.wait_event("engine_ready")
        await d.wait_event("reconcile_done")
        sim.clock.set(speed=120)
        while kills < 5:
            await asyncio.sleep(rng.uniform(2.0, 7.0))
            if d.proc.returncode is not None:
                crashes += 1
            await d.kill9()
            kills += 1
            n = len(d.events())
            await d.start()
            await d.wait_event("engine_ready", after=n)
        while sim.clock.now_ms() < end:
            await asyncio.sleep(0.05)
        sim.clock.set(speed=0)
        await d.wait_minute(end - MINUTE_MS, timeout=300)
        # the last delayed fills and a final reconciliation with nothing in flight
        n = len(d.events())
        sim.clock.set(speed=30)
        deadline = time.monotonic() + 90
        final = None
        while time.monotonic() < deadline and final is None:
            final = next((e for e in d.events()[n:] if e["event"] == "reconcile_done"), None)
            await asyncio.sleep(0.2)
        sim.clock.set(speed=0)
        assert final is not None, "no complete reconciliation at the end"
        await asyncio.sleep(1.0)
        if d.proc.returncode is not None:
            crashes += 1
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    orders = [o for o in sim.account.orders.values()]
    placed = [{"clientOrderId": o.client_order_id} for o in orders]
    applied = {k: v for k, v in sim.faults.applied_counts().items() if k.startswith("order_")}
    dups = duplicates(placed)
    mism = await position_mismatches(db_dsn, sim)
    conn = await asyncpg.connect(db_dsn)
    try:
        closed = await conn.fetchval("SELECT count(*) FROM positions WHERE mode = 'live' AND status = 'closed'")
        rejected = await conn.fetch("SELECT reason, count(*) AS n FROM decisions WHERE mode = 'live' AND reason LIKE 'rejected_%' "
                                    "OR reason = 'order_not_placed' GROUP BY reason")  # fmt: skip
        by_status = dict(await conn.fetch("SELECT status, count(*) FROM orders WHERE mode = 'live' GROUP BY status"))
    finally:
        await conn.close()
    tracebacks = (tmp_path / "stderr.txt").read_text().count("Traceback")
    print(f"\nLIVE RUN: {len(orders)} orders on the exchange, {sum(applied.values())} order faults applied {applied}, "
          f"{kills} kill -9 restarts, {crashes} crashes, {tracebacks} tracebacks, {dups} duplicate orders, "
          f"{len(mism)} position mismatches {mism}, {closed} closed trades, orders in the store by status {by_status}, "
          f"rejections in the decision log {dict((r['reason'], r['n']) for r in rejected)}, "
          f"final reconciliation: {final['mismatches']} mismatch(es) reported")  # fmt: skip
    assert sum(applied.values()) >= 50
    assert kills == 5 and crashes == 0 and tracebacks == 0
    assert dups == 0
    assert mism == []
    assert closed >= 20
    assert rejected  # rejection reasons reached the decision log
    assert_no_secret(tmp_path, await all_table_text(db_dsn))


async def closed_trades(dsn: str, mode: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT details FROM positions WHERE mode = $1 AND status = 'closed' ORDER BY exit_ts, symbol", mode)
    finally:
        await conn.close()
    return [json.loads(r["details"])["trade"] for r in rows]


async def lockstep_run(book: Any, bundle: Path, dsn: str, home: Path, mode: str, start: int, end: int) -> list[dict[str, Any]]:
    """Run `bot run` in `mode` over [start, end), the exchange clock moved one minute at a time
    (1 s into each minute) once the daemon has stepped the minute before: market orders fill
    at the open of the minute after the decision, as the paper broker assumes."""
    from tests.support.paper_daemon import minutes_with_candles

    sim = sim_for(book, start, market_fill="open", fee_rate=0.0)
    await sim.start()
    await promote_bundle(dsn, bundle)
    cfg = write_config(home, dsn, sim, mode, sizing="equal_slots")
    data = yaml.safe_load(cfg.read_text())
    data["costs"] = {"fee_rate": 0.0, "slippage_bps": 0.0}
    cfg.write_text(yaml.safe_dump(data))
    d = LiveDaemon(cfg, home, dsn, mode)
    real = minutes_with_candles(book, start, end)
    try:
        await d.start()
        await d.wait_event("engine_ready")
        for m in range(start, end, MINUTE_MS):
            sim.clock.set(m + MINUTE_MS + 1_000, 0)
            if m in real:
                await d.wait_minute(m, timeout=60)
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    return await closed_trades(dsn, mode)


async def test_paper_and_live_give_the_same_trades_without_order_faults(make_db, book30, bundle_path, tmp_path) -> None:  # noqa: F811
    start, end, horizon = window(bundle_path, 3)
    (tmp_path / "paper").mkdir()
    (tmp_path / "live").mkdir()
    # two daemons, two simulators, two databases: side by side, each in its own lock step
    paper, live = await asyncio.gather(
        lockstep_run(book30, bundle_path, make_db(), tmp_path / "paper", "paper", start, end),
        lockstep_run(book30, bundle_path, make_db(), tmp_path / "live", "live", start, end),
    )

    def key(t: dict[str, Any], live_side: bool) -> tuple:
        # paper exits fill at the barrier inside the step of minute t; live sells at market, at
        # the open of minute t+1 (the fill's time): the same exit decision
        exit_min = int(t["exit_ts"]) // MINUTE_MS * MINUTE_MS - (MINUTE_MS if live_side else 0)
        return (t["symbol"], int(t["decision_ts"]), int(t["entry_ts"]) // MINUTE_MS * MINUTE_MS, exit_min,
                t["exit_reason"], round(float(t["entry_price"]), 10))  # fmt: skip

    cut = end - horizon
    p = sorted(key(t, False) for t in paper if int(t["decision_ts"]) < cut)
    lv = sorted(key(t, True) for t in live if int(t["decision_ts"]) < cut)
    print(f"\nPARITY: paper {len(p)} trades, live {len(lv)} trades, equal: {p == lv}")
    assert len(p) >= 30, f"only {len(p)} trades: parity over few trades proves little"
    assert lv == p
