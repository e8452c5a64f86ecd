"""The exchange simulator speaks Binance: unmodified ccxt (REST and websocket) against it over
real sockets, values checked against the recorded data."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp
import ccxt
import numpy as np
import pytest
from pydantic import SecretStr

from bot.config import Config, Secrets
from bot.exchange_sim.faults import Fault
from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from bot.marketdata.exchange import BinanceClient, build_exchange, from_ccxt_symbol, to_ccxt_symbol
from bot.marketdata.retry import with_retry
from models.timeutil import MINUTE_MS
from tests.support.shared_data import DATA_DIR, ROOT, shared_data_or_skip, symbols30

KEY, SECRET = "simkey-" + "a" * 57, "simsecret-" + "b" * 54
APR10_1200 = 1618056000000  # 2021-04-10 12:00 UTC


@pytest.fixture(scope="module")
def book() -> CandleBook:
    return CandleBook.from_directory(DATA_DIR, symbols30())


def client_for(sim: ExchangeSimulator, key: str | None = KEY, secret: str | None = SECRET, **kw) -> BinanceClient:
    cfg = Config.model_validate({"symbols": ["BTCUSDT", "ETHUSDT"], "exchange": {"urls": sim.urls, "rate_limit_ms": 0, **kw}})
    if key is not None:
        cfg = cfg.model_copy(update={"secrets": Secrets(api_key=SecretStr(key), api_secret=SecretStr(secret or ""))})
    return build_exchange(cfg)


async def started(book: CandleBook, **settings) -> ExchangeSimulator:
    settings.setdefault("speed", 0)
    settings.setdefault("start_ms", APR10_1200 + 30_000)
    settings.setdefault("api_keys", {KEY: SECRET})
    sim = ExchangeSimulator(book, SimSettings(**settings))
    await sim.start()
    return sim


def test_symbol_mapping():
    assert to_ccxt_symbol("BTCUSDT") == "BTC/USDT"
    assert to_ccxt_symbol("1INCHUSDT") == "1INCH/USDT"
    assert from_ccxt_symbol("BTC/USDT") == "BTCUSDT"
    with pytest.raises(ValueError, match="quote asset"):
        to_ccxt_symbol("BTCEUR")
    with pytest.raises(ValueError, match="derivatives"):
        from_ccxt_symbol("BTC/USDT:USDT")


async def test_markets_time_and_klines_match_the_recorded_data(book):
    sim = await started(book)
    ex = client_for(sim)
    try:
        markets = await ex.load_markets()
        assert set(markets) == {to_ccxt_symbol(s) for s in symbols30()}
        btc = markets["BTC/USDT"]
        assert btc["id"] == "BTCUSDT" and btc["spot"] and btc["active"] and btc["base"] == "BTC"
        assert btc["precision"]["price"] == 0.01  # BTC prices in the data have 2 decimals
        assert await ex.fetch_time() == APR10_1200 + 30_000

        for sym in ("BTCUSDT", "WINUSDT" if "WINUSDT" in book.symbols else "DOGEUSDT", "MKRUSDT"):
            since = APR10_1200 - 999 * MINUTE_MS
            rows = await ex.fetch_ohlcv(to_ccxt_symbol(sym), "1m", since=since, limit=1000)
            a = np.array(rows, dtype=np.float64)
            src = book.range(sym, since, APR10_1200)
            assert len(rows) == len(src) == 1000
            # Every closed candle equals the source exactly (float64 survives the decimal text).
            for col, s in zip(a[:-1].T, src.slice(0, 999).columns(), strict=True):
                assert np.array_equal(col, s.astype(np.float64)), sym
            # The last one is the minute forming now: partial, not the final candle.
            assert a[-1, 0] == APR10_1200
            assert a[-1, 5] < src.volume[-1] and a[-1, 1] == src.open[-1]

        # Binance returns the next existing candles when a range has none (exchange downtime).
        outage = 1618884000000  # 2021-04-20 02:00, 150 minutes missing
        sim.clock.set(outage + 200 * MINUTE_MS)
        rows = await ex.fetch_ohlcv("ETH/USDT", "1m", since=outage - 2 * MINUTE_MS, limit=5)
        assert [r[0] for r in rows] == [outage - 2 * MINUTE_MS, outage - MINUTE_MS] + [
            outage + (150 + i) * MINUTE_MS for i in range(3)
        ]
    finally:
        await ex.close()
        await sim.stop()


async def test_websocket_pushes_closed_and_in_progress_klines(book):
    sim = await started(book, update_interval_s=60)
    events: list[dict] = []
    ex = client_for(sim)
    ex.on_kline = events.append
    try:
        pairs = [["BTC/USDT", "1m"], ["ETH/USDT", "1m"]]
        watch = asyncio.create_task(ex.watch_ohlcv_for_symbols(pairs))
        for _ in range(200):
            if sim.subscribed_symbols() == {"BTCUSDT", "ETHUSDT"}:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert not events  # the clock is frozen: nothing closes
        sim.clock.advance(60_000)  # minute 12:00 closes, 12:01 starts
        await asyncio.wait_for(watch, 5)
        await asyncio.sleep(0.2)
        closed = [e for e in events if e["k"]["x"]]
        forming = [e for e in events if not e["k"]["x"]]
        assert sorted(e["s"] for e in closed) == ["BTCUSDT", "ETHUSDT"]
        for e in closed:
            k = e["k"]
            row = book.get(e["s"], APR10_1200)
            assert k["t"] == APR10_1200 and k["T"] == APR10_1200 + 59_999 and k["i"] == "1m"
            assert tuple(float(k[f]) for f in "ohlcv") == row.values()
        assert {e["k"]["t"] for e in forming} == {APR10_1200 + MINUTE_MS}
        for e in forming:
            row = book.get(e["s"], APR10_1200 + MINUTE_MS)
            assert float(e["k"]["v"]) < row.volume  # partial
        # ccxt's own cache has them too (its OHLCV arrays drop the closed flag; that is why the feed listens to events)
        assert ex.ohlcvs["BTC/USDT"]["1m"][-1][0] == APR10_1200 + MINUTE_MS
    finally:
        await ex.close()
        await sim.stop()


async def test_orders_fill_against_the_replayed_candles(book):
    sim = await started(book, balances={"USDT": 10_000.0})
    ex = client_for(sim)
    try:
        bal = await ex.fetch_balance()
        assert bal["USDT"]["free"] == 10_000.0

        m = await ex.create_order("ETH/USDT", "market", "buy", 0.5)
        forming_row = book.get("ETHUSDT", APR10_1200)
        assert m["status"] == "closed" and m["filled"] == 0.5
        assert forming_row.low <= m["average"] <= forming_row.high
        assert m["fee"]["currency"] == "ETH" and m["fee"]["cost"] == pytest.approx(0.0005)

        # A limit buy below the market rests; it fills once a later candle trades through it.
        nxt = book.range("ETHUSDT", APR10_1200 + MINUTE_MS, APR10_1200 + 60 * MINUTE_MS)
        hit = int(np.argmin(nxt.low))
        price = round(float(nxt.low[hit]) + 0.01, 2)
        assert price < m["average"]
        lim = await ex.create_order("ETH/USDT", "limit", "buy", 1.0, price)
        assert lim["status"] == "open"
        assert (await ex.fetch_balance())["USDT"]["used"] == pytest.approx(price)
        assert [o["id"] for o in await ex.fetch_open_orders("ETH/USDT")] == [lim["id"]]
        other = await ex.create_order("ETH/USDT", "limit", "buy", 1.0, round(price * 0.5, 2))

        sim.clock.set(int(nxt.ts[hit]) + MINUTE_MS + 1)  # the touching candle has closed
        await asyncio.sleep(0.2)
        done = await ex.fetch_order(lim["id"], "ETH/USDT")
        assert done["status"] == "closed" and done["average"] == price
        cancelled = await ex.cancel_order(other["id"], "ETH/USDT")
        assert cancelled["status"] == "canceled"
        with pytest.raises(ccxt.OrderNotFound):
            await ex.cancel_order(other["id"], "ETH/USDT")
        with pytest.raises(ccxt.OrderNotFound):
            await ex.fetch_order("999", "ETH/USDT")
        trades = await ex.fetch_my_trades("ETH/USDT")
        assert [t["order"] for t in trades] == [m["id"], lim["id"]]
        bal = await ex.fetch_balance()
        assert bal["ETH"]["total"] == pytest.approx(1.5 * 0.999)
        assert bal["USDT"]["used"] == 0
        with pytest.raises(ccxt.InsufficientFunds):
            await ex.create_order("ETH/USDT", "market", "buy", 1000.0)
    finally:
        await ex.close()
        await sim.stop()


async def test_bad_credentials_get_binance_errors(book):
    sim = await started(book)
    wrong_secret = client_for(sim, secret="not-the-secret-" + "c" * 49)
    wrong_key = client_for(sim, key="unknown-" + "d" * 56)
    try:
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            await wrong_secret.fetch_balance()
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            await wrong_key.fetch_balance()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sim.base_url}/api/v3/account?timestamp=1&signature=x") as r:
                assert r.status == 401 and (await r.json())["code"] == -2014
            # a correctly signed but stale request is refused too
            import hashlib
            import hmac

            q = "timestamp=1000"
            sig = hmac.new(SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()
            async with http.get(f"{sim.base_url}/api/v3/account?{q}&signature={sig}", headers={"X-MBX-APIKEY": KEY}) as r:
                assert (await r.json())["code"] == -1021
        # the secret never appears in what ccxt raised
        with pytest.raises(ccxt.AuthenticationError) as raised:
            await wrong_key.fetch_balance()
        assert SECRET not in str(raised.value)
    finally:
        await wrong_secret.close()
        await wrong_key.close()
        await sim.stop()


async def test_rest_faults_surface_as_ccxt_network_errors_and_are_retried(book):
    sim = await started(book, timeout_delay_s=2.0, retry_after_s=0)
    ex = client_for(sim, timeout_ms=300)
    now = sim.clock.now_ms()
    try:
        await ex.load_markets()
        expected = {"rest_429": ccxt.DDoSProtection, "rest_418": ccxt.DDoSProtection,
                    "rest_5xx": ccxt.ExchangeNotAvailable, "rest_timeout": ccxt.RequestTimeout}  # fmt: skip
        for kind, exc in expected.items():
            sim.add_faults([Fault(kind, now)])
            await asyncio.sleep(0.1)  # armed by the clock loop
            with pytest.raises(exc):
                await ex.fetch_ohlcv("BTC/USDT", "1m", limit=3)
            assert isinstance(exc(), ccxt.NetworkError)  # all retryable
        sim.add_faults([Fault(k, now) for k in expected])
        await asyncio.sleep(0.1)
        errors: list[str] = []
        rows = await with_retry(lambda: ex.fetch_ohlcv("BTC/USDT", "1m", limit=3), what="t", base_s=0.01, cap_s=0.05,
                                attempts=10, exchange=ex, on_error=lambda e: errors.append(type(e).__name__))  # fmt: skip
        assert len(rows) == 3 and len(errors) == 4
        assert sim.faults.applied_counts()["rest_timeout"] == 2
        with pytest.raises(ccxt.BadSymbol):  # not retryable: raised at once
            await with_retry(lambda: ex.fetch_ohlcv("NOPE/USDT", "1m"), what="t", base_s=0.01, cap_s=0.05, exchange=ex)
    finally:
        await ex.close()
        await sim.stop()


async def test_ws_drop_and_stall_reach_the_client(book):
    sim = await started(book, speed=600, update_interval_s=0.05)
    ex = client_for(sim)
    try:
        pairs = [["BTC/USDT", "1m"]]
        await asyncio.wait_for(ex.watch_ohlcv_for_symbols(pairs), 5)
        sim.add_faults([Fault("ws_drop", sim.clock.now_ms())])
        with pytest.raises(ccxt.NetworkError):
            for _ in range(200):
                await asyncio.wait_for(ex.watch_ohlcv_for_symbols(pairs), 5)
        await asyncio.wait_for(ex.watch_ohlcv_for_symbols(pairs), 5)  # reconnects and streams again
        sim.add_faults([Fault("ws_stall", sim.clock.now_ms())])
        with pytest.raises(TimeoutError):
            for _ in range(200):
                await asyncio.wait_for(ex.watch_ohlcv_for_symbols(pairs), 1.0)
        assert sim.faults.applied_counts()["ws_drop"] == 1 and sim.faults.applied_counts()["ws_stall"] == 1
    finally:
        await ex.close()
        await sim.stop()


@pytest.mark.slow
async def test_simulate_exchange_command_serves_ccxt():
    data = shared_data_or_skip()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "simulate-exchange", "--candles", str(data), "--symbols", "BTCUSDT,ETHUSDT",
        "--port", "0", "--speed", "0", "--start", "2021-04-10T12:00:30",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env={**os.environ},
    )  # fmt: skip
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = re.search(r"on (http://\S+):", line).group(1)
        cfg = Config.model_validate({"symbols": ["BTCUSDT"], "exchange": {"urls": {
            "public": f"{url}/api/v3", "private": f"{url}/api/v3", "ws": url.replace("http", "ws") + "/stream/ws"}}})
        ex = build_exchange(cfg)
        try:
            assert await ex.fetch_time() == APR10_1200 + 30_000
            rows = await ex.fetch_ohlcv("BTC/USDT", "1m", since=APR10_1200 - 5 * MINUTE_MS, limit=5)
            src = CandleBook.from_directory(data, ["BTCUSDT"]).range("BTCUSDT", APR10_1200 - 5 * MINUTE_MS, APR10_1200 - MINUTE_MS)
            assert np.array_equal(np.array(rows)[:, 4], src.close)
        finally:
            await ex.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_api_secret_never_reaches_the_logs(book):
    import logging

    from bot.logs.setup import setup_logging

    sim = await started(book)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    devnull = open(os.devnull, "w")  # noqa: SIM115
    setup_logging(None, level="debug", console=True, stream=devnull)
    keep = Keep()
    keep.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(keep)
    ex = client_for(sim, secret=SECRET + "x")  # wrong secret: the request fails and is logged
    try:
        with pytest.raises(ccxt.AuthenticationError) as err:
            await ex.fetch_balance()
        import structlog

        structlog.get_logger("test").warning("auth_failed", error=str(err.value), secret_echo=SECRET + "x", key=KEY)
    finally:
        import structlog

        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        structlog.reset_defaults()
        devnull.close()
        await ex.close()
        await sim.stop()
    text = "\n".join(records)
    assert "exchange_client" in text and "auth_failed" in text
    assert SECRET not in text and KEY not in text
