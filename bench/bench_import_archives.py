"""A year of history from files vs from the exchange: `bot import-candles` on Binance's monthly
kline archives against `bot backfill` (REST pages) from the exchange simulator, same run.

    python -m bench import_archives                    # 30 symbols x 365 days (10-15 min)
    python -m bench.bench_import_archives --cache DIR  # keep the archives in DIR and reuse them
    python -m bench.bench_import_archives --quick      # 3 symbols x 31 days, no figures recorded

Data: synthetic candles (bench/synthetic.py) for the 30 symbols of symbols30.txt, 2024-07-01
to 2025-07-01 (365 days; an exchange-wide outage of 150 minutes every 21 days, as in the real
data), written as data.binance.vision's monthly archives `SYMBOL-1m-YYYY-MM.zip` (12 columns,
8 decimals; the six months of 2025 in microseconds, the rest in milliseconds). A fresh private
Postgres cluster (fsync on) is started in a temp dir, one database per run.

- archives: `bot import-candles DIR` in its own process, all 360 archives into an empty
  database; candles/s = candles written / the process's wall time (start to exit, Python
  start-up and imports included); peak RSS = the process's ru_maxrss (os.wait4).
- baseline: `bot backfill --days N` in its own process, the same 30 symbols, from the
  exchange simulator (bot/exchange_sim, in this process, on its own thread and event loop)
  serving the same synthetic candles over real HTTP on 127.0.0.1; a subset of the year (the
  last `BACKFILL_DAYS` = 30 days; at the rates measured the whole year takes about ten minutes a
  run), twice: with the shipped config (ccxt's own rate limiter for Binance, what a user gets)
  and with `exchange.rate_limit_ms: 0` (no limiter: what the REST path can do here at most,
  with no network between).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import asyncpg
import numpy as np
import yaml

from bench.harness import figure, record, symbols30
from bench.synthetic import SyntheticMarket
from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from bot.history.archive_writer import monthly_archives
from bot.store.embedded import EmbeddedPostgres
from models.candles import Candles
from models.timeutil import DAY_MS, parse_time

ROOT = Path(__file__).resolve().parents[1]
START = parse_time("2024-07-01")
DAYS = 365
BACKFILL_DAYS = 30


def round8(c: Candles) -> Candles:
    """The values an archive's 8-decimal text gives back (rounding keeps low <= open/close <= high)."""
    return Candles(c.ts, *(np.round(getattr(c, f), 8) for f in ("open", "high", "low", "close", "volume")))


# A small launcher between this process and the measured command: a child's ru_maxrss on Linux
# starts from its parent's high-water mark (exec keeps the old mm's peak), and this process is
# large after writing the archives, so the command is forked from a ~10 MB Python instead.
_LAUNCHER = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:], stdout=open(sys.argv[1], "wb"), stderr=subprocess.STDOUT)
_, status, usage = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_cli(args: list[str], config: Path, log: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit status) of `python -m bot --config CONFIG ARGS`."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _LAUNCHER, str(log), sys.executable, "-m", "bot", "--config",
                          str(config), *args], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "160"}).stdout  # fmt: skip
    wall = time.perf_counter() - t0
    rc, maxrss_kib = (int(x) for x in out.split())
    return wall, maxrss_kib / 1024, rc
def write_config(path: Path, dsn: str, symbols: list[str], exchange: dict | None = None) -> Path:
    cfg = {"symbols": symbols, "database": {"dsn": dsn}, "logging": {"console": False},
           "paths": {"data_dir": str(path.parent / "var"), "logs_dir": str(path.parent / "logs")}}  # fmt: skip
    if exchange:
        cfg["exchange"] = exchange
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM candles"))
    finally:
        await conn.close()


class SimulatorThread:
    """The exchange simulator on its own event loop in a thread, so this process can block in
    os.wait4 on the measured command."""

    def __init__(self, book: CandleBook, settings: SimSettings):
        self.sim = ExchangeSimulator(book, settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ExchangeSimulator:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(30)
        return self.sim

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 symbols x 31 days, nothing recorded")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep the generated archives in this directory and reuse them on the next run")  # fmt: skip
    args = ap.parse_args()
    syms = symbols30()[:3] if args.quick else symbols30()
    days = 31 if args.quick else DAYS
    bf_days = 2 if args.quick else BACKFILL_DAYS
    tmp = Path(tempfile.mkdtemp(prefix="bench-archives-", dir="/tmp"))
    tmp.chmod(0o755)
    pg = EmbeddedPostgres(tmp / "pgdata")
    try:
        pg.start()
        market = SyntheticMarket(syms, days, start_ms=START, seed=20)
        end = market.end_ms
        archives = args.cache or tmp / "archives"
        reuse = args.cache is not None and len(list(archives.glob("*.zip"))) == len(syms) * (1 if args.quick else 12)
        book: dict[str, Candles] = {}
        t0 = time.perf_counter()
        n = 0
        for s in syms:
            c = round8(market.candles(s))
            if not reuse:
                monthly_archives(archives, s, c)
            n += len(c)
            book[s] = c.between(end - (bf_days + 1) * DAY_MS, None)
        files = sorted(archives.glob("*.zip"))
        size_mb = sum(p.stat().st_size for p in files) / 2**20
        print(f"{'reused' if reuse else 'wrote'} {len(files)} archives ({size_mb:,.0f} MB) of {n:,} candles in {time.perf_counter() - t0:.0f}s")

        for name in ("imp", "bf", "bf0"):
            pg.create_database(name)
        imp_cfg = write_config(tmp / "imp" / "config.yaml", pg.dsn("imp"), syms)
        wall, rss, rc = run_cli(["import-candles", str(archives)], imp_cfg, tmp / "imp.log")
        written = asyncio.run(count_rows(pg.dsn("imp")))
        print((tmp / "imp.log").read_text()[-1500:])
        assert rc == 0 and written == n, (rc, written, n)
        imp_rate = written / wall
        print(f"import-candles: {written:,} candles in {wall:.1f}s = {imp_rate:,.0f}/s, peak RSS {rss:.0f} MB")

        results = {}
        with SimulatorThread(CandleBook(book), SimSettings(speed=0, start_ms=end + 30_000)) as sim:
            for db, exchange in (("bf", {"urls": sim.urls}), ("bf0", {"urls": sim.urls, "rate_limit_ms": 0})):
                cfg = write_config(tmp / db / "config.yaml", pg.dsn(db), syms, exchange)
                bwall, brss, brc = run_cli(["backfill", "--days", str(bf_days)], cfg, tmp / f"{db}.log")
                got = asyncio.run(count_rows(pg.dsn(db)))
                assert brc == 0 and got > 0, (brc, got, (tmp / f"{db}.log").read_text()[-2000:])
                results[db] = (got / bwall, brss, got, bwall)
                print(f"backfill {db}: {got:,} candles in {bwall:.1f}s = {got / bwall:,.0f}/s, peak RSS {brss:.0f} MB")
        if args.quick:
            return
        bf_rate, bf_rss, bf_n, bf_wall = results["bf"]
        bf0_rate, _, _, bf0_wall = results["bf0"]
        data = (f"synthetic, {len(syms)} symbols x {days} days 2024-07..2025-06 ({n:,} 1m candles) as "
                f"{len(files)} Binance monthly kline zips ({size_mb:,.0f} MB; 2025 months in us)")  # fmt: skip
        base = (f"baseline `bot backfill --days {bf_days}` ({bf_n:,} candles, {bf_wall:.0f}s) from bot/exchange_sim "
                "on 127.0.0.1 serving the same candles")  # fmt: skip
        record([
            figure("import.archives_year_candles_per_s", imp_rate, "candles/s", data=data, baseline=bf_rate,
                   note=f"`bot import-candles` process, {wall:.0f}s wall; {base}, ccxt's default Binance rate limiter"),
            figure("import.archives_year_vs_unthrottled_rest_candles_per_s", imp_rate, "candles/s", data=data,
                   baseline=bf0_rate, note=f"the same import; {base.replace(f'{bf_wall:.0f}s', f'{bf0_wall:.0f}s')}, "
                   "exchange.rate_limit_ms 0 (no limiter, no network)"),
            figure("import.archives_year_peak_rss_mb", rss, "MB", data=data, baseline=bf_rss, higher_is_better=False,
                   note="peak RSS (ru_maxrss) of the `bot import-candles` process; baseline: the `bot backfill` "
                        "process (default rate limiter)"),
        ])  # fmt: skip
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
