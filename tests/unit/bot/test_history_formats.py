"""The import's file formats, without a database: Binance kline archives (ms and us, with and
without a header), freqtrade json / json.gz / feather, our csv.gz; names, refusals, merging."""

from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bot.history.archive_writer import (
    FUTURES_HEADER,
    binance_archive,
    freqtrade_json,
    freqtrade_json_gz,
    kline_csv,
    ours_csv_gz,
)
from bot.history.binance_csv import parse_binance_csv
from bot.history.errors import Refused
from bot.history.merge import merge_files
from bot.history.names import classify
from bot.history.parse import parse_file
from models.candles import Candles
from models.timeutil import parse_time
from tests.support.candle_archives import FEATHER_DIR, FORMULA_GAP, bad_files, formula_candles

# Two rows exactly as data.binance.vision serves them (binance/binance-public-data#283, #386):
# a 2023 spot file in ms, a 2025 spot file in us (1s klines there; the 1m layout is the same).
SPOT_MS_ROWS = (b"1698364800000,34151.66000000,34171.28000000,33972.39000000,34015.27000000,908.27901000,"
                b"1698368399999,30937869.62302600,41459,416.48838000,14187002.70550060,0\n")  # fmt: skip
SPOT_US_1M = (b"1735689600000000,0.31600000,0.31600000,0.31600000,0.31600000,27.00000000,1735689659999999,"
              b"8.53200000,1,0.00000000,0.00000000,0\n"
              b"1735689660000000,0.31601000,0.31601000,0.31601000,0.31601000,17.00000000,1735689719999999,"
              b"5.37217000,5,17.00000000,5.37217000,0\n")  # fmt: skip


def _parse(path: Path, root: Path | None = None):  # noqa: ANN202
    named = classify(path, root or path.parent)
    assert named is not None and named.refused is None, named
    return parse_file(named)


def _equal(a: Candles, b: Candles) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.columns(), b.columns(), strict=True))


def test_real_binance_rows_parse_to_their_decimal_values_in_either_unit() -> None:
    # the ms row is a 1h kline (close = open + 1 h - 1 ms): refused as not 1m, naming it
    with pytest.raises(Refused, match=r"^60m candles"):
        parse_binance_csv(SPOT_MS_ROWS)
    k = parse_binance_csv(SPOT_US_1M)
    assert k.unit == "us" and not k.header
    assert k.candles.ts.tolist() == [1735689600000, 1735689660000]
    assert k.candles.open.tolist() == [0.316, 0.31601] and k.candles.volume.tolist() == [27.0, 17.0]
    ms = parse_binance_csv(kline_csv(k.candles, "ms"))
    assert ms.unit == "ms" and _equal(ms.candles, k.candles)


def test_a_spot_header_row_is_skipped_and_the_futures_header_refuses_the_file() -> None:
    c = formula_candles(n=50)
    spot_header = ("Open time,Open,High,Low,Close,Volume,Close time,Quote asset volume,Number of trades,"
                   "Taker buy base asset volume,Taker buy quote asset volume,Ignore")  # fmt: skip
    k = parse_binance_csv(kline_csv(c, "ms", header=spot_header))
    assert k.header and _equal(k.candles, c)
    with pytest.raises(Refused, match="futures kline file"):
        parse_binance_csv(kline_csv(c, "ms", header=FUTURES_HEADER))


def test_every_format_reads_the_same_candles(tmp_path: Path) -> None:
    c = formula_candles(n=400)
    files = {
        "BTCUSDT-1m-2024-03.zip": None,
        "BTC_USDT-1m.json": freqtrade_json(c),
        "BTC_USDT-1m.json.gz": freqtrade_json_gz(c),
        "BTCUSDT.csv.gz": ours_csv_gz(c),
    }
    binance_archive(tmp_path, "BTCUSDT", c, "2024-03", checksum=True)
    got = {}
    for name, data in files.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        p = _parse(tmp_path / name)
        assert p.symbol == "BTCUSDT" and p.rows_read == len(c)
        got[name] = (p.fmt, p.unit)
        assert _equal(p.candles, c), name
    assert got == {"BTCUSDT-1m-2024-03.zip": ("binance zip", "ms"), "BTC_USDT-1m.json": ("freqtrade json", None),
                   "BTC_USDT-1m.json.gz": ("freqtrade json.gz", None), "BTCUSDT.csv.gz": ("csv.gz", None)}  # fmt: skip


def test_the_format_comes_from_the_content_not_the_extension(tmp_path: Path) -> None:
    c = formula_candles(n=100)
    (tmp_path / "BTC_USDT-1m.json").write_bytes(gzip.compress(freqtrade_json(c)))  # gzip under a .json name
    (tmp_path / "ETHUSDT.csv.gz").write_bytes(gzip.decompress(ours_csv_gz(c)))  # plain text under .gz
    a, b = _parse(tmp_path / "BTC_USDT-1m.json"), _parse(tmp_path / "ETHUSDT.csv.gz")
    assert (a.fmt, b.fmt) == ("freqtrade json.gz", "csv") and _equal(a.candles, c) and _equal(b.candles, c)


def test_2025_archives_default_to_microseconds_and_the_unit_is_said(tmp_path: Path) -> None:
    c = formula_candles(n=200, start_ms=parse_time("2025-02-01"))
    p = _parse(binance_archive(tmp_path, "SOLUSDT", c, "2025-02"))
    assert p.unit == "us" and _equal(p.candles, c)
    member = zipfile.ZipFile(tmp_path / "SOLUSDT-1m-2025-02.zip").read("SOLUSDT-1m-2025-02.csv")
    assert member.startswith(str(int(c.ts[0]) * 1000).encode() + b",")


@pytest.mark.parametrize("fixture, seed", [("BTC_USDT-1m.feather", 0), ("ETH_USDT-1m.feather", 1)])
def test_pyarrow_written_feather_reads_exactly(fixture: str, seed: int) -> None:
    # BTC: freqtrade's own call (LZ4, level 9), ns dates, three record batches; ETH: uncompressed, us
    p = _parse(FEATHER_DIR / fixture)
    assert p.fmt == "freqtrade feather" and _equal(p.candles, formula_candles(seed))
    assert len(p.candles) == 1500 - (FORMULA_GAP[1] - FORMULA_GAP[0])


def test_a_cut_feather_file_is_always_refused_never_misread(tmp_path: Path) -> None:
    data = (FEATHER_DIR / "BTC_USDT-1m.feather").read_bytes()
    with pytest.raises(Refused, match="ZSTD"):
        _parse(FEATHER_DIR / "XRP_USDT-1m.feather")
    for cut in [8, 100, 1000, len(data) // 3, len(data) // 2, len(data) - 200, len(data) - 11, len(data) - 1]:
        p = tmp_path / "BTC_USDT-1m.feather"
        p.write_bytes(data[:cut])
        with pytest.raises(Refused, match="^feather: "):
            _parse(p)


def test_each_bad_file_is_refused_with_its_own_reason(tmp_path: Path) -> None:
    cases = bad_files(tmp_path)
    assert len(cases) == 17
    for key, (path, reason) in cases.items():
        with pytest.raises(Refused) as e:
            _parse(path)
        msg = str(e.value)
        assert msg.startswith(reason) or reason in msg, (key, msg)
        assert "\n" not in msg, key


def test_names_give_the_symbol_and_refuse_futures_and_other_timeframes(tmp_path: Path) -> None:
    def c(rel: str):  # noqa: ANN202
        return classify(tmp_path / rel, tmp_path)

    assert (c("BTCUSDT-1m-2024-01.zip").symbol, c("BTCUSDT-1m-2024-01.zip").refused) == ("BTCUSDT", None)
    assert c("BTCUSDT-1m-2024-01-31.zip").period == (parse_time("2024-01-31"), parse_time("2024-02-01"))
    assert c("BTCUSDT-1m-2024-12.zip").period == (parse_time("2024-12-01"), parse_time("2025-01-01"))
    assert c("BTC_USDT-1m.json.gz").symbol == "BTCUSDT" and c("btc_usdt-1m.feather").symbol == "BTCUSDT"
    assert c("WINUSDT.csv.gz").symbol == "WINUSDT"
    for name in ("README.md", "BTCUSDT-1m-2024-01.zip.CHECKSUM", "BTC_USDT-trades.json.gz", "notes.txt"):
        assert c(name) is None, name
    refusals = {
        "BTCUSDT-5m-2024-01.zip": "5m candles",
        "BTC_USDT-1h.feather": "1h candles",
        "BTCUSD_PERP-1m-2024-01.zip": "coin-margined futures",
        "BTC_USDT_USDT-1m-futures.feather": "freqtrade futures data",
        "BTC_USDT-1m-mark.json": "freqtrade mark data",
        "data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip": "futures/ directory",
        "binance/futures/BTC_USDT-1m.feather": "freqtrade futures data",
        "BTC_USDT-1m.parquet": "parquet format is not read",
    }
    for rel, reason in refusals.items():
        assert reason in (c(rel).refused or ""), rel
    assert c("data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip").refused is None


def test_overlapping_files_must_agree_and_a_difference_names_both(tmp_path: Path) -> None:
    c = formula_candles(n=1440 * 2, start_ms=parse_time("2024-03-30"))
    month = _parse(binance_archive(tmp_path, "BTCUSDT", c.between(None, parse_time("2024-04-01")), "2024-03"))
    day = _parse(binance_archive(tmp_path, "BTCUSDT", c.between(parse_time("2024-03-31"), parse_time("2024-04-01")), "2024-03-31"))
    april = _parse(binance_archive(tmp_path, "BTCUSDT", c.between(parse_time("2024-04-01"), None), "2024-04"))
    merged = merge_files([april, day, month])
    assert merged.duplicates == 1440 and _equal(merged.candles, c)

    close = day.candles.close.copy()
    close[100] += 0.01
    changed = Candles(day.candles.ts, day.candles.open, day.candles.high, day.candles.low, close, day.candles.volume)
    bad_day = _parse(binance_archive(tmp_path / "b", "BTCUSDT", changed, "2024-03-31"))
    with pytest.raises(Refused) as e:
        merge_files([month, bad_day, april])
    msg = str(e.value)
    assert msg.startswith("2024-03-31 01:40 differs between BTCUSDT-1m-2024-03.zip (close ") and "BTCUSDT-1m-2024-03-31.zip (close" in msg


def test_the_daemon_imports_neither_lz4_nor_pyarrow() -> None:
    code = ("import sys, bot.live.daemon, bot.live.trader, lightgbm, catboost; "
            "print(sorted(m for m in ('lz4', 'pyarrow', 'bot.history.arrow_ipc') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
