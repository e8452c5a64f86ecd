"""Candle import throughput: the store's binary-COPY path vs row-by-row INSERTs, same run.

Data: the 30 symbols of ../shared/data/symbols30.txt (1.84 M real 1m candles). A fresh private
Postgres cluster (default durable settings: fsync on) is started in a temp dir.

Figures:
- import.copy_candles_per_s: Store.write_candles (arrays -> binary COPY -> candles) into an
  empty table of a just-created cluster, all 30 symbols, two connections at once as the
  importer does; CSV parsing excluded. Baseline: one INSERT statement per row
  (asyncpg, prepared, all inside ONE transaction — the generous form of the naive loop),
  measured on the first 20,000 rows of each of 3 symbols.
- import.reimport_candles_per_s: the same data again (staging upsert, 0 rows written).
- import.end_to_end_candles_per_s: `bot import-candles` work (CSV parse + validate + COPY).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.harness import figure, record, require_shared_data, symbols30
from bot.history.importer import import_directory
from bot.logs.setup import setup_logging
from bot.store.db import Store
from bot.store.embedded import EmbeddedPostgres
from models.candles import read_candles_csv

BASELINE_ROWS = 20_000
INSERT = "INSERT INTO candles (symbol, ts, open, high, low, close, volume) VALUES ($1,$2,$3,$4,$5,$6,$7)"


async def main() -> None:
    setup_logging(None, level="warning")
    data_dir = require_shared_data()
    syms = symbols30()
    tmp = Path(tempfile.mkdtemp(prefix="bench-import-", dir="/tmp"))
    tmp.chmod(0o755)
    pg = EmbeddedPostgres(tmp / "pgdata")
    try:
        dsn = pg.start()
        store = await Store.connect(dsn)
        t0 = time.perf_counter()
        candles = {s: read_candles_csv(data_dir / f"{s}.csv.gz") for s in syms}
        parse_s = time.perf_counter() - t0
        n = sum(len(c) for c in candles.values())
        print(f"parsed {n:,} candles of {len(syms)} symbols in {parse_s:.2f}s")

        sem = asyncio.Semaphore(2)  # the importer's concurrency: two COPY streams for two cores

        async def write(s: str, c) -> None:  # noqa: ANN001
            async with sem:
                r = await store.write_candles(s, c)
                assert r.inserted == len(c)

        t0 = time.perf_counter()
        await asyncio.gather(*(write(s, c) for s, c in candles.items()))
        copy_s = time.perf_counter() - t0
        copy_rate = n / copy_s
        print(f"COPY path: {n:,} rows in {copy_s:.2f}s = {copy_rate:,.0f} rows/s")

        t0 = time.perf_counter()
        for s, c in candles.items():
            r = await store.write_candles(s, c)
            assert r.written == 0
        re_rate = n / (time.perf_counter() - t0)
        print(f"re-import (upsert, 0 written): {re_rate:,.0f} rows/s")

        # Baseline: row-by-row INSERT into an empty table, one transaction.
        await store.pool.execute("TRUNCATE candles")
        conn: asyncpg.Connection
        base_rows = 0
        async with store.pool.acquire() as conn:
            stmt = await conn.prepare(INSERT)
            t0 = time.perf_counter()
            async with conn.transaction():
                for s in syms[:3]:
                    c = candles[s]
                    for i in range(min(BASELINE_ROWS, len(c))):
                        await stmt.fetch(s, int(c.ts[i]), float(c.open[i]), float(c.high[i]), float(c.low[i]),
                                         float(c.close[i]), float(c.volume[i]))  # fmt: skip
                        base_rows += 1
            base_rate = base_rows / (time.perf_counter() - t0)
        print(f"row-by-row INSERT baseline: {base_rows:,} rows, {base_rate:,.0f} rows/s")

        await store.pool.execute("TRUNCATE candles")
        t0 = time.perf_counter()
        reports = (await import_directory(store, data_dir, syms)).reports
        e2e_rate = sum(r.rows_read for r in reports) / (time.perf_counter() - t0)
        print(f"end-to-end import (parse + validate + COPY): {e2e_rate:,.0f} rows/s")
        await store.close()

        desc = f"../shared/data symbols30 ({n:,} 1m candles), fresh cluster, fsync on"
        record([
            figure("import.copy_candles_per_s", copy_rate, "candles/s", data=desc, baseline=base_rate,
                   note="baseline: row-by-row INSERT in one transaction"),
            figure("import.reimport_candles_per_s", re_rate, "candles/s", data=desc, baseline=base_rate,
                   note="idempotent re-import (staging upsert, 0 rows written)"),
            figure("import.end_to_end_candles_per_s", e2e_rate, "candles/s", data=desc, baseline=base_rate,
                   note="CSV parse + validate + COPY, as `bot import-candles`"),
        ])  # fmt: skip
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
