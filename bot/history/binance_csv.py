"""Binance's kline CSV (the file inside a data.binance.vision `SYMBOL-1m-....zip`) -> Candles.

Twelve columns, open time first: open time, open, high, low, close, volume, close time, quote
volume, trades, taker buy base, taker buy quote, ignore. Spot files have no header; spot
files from 2025-01-01 on give both times in **microseconds**, older ones in milliseconds.

The unit is decided per file from the first open time's magnitude (epoch ms of 1973..5138 is
1e11..1e14, epoch us the same range times 1000) and must agree with every row's close time:
close = open + 60 s - 1 unit (59,999 in ms, 59,999,999 in us). A close time that says
another interval (`open + 5 min - 1`: a 5m file) or the other unit refuses the file, as does
an open time that is not in the file's unit.

A first line that is not numbers is a header. Binance writes one into its futures kline files
(`open_time,...,count,taker_buy_volume,...`, since 2022) and none into spot ones
(binance/binance-public-data#283), so that header refuses the file as futures; another header
whose first name is the open time (e.g. the README's `Open time,Open,...`) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.history.csv_text import read_columns
from bot.history.errors import Refused
from models.candles import Candles
from models.timeutil import MINUTE_MS, fmt_ts

N_FIELDS = 12
_FUTURES_NAMES = {"count", "taker_buy_volume"}  # Binance's futures kline header has these; spot has no header
_UNITS = (("ms", 1, 10**11, 10**14), ("us", 1000, 10**14, 10**17))  # name, per ms, [lo, hi) of epoch values


@dataclass(frozen=True)
class BinanceKlines:
    candles: Candles
    unit: str  # "ms" or "us": the unit of the file's times
    header: bool


def _header(first: bytes) -> bool:
    """Whether `first` (the first line) is a header; Refused for futures' or a foreign one."""
    fields = [f.strip().strip('"').lower() for f in first.decode("utf-8", "replace").strip().split(",")]
    try:
        int(fields[0])
        return False
    except ValueError:
        pass
    if len(fields) != N_FIELDS:
        raise Refused(f"first line {first[:80]!r} is not a Binance kline row or header ({len(fields)} columns, expected 12)")
    if _FUTURES_NAMES <= set(fields):
        raise Refused("a futures kline file (its header names count/taker_buy_volume; spot archives have no header): "
                      "only spot candles are imported")  # fmt: skip
    if "open" not in fields[0].replace(" ", "_"):
        raise Refused(f"first line {first[:80]!r} is neither a kline row nor a header starting with the open time")
    return True


def parse_binance_csv(data: bytes) -> BinanceKlines:
    """Parse one kline CSV; Refused (one line) for anything that is not spot 1m klines."""
    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    header = bool(first.strip()) and _header(first)
    body = data[end + 1 :] if header else data
    cols = read_columns(body, N_FIELDS, {0: np.int64, 1: np.float64, 2: np.float64, 3: np.float64,
                                         4: np.float64, 5: np.float64, 6: np.int64},
                        first_line=2 if header else 1)  # fmt: skip
    open_t, close_t = cols[0], cols[6]
    unit, per_ms = "ms", 1
    if len(open_t):
        for name, scale, lo, hi in _UNITS:
            if lo <= open_t[0] < hi:
                unit, per_ms = name, scale
                break
        else:
            raise Refused(f"open time {int(open_t[0])} is neither epoch milliseconds nor microseconds")
        lo, hi = next((lo, hi) for name, _, lo, hi in _UNITS if name == unit)
        out = np.flatnonzero((open_t < lo) | (open_t >= hi))
        if len(out):
            i = int(out[0])
            raise Refused(f"line {i + 1 + header}: open time {int(open_t[i])} is not in {unit} like the file's first row")
        _check_close_times(open_t, close_t, unit, per_ms, header)
    ts = open_t // per_ms
    if per_ms != 1:
        off = np.flatnonzero(open_t % per_ms)
        if len(off):
            i = int(off[0])
            raise Refused(f"line {i + 1 + header}: open time {int(open_t[i])} us is not a whole millisecond")
    return BinanceKlines(Candles(ts.astype(np.int64), cols[1], cols[2], cols[3], cols[4], cols[5]), unit, header)


def _check_close_times(open_t: np.ndarray, close_t: np.ndarray, unit: str, per_ms: int, header: bool) -> None:
    span = close_t - open_t + 1
    minute = MINUTE_MS * per_ms
    bad = np.flatnonzero(span != minute)
    if not len(bad):
        return
    i = int(bad[0])
    line = i + 1 + header
    when = fmt_ts(int(open_t[i]) // per_ms)
    other, o_lo, o_hi = next((name, lo, hi) for name, _, lo, hi in _UNITS if name != unit)
    if o_lo <= close_t[i] < o_hi:
        raise Refused(f"line {line} ({when}): the open time is in {unit} but the close time "
                      f"{int(close_t[i])} is in {other}")  # fmt: skip
    if span[i] > 0 and span[i] % minute == 0:
        raise Refused(f"{int(span[i] // minute)}m candles (line {line}, {when}: close time = open + "
                      f"{int(span[i] // minute)} min - 1 {unit}): only 1m candles are imported")  # fmt: skip
    if 0 < span[i] < minute and minute % span[i] == 0 and span[i] % per_ms == 0:
        raise Refused(f"{int(span[i] // per_ms) / 1000:g}s candles (line {line}, {when}): only 1m candles are imported")
    raise Refused(f"line {line} ({when}): close time {int(close_t[i])} is not open time + 1 min - 1 {unit} "
                  f"(a 1m kline's close)")  # fmt: skip
