"""Acceptance tests of the live feed: real ccxt (REST + websocket) against the exchange
simulator over real sockets, a real Postgres, the real 30-symbol data. The store must end up
equal to the source data row by row, whatever the exchange throws at the feed."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict

import numpy as np
import pytest

from bot.config import Config
from bot.exchange_sim.faults import BAD_VALUE_KINDS, FEED_KINDS, random_plan
from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from bot.marketdata import validate as v
from bot.marketdata.events import ClosedCandle, ExchangeGap
from bot.marketdata.feed import CandleFeed
from bot.store.db import Store
from models.timeutil import MINUTE_MS
from tests.support.feed_checks import assert_store_equals_source
from tests.support.shared_data import DATA_DIR, symbols30

pytestmark = pytest.mark.slow

H = 3_600_000
APR19_2340 = 1618875600000  # 2021-04-19 23:40 UTC: two hours with no exchange downtime follow
APR20_0150 = 1618883400000  # 10 minutes before the exchange-wide outage of 02:00-04:29
OUTAGE_START, OUTAGE_MINUTES = 1618884000000, 150  # 2021-04-20 02:00 UTC

EXPECTED_REASON = {
    "nan": v.NAN, "zero": v.NON_POSITIVE, "high_low": v.HIGH_LT_LOW, "neg_volume": v.NEGATIVE_VOLUME,
    "unaligned": v.UNALIGNED, "duplicate": v.DUPLICATE, "out_of_order": v.OUT_OF_ORDER, "skip": v.MISSING,
}  # fmt: skip


@pytest.fixture(scope="module")
def book30() -> CandleBook:
    return CandleBook.from_directory(DATA_DIR, symbols30())


def feed_config(sim: ExchangeSimulator, symbols: list[str], **feed: object) -> Config:
    return Config.model_validate({
        "symbols": symbols,
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "timeout_ms": 500, "retry_base_s": 0.05, "retry_max_s": 0.3},
        "feed": {"stall_timeout_s": 0.3, "reconnect_base_s": 0.05, "reconnect_max_backoff_s": 0.3,
                 "rest_poll_interval_s": 0.2, "flush_interval_s": 0.2, "backfill_days": 0, **feed},
    })  # fmt: skip


class Consumer:
    """The engine's side of the queue: records everything the feed hands over."""

    def __init__(self, feed: CandleFeed):
        self.candles: dict[str, list[ClosedCandle]] = defaultdict(list)
        self.gaps: dict[str, list[ExchangeGap]] = defaultdict(list)
        self.task = asyncio.create_task(self._run(feed))

    async def _run(self, feed: CandleFeed) -> None:
        while True:
            ev = await feed.queue.get()
            if isinstance(ev, ClosedCandle):
                self.candles[ev.symbol].append(ev)
            else:
                self.gaps[ev.symbol].append(ev)

    def stop(self) -> None:
        self.task.cancel()


async def wait_until(cond, timeout: float, what: str) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def catch_up_and_stop(sim: ExchangeSimulator, feed: CandleFeed, run: asyncio.Task, end: int | None = None) -> int:
    """Freeze the exchange clock, wait until the feed has released every symbol through `end`
    (default: two minutes before the frozen clock, so every candle up to it has closed), then
    stop the feed and wait for it to finish. Returns `end`."""
    sim.clock.set(speed=0)
    if end is None:
        end = sim.clock.now_ms() // MINUTE_MS * MINUTE_MS - 2 * MINUTE_MS
    await wait_until(lambda: bool(feed.seqs) and min(feed.released_through().values()) >= end, 30, "the feed to catch up")
    feed.stop()
    await asyncio.wait_for(run, 30)
    return end




def assert_delivered_in_order(consumer: Consumer, book: CandleBook, symbols: list[str], start: int, end: int) -> None:
    for s in symbols:
        ts = np.array([c.ts for c in consumer.candles[s]], dtype=np.int64)
        assert np.all(np.diff(ts) > 0), f"{s}: delivered out of order or twice"
        window = ts[(ts >= start) & (ts <= end)]
        assert np.array_equal(window, book.range(s, start, end).ts), f"{s}: delivered minutes differ from the source"


async def test_feed_30_symbols_with_every_fault_kind_stores_exactly_the_source(db_dsn, book30):
    symbols = symbols30()
    start = APR19_2340
    live_minutes = 120
    minutes = list(range(start + 2 * MINUTE_MS, start + (live_minutes - 4) * MINUTE_MS, MINUTE_MS))
    plan = random_plan({k: 24 for k in FEED_KINDS}, symbols, minutes, seed=7)
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.05,
                                                timeout_delay_s=1.0, retry_after_s=0), faults=plan)  # fmt: skip
    await sim.start()
    store = await Store.connect(db_dsn)
    feed = CandleFeed(feed_config(sim, symbols), store, start_ms=start - 10 * MINUTE_MS)
    consumer = Consumer(feed)
    run = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.wait_ready(), 30)
        sim.clock.set(speed=240)  # 4 s of data per real second
        await wait_until(lambda: sim.clock.now_ms() >= start + live_minutes * MINUTE_MS, 120, "the replay window")
        await wait_until(lambda: sim.faults.pending() == 0, 30, "every planned fault to be applied")
        end = await catch_up_and_stop(sim, feed, run)
    finally:
        feed.stop()
        consumer.stop()
        await sim.stop()

    counts = sim.faults.applied_counts()
    assert all(counts[k] >= 20 for k in FEED_KINDS), counts

    rows = await assert_store_equals_source(store, book30, symbols, start - 10 * MINUTE_MS, end)
    assert rows == 30 * ((end - start) // MINUTE_MS + 11)
    assert_delivered_in_order(consumer, book30, symbols, start - 10 * MINUTE_MS, end)

    # Every bad candle the exchange sent was reported, with the right reason.
    reported = {(i.symbol, i.ts, i.reason) for i in feed.issues.recent}
    for a in sim.faults.applied:
        if a.kind in EXPECTED_REASON:
            ts = a.ts + 1_234 if a.kind == "unaligned" else a.ts
            assert (a.symbol, ts, EXPECTED_REASON[a.kind]) in reported, f"injected {a} was not reported"
    for kind in BAD_VALUE_KINDS:  # and nothing valid was reported as bad
        assert feed.issues.count(EXPECTED_REASON[kind]) == counts[kind], (kind, feed.issues.as_dict(), counts)
    assert feed.stats["ws_stalls"] >= 20 and feed.stats["ws_errors"] >= 20, feed.stats
    for e in ("DDoSProtection", "ExchangeNotAvailable", "RequestTimeout"):
        assert feed.stats[f"rest_error_{e}"] >= 20, feed.stats
    await store.close()


async def test_feed_through_exchange_downtime_records_gaps_and_invents_nothing(db_dsn, book30):
    """The 150-minute exchange-wide outage of 2021-04-20: the feed starts in the middle of it
    (catch-up by REST over its start), streams live through its end, and must neither wait
    forever nor invent a minute."""
    symbols = symbols30()
    clock0 = OUTAGE_START + 100 * MINUTE_MS  # 03:40, inside the outage
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=clock0, update_interval_s=0.05))
    await sim.start()
    store = await Store.connect(db_dsn)
    feed = CandleFeed(feed_config(sim, symbols), store, start_ms=APR20_0150)
    consumer = Consumer(feed)
    run = asyncio.create_task(feed.run())
    after = OUTAGE_START + (OUTAGE_MINUTES + 15) * MINUTE_MS
    try:
        await asyncio.wait_for(feed.wait_ready(), 30)
        sim.clock.set(speed=1200)
        await wait_until(lambda: sim.clock.now_ms() >= after + 2 * MINUTE_MS, 60, "the end of the outage")
        await catch_up_and_stop(sim, feed, run, after)
    finally:
        feed.stop()
        consumer.stop()
        await sim.stop()

    await assert_store_equals_source(store, book30, symbols, APR20_0150, after)
    assert_delivered_in_order(consumer, book30, symbols, APR20_0150, after)
    for s in symbols:
        gaps = consumer.gaps[s]
        assert [(g.ts, g.minutes) for g in gaps if g.ts < after] and sum(g.minutes for g in gaps) == OUTAGE_MINUTES, (s, gaps)
        assert min(g.ts for g in gaps) == OUTAGE_START and max(g.end_ts for g in gaps) == OUTAGE_START + (OUTAGE_MINUTES - 1) * MINUTE_MS
    assert feed.stats["exchange_gap_minutes"] == OUTAGE_MINUTES * len(symbols)
    assert feed.issues.count(v.EXCHANGE_GAP) >= len(symbols)
    await store.close()


async def test_feed_restart_resumes_from_the_store_without_a_hole(db_dsn, book30):
    """Crash-only restart: a new feed picks up after the last stored candle and fills the
    minutes that passed while it was down."""
    symbols = symbols30()[:6]
    start = APR19_2340
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.05))
    await sim.start()
    store = await Store.connect(db_dsn)
    try:
        first = CandleFeed(feed_config(sim, symbols), store, start_ms=start - 5 * MINUTE_MS)
        run = asyncio.create_task(first.run())
        await asyncio.wait_for(first.wait_ready(), 30)
        sim.clock.set(speed=600)
        await wait_until(lambda: sim.clock.now_ms() >= start + 10 * MINUTE_MS, 30, "10 minutes")
        first.stop()
        await asyncio.wait_for(run, 30)
        stored_through = {s: await store.last_candle_ts(s) for s in symbols}
        await wait_until(lambda: sim.clock.now_ms() >= start + 20 * MINUTE_MS, 30, "10 minutes of downtime")

        second = CandleFeed(feed_config(sim, symbols), store)  # resumes from the store
        consumer = Consumer(second)
        run = asyncio.create_task(second.run())
        await wait_until(lambda: sim.clock.now_ms() >= start + 30 * MINUTE_MS, 30, "10 more minutes")
        end = await catch_up_and_stop(sim, second, run)
        consumer.stop()
    finally:
        await sim.stop()
    await assert_store_equals_source(store, book30, symbols, start - 5 * MINUTE_MS, end)
    for s in symbols:
        first_after_restart = consumer.candles[s][0].ts
        assert first_after_restart == stored_through[s] + MINUTE_MS, s  # nothing re-delivered, nothing skipped
    await store.close()


async def test_a_candle_the_exchange_keeps_serving_bad_is_left_empty_not_invented(db_dsn, book30):
    """If REST itself keeps answering an invalid candle, the feed gives the minute up after a
    few tries (logged as unrepairable) instead of blocking the symbol or storing it."""
    start = APR19_2340
    bad_ts = start - 3 * MINUTE_MS
    eth = book30.candles["ETHUSDT"]
    i = int(np.searchsorted(eth.ts, bad_ts))
    high = eth.high.copy()
    high[i] = eth.low[i] / 2  # high < low, on REST and websocket alike
    from models.candles import Candles

    book = CandleBook({"BTCUSDT": book30.candles["BTCUSDT"], "ETHUSDT": Candles(eth.ts, eth.open, high, eth.low, eth.close, eth.volume)})
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=start + 30_000, update_interval_s=0.05))
    await sim.start()
    store = await Store.connect(db_dsn)
    feed = CandleFeed(feed_config(sim, ["BTCUSDT", "ETHUSDT"]), store, start_ms=start - 10 * MINUTE_MS)
    consumer = Consumer(feed)
    run = asyncio.create_task(feed.run())
    end = start - MINUTE_MS
    try:
        await catch_up_and_stop(sim, feed, run, end)
    finally:
        feed.stop()
        consumer.stop()
        await sim.stop()
    got = await store.read_candles("ETHUSDT", start - 10 * MINUTE_MS, start, dtype=np.float64)
    src = book30.range("ETHUSDT", start - 10 * MINUTE_MS, end)
    assert np.array_equal(got.ts, src.ts[src.ts != bad_ts]) and np.array_equal(got.high, src.high[src.ts != bad_ts])
    assert [(g.ts, g.minutes) for g in consumer.gaps["ETHUSDT"]] == [(bad_ts, 1)]
    assert feed.stats["unrepairable"] == 1 and not consumer.gaps["BTCUSDT"]
    assert feed.issues.by_action[(v.HIGH_LT_LOW, v.UNREPAIRABLE)] == 1
    await assert_store_equals_source(store, book30, ["BTCUSDT"], start - 10 * MINUTE_MS, end)
    await store.close()


async def test_a_websocket_stall_is_one_outage_line_and_one_recovery_line(db_dsn, book30, tmp_path):
    """A `ws_stall` fault (the connection stays open and goes silent): the feed says `FEED down`
    once, with the symbols, the reason and since when, keeps the minutes coming by REST, and
    says `FEED back` once with the duration when a new connection delivers; the reconnect
    attempts in between are debug lines, not more warnings. Lines as `bot.log` has them."""
    import json

    from bot.exchange_sim.faults import Fault
    from bot.logs.setup import setup_logging

    symbols = symbols30()[:4]
    start = APR19_2340
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.05),
                            faults=[Fault("ws_stall", start + 3 * MINUTE_MS)])  # fmt: skip
    await sim.start()
    setup_logging(tmp_path, console=False)
    store = await Store.connect(db_dsn)
    feed = CandleFeed(feed_config(sim, symbols, stall_timeout_s=1.0), store, start_ms=start - 2 * MINUTE_MS)
    consumer = Consumer(feed)
    run = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.wait_ready(), 30)
        sim.clock.set(speed=60)  # one exchange minute per second: the 1 s stall spans about a minute
        await wait_until(lambda: sim.faults.pending() == 0, 30, "the stall to be applied")
        await wait_until(lambda: feed.stats["ws_outages"] >= 1, 30, "the websocket to deliver again")
        await wait_until(lambda: sim.clock.now_ms() >= start + 8 * MINUTE_MS, 30, "a few more minutes")
        end = await catch_up_and_stop(sim, feed, run)
    finally:
        feed.stop()
        consumer.stop()
        await sim.stop()
        await store.close()
    for h in __import__("logging").getLogger().handlers:
        h.flush()
    events = [json.loads(x) for x in (tmp_path / "bot.jsonl").read_text().splitlines()]
    lines = (tmp_path / "bot.log").read_text().splitlines()
    down = [e for e in events if e["event"] == "feed_outage"]
    back = [e for e in events if e["event"] == "feed_recovered"]
    assert len(down) == 1 and len(back) == 1 and feed.stats["ws_outages"] == 1, (down, back, feed.stats)
    assert down[0]["level"] == "warning" and down[0]["symbols"] == symbols and down[0]["reason"] == "websocket silent 1s"
    assert back[0]["since_ts"] == down[0]["since_ts"] and 1.0 <= back[0]["down_s"] < 30
    # "N candles filled" is what REST filled between the two lines, no more and no less
    i_down, i_back = events.index(down[0]), events.index(back[0])
    rest_fills = [e for e in events[i_down:i_back] if e["event"] == "feed_rest_fill"]
    assert back[0]["filled"] == sum(e["filled"] for e in rest_fills), (back[0], rest_fills)
    feed_lines = [x for x in lines if " FEED " in x]
    assert len(feed_lines) == 3, feed_lines  # up, down, back: one line each
    assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d WARN FEED down 4 symbols \(websocket silent 1s\) since \d\d-\d\d \d\d:\d\d: "
                        r"REST meanwhile", feed_lines[1]), feed_lines  # fmt: skip
    assert re.fullmatch(rf"\d\d-\d\d \d\d:\d\d FEED back after \d+s, {back[0]['filled']} candles filled", feed_lines[2]), feed_lines
    assert not [e for e in events if e["event"] in ("feed_ws_stalled", "feed_ws_down") and e["level"] != "debug"]
    assert_delivered_in_order(consumer, book30, symbols, start - 2 * MINUTE_MS, end)  # and nothing lost meanwhile
