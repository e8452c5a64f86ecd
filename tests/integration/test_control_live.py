"""The operator's flatten and force-exit in live mode: `bot run --confirm-live` against the
exchange simulator's signed endpoints (real ccxt, 30 symbols, real candles, a real bundle).
Live mode asks once more (force-exit: one code, flatten: two); the exits are market orders
through the live broker, on the exchange, and afterwards the store and the exchange agree."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.support.live_daemon import (
    LiveDaemon,
    duplicates,
    position_mismatches,
    sim_for,
    write_config,
)
from tests.support.paper_daemon import SPEED, promote_bundle, window
from tests.support.paper_daemon import bot_ctl as run_bot_ctl

pytestmark = pytest.mark.slow


async def bot_ctl(cfg, *args: str) -> tuple[int, str]:  # noqa: ANN001
    return await run_bot_ctl(cfg, *args, env=LiveDaemon.keys_env())


async def open_live(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT symbol FROM positions WHERE mode = 'live' AND status = 'open' ORDER BY symbol")
    finally:
        await conn.close()
    return [r["symbol"] for r in rows]


async def test_live_flatten_and_force_exit_ask_twice_and_sell_on_the_exchange(db_dsn, book30, bundle_path, tmp_path) -> None:  # noqa: ANN001
    start, _, _ = window(bundle_path, 6)
    sim = sim_for(book30, start)
    await sim.start()
    await promote_bundle(db_dsn, bundle_path)
    cfg = write_config(tmp_path, db_dsn, sim, "live")
    d = LiveDaemon(cfg, tmp_path, db_dsn, "live")
    try:
        await d.start()
        await d.wait_event("engine_ready")
        sim.clock.set(speed=SPEED)
        deadline = time.monotonic() + 180
        while len(await open_live(db_dsn)) < 3:
            assert time.monotonic() < deadline, "never held three positions"
            await asyncio.sleep(0.1)
        sim.clock.set(speed=0)
        await asyncio.sleep(3.0)  # the minute in flight lands
        held = await open_live(db_dsn)
        sells_before = sum(1 for o in sim.account.orders.values() if o.side == "SELL")

        one = held[0]
        rc, out = await bot_ctl(cfg, "force-exit", one)  # live: a code first, none given
        assert rc == 1 and "not confirmed" in out and await open_live(db_dsn) == held, out
        rc, out = await bot_ctl(cfg, "force-exit", one, "--yes")
        assert rc == 0 and f"\nclosed 1 position(s): {one} " in "\n" + out, out
        now = await open_live(db_dsn)  # entries the exchange had filled are booked too (and sold by a flatten)
        assert one not in now and set(held) - {one} <= set(now)
        sold = [o for o in sim.account.orders.values() if o.side == "SELL" and o.symbol == one]
        assert sold and sold[-1].type == "MARKET" and sold[-1].status == "FILLED" and sold[-1].client_order_id.startswith("X-")

        rc, out = await bot_ctl(cfg, "flatten", "--yes")  # live: a second code, not given
        assert rc == 1 and "LIVE mode: flatten sends real market orders" in out and "not confirmed" in out, out
        assert await open_live(db_dsn) == now
        rc, out = await bot_ctl(cfg, "flatten", "--yes", "--yes")
        assert rc == 0 and f"closed {len(now)} position(s)" in out, out
        assert not await open_live(db_dsn)
        await asyncio.sleep(4.0)  # a reconciliation (every 3 s) after the flatten
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    orders = list(sim.account.orders.values())
    assert sum(1 for o in orders if o.side == "SELL") == sells_before + 1 + len(now)
    assert duplicates([{"clientOrderId": o.client_order_id} for o in orders]) == 0
    assert await position_mismatches(db_dsn, sim) == []
    events = d.events()
    closed = [e for e in events if e["event"] == "trade_close" and e.get("reason") in ("flatten", "force_exit")]
    assert sorted((e["symbol"], e["reason"]) for e in closed) == sorted(
        [(one, "force_exit")] + [(s, "flatten") for s in now])
