"""One candle file -> Candles, the format picked by its content, never by a flag or extension.

The container by its magic bytes: zip (`PK\\x03\\x04`: one member, a data.binance.vision
archive), gzip (`\\x1f\\x8b`), Arrow/Feather v2 (`ARROW1`), or plain text. Then the payload:
Arrow -> freqtrade feather; text starting with `[` -> freqtrade JSON; CSV whose header is
`ts,open,high,low,close,volume` -> ours (`models.candles.read_candles_csv`); other CSV ->
Binance klines (12 columns). A `NAME.CHECKSUM` beside the file (data.binance.vision's sha256
line) is checked when present.

Then the checks every format gets: open times never go backwards; a minute repeated in the
file is a duplicate only if its values are the same (then counted and dropped), otherwise the
file is refused; the smallest step between candles is one minute (a file of 5m or 1s candles
named 1m is refused); a Binance archive's rows lie inside the day or month its name says.
Values (NaN, high < low, prices <= 0, ...) are not judged here: the importer drops such rows
with the feed's own checks and counts them, for every format alike.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.history.binance_csv import parse_binance_csv
from bot.history.errors import Refused
from bot.history.freqtrade import parse_feather, parse_freqtrade_json
from bot.history.names import NamedFile
from models.candles import FIELDS, Candles, read_candles_csv
from models.timeutil import MINUTE_MS, fmt_ts

_OUR_HEADER = b"ts,open,high,low,close,volume"


@dataclass(frozen=True)
class ParsedFile:
    """One file's candles (ascending, duplicates removed) and what it was."""

    path: Path
    name: str  # relative to the imported directory
    symbol: str
    candles: Candles
    fmt: str  # e.g. "binance zip", "freqtrade json.gz", "freqtrade feather", "csv.gz"
    unit: str | None  # "ms"/"us" for Binance klines (their time unit), else None
    rows_read: int
    duplicates: int  # rows repeating a minute of this file with the same values


def _verify_checksum(path: Path, data: bytes) -> None:
    side = path.with_name(path.name + ".CHECKSUM")
    if not side.is_file():
        return
    words = side.read_text(errors="replace").split()
    if not words:
        raise Refused(f"{side.name} is empty")
    if hashlib.sha256(data).hexdigest() != words[0].lower():
        raise Refused(f"sha256 differs from {side.name} (a changed or partly downloaded file)")


def _unzip(data: bytes) -> tuple[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) != 1:
                raise Refused(f"the zip holds {len(members)} files; a kline archive holds one CSV")
            return members[0].filename, zf.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise Refused(f"not a complete zip archive (truncated or corrupt: {e})") from None


def _gunzip(data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except EOFError:
        raise Refused("the gzip stream ends early (truncated)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise Refused(f"corrupt gzip data ({e})") from None


def _payload(data: bytes, container: str) -> tuple[Candles, str, str | None]:
    """(candles, format label, time unit) of decompressed content."""
    if data.startswith(b"ARROW1"):
        return parse_feather(data), "freqtrade feather", None
    if data.startswith(b"FEA1"):
        raise Refused("a Feather v1 file (pandas < 0.25); re-save it with a current pandas or freqtrade")
    if data.startswith(b"PAR1"):
        raise Refused("a Parquet file; use freqtrade's json, json.gz or feather format")
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return parse_freqtrade_json(text), f"freqtrade json{container}", None
    if text[: len(_OUR_HEADER)].lower() == _OUR_HEADER:
        try:
            return read_candles_csv(io.BytesIO(text)), f"csv{container}", None
        except ValueError as e:  # pandas: a value that is not a number, or a missing column
            raise Refused(f"not our CSV format ({str(e).splitlines()[0][:120]})") from None
    k = parse_binance_csv(text)
    label = "binance zip" if container == " zip" else f"binance csv{container}"
    return k.candles, label, k.unit


def parse_file(named: NamedFile) -> ParsedFile:
    """Read, decode and check one file; Refused (one line, the reason) if it cannot be imported."""
    path = named.path
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Refused(f"cannot read it ({e.strerror or e})") from None
    if not data:
        raise Refused("the file is empty")
    _verify_checksum(path, data)
    container = ""
    if data.startswith(b"PK\x03\x04"):
        member, data = _unzip(data)
        container = " zip"
        if named.naming == "binance" and not Path(member).name.upper().startswith(named.symbol + "-"):
            raise Refused(f"the zip holds {member!r}, not {named.symbol} klines")
    elif data.startswith(b"\x1f\x8b"):
        data = _gunzip(data)
        container = ".gz"
    candles, fmt, unit = _payload(data, container)
    rows = len(candles)
    candles, dups = _check_sequence(candles)
    if named.period is not None and len(candles):
        lo, hi = named.period
        if candles.ts[0] < lo or candles.ts[-1] >= hi:
            bad = int(candles.ts[0] if candles.ts[0] < lo else candles.ts[-1])
            raise Refused(f"a candle at {fmt_ts(bad)} lies outside {fmt_ts(lo)[:10]}..{fmt_ts(hi - MINUTE_MS)[:10]}, "
                          "the period its name says")  # fmt: skip
    return ParsedFile(path, named.name, named.symbol, candles, fmt, unit, rows, dups)


def _check_sequence(c: Candles) -> tuple[Candles, int]:
    """(candles without same-valued repeats, how many); Refused for times going backwards, a
    minute with two different candles, or steps that are not one minute."""
    if len(c) < 2:
        return c, 0
    step = np.diff(c.ts)
    back = np.flatnonzero(step < 0)
    if len(back):
        i = int(back[0])
        raise Refused(f"times go backwards at row {i + 2}: {fmt_ts(int(c.ts[i + 1]))} after {fmt_ts(int(c.ts[i]))}")
    same = np.flatnonzero(step == 0)
    if len(same):
        vals = np.stack([getattr(c, f) for f in FIELDS])
        differ = ~np.all((vals[:, same] == vals[:, same + 1]) | (np.isnan(vals[:, same]) & np.isnan(vals[:, same + 1])), axis=0)
        if differ.any():
            i = int(same[np.argmax(differ)])
            raise Refused(f"two different candles for {fmt_ts(int(c.ts[i]))} (rows {i + 1} and {i + 2})")
        keep = np.ones(len(c), dtype=bool)
        keep[same + 1] = False
        c = Candles(*(col[keep] for col in c.columns()))
        step = np.diff(c.ts)
    if len(step) and (smallest := int(step.min())) != MINUTE_MS:
        size = f"{smallest // MINUTE_MS} min" if smallest % MINUTE_MS == 0 else f"{smallest / 1000:g} s"
        raise Refused(f"the candles are at least {size} apart: not 1m candles")
    return c, len(same)
