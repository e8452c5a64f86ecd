"""The daemon's side of a Postgres outage: notice it, say it once, keep what could not be
written (bounded), pause entries, write it all when the store answers again.

Why: the store is the daemon's memory (crash-only design), but the daemon must not die because
its database restarts (an upgrade, an OOM kill, a full disk freed later) or stalls (a frozen
VM, a lock storm). Kinds of trouble, all treated as "the store is unavailable"
(`is_unavailable`): the socket is gone (`OSError`: refused, no such file), the server closes
or refuses connections (`PostgresConnectionError`, `CannotConnectNowError`, `AdminShutdownError`,
...), the pool's connection is closed under it (`InterfaceError`), or nothing answers within
`database.write_timeout_s` (`TimeoutError`: a stall). asyncpg's pool replaces a closed
connection by itself on the next `acquire`, so after a restart the next write simply works;
every write here has a timeout, so a stall cannot hang the loop.

`StoreHealth` is the one switch: the first failure logs `store_outage` (one line: what failed
and why, entries paused), the first success after it logs `store_recovered` (how long, how many
minutes of trading records and candles were held back, how many candles were dropped and
re-fetched from the exchange). Other parts only report (`failed`, `ok`) and ask (`up`).

`StepBuffer` is how each minute's trading records (`bot.store.trading.StepRecords`) reach the
store: written at once when the store is up; otherwise kept in order, at most
`database.outage_buffer_minutes` minutes (only the newest engine state is kept: each one
replaces the previous), and written in ONE transaction when the store is back, so the store
holds either the whole backlog or none of it, and a crash meanwhile resumes at the last minute
the store has (the restart path re-steps the minutes after it). Rules while the store is down:

* paper mode: the engine keeps stepping (exits are checked on every bar), **entries pause**
  (decision rows with reason `store_unavailable`), the minute's records are held; when the
  buffer is full the loop stops taking minutes and waits for the store (the feed keeps its
  candles meanwhile, bounded), then catches up minute by minute;
* live mode: an order is written to the store *before* it is sent (`bot.execution.live_broker`), so no
  order of any kind can be sent while the store is down: the loop holds before the next minute
  (no step, no entry, **no exit either**) and catches up on recovery, exactly as after a
  restart; an exit whose barrier was crossed meanwhile is sent at market then. The live broker
  keeps no resting stop orders on the exchange, so an outage delays protective exits by its
  length: this is the price of never having an order on the exchange the store does not know.
  The store can also go away *inside* a live step, between the check before it and an order
  row: the step fails half-way (that order is neither written nor sent) and the engine no
  longer provably matches the store, so the run is started over from the store in the same
  process once it answers (`store_lost_mid_step`, `bot.live.trader.LiveTrader.run`): the
  crash-recovery path (state from the store, orders looked up by client order id,
  reconciliation) takes over, without the crash.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from bot.runtime.aio import wait_for

log = structlog.get_logger("bot.store.outage")

STORE_UNAVAILABLE = "store_unavailable"  # the engine's entry-block reason code (decision rows)
RETRY_S = 2.0  # while down: how often a held write is tried again


def is_unavailable(e: BaseException) -> bool:
    """Is `e` the store being away (retry later), rather than a bug or bad data (raise)?"""
    return isinstance(e, OSError | TimeoutError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError
                      | asyncpg.exceptions.OperatorInterventionError | asyncpg.exceptions.InsufficientResourcesError)  # fmt: skip


def describe(e: BaseException) -> str:
    """A short reason for the log line (no DSN in it: asyncpg's messages do not carry one)."""
    if isinstance(e, TimeoutError):
        return "no answer (stalled)"
    if isinstance(e, FileNotFoundError | ConnectionRefusedError):
        return "server not running"
    msg = str(e).strip().splitlines()[0][:80] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class StoreHealth:
    """Whether the store answers, as the daemon last saw it (see the module docstring)."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.outages = 0  # outages seen (and survived) by this process
        self.recoveries = 0
        self.held_steps = 0  # minutes of trading records written late (this outage)
        self.held_candles = 0  # candles written late (this outage)
        self.dropped_candles = 0  # candles dropped from memory (re-fetched from the exchange)
        self.refetched_candles = 0
        self.lock_lost = False  # the daemon lock's connection died and is not re-taken yet
        self.lock_ok: Callable[[], Awaitable[bool]] | None = None  # the daemon's lock check (bot.live.daemon)
        self.total = {"held_steps": 0, "held_candles": 0, "dropped_candles": 0, "refetched_candles": 0}
        self.holders: list[Callable[[], int]] = []  # how much each part still holds back (recovered when all 0)

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, what: str, e: BaseException) -> None:
        """A store operation failed because the store is unavailable."""
        if self.down_since is not None:
            log.debug("store_still_down", what=what, error=type(e).__name__)
            return
        self.down_since = time.monotonic()
        self.outages += 1
        log.warning("store_outage", what=what, reason=describe(e), error=type(e).__name__)

    def ok(self) -> None:
        """A store operation succeeded: the outage is over once nothing is held back any more
        (each part that holds writes registers in `holders`)."""
        if self.down_since is None or any(h() > 0 for h in self.holders):
            return
        down_s = time.monotonic() - self.down_since
        self.down_since = None
        self.recoveries += 1
        counts = {"held_steps": self.held_steps, "held_candles": self.held_candles,
                  "dropped_candles": self.dropped_candles, "refetched_candles": self.refetched_candles}  # fmt: skip
        for k, v in counts.items():
            self.total[k] += v
        log.info("store_recovered", down_s=round(down_s, 1), **counts)
        self.held_steps = self.held_candles = self.dropped_candles = self.refetched_candles = 0

    def details(self) -> dict[str, Any]:
        """For the status row / dashboard."""
        d: dict[str, Any] = {"store_up": self.up, "store_outages": self.outages, "store_recoveries": self.recoveries,
                             **{f"store_{k}_total": v for k, v in self.total.items()}}  # fmt: skip
        if self.down_since is not None:
            d["store_down_s"] = round(time.monotonic() - self.down_since, 1)
        return d


class StepBuffer:
    """Each minute's `StepRecords` to the store, held in order while it is unavailable.

    `write_one(rec)` / `write_many(recs)` are the store's writers (one transaction each);
    `timeout_s` bounds each attempt (a stalled server); `max_minutes` bounds the backlog."""

    def __init__(self, write_one: Callable[[Any], Awaitable[None]], write_many: Callable[[list[Any]], Awaitable[None]],
                 health: StoreHealth, *, max_minutes: int, timeout_s: float, retry_s: float = RETRY_S):  # fmt: skip
        self._write_one = write_one
        self._write_many = write_many
        self.health = health
        self.max_minutes = max_minutes
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.held: deque[Any] = deque()
        self._next_try = 0.0
        health.holders.append(lambda: len(self.held))

    @property
    def full(self) -> bool:
        return len(self.held) >= self.max_minutes

    async def write(self, rec: Any) -> bool:
        """Persist `rec` (after everything held before it). True if it is in the store now."""
        if not self.held:
            try:
                await wait_for(self._write_one(rec), self.timeout_s)
            except Exception as e:
                if not is_unavailable(e):
                    raise
                self.health.failed("trading records", e)
                self._hold(rec)
                return False
            self.health.ok()
            return True
        self._hold(rec)
        return await self.flush()

    def _hold(self, rec: Any) -> None:
        if self.held and getattr(rec, "state", None) is not None:
            self.held[-1].state = None  # the newest engine state supersedes it (written with the backlog)
        self.held.append(rec)
        self.health.held_steps = max(self.health.held_steps, len(self.held))
        if len(self.held) == 1:
            self._next_try = time.monotonic() + self.retry_s

    async def flush(self, *, force: bool = False) -> bool:
        """Try to write the backlog (not more often than every `retry_s` unless `force`)."""
        if not self.held:
            return True
        if not force and time.monotonic() < self._next_try:
            return False
        self._next_try = time.monotonic() + self.retry_s
        if self.health.lock_ok is not None and not await self.health.lock_ok():
            return False  # not while the daemon lock is not provably ours (a second daemon could write)
        backlog = list(self.held)
        t0 = time.monotonic()
        try:
            # a large backlog is one transaction: allow it a little longer than one minute's write
            await wait_for(self._write_many(backlog), self.timeout_s * (1 + len(backlog) / 100))
        except Exception as e:
            if not is_unavailable(e):
                raise
            self.health.failed("trading records", e)
            # a stalled server makes each try last its timeout: wait as long again before the
            # next, so the loop spends at most half its time waiting on it (steps go on, paused)
            self._next_try = time.monotonic() + max(self.retry_s, time.monotonic() - t0)
            return False
        for _ in backlog:
            self.held.popleft()
        log.debug("store_backlog_written", minutes=len(backlog))
        self.health.ok()
        return True
