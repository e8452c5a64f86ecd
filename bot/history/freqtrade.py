"""freqtrade's candle files -> Candles: `PAIR-1m.json` / `.json.gz` and `PAIR-1m.feather`.

JSON: what freqtrade writes with pandas' `to_json(orient="values")`, a list of
`[ts_ms, open, high, low, close, volume]` rows. `json.loads` of a year (525,600 rows) builds
three million Python objects; instead the rows are turned into CSV text (`],[` -> newline)
and read by the same vectorised numeric reader as Binance's files, so a row with another
field count, a quoted or a non-numeric value is refused with its row number. The timestamp is
read as a number (pandas may write `1.6173216e12`-style or `.0` values) and must be a whole
millisecond in the epoch-ms range.

Feather: an Arrow IPC file (`bot.history.arrow_ipc`) with columns `date` (timestamp, any unit,
UTC) and open, high, low, close, volume (any int/float width, read as float64).
"""

from __future__ import annotations

import re

import numpy as np

from bot.history.arrow_ipc import ArrowFormatError, read_arrow_file
from bot.history.csv_text import read_columns
from bot.history.errors import Refused
from models.candles import FIELDS, Candles

_ROW_SEP = re.compile(rb"\]\s*,\s*\[")
_MS_RANGE = (10**11, 10**14)  # epoch ms of 1973..5138; seconds or microseconds fall outside
_PER_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}  # unit -> (multiply, divide)


def _ms_or_refuse(ts: np.ndarray, what: str) -> np.ndarray:
    out = np.flatnonzero((ts < _MS_RANGE[0]) | (ts >= _MS_RANGE[1]))
    if len(out):
        i = int(out[0])
        raise Refused(f"row {i + 1}: {what} {ts[i]:.0f} is not epoch milliseconds")
    return ts


def parse_freqtrade_json(data: bytes) -> Candles:
    """Parse freqtrade's JSON candle list; Refused for anything else."""
    text = data.strip()
    if text in (b"[]", b""):
        return Candles.empty()
    if not text.startswith(b"["):
        raise Refused("not a JSON list of candles")
    if not text.endswith(b"]"):
        raise Refused("the JSON list ends early (truncated?)")
    inner = text[1:-1].strip()
    if not (inner.startswith(b"[") and inner.endswith(b"]")):
        raise Refused("not a JSON list of [ts, open, high, low, close, volume] rows")
    body = _ROW_SEP.sub(b"\n", inner[1:-1])
    if b"[" in body or b"]" in body or b"{" in body:
        raise Refused("not a flat JSON list of [ts, open, high, low, close, volume] rows")
    cols = read_columns(body, 6, dict.fromkeys(range(6), np.float64), words=("row", "value"))
    ts = cols[0]
    nan = np.flatnonzero(~np.isfinite(ts))
    if len(nan):
        raise Refused(f"row {int(nan[0]) + 1}: the timestamp is missing")
    _ms_or_refuse(ts, "timestamp")
    frac = np.flatnonzero(ts != np.floor(ts))
    if len(frac):
        raise Refused(f"row {int(frac[0]) + 1}: timestamp {ts[int(frac[0])]!r} is not a whole millisecond")
    return Candles(ts.astype(np.int64), *(cols[k] for k in range(1, 6)))


def parse_feather(data: bytes) -> Candles:
    """Parse a freqtrade `.feather` candle file; Refused for anything else."""
    try:
        columns, values = read_arrow_file(data)
    except ArrowFormatError as e:
        raise Refused(f"feather: {e}") from None
    kinds = {c.name: c for c in columns}
    missing = [n for n in ("date", *FIELDS) if n not in kinds]
    if missing:
        raise Refused(f"feather: no column {', '.join(missing)} (freqtrade's are date, open, high, low, close, volume)")
    date = kinds["date"]
    raw = values["date"].astype(np.int64, copy=False)
    if date.kind == "timestamp":
        mul, div = _PER_MS[date.unit or "ms"]
        if div > 1 and len(raw) and (off := np.flatnonzero(raw % div)).size:
            raise Refused(f"feather: row {int(off[0]) + 1}: date is not a whole millisecond")
        ts = raw // div * mul
        if date.timezone not in (None, "UTC", "utc", "Etc/UTC", "+00:00", "Z"):
            raise Refused(f"feather: date is in time zone {date.timezone!r}, not UTC")
    elif date.kind == "int":
        ts = raw
    else:
        raise Refused(f"feather: column date holds {date.kind} values, not timestamps")
    _ms_or_refuse(ts, "date")
    return Candles(ts.astype(np.int64), *(values[f].astype(np.float64) for f in FIELDS))
