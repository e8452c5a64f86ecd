"""The Postgres store against a real server: migrations, COPY import, upsert, streaming reads."""

from __future__ import annotations

import asyncpg
import numpy as np
import pytest

from bot.history.importer import import_directory
from bot.store.candles import encode_copy_binary
from bot.store.db import Store
from bot.store.migrate import available_migrations, migrate
from models.candles import Candles, read_candles_csv

# Row counts from ../shared/data/README.md ("Per-symbol rows" table).
README_ROWS = {"BTCUSDT": 61272, "LTCUSDT": 61273}


async def test_migrations_apply_once_and_are_idempotent(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        first = await migrate(conn)
        assert first == [m.version for m in available_migrations()] and first[0] == 1
        second = await migrate(conn)
        assert second == []
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"candles", "orders", "fills", "positions", "equity_snapshots", "model_versions",
                "decisions", "schema_migrations"} <= tables  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(first)
    finally:
        await conn.close()


async def test_concurrent_migrations_do_not_collide(empty_db_dsn: str) -> None:
    import asyncio

    conns = [await asyncpg.connect(empty_db_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(available_migrations())]
    finally:
        for c in conns:
            await c.close()


async def test_import_two_real_symbols_matches_readme_and_reimport_writes_nothing(store: Store, data_dir) -> None:
    reports = (await import_directory(store, data_dir, README_ROWS)).reports
    by = {r.symbol: r for r in reports}
    for sym, rows in README_ROWS.items():
        assert by[sym].rows_read == rows and by[sym].written == rows
        assert by[sym].duplicates_skipped == 0 and by[sym].rejected == 0
        assert by[sym].gaps == 2  # the two exchange-wide outages
    assert by["BTCUSDT"].missing_minutes == 434 and by["LTCUSDT"].missing_minutes == 433
    stats = await store.candle_stats()
    assert {s: n for s, (n, _, _) in stats.items()} == README_ROWS

    again = (await import_directory(store, data_dir, README_ROWS)).reports
    assert all(r.written == 0 and r.duplicates_skipped == r.rows_read for r in again)
    assert {s: n for s, (n, _, _) in (await store.candle_stats()).items()} == README_ROWS


async def test_streaming_read_returns_the_csv_values_exactly(store: Store, data_dir) -> None:
    src = read_candles_csv(data_dir / "LTCUSDT.csv.gz")
    await store.write_candles("LTCUSDT", src)
    # float64: bit-identical to the CSV's decimal strings parsed by Python.
    parts = [b async for b in store.stream_candles("LTCUSDT", dtype=np.float64, batch_rows=7000)]
    assert len(parts) > 5 and max(len(p) for p in parts) < 7000 * 2
    got = Candles.concat(parts)
    for a, b in zip(src.columns(), got.columns(), strict=True):
        assert np.array_equal(a, b)
    # spot-check against Python's own float() of the raw text
    import gzip

    with gzip.open(data_dir / "LTCUSDT.csv.gz", "rt") as f:
        next(f)
        rows = [next(f).strip().split(",") for _ in range(1000)]
    assert [int(r[0]) for r in rows] == got.ts[:1000].tolist()
    assert [float(r[4]) for r in rows] == got.close[:1000].tolist()
    # float32 (the default) and a time range
    lo, hi = int(src.ts[100]), int(src.ts[5000])
    f32 = await store.read_candles("LTCUSDT", lo, hi)
    assert f32.close.dtype == np.float32 and f32.ts[0] == lo and f32.ts[-1] < hi
    assert len(f32) == int(((src.ts >= lo) & (src.ts < hi)).sum())
    assert np.array_equal(f32.close, src.between(lo, hi).close.astype(np.float32))


def _candles(ts: list[int], close: list[float]) -> Candles:
    c = np.array(close, dtype=np.float64)
    return Candles(np.array(ts, dtype=np.int64), c, c * 1.01, c * 0.99, c, np.ones_like(c))


async def test_upsert_overwrites_changed_rows_only(store: Store) -> None:
    m = 60_000
    first = await store.write_candles("XUSDT", _candles([m, 2 * m, 3 * m], [1.0, 2.0, 3.0]))
    assert (first.inserted, first.updated, first.unchanged) == (3, 0, 0)
    second = await store.write_candles("XUSDT", _candles([2 * m, 3 * m, 4 * m], [2.0, 3.5, 4.0]))
    assert (second.inserted, second.updated, second.unchanged) == (1, 1, 1)
    got = await store.read_candles("XUSDT", dtype=np.float64)
    assert got.ts.tolist() == [m, 2 * m, 3 * m, 4 * m]
    assert got.close.tolist() == [1.0, 2.0, 3.5, 4.0]
    assert await store.last_candle_ts("XUSDT") == 4 * m
    assert await store.last_candle_ts("NOPEUSDT") is None


async def test_duplicates_within_a_batch_keep_the_last(store: Store) -> None:
    m = 60_000
    res = await store.write_candles("XUSDT", _candles([2 * m, m, 2 * m], [5.0, 1.0, 6.0]))
    assert res.inserted == 2
    got = await store.read_candles("XUSDT", dtype=np.float64)
    assert got.close.tolist() == [1.0, 6.0]


async def test_database_rejects_invalid_candles(store: Store) -> None:
    bad = _candles([60_000], [-1.0])
    with pytest.raises(asyncpg.CheckViolationError):
        await store.write_candles("XUSDT", bad)
    assert await store.last_candle_ts("XUSDT") is None


def test_binary_copy_encoding_layout() -> None:
    c = _candles([60_000], [2.5])
    payload = encode_copy_binary(c, "AB")
    assert payload.startswith(b"PGCOPY\n\xff\r\n\x00") and payload.endswith(b"\xff\xff")
    body = payload[19:-2]
    assert body[:2] == (7).to_bytes(2, "big")
    assert body[2:6] == (2).to_bytes(4, "big") and body[6:8] == b"AB"
    assert body[8:12] == (8).to_bytes(4, "big") and int.from_bytes(body[12:20], "big") == 60_000


async def test_import_drops_bad_rows_and_duplicates_with_reasons(store: Store, tmp_path) -> None:
    import gzip

    rows = [
        "ts,open,high,low,close,volume",
        "60000,10,11,9,10.5,1",
        "120000,10,11,9,nan,1",  # NaN
        "180000,10,9,11,10,1",  # high < low
        "240000,10,11,9,10,1",
        "240000,10,11,9,10,1",  # duplicate
        "300000,0,11,9,10,1",  # zero price
        "420000,10,12,9,11,2",  # after a one-minute gap (360000 missing)
    ]
    with gzip.open(tmp_path / "XUSDT.csv.gz", "wt") as f:
        f.write("\n".join(rows) + "\n")
    (rep,) = (await import_directory(store, tmp_path)).reports
    assert (rep.rows_read, rep.written, rep.rejected, rep.duplicates_skipped) == (7, 3, 3, 1)
    got = await store.read_candles("XUSDT", dtype=np.float64)
    assert got.ts.tolist() == [60000, 240000, 420000]
    # The rejected minutes (120000, 180000, 300000) and the real one (360000) show up as gaps.
    assert rep.gaps == 2 and rep.missing_minutes == 4
