"""`bot import-candles DIR`: load `SYMBOL.csv.gz` files (the ../shared/data format) into the store.

Files are parsed by pandas' C reader in worker threads and written by binary COPY over two
pooled connections at once. Each symbol reports rows read, rows written, duplicates skipped (repeated
timestamps in the file plus rows already stored with identical values), rows rejected as
invalid, and the gaps (missing minutes) in what was read. Re-running writes nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from bot.marketdata.validate import invalid_reasons
from bot.store.candles import dedupe_sorted
from bot.store.db import Store
from models.candles import Candles, candle_files, find_gaps, read_candles_csv

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


def _load(path: Path) -> tuple[Candles, int, Counter[str], int]:
    """Parse, drop invalid rows (the feed's own checks), de-duplicate:
    (candles, rows read, rejected rows by reason, duplicates)."""
    raw = read_candles_csv(path)
    bad = invalid_reasons(raw)
    c = raw
    if bad:
        ok = np.ones(len(raw), dtype=bool)
        ok[[i for i, _ in bad]] = False
        c = Candles(*(col[ok] for col in raw.columns()))
    d = dedupe_sorted(c)
    return d, len(raw), Counter(reason for _, reason in bad), len(c) - len(d)


async def import_directory(
    store: Store,
    directory: str | Path,
    symbols: Iterable[str] | None = None,
    on_progress: Callable[[str, int], None] | None = None,
    concurrency: int = 2,
) -> list[ImportReport]:
    """Import every (or the named) symbol file of `directory`; return one report per symbol.

    Files are parsed in worker threads and written over `concurrency` pooled connections at
    once (two COPY streams keep both cores of a small machine busy; more only contend).
    """
    files = candle_files(directory, symbols)
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(symbol: str, path: Path) -> ImportReport:
        async with sem:
            candles, rows_read, rejected_by, dup_in_file = await asyncio.to_thread(_load, path)
            result = await store.write_candles(symbol, candles)
        gaps = find_gaps(candles.ts)
        rep = ImportReport(
            symbol=symbol,
            rows_read=rows_read,
            written=result.written,
            duplicates_skipped=dup_in_file + result.unchanged,
            rejected=sum(rejected_by.values()),
            gaps=len(gaps),
            missing_minutes=sum(n for _, n in gaps),
        )
        for reason, n in rejected_by.items():
            log.warning("import_rejected_rows", symbol=symbol, reason=reason, rows=n)
        log.info("import_symbol", **rep.__dict__)
        if on_progress:
            on_progress(symbol, rows_read)
        return rep

    return list(await asyncio.gather(*(one(s, p) for s, p in files.items())))
