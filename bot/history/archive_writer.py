"""Candles written in the formats `bot import-candles` reads, for tests and the benchmark
(like `bot.exchange_sim`, nothing the daemon uses).

- Binance kline archives as data.binance.vision serves them: `SYMBOL-1m-YYYY-MM.zip` (or a
  day) holding `SYMBOL-1m-YYYY-MM.csv`, 12 header-less columns, prices and volumes with 8
  decimals as Binance prints them, times in ms, or in us as spot files are from 2025 on;
  quote volume, trade count and taker columns are filled with plausible numbers.
- freqtrade's JSON, made the way freqtrade makes it: pandas `to_json(orient="values")` of
  date (epoch ms), open, high, low, close, volume.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from models.candles import Candles
from models.timeutil import MINUTE_MS, parse_time

SPOT_US_FROM_MS = parse_time("2025-01-01")  # spot archives give microseconds from this day on
FUTURES_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                  "taker_buy_volume,taker_buy_quote_volume,ignore")  # fmt: skip


def kline_csv(c: Candles, unit: str = "ms", header: str | None = None) -> bytes:
    """Binance kline CSV text for `c` (`unit` "ms" or "us"), with an optional header line."""
    import pandas as pd

    per = 1000 if unit == "us" else 1
    open_t = c.ts.astype(np.int64) * per
    df = pd.DataFrame({
        0: open_t, 1: c.open, 2: c.high, 3: c.low, 4: c.close, 5: c.volume,
        6: open_t + MINUTE_MS * per - 1, 7: c.volume * c.close, 8: np.maximum(1, (c.volume * 7).astype(np.int64) % 997),
        9: c.volume * 0.5, 10: c.volume * c.close * 0.5, 11: np.zeros(len(c), np.int64),
    })  # fmt: skip
    text = df.to_csv(None, header=False, index=False, float_format="%.8f", lineterminator="\n")
    return ((header + "\n") if header else "").encode() + text.encode()


def write_zip(path: Path, member: str, payload: bytes, *, checksum: bool = False) -> Path:
    """A one-member zip as Binance packs its archives (deflate), optionally with its
    `.CHECKSUM` file (`<sha256>  <name>`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr(member, payload)
    if checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def binance_archive(directory: Path, symbol: str, c: Candles, period: str, *, unit: str | None = None,
                    header: str | None = None, checksum: bool = False) -> Path:  # fmt: skip
    """`directory/SYMBOL-1m-<period>.zip` of `c` (`period` "YYYY-MM" or "YYYY-MM-DD"); the unit
    defaults to what Binance uses for that period (us from 2025 on)."""
    if unit is None:
        unit = "us" if parse_time(period + ("-01" if period.count("-") == 1 else "")) >= SPOT_US_FROM_MS else "ms"
    name = f"{symbol}-1m-{period}"
    return write_zip(directory / f"{name}.zip", f"{name}.csv", kline_csv(c, unit, header), checksum=checksum)


def monthly_archives(directory: Path, symbol: str, c: Candles) -> list[Path]:
    """One archive per calendar month of `c`, as data.binance.vision's `monthly/klines/`."""
    months = np.unique(c.ts.astype("datetime64[ms]").astype("datetime64[M]"))
    out = []
    for m in months:
        lo = int(m.astype("datetime64[ms]").astype(np.int64))
        hi = int((m + 1).astype("datetime64[ms]").astype(np.int64))
        out.append(binance_archive(directory, symbol, c.between(lo, hi), str(m)))
    return out


def freqtrade_json(c: Candles) -> bytes:
    """freqtrade's `BASE_QUOTE-1m.json` content: pandas `to_json(orient="values")`."""
    import pandas as pd

    df = pd.DataFrame({"date": c.ts.astype(np.int64), "open": c.open, "high": c.high, "low": c.low,
                       "close": c.close, "volume": c.volume})  # fmt: skip
    return df.to_json(orient="values").encode()


def freqtrade_json_gz(c: Candles) -> bytes:
    return gzip.compress(freqtrade_json(c), mtime=0)


def ours_csv_gz(c: Candles) -> bytes:
    """Our `SYMBOL.csv.gz` (the ../shared/data format): shortest round-trip decimals."""
    lines = ["ts,open,high,low,close,volume"]
    lines += [f"{t},{o!r},{h!r},{lo!r},{cl!r},{v!r}" for t, o, h, lo, cl, v in
              zip(c.ts.tolist(), c.open.tolist(), c.high.tolist(), c.low.tolist(), c.close.tolist(), c.volume.tolist(), strict=True)]  # fmt: skip
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
