"""Live feed benchmark: throughput (candles/s from the exchange to the store) and delay from a
minute's close on the exchange to the candle reaching the engine's queue (p50/p99).

Setup: `bot simulate-exchange` in its own process (30 symbols of symbols30.txt, the real data)
and the feed in this one, ccxt between them over real sockets, a real PostgreSQL server
(embedded, started here, stopped after). Each scenario gets a fresh database and its own
window of the data.

Scenarios, each measured for the websocket path and for its baseline in the same run:
  * throughput (capacity): the replay clock jumps 8 hours at once, so 14,400 candles close in
    one burst and the simulator pushes them as fast as it can; candles/s = candles persisted
    / seconds from the jump to the last one persisted. Baseline: the REST polling path
    (websocket unreachable, poll every 0.2 s, 1000-candle pages) on the same kind of window —
    what the feed falls back to.
  * delay: replay at 2 minutes per second (30 closes every 0.5 s). The simulator records
    `time.perf_counter()` when each minute closes (CLOCK_MONOTONIC, shared by the two
    processes on Linux); the consumer records it when it takes the candle from the queue.
    Baseline: the REST polling path at the shipped `feed.rest_poll_interval_s` (5 s).

Run: `python -m bench feed`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import numpy as np

from bench.harness import figure, record, require_shared_data, symbols30

ROOT = Path(__file__).resolve().parents[1]
MINUTE = 60_000
APR05 = 1617580800000  # 2021-04-05 00:00 UTC; windows below stay clear of the exchange outages


async def start_simulator(data: Path, symbols: list[str]) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "simulate-exchange", "--candles", str(data), "--symbols", ",".join(symbols),
        "--port", "0", "--speed", "0", "--start", str(APR05), "--update-interval", "2",
        "--ws-queue-size", "2000000", "--record-close-times",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    url = re.search(r"on (http://\S+):", line).group(1)
    return proc, url


async def run_scenario(url: str, dsn: str, symbols: list[str], *, ws: bool, start: int, minutes: int,
                       speed: float | None, poll_s: float) -> dict:  # fmt: skip
    from bot.config import Config
    from bot.marketdata.events import ClosedCandle
    from bot.marketdata.feed import CandleFeed
    from bot.store.db import Store

    ws_url = url.replace("http", "ws") + "/stream/ws" if ws else "ws://127.0.0.1:9/stream/ws"  # port 9: nothing there
    cfg = Config.model_validate({
        "symbols": symbols,
        "exchange": {"urls": {"public": f"{url}/api/v3", "private": f"{url}/api/v3", "ws": ws_url}, "rate_limit_ms": 0},
        "feed": {"rest_poll_interval_s": poll_s, "stall_timeout_s": 5.0, "flush_interval_s": 0.5,
                 "reconnect_base_s": 30.0, "reconnect_max_backoff_s": 30.0, "backfill_days": 0, "queue_size": 100_000},
    })  # fmt: skip
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/_sim/clock", json={"now_ms": start, "speed": 0}) as r:
            r.raise_for_status()
        store = await Store.connect(dsn)
        feed = CandleFeed(cfg, store, start_ms=start)
        taken: list[tuple[str, int, float]] = []

        async def consume() -> None:
            while True:
                ev = await feed.queue.get()
                if isinstance(ev, ClosedCandle):
                    taken.append((ev.symbol, ev.ts, time.perf_counter()))

        consumer = asyncio.create_task(consume())
        run = asyncio.create_task(feed.run())
        await asyncio.wait_for(feed.wait_ready(), 60)
        if ws:
            t_ws = time.monotonic()
            while not feed.ws_up and time.monotonic() - t_ws < 30:
                await asyncio.sleep(0.05)
        end = start + minutes * MINUTE
        t0 = time.perf_counter()
        if speed is None:  # burst: the whole window closes at once
            async with http.post(f"{url}/_sim/clock", json={"now_ms": end + 30_000, "speed": 0}) as r:
                r.raise_for_status()
        else:
            async with http.post(f"{url}/_sim/clock", json={"speed": speed}) as r:
                r.raise_for_status()
            while True:
                async with http.get(f"{url}/_sim/status") as r:
                    now = (await r.json())["now_ms"]
                if now >= end + MINUTE:
                    break
                await asyncio.sleep(0.05)
            async with http.post(f"{url}/_sim/clock", json={"speed": 0}) as r:
                r.raise_for_status()
        last = end - MINUTE
        while min(feed.persisted_through.get(s, 0) for s in symbols) < last:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        feed.stop()
        await asyncio.wait_for(run, 60)
        consumer.cancel()
        async with http.get(f"{url}/_sim/close_times") as r:
            closes = {(s, m): p for s, m, p in await r.json() if start <= m <= last}
        rows = 0
        for s in symbols:
            rows += len(await store.read_candles(s, start, last + MINUTE))
        await store.close()
    delays = np.array([(p - closes[(s, m)]) * 1000 for s, m, p in taken if (s, m) in closes and start <= m <= last])
    return {"rows": rows, "elapsed_s": elapsed, "delays_ms": delays, "stats": dict(feed.stats)}


async def main() -> None:
    from bot.store.embedded import EmbeddedPostgres

    data = require_shared_data()
    symbols = symbols30()
    base = Path(tempfile.mkdtemp(prefix="bench-feed-", dir="/tmp"))
    os.chmod(base, 0o755)
    pg = EmbeddedPostgres(base / "pgdata", dbname="postgres")
    pg.start()
    sim, url = await start_simulator(data, symbols)

    def fresh_db() -> str:
        name = "bench_" + uuid.uuid4().hex[:8]
        pg.create_database(name)
        return pg.dsn(name)

    try:
        tp_min, tp_speed = 480, None  # a burst: 8 hours x 30 symbols = 14,400 candles close at once
        ws_tp = await run_scenario(url, fresh_db(), symbols, ws=True, start=APR05, minutes=tp_min, speed=tp_speed, poll_s=0.2)
        rest_tp = await run_scenario(url, fresh_db(), symbols, ws=False, start=APR05 + 1 * 86_400_000, minutes=tp_min,
                                     speed=tp_speed, poll_s=0.2)  # fmt: skip
        dl_min, dl_speed = 40, 120  # 2 minutes of data per second: 30 closes every 0.5 s
        ws_dl = await run_scenario(url, fresh_db(), symbols, ws=True, start=APR05 + 2 * 86_400_000, minutes=dl_min,
                                   speed=dl_speed, poll_s=5.0)  # fmt: skip
        rest_dl = await run_scenario(url, fresh_db(), symbols, ws=False, start=APR05 + 3 * 86_400_000, minutes=dl_min,
                                     speed=dl_speed, poll_s=5.0)  # fmt: skip
    finally:
        sim.send_signal(signal.SIGTERM)
        await sim.wait()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)

    for name, r in (("ws throughput", ws_tp), ("rest throughput", rest_tp), ("ws delay", ws_dl), ("rest delay", rest_dl)):
        d = r["delays_ms"]
        print(f"{name}: rows={r['rows']} elapsed={r['elapsed_s']:.2f}s delays n={len(d)} "
              f"p50={np.percentile(d, 50) if len(d) else float('nan'):.1f}ms stats={r['stats']}")  # fmt: skip
    expected = tp_min * len(symbols)
    assert ws_tp["rows"] == expected and rest_tp["rows"] == expected, (ws_tp["rows"], rest_tp["rows"], expected)
    ws_rate = ws_tp["rows"] / ws_tp["elapsed_s"]
    rest_rate = rest_tp["rows"] / rest_tp["elapsed_s"]
    d_ws, d_rest = ws_dl["delays_ms"], rest_dl["delays_ms"]
    what = "symbols30 real 1m data (2021-04), 30 symbols, simulator subprocess + ccxt + Postgres"
    record([
        figure("feed.throughput_candles_per_s", ws_rate, "candles/s", data=f"{what}, a burst of {tp_min} min x 30 symbols",
               baseline=rest_rate, note="capacity: the clock jumps so the whole window closes at once; time until all is persisted. Baseline: REST polling path (ws down, 0.2 s polls, 1000-candle pages)"),
        figure("feed.delay_p50_ms", float(np.percentile(d_ws, 50)), "ms", data=f"{what}, {dl_min} min at x{dl_speed}",
               baseline=float(np.percentile(d_rest, 50)), higher_is_better=False,
               note="exchange minute close -> engine queue, websocket path; baseline: REST polling at the default 5 s"),
        figure("feed.delay_p99_ms", float(np.percentile(d_ws, 99)), "ms", data=f"{what}, {dl_min} min at x{dl_speed}",
               baseline=float(np.percentile(d_rest, 99)), higher_is_better=False,
               note=f"n={len(d_ws)} candles; baseline: REST polling at the default 5 s (n={len(d_rest)})"),
    ])  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
