"""The live broker through real ccxt against the simulator's signed endpoints and a real
Postgres: an order is never placed twice whatever fails (lost answer, kill -9), partial fills
are summed, rejections are classified, reconciliation adopts ours, leaves foreign orders
alone and repairs balance drift by the rule."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time

import aiohttp
import asyncpg
import numpy as np
import pytest

from bot.engine import client_order_id
from bot.exchange_sim.faults import Fault
from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from bot.execution.errors import Kind, classify
from bot.execution.live_broker import BINANCE_CLIENT_ID, OUR_ID, LiveBroker, exchange_client_id
from bot.execution.reconcile import reconcile
from models.timeutil import MINUTE_MS
from tests.support.live_broker import APR10_1200, KEY, SECRET, SYMBOLS, executor, intent, sim_orders
from tests.support.shared_data import DATA_DIR, ROOT


@pytest.fixture(scope="module")
def book() -> CandleBook:
    return CandleBook.from_directory(DATA_DIR, SYMBOLS)


async def started(book: CandleBook, faults: list[str] = (), **kw) -> ExchangeSimulator:  # type: ignore[assignment]
    kw.setdefault("timeout_delay_s", 3.0)
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=APR10_1200 + 5_000, api_keys={KEY: SECRET}, **kw),
                            [Fault(k, APR10_1200) for k in faults])  # fmt: skip
    await sim.start()
    return sim


async def rows(dsn: str, sql: str, *args) -> list[dict]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def test_client_order_ids_fit_binance_and_are_recognised_as_ours():
    for sym in ("BTCUSDT", "1000SATSUSDT", "VERYLONGNAMEXUSDT"):
        for leg in ("entry", "exit"):
            cid = client_order_id("20260101T000000-abcdef12", sym, 1_764_547_200_000, leg)
            for attempt in (1, 2, 99):
                x = exchange_client_id(cid, attempt)
                assert len(x) <= 36 and BINANCE_CLIENT_ID.match(x) and OUR_ID.match(x), x
    assert not OUR_ID.match("x-xcKtGhcu402881c9103f42bdb4183b")  # ccxt's own ids are not ours
    assert not OUR_ID.match("web_0123456789abcdef")


def test_errors_are_classified():
    import ccxt

    assert classify(ccxt.RateLimitExceeded("binance 429"))[0] is Kind.RETRY
    assert classify(ccxt.DDoSProtection("binance 418 banned"))[0] is Kind.RETRY
    assert classify(ccxt.InsufficientFunds("x")) == (Kind.REJECT, "rejected_insufficient_balance")
    assert classify(ccxt.InvalidOrder('binance {"code":-1013,"msg":"Filter failure: NOTIONAL"}')) == (Kind.REJECT, "rejected_min_notional")
    assert classify(ccxt.InvalidOrder('{"code":-1013,"msg":"Filter failure: PRICE_FILTER"}')) == (Kind.REJECT, "rejected_price_filter")
    assert classify(ccxt.RequestTimeout("x"))[0] is Kind.UNKNOWN
    assert classify(ccxt.ExchangeNotAvailable("503"))[0] is Kind.UNKNOWN
    assert classify(ccxt.InvalidOrder("Duplicate order sent."))[0] is Kind.UNKNOWN


async def test_timeout_after_accept_gives_exactly_one_order(book, db_dsn):
    sim = await started(book, ["order_lost_response"])
    ex, pool = await executor(sim.urls, db_dsn)
    try:
        it = intent()
        await ex.place(it)
        assert ex.counts["lookups"] >= 1  # the answer was lost: it was looked up, not re-sent
        await ex.place(it)  # the engine asking again changes nothing
        placed = [o for o in await sim_orders(sim.base_url) if o["clientOrderId"] == it.client_order_id]
        assert len(placed) == 1 and placed[0]["status"] == "FILLED"
        assert len(await sim_orders(sim.base_url)) == 1
        (row,) = await rows(db_dsn, "SELECT status, filled_qty, exchange_order_id FROM orders")
        assert row["status"] == "filled" and row["exchange_order_id"] == str(placed[0]["orderId"])
        assert ex.outbox and ex.outbox[0][1] is not None
        assert sim.faults.applied_counts()["order_lost_response"] == 1
    finally:
        await ex.ex.close()
        await pool.close()
        await sim.stop()


async def test_response_lost_then_kill_9_then_restart_adopts_the_one_order(book, db_dsn, tmp_path):
    sim = await started(book, ["order_lost_response"], timeout_delay_s=6.0)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.live_broker", json.dumps(sim.urls), db_dsn, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=open(tmp_path / "child.txt", "wb"),  # noqa: SIM115
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not await sim_orders(sim.base_url):  # accepted by the exchange; the answer is held
            assert time.monotonic() < deadline, (tmp_path / "child.txt").read_text()
            await asyncio.sleep(0.05)
        child.kill()  # kill -9 between "sent" and "acknowledged"
        await child.wait()
        assert b"answered" not in await child.stdout.read()
        (row,) = await rows(db_dsn, "SELECT status FROM orders")
        assert row["status"] == "submitted"  # the store knew the id before it was sent
        # restart: the engine restores its pending order; the broker looks it up and adopts it
        ex, pool = await executor(sim.urls, db_dsn)
        try:
            await ex.load(since_ts=0)
            broker = LiveBroker(ex, asyncio.get_running_loop(), ex.cfg)
            await asyncio.to_thread(broker.restore, [intent()])
            up = broker.poll(0, np.zeros((0, 5)), {})
            assert len(up.fills) == 1 and not up.cancelled
            await asyncio.to_thread(broker.submit, [intent()])  # the restarted engine deciding the same again
            assert ex.counts["sent"] == 0
        finally:
            await ex.ex.close()
            await pool.close()
        placed = await sim_orders(sim.base_url)
        assert len(placed) == 1 and placed[0]["status"] == "FILLED"
        (row,) = await rows(db_dsn, "SELECT status, filled_qty FROM orders")
        assert row["status"] == "filled" and row["filled_qty"] == pytest.approx(0.01)
    finally:
        if child.returncode is None:
            child.kill()
        await sim.stop()


async def test_partial_fills_are_summed(book, db_dsn):
    sim = await started(book, ["order_partial"], partial_fraction=0.3)
    ex, pool = await executor(sim.urls, db_dsn)
    try:
        it = intent(qty=0.05)
        await ex.place(it)
        (row,) = await rows(db_dsn, "SELECT status, filled_qty FROM orders")
        assert row["status"] == "partially_filled" and row["filled_qty"] == pytest.approx(0.015)
        assert not ex.outbox  # nothing final for the engine yet
        sim.clock.set(now_ms=APR10_1200 + 2 * MINUTE_MS + 5_000)  # the next close fills the rest
        for _ in range(100):
            await ex.poll_open()
            if ex.outbox:
                break
            await asyncio.sleep(0.05)
        _, fill, _ = ex.outbox.popleft()
        trades = [t for t in sim.account.trades]
        assert len(trades) == 2
        gross = sum(t.qty for t in trades)
        fee_btc = sum(t.commission for t in trades)
        assert gross == pytest.approx(0.05)
        assert fill.qty == pytest.approx(gross - fee_btc)  # net of the fee taken in BTC
        assert fill.price == pytest.approx(sum(t.qty * t.price for t in trades) / gross)
        assert fill.fee == pytest.approx(fee_btc * fill.price)
        db_fills = await rows(db_dsn, "SELECT qty, fee, fee_asset FROM fills ORDER BY id")
        assert [r["qty"] for r in db_fills] == pytest.approx([t.qty for t in trades])
        assert {r["fee_asset"] for r in db_fills} == {"BTC"}  # fees as the exchange reports them
        (row,) = await rows(db_dsn, "SELECT status, filled_qty FROM orders")
        assert row["status"] == "filled" and row["filled_qty"] == pytest.approx(0.05)
    finally:
        await ex.ex.close()
        await pool.close()
        await sim.stop()


async def test_rejections_are_dropped_with_a_reason_and_rate_limits_retried(book, db_dsn):
    sim = await started(book, ["order_reject_balance", "order_429", "order_418"])
    ex, pool = await executor(sim.urls, db_dsn)
    try:
        a, b, c, d = (intent(26967600 + k, s) for k, s in enumerate(("BTCUSDT", "ETHUSDT", "BNBUSDT", "ETHUSDT")))
        await ex.place(a)  # insufficient balance: dropped
        await ex.place(b)  # 429 then 418: retried with the same id, placed once
        sim.add_faults([Fault("order_5xx", APR10_1200), Fault("order_reject_filter", APR10_1200)])
        await ex.place(c)  # 503: unknown, looked up, provably not placed
        await ex.place(d)  # PRICE_FILTER: dropped
        out = {eid: (fill, why) for eid, fill, why in ex.outbox}
        assert out[a.client_order_id] == (None, "rejected_insufficient_balance")
        assert out[b.client_order_id][0] is not None and ex.counts["retries"] == 2
        assert out[c.client_order_id] == (None, "order_not_placed")
        assert out[d.client_order_id] == (None, "rejected_price_filter")
        placed = await sim_orders(sim.base_url)
        assert [o["clientOrderId"] for o in placed] == [b.client_order_id]
        st = {r["client_order_id"]: r for r in await rows(db_dsn, "SELECT client_order_id, status, reason FROM orders")}
        assert st[a.client_order_id]["status"] == "rejected"
        assert json.loads(st[a.client_order_id]["reason"])["code"] == "rejected_insufficient_balance"
        assert st[c.client_order_id]["status"] == "expired"
    finally:
        await ex.ex.close()
        await pool.close()
        await sim.stop()


async def test_rejected_entry_reaches_the_decision_log(book, db_dsn, engine_bundle):
    """The engine books a broker cancellation as a skipped decision with the broker's reason,
    and the store writes it to the decisions table."""
    from bot.engine import Engine
    from bot.store.trading import StepRecords, TradingStore

    sim = await started(book, ["order_reject_balance"])
    ex, pool = await executor(sim.urls, db_dsn)
    try:
        loop = asyncio.get_running_loop()
        broker = LiveBroker(ex, loop, ex.cfg)
        eng = Engine(list(engine_bundle.manifest["symbols"]), engine_bundle, broker=broker)
        it = intent()
        eng._pending_meta[it.client_order_id] = {"symbol": "BTCUSDT", "decision_ts": it.decision_ts, "tp_frac": 0.01,
                                                 "sl_frac": 0.01, "er": 0.01, "p": 0.6, "version": "v-test"}  # fmt: skip
        await asyncio.to_thread(broker.submit, [it])
        bars = np.full((len(eng.symbols), 5), np.nan)
        from bot.engine.engine import StepResult

        res = StepResult(it.decision_ts + MINUTE_MS)
        eng._apply_broker(broker.poll(res.ts, bars, eng.index), res)
        assert [(d.symbol, d.action, d.reason) for d in res.decisions] == [("BTCUSDT", "skip", "rejected_insufficient_balance")]
        await TradingStore(pool, "live").write_step(StepRecords.from_step(res.ts, res, state=None, model_version="v"), now_ms=1)
        got = await rows(db_dsn, "SELECT symbol, action, reason FROM decisions WHERE mode = 'live'")
        assert got == [{"symbol": "BTCUSDT", "action": "skip", "reason": "rejected_insufficient_balance"}]
    finally:
        await ex.ex.close()
        await pool.close()
        await sim.stop()


async def test_reconciliation_adopts_ours_leaves_foreign_alone_and_repairs_drift(book, db_dsn):
    sim = await started(book)
    ex, pool = await executor(sim.urls, db_dsn)
    try:
        # a foreign resting order (placed by hand) and one of ours the store never saw (its
        # process died before the row was visible): both rest far below the market
        ours = client_order_id("v-test", "ETHUSDT", APR10_1200, "entry")
        await ex.ex.create_order("BTC/USDT", "limit", "buy", 0.001, 30_000, {"newClientOrderId": "web_manual_1"})
        await ex.ex.create_order("ETH/USDT", "limit", "buy", 0.01, 1_000, {"newClientOrderId": ours})
        # one real position: bought 0.02 BTC (fee in BTC)
        await ex.place(intent(qty=0.02))
        held = float((await ex.ex.fetch_balance())["total"]["BTC"])
        ex.outbox.clear()  # the engine booked that fill
        # drift: 250 USDT leave the account outside the bot
        async with aiohttp.ClientSession() as s, s.post(f"{sim.base_url}/_sim/balances", json={"USDT": -250.0}) as r:
            assert r.status == 200
        bal = await ex.ex.fetch_balance()
        cash_store = float(bal["total"]["USDT"]) + 250.0
        rec = await reconcile(ex, cash=cash_store, positions={"BTCUSDT": held + 0.001}, symbols=SYMBOLS,
                              qty_steps={s: 1e-5 for s in SYMBOLS})  # fmt: skip
        kinds = {m.kind: m for m in rec.mismatches}
        assert kinds["foreign_open_order"].exchange == "web_manual_1"
        assert kinds["adopted_open_order"].exchange == ours
        # the adopted order is in flight: balances wait for the next round
        assert rec.complete and rec.deferred and rec.cash is None and not rec.positions
        open_now = {o["clientOrderId"] for o in await sim_orders(sim.base_url) if o["status"] == "NEW"}
        assert open_now == {"web_manual_1", ours}  # nothing cancelled
        stored = await rows(db_dsn, "SELECT client_order_id, status FROM orders WHERE client_order_id = $1", ours)
        assert stored == [{"client_order_id": ours, "status": "accepted"}]
        await ex.ex.cancel_order(None, "ETH/USDT", {"origClientOrderId": ours})  # ours ends (cancelled)
        rec = await reconcile(ex, cash=cash_store, positions={"BTCUSDT": held + 0.001}, symbols=SYMBOLS,
                              qty_steps={s: 1e-5 for s in SYMBOLS})  # fmt: skip
        assert rec.complete and not rec.deferred
        kinds = {m.kind: m for m in rec.mismatches}
        assert kinds["cash"].store == pytest.approx(cash_store) and rec.cash == pytest.approx(cash_store - 250.0)
        assert kinds["position"].exchange == pytest.approx(held) and rec.positions == {"BTCUSDT": pytest.approx(held)}
        assert "web_manual_1" in {m.exchange for m in rec.mismatches}  # still reported, still left alone
    finally:
        await ex.ex.close()
        await pool.close()
        await sim.stop()


async def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_fills_arrive_by_the_user_data_stream_without_polling(book, db_dsn):
    """`watch_orders` (ccxt.pro binance: the WebSocket API user data stream) against the
    simulator's /ws-api/v3: a delayed fill is known when it happens, with no look-up at all."""
    sim = await started(book, ["order_delayed"])
    ex, pool = await executor(sim.urls, db_dsn)
    watcher = asyncio.create_task(ex.watch_loop())
    try:
        assert ex.ex.has["watchOrders"]
        await wait_for(lambda: ex.stream_up)
        it = intent(qty=0.02)
        await ex.place(it)  # accepted as NEW; it fills at the next minute's close
        assert not ex.outbox
        lookups = ex.counts["lookups"]
        sim.clock.set(now_ms=APR10_1200 + 2 * MINUTE_MS + 5_000)
        await wait_for(lambda: bool(ex.outbox))
        _, fill, _ = ex.outbox.popleft()
        (trade,) = sim.account.trades
        assert fill.qty == pytest.approx(trade.qty - trade.commission)  # the fee in BTC, as the report says
        assert ex.counts["polls"] == 0 and ex.counts["lookups"] == lookups and ex.counts["reports"] >= 2
        (row,) = await rows(db_dsn, "SELECT status, filled_qty, exchange_order_id FROM orders")
        assert row["status"] == "filled" and row["filled_qty"] == pytest.approx(0.02)
        assert row["exchange_order_id"] == str(trade.order_id)
        assert await rows(db_dsn, "SELECT fee, fee_asset FROM fills") == [{"fee": pytest.approx(trade.commission),
                                                                          "fee_asset": "BTC"}]  # fmt: skip
    finally:
        watcher.cancel()
        await ex.ex.close()
        await pool.close()
        await sim.stop()


async def test_a_user_stream_gap_is_covered_by_polling_and_the_stream_comes_back(book, db_dsn):
    """Reports lost while the stream is silent (a stalled connection) are found by the polling
    safety net; after the connection drops, ccxt connects and subscribes again and reports flow."""
    sim = await started(book, ["order_delayed", "order_delayed"])
    ex, pool = await executor(sim.urls, db_dsn)
    watcher = asyncio.create_task(ex.watch_loop())
    try:
        await wait_for(lambda: ex.stream_up)
        a = intent(qty=0.02)
        await ex.place(a)
        user = [c for c in sim._conns if c.user_sub is not None]
        assert len(user) == 1
        user[0].stalled = True  # silent: what happens now is never reported on it
        sim.clock.set(now_ms=APR10_1200 + 2 * MINUTE_MS + 5_000)
        await wait_for(lambda: len(sim.account.trades) == 1)
        await asyncio.sleep(0.3)
        assert not ex.outbox
        await ex.poll_open()  # the safety net
        assert [e for e, f, _ in ex.outbox if f is not None] == [a.client_order_id]
        ex.outbox.clear()
        user[0].abort()  # the stalled connection drops
        await wait_for(lambda: any(c.user_sub is not None and c.live for c in sim._conns), timeout=20)
        reports, polls = ex.counts["reports"], ex.counts["polls"]
        b = intent(26967601, "ETHUSDT", qty=0.1)
        await ex.place(b)
        sim.clock.set(now_ms=APR10_1200 + 4 * MINUTE_MS + 5_000)  # b fills at the close of the minute after it
        await wait_for(lambda: bool(ex.outbox))
        assert ex.outbox[0][0] == b.client_order_id and ex.counts["reports"] > reports and ex.counts["polls"] == polls
        assert len(await sim_orders(sim.base_url)) == 2  # nothing sent twice
    finally:
        watcher.cancel()
        await ex.ex.close()
        await pool.close()
        await sim.stop()


def limit_intent(price: float, minute: int = 26967600, symbol: str = "BTCUSDT", qty: float = 0.01):  # type: ignore[no-untyped-def]
    return dataclasses.replace(intent(minute, symbol, qty=qty), order_type="limit", limit_price=price)


async def test_limit_entries_on_the_tick_grid_fill_or_are_cancelled_when_they_expire(book, db_dsn):
    """An entry the engine asks as a limit order: sent as a LIMIT with the live config's time in
    force at a price on the market's tick grid never above the asked one; a resting one is
    cancelled after `live.limit_ttl_s` (its outcome: 'limit_expired'); a marketable one fills."""
    from decimal import Decimal

    sim = await started(book)
    ex, pool = await executor(sim.urls, db_dsn, limit_ttl_s=0.3)
    try:
        tick = Decimal(str(ex.ex.markets["BTC/USDT"]["precision"]["price"]))
        last = float(sim._last_price("BTCUSDT", sim.clock.now_ms()))
        low = limit_intent(last * 0.9 + float(tick) * 0.37)  # off the grid, far below the market: rests
        await ex.place(low)
        (o,) = await sim_orders(sim.base_url)
        assert o["type"] == "LIMIT" and o["timeInForce"] == "GTC" and o["status"] == "NEW"
        sent = Decimal(o["price"])
        assert sent % tick == 0 and float(sent) <= low.limit_price and float(sent) > low.limit_price - float(tick)
        assert not ex.outbox
        await ex.expire_limits()  # before its time to live: nothing
        assert (await sim_orders(sim.base_url))[0]["status"] == "NEW"
        await asyncio.sleep(0.35)
        await ex.expire_limits()
        assert (await sim_orders(sim.base_url))[0]["status"] == "CANCELED"
        assert list(ex.outbox) == [(low.client_order_id, None, "limit_expired")]
        ex.outbox.clear()
        eth = float(sim._last_price("ETHUSDT", sim.clock.now_ms()))
        high = limit_intent(eth * 1.01, minute=26967601, symbol="ETHUSDT", qty=0.1)  # marketable: fills now
        await ex.place(high)
        (eid, fill, _), = list(ex.outbox)
        assert eid == high.client_order_id and fill is not None and fill.price <= high.limit_price
        got = {r["client_order_id"]: r for r in await rows(db_dsn, "SELECT client_order_id, type, price, status FROM orders")}
        assert got[low.client_order_id] == {"client_order_id": low.client_order_id, "type": "limit", "price": float(sent),
                                            "status": "cancelled"}  # fmt: skip
        assert got[high.client_order_id]["type"] == "limit" and got[high.client_order_id]["status"] == "filled"
        # an exit carries its barrier as a limit price for the paper fill model: sent at market
        x = dataclasses.replace(intent(26967602, "ETHUSDT", "sell", 0.05, "exit"), order_type="limit", limit_price=1.0)
        await ex.place(x)
        assert [o["type"] for o in await sim_orders(sim.base_url)][-1] == "MARKET"
    finally:
        await ex.ex.close()
        await pool.close()
        await sim.stop()



async def test_pruned_orders_are_still_never_sent_twice(book, db_dsn):
    """The executor forgets day-old orders (bounded memory); the store still knows their ids, so
    a decision asked again after that is looked up, never sent a second time."""
    sim = await started(book)
    ex, pool = await executor(sim.urls, db_dsn)
    try:
        it = intent()
        await ex.place(it)
        ex.outbox.clear()  # the engine booked it
        assert ex.prune(it.decision_ts) == 0  # not older than the cut-off
        assert ex.prune(it.decision_ts + 1) == 1 and it.client_order_id not in ex.tracked
        sent = ex.counts["sent"]
        await ex.place(it)
        assert ex.counts["sent"] == sent and len(await sim_orders(sim.base_url)) == 1
    finally:
        await ex.ex.close()
        await pool.close()
        await sim.stop()
