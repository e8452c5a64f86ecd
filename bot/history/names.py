"""What a file's name and place say: its symbol, its timeframe, and whether it is futures data.

Only the symbol and these refusals come from the name; the format is read from the content
(`bot.history.parse`). Names we know:

- Binance's public archives (data.binance.vision): `BTCUSDT-1m-2024-01.zip` (monthly),
  `BTCUSDT-1m-2024-01-31.zip` (daily), beside an optional `...zip.CHECKSUM` (sha256); the
  same names ending in `.csv` for an unpacked archive.
- freqtrade data directories: `BTC_USDT-1m.json`, `.json.gz`, `.feather` -> BTCUSDT.
- ours (../shared/data): `BTCUSDT.csv.gz` (or `.csv`).

Futures are refused here when the name or place says so: a `futures` directory anywhere in
the path (data.binance.vision keeps them under `data/futures/um|cm/...`, freqtrade under
`<exchange>/futures/`), a coin-margined symbol (`BTCUSD_PERP`, `BTCUSD_240628`), or a freqtrade
futures name (`BTC_USDT_USDT-1m-futures.feather`, `-mark`, `-index`, `-premiumIndex`,
`-funding_rate`). `bot.history.binance_csv` also refuses the header row Binance writes into
futures kline files. A header-less USD-M futures file from before 2022-05 named like a spot
file and kept outside a `futures/` directory cannot be told from spot by name or content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from models.timeutil import DAY_MS, TimeParseError, parse_time

_BINANCE = re.compile(r"^(?P<sym>[A-Za-z0-9_]+)-(?P<tf>[0-9A-Za-z]+)-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.(?:zip|csv)$")
_FREQTRADE = re.compile(
    r"^(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)(?:_(?P<settle>[A-Za-z0-9]+))?"
    r"-(?P<tf>[0-9A-Za-z]+)(?:-(?P<ctype>[A-Za-z_]+))?\.(?P<ext>json|json\.gz|feather|parquet|h5)$"
)
_OURS = re.compile(r"^(?P<sym>[A-Za-z0-9]+)\.csv(?:\.gz)?$")
_CM_SYMBOL = re.compile(r"^[A-Z0-9]+_(?:PERP|\d{6})$")  # coin-margined futures: BTCUSD_PERP, BTCUSD_240628
_TIMEFRAME = re.compile(r"^\d+[smhdwM]$")


@dataclass(frozen=True)
class NamedFile:
    """A file whose name says it holds candles. `refused` is set when the name alone refuses it
    (futures, another timeframe, a format we do not read); such a file is never opened."""

    path: Path
    name: str  # the path relative to the imported directory, for messages
    symbol: str
    naming: str  # "binance", "freqtrade" or "ours"
    period: tuple[int, int] | None = None  # [start, end) epoch ms a Binance archive's name covers
    refused: str | None = None


def _period(date: str) -> tuple[int, int]:
    """[start, end) of the day (YYYY-MM-DD) or month (YYYY-MM) an archive's name gives."""
    if date.count("-") == 2:
        start = parse_time(date)
        return start, start + DAY_MS
    y, m = (int(x) for x in date.split("-"))
    return parse_time(f"{date}-01"), parse_time(f"{y + m // 12:04d}-{m % 12 + 1:02d}-01")


def _timeframe_refusal(tf: str) -> str | None:
    return None if tf == "1m" else f"{tf} candles: only 1m candles are imported"


def classify(path: Path, root: Path | None = None) -> NamedFile | None:
    """The NamedFile for `path`, or None when its name is not a candle file's at all
    (a README, a CHECKSUM, freqtrade's `-trades` files, ...). `root`: the directory imported (its own name may be anything)."""
    name = path.name
    rel = path.relative_to(root) if root is not None else path
    in_futures = any(p.lower() == "futures" for p in rel.parts[:-1])
    m = _BINANCE.match(name) or _FREQTRADE.match(name)
    if m and not _TIMEFRAME.match(m["tf"]):
        return None  # e.g. freqtrade's BTC_USDT-trades.json.gz: not candles
    if m := _BINANCE.match(name):
        sym = m["sym"].upper()
        try:
            period = _period(m["date"])
        except (TimeParseError, ValueError):
            return NamedFile(path, rel.as_posix(), sym, "binance", refused=f"the date {m['date']!r} in its name is not a date")
        refused = _timeframe_refusal(m["tf"])
        if _CM_SYMBOL.match(sym):
            refused = f"{sym} is a coin-margined futures symbol: only spot candles are imported"
        elif in_futures:
            refused = "it lies in a futures/ directory: only spot candles are imported"
        return NamedFile(path, rel.as_posix(), sym, "binance", period, refused)
    if m := _FREQTRADE.match(name):
        sym = (m["base"] + m["quote"]).upper()
        refused = _timeframe_refusal(m["tf"])
        if m["settle"] or (m["ctype"] and m["ctype"] != "spot") or in_futures:
            kind = m["ctype"] or "futures"
            refused = f"freqtrade {kind} data ({name}): only spot candles are imported"
        elif refused is None and m["ext"] in ("parquet", "h5"):
            refused = f"freqtrade's {m['ext']} format is not read; use its json, json.gz or feather format"
        return NamedFile(path, rel.as_posix(), sym, "freqtrade", refused=refused)
    if m := _OURS.match(name):
        refused = "it lies in a futures/ directory: only spot candles are imported" if in_futures else None
        return NamedFile(path, rel.as_posix(), m["sym"].upper(), "ours", refused=refused)
    return None
