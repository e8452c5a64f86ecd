"""Small candle sets for the import tests, where the feather fixtures are, and a set of bad
files (`bad_files`: one per way a file can be refused, each alone in its own directory).

The `.feather` files in `tests/support/feather/` were written by pyarrow itself (the writer
freqtrade uses), from `formula_candles`, by `tests/support/feather/make_fixtures.py`; the
project does not install pyarrow (see `bot/history/arrow_ipc.py`), so they are kept as files.
Tests rebuild the same candles from the formula and compare.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from bot.history.archive_writer import (
    FUTURES_HEADER,
    binance_archive,
    freqtrade_json,
    kline_csv,
    ours_csv_gz,
    write_zip,
)
from models.candles import Candles
from models.timeutil import MINUTE_MS, parse_time

FEATHER_DIR = Path(__file__).resolve().parent / "feather"
FORMULA_START = parse_time("2024-03-01")
FORMULA_ROWS = 1500
FORMULA_GAP = (600, 610)  # rows left out: one gap of 10 minutes


def formula_candles(seed: int = 0, n: int = FORMULA_ROWS, start_ms: int = FORMULA_START) -> Candles:
    """Deterministic 1m candles with at most 8 decimals (like an exchange's prices), one gap."""
    i = np.arange(n, dtype=np.int64)
    keep = (i < FORMULA_GAP[0]) | (i >= FORMULA_GAP[1])
    base = 100.0 * (1 + seed) + 3.0 * np.sin(i / 37.0 + seed) + 0.01 * (i % 17)
    close = np.round(base + 0.05 * np.cos(i / 5.0), 8)
    open_ = np.round(base, 8)
    high = np.round(np.maximum(open_, close) + 0.0123 + 0.001 * (i % 7), 8)
    low = np.round(np.minimum(open_, close) - 0.0077 - 0.001 * (i % 5), 8)
    volume = np.round(5.0 + 4.0 * np.abs(np.sin(i / 3.0 + seed)), 8)
    volume[i % 97 == 0] = 0.0  # some minutes where nothing traded
    ts = start_ms + i * MINUTE_MS
    return Candles(ts[keep], open_[keep], high[keep], low[keep], close[keep], volume[keep])


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a bad file, the start of the reason it is refused with)."""
    c = formula_candles(n=300)
    good = kline_csv(c, "ms")
    lines = good.split(b"\n")
    full_zip = binance_archive(tmp_path / "src", "BTCUSDT", c, "2024-03").read_bytes()
    cases: dict[str, tuple[Path, str]] = {}

    def put(key: str, path: Path, reason: str, data: bytes | None = None) -> None:
        if data is not None:
            path.parent.mkdir(parents=True)
            path.write_bytes(data)
        cases[key] = (path, reason)

    def zipped(sub: str, text: bytes, name: str = "BTCUSDT-1m-2024-03") -> Path:
        return write_zip(tmp_path / sub / f"{name}.zip", f"{name}.csv", text)

    def edited(i: int, line: bytes) -> bytes:
        return b"\n".join([*lines[:i], line, *lines[i + 1 :]])

    put("truncated zip", tmp_path / "truncated" / "BTCUSDT-1m-2024-03.zip", "not a complete zip archive",
        full_zip[: len(full_zip) // 2])  # fmt: skip
    put("13 columns", zipped("cols", edited(5, lines[5] + b",7")), "line 6 has 13 columns, expected 12")
    put("11 columns", zipped("cols11", edited(3, lines[3].rsplit(b",", 1)[0])), "line 4 has 11 columns")
    put("backwards", zipped("back", b"\n".join([*lines[:10], lines[11], lines[10], *lines[12:]])),
        "times go backwards at row 12")  # fmt: skip
    put("5m close times", zipped("5m", _five_minute(c)), "5m candles")
    put("unparsable", zipped("nan", edited(7, lines[7].replace(b".", b"x", 1))), "line 8, column 2")
    put("futures header", zipped("fut", (FUTURES_HEADER + "\n").encode() + good), "a futures kline file")
    put("unit mismatch", zipped("unit", _close_in_us(c)), "line 1 (2024-03-01 00:00): the open time is in ms")
    put("outside its month", zipped("month", good, "BTCUSDT-1m-2024-04"), "a candle at 2024-03-01 00:00 lies outside")
    other = Candles(c.ts, c.open, c.high, c.low, c.close, c.volume + 1)
    dup = b"\n".join([*lines[:20], kline_csv(other.slice(19, 20), "ms").strip(), *lines[20:]])
    put("two values for a minute", zipped("dup", dup), "two different candles for 2024-03-01 00:19")
    two = tmp_path / "two" / "BTCUSDT-1m-2024-03.zip"
    two.parent.mkdir()
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", good)
        zf.writestr("b.csv", good)
    put("two members", two, "the zip holds 2 files")
    ck = binance_archive(tmp_path / "ck", "BTCUSDT", c, "2024-03", checksum=True)
    flipped = bytearray(ck.read_bytes())
    flipped[60] ^= 0xFF  # one byte of the deflated data changed after the checksum was written
    put("checksum", ck, "sha256 differs from BTCUSDT-1m-2024-03.zip.CHECKSUM")
    ck.write_bytes(bytes(flipped))
    # the same damage without a CHECKSUM beside it: zip's own CRC/deflate check
    put("corrupt zip", tmp_path / "crc" / "BTCUSDT-1m-2024-03.zip", "not a complete zip archive", bytes(flipped))
    json_rows = freqtrade_json(c)
    put("truncated json", tmp_path / "json" / "BTC_USDT-1m.json", "the JSON list ends early", json_rows[:-40])
    put("json row of 5", tmp_path / "json5" / "BTC_USDT-1m.json", "row 2 has 5 values, expected 6",
        json_rows.replace(b"],[", b"],[1709251200000,1,2,3,4],[", 1))  # fmt: skip
    put("truncated gzip", tmp_path / "gz" / "BTCUSDT.csv.gz", "the gzip stream ends early", ours_csv_gz(c)[:-30])
    put("5m steps in a 1m file", tmp_path / "step" / "BTC_USDT-1m.json", "the candles are at least 5 min apart",
        freqtrade_json(Candles(*(col[::5] for col in c.columns()))))  # fmt: skip
    return cases


def _five_minute(c: Candles) -> bytes:
    ts5 = c.ts[0] + np.arange(len(c), dtype=np.int64) * 5 * MINUTE_MS
    text = kline_csv(Candles(ts5, c.open, c.high, c.low, c.close, c.volume), "ms").decode()
    rows = [r.split(",") for r in text.strip().split("\n")]
    return "\n".join(",".join([r[0], *r[1:6], str(int(r[0]) + 5 * MINUTE_MS - 1), *r[7:]]) for r in rows).encode()


def _close_in_us(c: Candles) -> bytes:
    rows = [r.split(",") for r in kline_csv(c, "ms").decode().strip().split("\n")]
    return "\n".join(",".join([r[0], *r[1:6], str((int(r[0]) + MINUTE_MS) * 1000 - 1), *r[7:]]) for r in rows).encode()
