"""`bot import-candles` over a real Postgres: every archive format lands equal to the same candles
imported from our CSV; bad files are refused one line each and nothing of their symbol is
written; overlapping files must agree; gaps are reported as ../shared/data/README.md says."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from bot.cli.main import main
from bot.history.archive_writer import (
    binance_archive,
    freqtrade_json,
    freqtrade_json_gz,
    monthly_archives,
    ours_csv_gz,
)
from bot.history.importer import import_directory
from bot.store.db import Store
from models.candles import Candles, read_candles_csv
from models.timeutil import DAY_MS, parse_time
from tests.support.candle_archives import FEATHER_DIR, bad_files, formula_candles
from tests.support.shared_data import shared_data_or_skip

SPOT_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_asset_volume,number_of_trades,"
               "taker_buy_base_asset_volume,taker_buy_quote_asset_volume,ignore")  # fmt: skip


def _btc() -> Candles:
    return read_candles_csv(shared_data_or_skip() / "BTCUSDT.csv.gz")


def _days(c: Candles) -> list[tuple[str, Candles]]:
    start = int(c.ts[0]) // DAY_MS * DAY_MS
    out = []
    for lo in range(start, int(c.ts[-1]) + 1, DAY_MS):
        day = c.between(lo, lo + DAY_MS)
        if len(day):
            out.append((str(np.datetime64(lo, "ms").astype("datetime64[D]")), day))
    return out


def _write_format(d: Path, fmt: str, c: Candles) -> None:
    d.mkdir(parents=True)
    if fmt == "binance zip ms":
        monthly_archives(d, "BTCUSDT", c)
    elif fmt == "binance zip us":
        for m in ("2021-04", "2021-05"):
            binance_archive(d, "BTCUSDT", c.between(parse_time(f"{m}-01"), parse_time("2021-05-01") if m == "2021-04" else None),
                            m, unit="us")  # fmt: skip
    elif fmt == "binance zip with header":
        for m in ("2021-04", "2021-05"):
            binance_archive(d, "BTCUSDT", c.between(parse_time(f"{m}-01"), parse_time("2021-05-01") if m == "2021-04" else None),
                            m, header=SPOT_HEADER, checksum=True)  # fmt: skip
    elif fmt == "monthly and daily zips overlapping":
        monthly_archives(d, "BTCUSDT", c)
        for day, part in _days(c)[-10:]:
            binance_archive(d / "daily", "BTCUSDT", part, day)
    elif fmt == "freqtrade json":
        (d / "BTC_USDT-1m.json").write_bytes(freqtrade_json(c))
    elif fmt == "freqtrade json.gz":
        (d / "BTC_USDT-1m.json.gz").write_bytes(freqtrade_json_gz(c))
    elif fmt == "csv.gz":
        (d / "BTCUSDT.csv.gz").write_bytes(ours_csv_gz(c))
    else:
        raise AssertionError(fmt)


async def _table(store: Store, symbol: str) -> Candles:
    return await store.read_candles(symbol, dtype=np.float64)


def _same(a: Candles, b: Candles) -> bool:
    return len(a) > 0 and all(np.array_equal(x, y) for x, y in zip(a.columns(), b.columns(), strict=True))


FORMATS = ["binance zip ms", "binance zip us", "binance zip with header", "monthly and daily zips overlapping",
           "freqtrade json", "freqtrade json.gz", "csv.gz"]  # fmt: skip


async def test_every_format_lands_equal_to_the_real_csv(make_db, tmp_path: Path) -> None:  # noqa: ANN001
    """BTCUSDT of ../shared/data (its 15 days around both exchange outages) through each format,
    against the real CSV file imported as it is."""
    data = shared_data_or_skip()
    lo, hi = parse_time("2021-04-18"), parse_time("2021-05-03")  # two months, both outages
    btc = _btc().between(lo, hi)
    ref_store = await Store.connect(make_db())
    try:
        (ref,) = (await import_directory(ref_store, data, ["BTCUSDT"])).reports
        want = (await _table(ref_store, "BTCUSDT")).between(lo, hi)
    finally:
        await ref_store.close()
    assert ref.rows_read == 61272 and (ref.gaps, ref.missing_minutes) == (2, 434)  # the README's figures
    sources = {}
    for fmt in FORMATS:
        d = tmp_path / fmt.replace(" ", "_")
        _write_format(d, fmt, btc)
        store = await Store.connect(make_db())
        try:
            result = await import_directory(store, d)
            got = await _table(store, "BTCUSDT")
        finally:
            await store.close()
        assert not result.refused, (fmt, result.refused)
        (rep,) = result.reports
        assert _same(got, want), fmt
        assert (rep.written, rep.gaps, rep.missing_minutes, rep.rejected) == (len(want), 2, 434, 0), fmt
        sources[fmt] = rep.sources
    assert sources["binance zip ms"] == "2 binance zip (2 ms)"
    assert sources["binance zip us"] == "2 binance zip (2 us)"
    assert sources["monthly and daily zips overlapping"] == "12 binance zip (12 ms)"
    assert sources["freqtrade json.gz"] == "1 freqtrade json.gz" and sources["csv.gz"] == "1 csv.gz"


async def test_feather_lands_equal_to_the_same_candles_from_csv(make_db, tmp_path: Path) -> None:  # noqa: ANN001
    for seed, fixture in enumerate(["BTC_USDT-1m.feather", "ETH_USDT-1m.feather"]):
        (tmp_path / f"f{seed}").mkdir()
        shutil.copy(FEATHER_DIR / fixture, tmp_path / f"f{seed}" / "DOGE_USDT-1m.feather")
        (tmp_path / f"c{seed}").mkdir()
        (tmp_path / f"c{seed}" / "DOGEUSDT.csv.gz").write_bytes(ours_csv_gz(formula_candles(seed)))
        tables = []
        for d in (tmp_path / f"f{seed}", tmp_path / f"c{seed}"):
            store = await Store.connect(make_db())
            try:
                (rep,) = (await import_directory(store, d)).reports
                tables.append(await _table(store, "DOGEUSDT"))
            finally:
                await store.close()
            assert (rep.written, rep.gaps, rep.missing_minutes) == (1490, 1, 10)
        assert _same(tables[0], tables[1]), fixture


async def test_each_bad_file_refuses_its_symbol_and_writes_nothing_of_it(store: Store, tmp_path: Path) -> None:
    cases = bad_files(tmp_path / "bad")
    good_btc = formula_candles(n=500, start_ms=parse_time("2024-02-01"))
    eth = formula_candles(3, n=500)
    for key, (bad, reason) in cases.items():
        d = tmp_path / "run" / key.replace(" ", "_")
        shutil.copytree(bad.parent, d)
        binance_archive(d, "BTCUSDT", good_btc, "2024-02")  # a good file of the same symbol
        (d / "ETHUSDT.csv.gz").write_bytes(ours_csv_gz(eth))  # and another symbol
        result = await import_directory(store, d)
        assert len(result.refused) == 1, (key, result.refused)
        (r,) = result.refused
        assert r.file == bad.name and r.symbol == "BTCUSDT" and reason in r.reason, (key, r)
        assert [rep.symbol for rep in result.reports] == ["ETHUSDT"]
        assert "BTCUSDT" not in await store.candle_stats(), key
    assert (await store.candle_stats())["ETHUSDT"][0] == len(eth)


async def test_disagreeing_files_name_both_and_write_nothing_agreeing_ones_are_fine(store: Store, tmp_path: Path) -> None:
    c = formula_candles(n=3000, start_ms=parse_time("2024-03-30"))
    d = tmp_path / "d"
    d.mkdir()
    binance_archive(d, "BTCUSDT", c.between(None, parse_time("2024-04-01")), "2024-03")
    (d / "BTC_USDT-1m.json").write_bytes(freqtrade_json(c.between(parse_time("2024-03-31"), None)))
    (rep,) = (await import_directory(store, d)).reports
    assert rep.written == len(c) and rep.duplicates_skipped == 1440 and rep.rows_read == len(c) + 1440

    vol = c.volume.copy()
    vol[-5] += 1.0
    changed = Candles(c.ts, c.open, c.high, c.low, c.close, vol)
    (d / "ETHUSDT.csv.gz").write_bytes(ours_csv_gz(c))
    (d / "ETH_USDT-1m.json.gz").write_bytes(freqtrade_json_gz(changed))
    result = await import_directory(store, d)
    (r,) = result.refused
    minute = "2024-04-01 01:55"  # the 5th-last minute of the 3,000
    assert r.symbol == "ETHUSDT" and r.file == "ETHUSDT"
    assert r.reason.startswith(f"{minute} differs between ") and "ETHUSDT.csv.gz (volume" in r.reason
    assert "ETH_USDT-1m.json.gz (volume" in r.reason
    assert "ETHUSDT" not in await store.candle_stats()


def _config(tmp_path: Path, dsn: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump({
        "symbols": ["BTCUSDT"], "database": {"dsn": dsn}, "logging": {"console": False},
        "paths": {"data_dir": str(tmp_path / "var"), "logs_dir": str(tmp_path / "logs")},
    }))  # fmt: skip
    return p


def test_cli_on_a_mixed_directory(db_dsn: str, tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    # CI's width: the table fits it and the one-line messages are never wrapped there
    monkeypatch.setenv("COLUMNS", "80")
    btc = _btc()
    d = tmp_path / "mixed"
    apr = btc.between(None, parse_time("2021-05-01"))
    binance_archive(d, "BTCUSDT", apr, "2021-04", checksum=True)
    binance_archive(d, "BTCUSDT", btc.between(parse_time("2021-05-01"), None), "2021-05", unit="us")
    binance_archive(d / "daily", "BTCUSDT", btc.between(parse_time("2021-04-30"), parse_time("2021-05-01")), "2021-04-30")
    (d / "ETHUSDT.csv.gz").write_bytes(ours_csv_gz(formula_candles(1)))
    (d / "ETH_USDT-1m.json.gz").write_bytes(freqtrade_json_gz(formula_candles(1).slice(0, 700)))
    shutil.copy(FEATHER_DIR / "BTC_USDT-1m.feather", d / "DOGE_USDT-1m.feather")
    sol = formula_candles(2, n=2000, start_ms=parse_time("2024-03-01"))
    binance_archive(d, "SOLUSDT", sol.between(None, parse_time("2024-03-01T12:00")), "2024-03-01")
    cut = binance_archive(d, "SOLUSDT", sol.between(parse_time("2024-03-02"), None), "2024-03-02")
    cut.write_bytes(cut.read_bytes()[:-100])
    (d / "BTC_USDT-5m.json").write_bytes(b"[]")
    (d / "README.md").write_text("downloaded from the public archive\n")

    rc = main(["--config", str(_config(tmp_path, db_dsn)), "import-candles", str(d)])
    out = capsys.readouterr()
    assert rc == 1, out.err
    refused = [line for line in out.err.splitlines() if line.startswith("REFUSED")]
    assert refused == [
        "REFUSED BTC_USDT-5m.json: 5m candles: only 1m candles are imported",
        "REFUSED SOLUSDT-1m-2024-03-02.zip: not a complete zip archive (truncated or corrupt: File is not a zip file); "
        "SOLUSDT not imported",
    ], out.err
    assert "ignored 2 files not named like candle files: BTCUSDT-1m-2021-04.zip.CHECKSUM, README.md" in out.err
    assert "nothing written for 1 symbol: SOLUSDT" in out.err
    assert "BTCUSDT from 3 binance zip (2 ms, 1 us)" in out.out and "DOGEUSDT from 1 freqtrade feather" in out.out, out.out
    assert "DOGEUS…" not in out.out and max(len(x) for x in out.out.splitlines()[:12]) <= 80, out.out

    async def stored() -> tuple[dict, dict[str, Candles]]:
        store = await Store.connect(db_dsn)
        try:
            return await store.candle_stats(), {s: await _table(store, s) for s in ("BTCUSDT", "ETHUSDT", "DOGEUSDT")}
        finally:
            await store.close()

    stats, tables = asyncio.run(stored())
    assert _same(tables["BTCUSDT"], btc)
    assert _same(tables["ETHUSDT"], formula_candles(1)) and _same(tables["DOGEUSDT"], formula_candles(0))
    assert set(stats) == {"BTCUSDT", "ETHUSDT", "DOGEUSDT"}
    events = [json.loads(x) for x in (tmp_path / "logs" / "bot.jsonl").read_text().splitlines()]
    btc_line = next(e for e in events if e["event"] == "import_symbol" and e["symbol"] == "BTCUSDT")
    assert btc_line["sources"] == "3 binance zip (2 ms, 1 us)" and (btc_line["gaps"], btc_line["missing_minutes"]) == (2, 434)
    assert btc_line["duplicates_skipped"] == 1440
    assert sorted(e["file"] for e in events if e["event"] == "import_refused") == ["BTC_USDT-5m.json", "SOLUSDT-1m-2024-03-02.zip"]
    human = (tmp_path / "logs" / "bot.log").read_text()
    assert "IMPORT BTCUSDT  +61,272 rows  1,440 duplicates  2 gaps (434 min)  from 3 binance zip (2 ms, 1 us)" in human

    # again: nothing new is written, and the refusals are the same
    rc = main(["--config", str(_config(tmp_path, db_dsn)), "import-candles", str(d), "--symbols", "BTCUSDT,ETHUSDT"])
    out = capsys.readouterr()
    assert rc == 1 and out.err.count("REFUSED") == 1  # the 5m file is BTC's
    events = [json.loads(x) for x in (tmp_path / "logs" / "bot.jsonl").read_text().splitlines()]
    again = [e for e in events if e["event"] == "import_symbol"][-2:]
    assert sorted(e["symbol"] for e in again) == ["BTCUSDT", "ETHUSDT"] and all(e["written"] == 0 for e in again)
    assert main(["--config", str(_config(tmp_path, db_dsn)), "import-candles", str(d), "--symbols", "ADAUSDT"]) == 2
    assert "no candle file in" in capsys.readouterr().err
