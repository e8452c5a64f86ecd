"""The live candle feed: every closed 1m candle of every configured symbol, exactly once, in
order per symbol, persisted, and handed to the engine through a bounded queue.

Sources
  * one websocket for all symbols (ccxt `watch_ohlcv_for_symbols`; raw kline events reach
    `_on_kline` through `BinanceClient.on_kline`, see `bot.marketdata.exchange`);
  * REST klines, for every minute the websocket did not deliver good: holes in the stream,
    bad candles, the time before the first live candle (startup catch-up from the store's last
    candle, or `feed.backfill_days`), and all minutes while the websocket is down.

Closed means final: a kline marked closed (`x: true`) is taken as is; an in-progress kline
(`x: false`) only tells that the minutes before it have closed — its values are never used.
A closed minute that has no good candle yet is *missing*; `SymbolSequencer` holds later
candles back until REST has filled it, so nothing is released out of order. When REST shows
later candles but none for a minute, the exchange has none (downtime): that minute is an
`ExchangeGap`, logged and counted, and later candles flow again. Nothing is ever invented.

Fallback and recovery: if the websocket errors or stays silent for `feed.stall_timeout_s` it
is closed and re-opened with jittered exponential backoff; while it is not healthy, a poller
asks the exchange's clock every `feed.rest_poll_interval_s`, which makes every minute up to
"now" closed and therefore fetched by REST. REST calls retry forever on network-type errors
(429/418/5xx/timeouts) with backoff: the feed never dies of the network.

Outage lines: the first websocket failure (silent for `feed.stall_timeout_s`, or an error)
opens an outage, said in one `feed_outage` line (symbols, reason, since when); the reconnect
attempts during it are debug lines; the first message of a new connection closes it with one
`feed_recovered` line (how long, how many candles REST filled meanwhile).

Output: `queue` (bounded, `feed.queue_size`) of `ClosedCandle` / `ExchangeGap` events.
Candles are persisted in batches (`feed.flush_interval_s`, `feed.flush_max_rows`) through
`Store.write_candles`; a failed write is kept and retried at the next flush. While the store is
unavailable (`bot.store.outage`: down, restarting, stalled past `database.write_timeout_s`) the
feed keeps streaming to the engine and holds at most `feed.persist_buffer_minutes` candles per
symbol; older ones are dropped from memory, their range remembered, and fetched again by REST
and written once the store answers, so the store still ends up equal to the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
import ccxt
import numpy as np
import structlog

from bot.config import Config
from bot.logs.error_lines import ErrorStreak, log_survived
from bot.marketdata import validate as v
from bot.marketdata.events import ClosedCandle, ExchangeGap, FeedEvent
from bot.marketdata.exchange import BinanceClient, build_exchange, to_ccxt_symbol
from bot.marketdata.rest import PAGE_LIMIT, fetch_klines, floor_minute
from bot.marketdata.retry import Backoff, reachability, with_retry
from bot.marketdata.sequencer import CONFLICT, DUPLICATE, NEW, OVERFLOW, STALE, SymbolSequencer
from bot.runtime.aio import wait_for
from bot.store.outage import is_unavailable
from models.candles import Candles
from models.timeutil import DAY_MS, MINUTE_MS

if TYPE_CHECKING:
    from bot.store.db import Store

log = structlog.get_logger(__name__)

# A websocket kline more than this past the feed's frontier (the latest minute known closed, from
# the websocket or the exchange's clock) cannot be real: it is dropped, never followed.
MAX_WS_LEAP_MS = DAY_MS

MAX_OUTBOX = 20_000  # released events not yet taken by the engine; REST catch-up pauses above it
REST_BAD_LIMIT = 5  # a minute REST keeps answering with an invalid candle is given up after this many answers


class CandleFeed:
    """See the module docstring. `await feed.run()` until `feed.stop()`; read `feed.queue`."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        *,
        exchange: BinanceClient | None = None,
        symbols: Iterable[str] | None = None,
        start_ms: int | dict[str, int] | None = None,
        queue: asyncio.Queue[FeedEvent] | None = None,
    ):
        self.cfg = cfg
        self.fc = cfg.feed
        self.store = store
        self.symbols: tuple[str, ...] = tuple(symbols or cfg.symbols)
        self._own_exchange = exchange is None
        self.exchange = exchange if exchange is not None else build_exchange(cfg)
        self.exchange.on_kline = self._on_kline
        self._start_ms = start_ms
        self.queue: asyncio.Queue[FeedEvent] = queue if queue is not None else asyncio.Queue(maxsize=self.fc.queue_size)
        self.issues = v.IssueLog()
        self.stats: Counter[str] = Counter()
        self.seqs: dict[str, SymbolSequencer] = {}
        self._ccxt = {s: to_ccxt_symbol(s, cfg.exchange.quote) for s in self.symbols}
        self._ws_last: dict[str, int] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._news: dict[str, asyncio.Event] = {}  # set when the stream shows a candle after a hole
        self._outbox: deque[FeedEvent] = deque()
        self._outbox_event = asyncio.Event()
        self._persist: dict[str, list[tuple[int, float, float, float, float, float]]] = {s: [] for s in self.symbols}
        self._persist_rows = 0
        self._persist_event = asyncio.Event()
        self._rest_sem = asyncio.Semaphore(self.fc.rest_concurrency)
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.ws_up = False
        self.last_ws_msg = 0.0
        self.persisted_through: dict[str, int] = {}
        self._live_from = 0
        self._rest_bad: dict[tuple[str, int], int] = {}
        self.health: Any = None  # bot.store.outage.StoreHealth (the daemon's), told about store trouble
        self._write_timeout_s = float(getattr(getattr(cfg, "database", None), "write_timeout_s", 60.0))
        self._refetch: dict[str, tuple[int, int]] = {}  # symbol -> (first, last) minute dropped while the store was down
        self._outage: tuple[int, float, int] | None = None  # (since epoch ms, since monotonic, rest_filled then)
        self._persist_errors = ErrorStreak("store", "feed_persist_failed", log)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Start up (markets, clock, where each symbol resumes), then stream until `stop()`."""
        ex = self.cfg.exchange
        retry = {"base_s": ex.retry_base_s, "cap_s": ex.retry_max_s, "exchange": self.exchange}
        try:
            await with_retry(self.exchange.load_markets, what="load_markets", **retry)
            now = await with_retry(self.exchange.fetch_time, what="fetch_time", **retry)
            await self._init_symbols(int(now))
            self._tasks = [
                asyncio.create_task(self._ws_loop(), name="feed-ws"),
                asyncio.create_task(self._poll_loop(), name="feed-poll"),
                asyncio.create_task(self._deliver_loop(), name="feed-deliver"),
                asyncio.create_task(self._persist_loop(), name="feed-persist"),
                *(asyncio.create_task(self._filler(s), name=f"feed-fill-{s}") for s in self.symbols),
            ]
            self._ready.set()
            log.info("feed_started", symbols=len(self.symbols), server_now=int(now),
                     lag_minutes=sum(q.lag_minutes for q in self.seqs.values()))  # fmt: skip
            await self._stop.wait()
        finally:
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await self.flush()
            self.exchange.on_kline = None
            if self._own_exchange:
                with contextlib.suppress(Exception):
                    await self.exchange.close()
            log.info("feed_stopped", **self.summary())

    def stop(self) -> None:
        self._stop.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def _init_symbols(self, server_now: int) -> None:
        now_min = floor_minute(server_now)
        self._live_from = now_min  # minutes before this are catch-up, not holes in the stream
        for s in self.symbols:
            if isinstance(self._start_ms, dict) and s in self._start_ms:
                start = floor_minute(self._start_ms[s])
            elif isinstance(self._start_ms, int):
                start = floor_minute(self._start_ms)
            else:
                last = await self.store.last_candle_ts(s) if self.store is not None else None
                if last is not None:
                    start = int(last) + MINUTE_MS
                elif self.fc.backfill_days > 0:
                    start = now_min - self.fc.backfill_days * DAY_MS
                else:
                    start = now_min  # the minute forming now is the first one released
            seq = SymbolSequencer(s, next_ts=start)
            seq.close_through(now_min - MINUTE_MS)
            self.seqs[s] = seq
            self._wake[s] = asyncio.Event()
            self._news[s] = asyncio.Event()
            if seq.missing_range() is not None:
                self._wake[s].set()

    # -- websocket -------------------------------------------------------------------------

    async def _ws_loop(self) -> None:
        pairs = [[self._ccxt[s], "1m"] for s in self.symbols]
        backoff = Backoff(self.fc.reconnect_base_s, self.fc.reconnect_max_backoff_s)
        while True:
            try:
                await wait_for(self.exchange.watch_ohlcv_for_symbols(pairs), timeout=self.fc.stall_timeout_s)
                if not self.ws_up:
                    self.ws_up = True
                    self.stats["ws_connects"] += 1
                    (log.debug if self._outage is not None else log.info)(  # after an outage: the FEED back line
                        "feed_ws_up", symbols=len(pairs), connects=self.stats["ws_connects"],
                        text=f"FEED websocket up ({len(pairs)} symbols)")  # fmt: skip
                    self._outage_over()
                backoff.reset()
                continue
            except TimeoutError:
                self.stats["ws_stalls"] += 1
                if not self._outage_begins(f"websocket silent {self.fc.stall_timeout_s:g}s", silent=True):
                    log.debug("feed_ws_stalled", silent_s=self.fc.stall_timeout_s, text="websocket silent: reconnecting, REST meanwhile")
                await self._close_ws()
            except asyncio.CancelledError:
                raise
            except (ccxt.BaseError, aiohttp.ClientError, ConnectionError) as e:
                # aiohttp's own connection errors (a reset while ccxt sends SUBSCRIBE) reach
                # here unwrapped: the same network trouble, not an unexpected error
                self.stats["ws_errors"] += 1
                if not self._outage_begins(type(e).__name__, quiet=reachability.down):
                    log.debug("feed_ws_down", error=type(e).__name__, detail=str(e)[:200],
                              text=f"FEED websocket down ({type(e).__name__}): REST meanwhile, reconnecting")  # fmt: skip
                await self._close_ws()
            except Exception as e:  # never die: log and reconnect
                self.stats["ws_errors"] += 1
                log_survived(log, "feed websocket", e, what="feed_ws_unexpected_error", exc_info=True)
                self._outage_begins(type(e).__name__)
                await self._close_ws()
            self.ws_up = False
            await asyncio.sleep(backoff.next())

    def _outage_begins(self, reason: str, *, silent: bool = False, quiet: bool = False) -> bool:
        """The websocket failed: open an outage (one `feed_outage` line) unless one is open.
        True if this call opened it. `silent`: it went quiet, so the outage began with its last
        message; `quiet`: the exchange is already said to be unreachable (a debug line)."""
        if self._outage is not None:
            return False
        now = time.monotonic()
        t0 = self.last_ws_msg if (silent and 0 < now - self.last_ws_msg <= 2 * self.fc.stall_timeout_s) else now
        since = int((time.time() - (now - t0)) * 1000)
        self._outage = (since, t0, int(self.stats["rest_filled"]))
        (log.debug if quiet else log.warning)("feed_outage", reason=reason, symbols=list(self.symbols), since_ts=since)
        return True

    def _outage_over(self) -> None:
        """A new connection delivers again: close the outage (one `feed_recovered` line)."""
        if self._outage is None:
            return
        since, t0, filled0 = self._outage
        self._outage = None
        self.stats["ws_outages"] += 1
        log.info("feed_recovered", down_s=round(time.monotonic() - t0, 1), filled=int(self.stats["rest_filled"]) - filled0,
                 symbols=list(self.symbols), since_ts=since)  # fmt: skip

    async def _close_ws(self) -> None:
        clients = dict(getattr(self.exchange, "clients", None) or {})
        for url, client in clients.items():
            with contextlib.suppress(Exception):
                await client.close()
            self.exchange.clients.pop(url, None)

    def _on_kline(self, message: dict) -> None:
        """Every raw kline event (called synchronously from ccxt's receive loop)."""
        k = message.get("k")
        if not isinstance(k, dict):
            return
        sym = k.get("s")
        seq = self.seqs.get(sym) if isinstance(sym, str) else None  # junk (a list, ...) is no symbol of ours
        if seq is None:
            self.last_ws_msg = time.monotonic()
            return
        self.stats["ws_events"] += 1
        try:
            ts = int(k["t"])
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: an infinite open time
            self.last_ws_msg = time.monotonic()
            self.issues.report(sym, -1, v.UNALIGNED, v.DROPPED, "ws", detail=f"bad open time {k.get('t')!r}")
            return
        if ts > max(seq.horizon, seq.next_ts) + MAX_WS_LEAP_MS:
            # Found by fuzzing: a kline from the far future moved the horizon there, and the
            # sequencer then walked (and REST would have fetched) every minute up to it, which
            # froze the loop. Not counted as a live websocket: if the exchange really is that far
            # ahead (a day-long outage of REST too), the stall timeout starts the REST poll, whose
            # clock moves the horizon up to the exchange's now, and the next events fit again.
            self.issues.report(sym, ts, v.TOO_FAR_AHEAD, v.DROPPED, "ws", detail=f"open time {ts}")
            return
        self.last_ws_msg = time.monotonic()
        if k.get("x") is not True:  # only a kline marked closed (JSON true) is final; "false" is not
            if ts % MINUTE_MS == 0:
                self._advance(seq, ts - MINUTE_MS)  # minute ts has started: everything before closed
            return
        self.stats["ws_closed"] += 1
        try:
            vals = (float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"]))
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float
            vals = (float("nan"),) * 5
        reason = v.check_values(ts, *vals)
        if reason is not None:
            action = v.REFETCH if ts >= seq.next_ts else v.DROPPED
            self.issues.report(sym, ts, reason, action, "ws", detail=",".join(str(k.get(f)) for f in "ohlcv"))
            if reason != v.UNALIGNED:
                self._advance(seq, ts)
            return
        now = time.perf_counter()
        last = self._ws_last.get(sym, -1)
        if ts == last:
            self.issues.report(sym, ts, v.DUPLICATE, v.DROPPED, "ws")
            return
        if ts < last:
            r = seq.offer(ts, vals, "ws", now)
            self.issues.report(sym, ts, v.OUT_OF_ORDER, v.REORDERED if r == NEW else v.DROPPED, "ws")
        else:
            self._ws_last[sym] = ts
            r = seq.offer(ts, vals, "ws", now)
            if r == STALE:
                self.stats["ws_already_released"] += 1
            elif r == CONFLICT:
                self.issues.report(sym, ts, v.DUPLICATE, v.DROPPED, "ws", detail="differs from the candle already held")
            elif r == DUPLICATE:
                self.stats["ws_already_held"] += 1
            elif r == OVERFLOW:
                self.stats["pending_overflow"] += 1
        self._release(seq)
        if seq.missing_range() is not None:
            self._wake[sym].set()
            if r == NEW:
                self._news[sym].set()

    def _advance(self, seq: SymbolSequencer, closed_ts: int) -> None:
        before = seq.horizon
        seq.close_through(closed_ts)
        if seq.horizon != before and seq.missing_range() is not None:
            self._wake[seq.symbol].set()

    # -- REST ------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """While the websocket is not healthy, the exchange's clock says which minutes closed."""
        ex = self.cfg.exchange
        while True:
            await asyncio.sleep(self.fc.rest_poll_interval_s)
            if self.ws_healthy():
                continue
            try:
                now = await with_retry(self.exchange.fetch_time, what="fetch_time", base_s=ex.retry_base_s,
                                       cap_s=ex.retry_max_s, exchange=self.exchange, attempts=3)  # fmt: skip
            except Exception as e:
                (log.debug if reachability.down else log.warning)("feed_poll_failed", error=type(e).__name__)
                continue
            self.stats["rest_polls"] += 1
            closed = floor_minute(int(now)) - MINUTE_MS
            for seq in self.seqs.values():
                self._advance(seq, closed)

    def ws_healthy(self) -> bool:
        return self.ws_up and (time.monotonic() - self.last_ws_msg) < self.fc.stall_timeout_s

    async def _filler(self, symbol: str) -> None:
        """Fetch this symbol's missing minutes by REST, one range at a time."""
        seq, wake, news = self.seqs[symbol], self._wake[symbol], self._news[symbol]
        ex = self.cfg.exchange
        idle = Backoff(self.fc.rest_poll_interval_s, max(self.fc.rest_poll_interval_s, self.fc.reconnect_max_backoff_s))
        while True:
            rng = seq.missing_range()
            if rng is None:
                await wake.wait()
                wake.clear()
                continue
            while len(self._outbox) > MAX_OUTBOX:  # the engine is behind: do not pile up more
                await asyncio.sleep(0.05)
            start, end = rng
            end = min(end, start + (PAGE_LIMIT - 1) * MINUTE_MS)

            async def call(start: int = start, end: int = end) -> Candles:
                async with self._rest_sem:
                    return await fetch_klines(self.exchange, self._ccxt[symbol], start, end)

            c = await with_retry(call, what=f"klines {symbol}", base_s=ex.retry_base_s, cap_s=ex.retry_max_s,
                                 exchange=self.exchange, on_error=self._count_rest_error)  # fmt: skip
            self.stats["rest_fetches"] += 1
            if self._apply_rest(seq, start, end, c):
                idle.reset()
                continue
            # REST has nothing yet for the hole (exchange down, or REST behind the stream): ask
            # again after a growing pause, or as soon as the stream shows a later candle.
            self.stats["rest_no_progress"] += 1
            news.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(news.wait(), timeout=idle.next())
            wake.clear()

    def _count_rest_error(self, e: BaseException) -> None:
        self.stats[f"rest_error_{type(e).__name__}"] += 1

    def _apply_rest(self, seq: SymbolSequencer, start: int, end: int, c: Candles) -> bool:
        """Merge a REST answer for [start, end]; True if anything was filled or confirmed."""
        sym = seq.symbol
        bad = dict(v.invalid_reasons(c))
        now = time.perf_counter()
        filled = 0
        valid_ts: list[int] = []
        if self._rest_bad:  # minutes served bad before and filled since (either source): forgotten
            for key in [k for k in self._rest_bad if k[0] == sym and seq.has(k[1])]:
                del self._rest_bad[key]
        for i in range(len(c)):
            ts = int(c.ts[i])
            if i in bad:
                if ts % MINUTE_MS or seq.has(ts) or ts > seq.horizon:
                    continue
                n = self._rest_bad[(sym, ts)] = self._rest_bad.get((sym, ts), 0) + 1
                if n < REST_BAD_LIMIT:
                    self.issues.report(sym, ts, bad[i], v.DROPPED, "rest", detail=f"REST answered a bad candle ({n}x); will ask again")
                else:  # the exchange keeps serving it bad: do not block the symbol forever, never store it
                    del self._rest_bad[(sym, ts)]
                    self.issues.report(sym, ts, bad[i], v.UNREPAIRABLE, "rest", level="error",
                                       detail=f"REST answered a bad candle {n} times; minute left empty")  # fmt: skip
                    seq.mark_gap(ts)
                    self.stats["unrepairable"] += 1
                continue
            if ts > seq.horizon:
                continue  # not known to be closed: may still be forming
            valid_ts.append(ts)
            if seq.has(ts):
                continue
            r = seq.offer(ts, (float(c.open[i]), float(c.high[i]), float(c.low[i]), float(c.close[i]),
                               float(c.volume[i])), "rest", now)  # fmt: skip
            if r == NEW:
                filled += 1
                if ts >= self._live_from:
                    self.issues.report(sym, ts, v.MISSING, v.FILLED, "rest", level=None)
                else:
                    self.stats["rest_catch_up"] += 1
        gaps = 0
        if valid_ts:
            last = max(valid_ts)
            present = {int(t) for t in c.ts}  # a bad candle is still a candle: not a gap
            for m in range(start, min(last, end + MINUTE_MS), MINUTE_MS):
                if m not in present and not seq.has(m) and seq.mark_gap(m):
                    gaps += 1
        if filled or gaps:
            self.stats["rest_filled"] += filled
            log.info("feed_rest_fill", symbol=sym, start=start, end=end, filled=filled, gap_minutes=gaps)
        self._release(seq)
        return bool(filled or gaps)

    # -- release, delivery, persistence ----------------------------------------------------

    def _release(self, seq: SymbolSequencer) -> None:
        sym = seq.symbol
        gap_start, gap_n = -1, 0
        out = self._outbox
        buf = self._persist[sym]
        n = 0
        for ts, slot in seq.pop_ready():
            if slot is None:
                if gap_n == 0:
                    gap_start = ts
                gap_n += 1
                continue
            if gap_n:
                out.append(self._gap(sym, gap_start, gap_n))
                gap_n = 0
            o, h, lo, c, vol = slot.values
            out.append(ClosedCandle(sym, ts, o, h, lo, c, vol, slot.source, slot.received))
            buf.append((ts, o, h, lo, c, vol))
            n += 1
        if gap_n:
            out.append(self._gap(sym, gap_start, gap_n))
        if n:
            self.stats["released"] += n
            self._persist_rows += n
            if self._persist_rows >= self.fc.flush_max_rows:
                self._persist_event.set()
        if out:
            self._outbox_event.set()

    def _gap(self, sym: str, ts: int, n: int) -> ExchangeGap:
        self.stats["exchange_gap_minutes"] += n
        self.issues.report(sym, ts, v.EXCHANGE_GAP, v.RECORDED, "rest", detail=f"{n} minute(s) without a candle")
        return ExchangeGap(sym, ts, n)

    async def _deliver_loop(self) -> None:
        out = self._outbox
        while True:
            if not out:
                self._outbox_event.clear()
                await self._outbox_event.wait()
                continue
            await self.queue.put(out.popleft())

    async def _persist_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await wait_for(self._persist_event.wait(), timeout=self.fc.flush_interval_s)
            self._persist_event.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write every released candle not yet persisted; returns rows written this call."""
        if self.store is None:
            for s in self._persist:
                self._persist[s] = []
            self._persist_rows = 0
            return 0
        total = 0
        for sym, rows in list(self._persist.items()):
            if not rows:
                continue
            self._persist[sym] = []
            a = np.array(rows, dtype=np.float64)
            c = Candles(a[:, 0].astype(np.int64), a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5])
            try:
                res = await wait_for(self.store.write_candles(sym, c), self._write_timeout_s)
            except asyncio.CancelledError:
                self._persist[sym] = rows + self._persist[sym]
                raise
            except Exception as e:  # database down: keep the rows (bounded), try again next flush
                self._persist[sym] = rows + self._persist[sym]
                self.stats["persist_errors"] += 1
                if is_unavailable(e):
                    if self.health is not None:
                        self.health.failed("candles", e)  # said once for the whole store (bot.store.outage)
                    else:
                        self._persist_errors.failed(e, symbol=sym, rows=len(rows))
                    self._bound_held()
                    break  # every symbol would fail alike (and a stalled server would cost a timeout each)
                self._persist_errors.failed(e, symbol=sym, rows=len(rows))
                continue
            self._persist_errors.ok()
            total += len(rows)
            self.persisted_through[sym] = int(c.ts[-1])
            self.stats["persisted"] += len(rows)
            self.stats["persist_updated"] += res.updated
            if self.health is not None and not self.health.up:
                self.health.held_candles += len(rows)
        self._persist_rows = sum(len(r) for r in self._persist.values())
        if self._refetch and self._persist_rows == 0:
            await self._refetch_dropped()
        if self.health is not None and self._persist_rows == 0 and not self._refetch:
            self.health.ok()  # (it waits for other holders, e.g. the trading records, before it says so)
        return total

    def held_rows(self) -> int:
        """Candles not yet in the store: held in memory, or dropped and still to re-fetch."""
        return self._persist_rows + sum((hi - lo) // MINUTE_MS + 1 for lo, hi in self._refetch.values())

    def _bound_held(self) -> None:
        """At most `feed.persist_buffer_minutes` candles per symbol in memory: drop the oldest,
        remember their range (re-fetched from the exchange when the store is back)."""
        cap = self.fc.persist_buffer_minutes
        for sym, rows in self._persist.items():
            if len(rows) <= cap:
                continue
            n = len(rows) - cap
            lo, hi = int(rows[0][0]), int(rows[n - 1][0])
            del rows[:n]
            if sym in self._refetch:
                lo, hi = min(lo, self._refetch[sym][0]), max(hi, self._refetch[sym][1])
            self._refetch[sym] = (lo, hi)
            self.stats["persist_dropped"] += n
            if self.health is not None:
                self.health.dropped_candles += n
            log.debug("feed_persist_dropped", symbol=sym, candles=n, first=lo, last=hi)
        self._persist_rows = sum(len(r) for r in self._persist.values())

    async def _refetch_dropped(self) -> None:
        """The candles dropped while the store was down, from the exchange again (REST, validated),
        written like any other; a range stays remembered until it is written."""
        ex = self.cfg.exchange
        for sym, (lo, hi) in list(self._refetch.items()):
            start, written = lo, 0
            try:
                while start <= hi:
                    end = min(hi, start + (PAGE_LIMIT - 1) * MINUTE_MS)

                    async def call(start: int = start, end: int = end, sym: str = sym) -> Candles:
                        async with self._rest_sem:
                            return await fetch_klines(self.exchange, self._ccxt[sym], start, end)

                    c = await with_retry(call, what=f"klines {sym}", base_s=ex.retry_base_s, cap_s=ex.retry_max_s,
                                         exchange=self.exchange, attempts=3)  # fmt: skip
                    bad = dict(v.invalid_reasons(c))
                    keep = np.array([i not in bad and start <= int(c.ts[i]) <= end for i in range(len(c))], dtype=bool)
                    for i, why in bad.items():
                        self.issues.report(sym, int(c.ts[i]), why, v.DROPPED, "rest", detail="re-fetch after a store outage")
                    if keep.any():
                        good = Candles(c.ts[keep], c.open[keep], c.high[keep], c.low[keep], c.close[keep], c.volume[keep])
                        await wait_for(self.store.write_candles(sym, good), self._write_timeout_s)
                        written += int(keep.sum())
                    start = end + MINUTE_MS
                    self._refetch[sym] = (start, hi)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the store or the exchange away again: the rest next flush
                if is_unavailable(e) and self.health is not None:
                    self.health.failed("candles", e)
                log.debug("feed_refetch_failed", symbol=sym, error=type(e).__name__)
                return
            finally:
                self.stats["persist_refetched"] += written
                if self.health is not None:
                    self.health.refetched_candles += written
            del self._refetch[sym]
            log.debug("feed_refetched", symbol=sym, candles=written, first=lo, last=hi)  # summed in store_recovered

    # -- introspection ---------------------------------------------------------------------

    def released_through(self) -> dict[str, int]:
        """symbol -> last minute released (candle or gap)."""
        return {s: q.next_ts - MINUTE_MS for s, q in self.seqs.items()}

    def buffer_sizes(self) -> dict[str, int]:
        """What the feed holds in memory right now (all bounded: the queue by feed.queue_size,
        the outbox by MAX_OUTBOX, the write buffer by flush_max_rows, each sequencer by its
        max_pending); the heartbeat reports them, the week-long reliability run checks them."""
        return {"feed_queue": self.queue.qsize(), "feed_outbox": len(self._outbox), "feed_persist_rows": self._persist_rows,
                "feed_seq_pending": sum(len(q.pending) + len(q.gaps) for q in self.seqs.values()),
                "feed_rest_bad": len(self._rest_bad), "feed_issues_kept": len(self.issues.recent)}  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {"stats": dict(self.stats), "issues": self.issues.as_dict(),
                "lag_minutes": sum(q.lag_minutes for q in self.seqs.values())}  # fmt: skip
