"""`bot import-candles DIR`: load a directory of candle files into the store.

Formats (picked by content, `bot.history.parse`): Binance's public kline archives
(`SYMBOL-1m-YYYY-MM[-DD].zip`, milliseconds or microseconds), freqtrade data directories
(`BASE_QUOTE-1m.json`, `.json.gz`, `.feather`) and ours (`SYMBOL.csv.gz`), mixed freely; the
directory is searched recursively, so data.binance.vision's own layout works as downloaded.

The unit of atomicity is the symbol: all of a symbol's files are parsed, checked and merged
(`bot.history.merge`: overlapping files must agree) before any of its rows is written, and
they are written in one transaction (`Store.write_candles`: binary COPY). A file refused for
its content refuses its symbol, and nothing of that symbol is written; the other symbols go
on. A file refused by its name alone (futures, another timeframe) is never opened and leaves
its symbol's other files alone. Every refusal is one line; `ImportResult.refused` makes the
command's exit status non-zero. Files whose names are not candle files' (README, CHECKSUM,
freqtrade's trades) are listed as ignored.

Two symbols are in flight at once (parsing in a worker thread while the other's COPY runs),
so memory is bounded by two symbols' history, never the directory's. Each symbol reports rows
read, rows written, duplicates skipped (a minute repeated in a file or across files with the
same values, plus rows already stored identically), rows rejected by the feed's value checks
(NaN, prices <= 0, high < low, ...), the gaps in what was read, and its files by format and
time unit. Re-running writes nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from bot.history.errors import Refused
from bot.history.merge import merge_files
from bot.history.names import NamedFile, classify
from bot.history.parse import ParsedFile, parse_file
from bot.marketdata.validate import invalid_reasons
from bot.store.db import Store
from models.candles import Candles, find_gaps

log = structlog.get_logger("bot.history.importer")


@dataclass(frozen=True)
class ImportReport:
    symbol: str
    rows_read: int
    written: int
    duplicates_skipped: int
    rejected: int
    gaps: int
    missing_minutes: int
    files: int = 0
    sources: str = ""  # e.g. "12 binance zip (10 ms, 2 us)"


@dataclass(frozen=True)
class RefusedFile:
    file: str  # relative to the directory; the symbol itself for a disagreement between files
    reason: str
    symbol: str | None = None  # set when the refusal keeps this symbol out of the store


@dataclass
class ImportResult:
    reports: list[ImportReport] = field(default_factory=list)
    refused: list[RefusedFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def refused_symbols(self) -> list[str]:
        return sorted({r.symbol for r in self.refused if r.symbol})


@dataclass(frozen=True)
class _Prepared:
    candles: Candles
    rows_read: int
    duplicates: int
    rejected_by: Counter[str]
    files: int
    sources: str  # describe_sources of the parsed files (their candles are not kept)


def find_candle_files(directory: str | Path, symbols: Iterable[str] | None = None
                      ) -> tuple[dict[str, list[NamedFile]], list[NamedFile], list[str]]:  # fmt: skip
    """(symbol -> its readable files, files refused by name, names ignored) under `directory`,
    recursively; only the named `symbols` if given (each must have a file)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"candle directory {root} does not exist")
    wanted = None if symbols is None else {s.upper() for s in symbols}
    by_symbol: dict[str, list[NamedFile]] = defaultdict(list)
    refused: list[NamedFile] = []
    ignored: list[str] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        named = classify(p, root)
        if named is None:
            ignored.append(p.relative_to(root).as_posix())
        elif wanted is None or named.symbol in wanted:
            (refused if named.refused else by_symbol[named.symbol]).append(named)
    if wanted is not None:
        absent = sorted(wanted - set(by_symbol) - {n.symbol for n in refused})
        if absent:
            raise FileNotFoundError(f"no candle file in {root} for {', '.join(absent)}")
    if not by_symbol and not refused:
        raise FileNotFoundError(f"no candle files in {root} (Binance SYMBOL-1m-YYYY-MM.zip, freqtrade "
                                "BASE_QUOTE-1m.json/.json.gz/.feather or SYMBOL.csv.gz)")  # fmt: skip
    return dict(by_symbol), refused, ignored


def _prepare(symbol: str, files: list[NamedFile]) -> _Prepared | list[RefusedFile]:
    """Parse, check and merge a symbol's files (in a worker thread), or every refusal."""
    parsed: list[ParsedFile] = []
    refused: list[RefusedFile] = []
    for f in files:
        try:
            parsed.append(parse_file(f))
        except Refused as e:
            refused.append(RefusedFile(f.name, str(e), symbol))
    if refused:
        return refused
    try:
        merged = merge_files(parsed)
    except Refused as e:
        return [RefusedFile(symbol, str(e), symbol)]
    c = merged.candles
    bad = invalid_reasons(c)
    if bad:
        ok = np.ones(len(c), dtype=bool)
        ok[[i for i, _ in bad]] = False
        c = Candles(*(col[ok] for col in c.columns()))
    return _Prepared(c, sum(p.rows_read for p in parsed), merged.duplicates + sum(p.duplicates for p in parsed),
                     Counter(reason for _, reason in bad), len(parsed), describe_sources(parsed))  # fmt: skip


def describe_sources(files: list[ParsedFile]) -> str:
    """'12 binance zip (10 ms, 2 us), 1 freqtrade feather': each format's count, time units."""
    out = []
    for fmt, n in sorted(Counter(f.fmt for f in files).items()):
        units = Counter(f.unit for f in files if f.fmt == fmt and f.unit)
        out.append(f"{n} {fmt}" + (f" ({', '.join(f'{k} {u}' for u, k in sorted(units.items()))})" if units else ""))
    return ", ".join(out)


async def import_directory(
    store: Store,
    directory: str | Path,
    symbols: Iterable[str] | None = None,
    on_progress: Callable[[str, int], None] | None = None,
    concurrency: int = 2,
) -> ImportResult:
    """Import every (or the named) symbol's files under `directory`; see the module docstring.

    Two symbols at a time by default: two COPY streams keep both cores of a small machine
    busy (one parsing while the other writes); more only contend and hold more memory.
    """
    by_symbol, name_refused, ignored = find_candle_files(directory, symbols)
    result = ImportResult(ignored=ignored)
    for f in name_refused:
        result.refused.append(RefusedFile(f.name, f.refused or "refused"))
        log.warning("import_refused", file=f.name, reason=f.refused)
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        log.info("import_ignored", files=len(ignored), text=f"IMPORT ignored {len(ignored)} files not named like candle files: {shown}")
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(symbol: str, files: list[NamedFile]) -> ImportReport | None:
        async with sem:
            prep = await asyncio.to_thread(_prepare, symbol, files)
            if isinstance(prep, list):
                for r in prep:
                    log.warning("import_refused", file=r.file, reason=r.reason, symbol=symbol)
                result.refused.extend(prep)
                if on_progress:
                    on_progress(symbol, 0)
                return None
            written = await store.write_candles(symbol, prep.candles)
        gaps = find_gaps(prep.candles.ts)
        rep = ImportReport(
            symbol=symbol,
            rows_read=prep.rows_read,
            written=written.written,
            duplicates_skipped=prep.duplicates + written.unchanged,
            rejected=sum(prep.rejected_by.values()),
            gaps=len(gaps),
            missing_minutes=sum(n for _, n in gaps),
            files=prep.files,
            sources=prep.sources,
        )
        for reason, n in prep.rejected_by.items():
            log.warning("import_rejected_rows", symbol=symbol, reason=reason, rows=n)
        log.info("import_symbol", **rep.__dict__)
        if on_progress:
            on_progress(symbol, prep.rows_read)
        return rep

    reports = await asyncio.gather(*(one(s, f) for s, f in sorted(by_symbol.items())))
    result.reports = [r for r in reports if r is not None]
    return result
