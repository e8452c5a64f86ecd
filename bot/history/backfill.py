"""`bot backfill`: fetch history by REST into the store, resumable after any kill.

Per symbol the range is [resume point, last closed minute], where the resume point is the
minute after the last stored candle (`Store.last_candle_ts`), or `days` back from the
exchange's clock when nothing is stored. Pages of up to 1000 candles are fetched in order
and each page is written (one transaction, the store's COPY path) before the next one is
requested, so a kill -9 loses at most the page in flight and the rerun continues from the
last stored candle; the rows written are the same as an uninterrupted run's.

Only closed candles are stored (open time + 1 minute <= the exchange's "now"); invalid ones
are counted, logged and skipped (never repaired by guessing). Minutes the exchange has no
candle for (REST returns the next existing candle) are counted as exchange gaps.
Rate limits: ccxt's limiter spaces requests; 429/418/5xx/timeouts are retried with
exponential backoff and jitter, honouring Retry-After.

A symbol the exchange does not list (not in its markets, or ccxt's `BadSymbol`) is skipped with
one line and the others go on. When the store already holds candles later than the exchange's
clock (e.g. history imported from files, then the simulator replaying an earlier date), there
is nothing to fetch and the report says so, in dates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import ccxt
import structlog

from bot.marketdata import validate as v
from bot.marketdata.exchange import to_ccxt_symbol, unlisted_symbols
from bot.marketdata.rest import PAGE_LIMIT, fetch_klines, floor_minute
from bot.marketdata.retry import with_retry
from models.candles import Candles
from models.timeutil import DAY_MS, MINUTE_MS, fmt_ts

if TYPE_CHECKING:
    from bot.store.db import Store

log = structlog.get_logger(__name__)


class Progress(Protocol):
    """What a progress display implements (the CLI uses rich; tests may pass nothing)."""

    def start(self, symbol: str, total_minutes: int) -> None: ...
    def advance(self, symbol: str, minutes: int, rows: int) -> None: ...
    def done(self, symbol: str, report: BackfillReport) -> None: ...


@dataclass
class BackfillReport:
    symbol: str
    start_ms: int
    end_ms: int  # last minute asked for (inclusive)
    resumed: bool  # started after already stored candles
    pages: int = 0
    fetched: int = 0
    written: int = 0
    invalid: int = 0
    exchange_gap_minutes: int = 0
    issues: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None  # why nothing was fetched for this symbol (not listed, store ahead)

    @property
    def minutes(self) -> int:
        return max(0, (self.end_ms - self.start_ms) // MINUTE_MS + 1)


async def plan_range(store: Store, symbol: str, now_ms: int, days: float) -> tuple[int, int, bool]:
    """(first minute to fetch, last closed minute, resumed?) for one symbol."""
    end = floor_minute(now_ms) - MINUTE_MS
    last = await store.last_candle_ts(symbol)
    if last is not None:
        return int(last) + MINUTE_MS, end, True
    return floor_minute(now_ms - int(days * DAY_MS)), end, False


async def backfill_symbol(
    exchange: Any, store: Store, symbol: str, now_ms: int, days: float, *, quote: str = "USDT",
    retry_base_s: float = 0.5, retry_max_s: float = 30.0, attempts: int | None = 8,
    progress: Progress | None = None,
) -> BackfillReport:  # fmt: skip
    start, end, resumed = await plan_range(store, symbol, now_ms, days)
    rep = BackfillReport(symbol, start, end, resumed)
    if start > end + MINUTE_MS:
        rep.skipped = (f"the store's data ends {fmt_ts(start - MINUTE_MS)}, later than the exchange's clock "
                       f"({fmt_ts(end + MINUTE_MS)}): nothing to fetch")  # fmt: skip
        log.warning("backfill_store_ahead", symbol=symbol, stored_until=fmt_ts(start - MINUTE_MS),
                    exchange_now=fmt_ts(end + MINUTE_MS), text=f"BACKFILL {symbol}: {rep.skipped}")  # fmt: skip
        if progress:
            progress.start(symbol, 0)
            progress.done(symbol, rep)
        return rep
    if progress:
        progress.start(symbol, rep.minutes)
    ccxt_symbol = to_ccxt_symbol(symbol, quote)
    issues = v.IssueLog(keep=100)
    cursor = start
    while cursor <= end:
        page_end = min(end, cursor + (PAGE_LIMIT - 1) * MINUTE_MS)

        async def call(cursor: int = cursor, page_end: int = page_end) -> Candles:
            return await fetch_klines(exchange, ccxt_symbol, cursor, page_end)

        c = await with_retry(call, what=f"klines {symbol}", base_s=retry_base_s, cap_s=retry_max_s,
                             attempts=attempts, exchange=exchange)  # fmt: skip
        rep.pages += 1
        if len(c) == 0:
            # Nothing from cursor to page_end: an exchange gap (if later candles exist, the
            # next page shows them) — move on.
            rep.exchange_gap_minutes += (page_end - cursor) // MINUTE_MS + 1
            if progress:
                progress.advance(symbol, (page_end - cursor) // MINUTE_MS + 1, 0)
            cursor = page_end + MINUTE_MS
            continue
        rep.fetched += len(c)
        bad = v.invalid_reasons(c)
        if bad:
            for i, reason in bad:
                issues.report(symbol, int(c.ts[i]), reason, v.DROPPED, "rest")
            keep = [i for i in range(len(c)) if i not in {b for b, _ in bad}]
            rep.invalid += len(bad)
            good = Candles(*(col[keep] for col in c.columns()))
        else:
            good = c
        present = len(c)
        covered = (int(c.ts[-1]) - cursor) // MINUTE_MS + 1
        rep.exchange_gap_minutes += covered - present
        if len(good):
            res = await store.write_candles(symbol, good)
            rep.written += res.written
        if progress:
            progress.advance(symbol, covered, len(good))
        cursor = int(c.ts[-1]) + MINUTE_MS
    rep.issues = issues.as_dict()
    log.info("backfill_symbol", symbol=symbol, start=rep.start_ms, end=rep.end_ms, resumed=rep.resumed,
             pages=rep.pages, fetched=rep.fetched, written=rep.written, invalid=rep.invalid,
             exchange_gap_minutes=rep.exchange_gap_minutes,
             text=f"BACKFILL {symbol} {fmt_ts(rep.start_ms)} .. {fmt_ts(rep.end_ms)}: {rep.written:,} candles written"
                  + (f", {rep.exchange_gap_minutes} exchange gap minutes" if rep.exchange_gap_minutes else ""))  # fmt: skip
    if progress:
        progress.done(symbol, rep)
    return rep


async def backfill(
    exchange: Any, store: Store, symbols: Sequence[str], *, days: float, now_ms: int | None = None,
    quote: str = "USDT", concurrency: int = 3, retry_base_s: float = 0.5, retry_max_s: float = 30.0,
    attempts: int | None = 8, progress: Progress | None = None,
) -> list[BackfillReport]:  # fmt: skip
    """Backfill every symbol (a few concurrently, each strictly page by page). `now_ms`
    defaults to the exchange's clock (`fetch_time`), so against the simulator "now" is its
    replay clock."""
    await with_retry(exchange.load_markets, what="load_markets", base_s=retry_base_s, cap_s=retry_max_s,
                     attempts=attempts, exchange=exchange)  # fmt: skip
    if now_ms is None:
        now_ms = int(await with_retry(exchange.fetch_time, what="fetch_time", base_s=retry_base_s,
                                      cap_s=retry_max_s, attempts=attempts, exchange=exchange))  # fmt: skip
    sem = asyncio.Semaphore(concurrency)
    unlisted = set(unlisted_symbols(exchange, symbols, quote))

    def skip(symbol: str, why: str) -> BackfillReport:
        rep = BackfillReport(symbol, now_ms, now_ms, False, skipped=why)
        log.warning("backfill_symbol_skipped", symbol=symbol, reason=why, text=f"BACKFILL {symbol} skipped: {why}")
        return rep

    async def one(symbol: str) -> BackfillReport:
        if symbol in unlisted:
            return skip(symbol, "the exchange does not list it")
        async with sem:
            try:
                return await backfill_symbol(exchange, store, symbol, now_ms, days, quote=quote,
                                             retry_base_s=retry_base_s, retry_max_s=retry_max_s,
                                             attempts=attempts, progress=progress)  # fmt: skip
            except ccxt.BadSymbol as e:
                return skip(symbol, f"the exchange does not list it ({type(e).__name__})")

    return list(await asyncio.gather(*(one(s) for s in symbols)))
