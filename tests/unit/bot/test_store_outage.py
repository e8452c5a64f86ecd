"""`bot.store.outage` in isolation (the whole daemon under a real restart and stall is
tests/reliability/test_pg_outage.py) and the daemon lock taken again after its connection died."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from bot.store import daemon_lock
from bot.store.outage import StepBuffer, StoreHealth, is_unavailable


@dataclass
class Rec:
    ts: int
    state: dict[str, Any] | None = None


class Writer:
    """A store stand-in that is down while `down` is set (raises what a dead socket raises)."""

    def __init__(self) -> None:
        self.down = False
        self.error: BaseException = FileNotFoundError(2, "No such file or directory")
        self.one: list[int] = []
        self.many: list[list[tuple[int, bool]]] = []

    async def write_one(self, rec: Rec) -> None:
        if self.down:
            raise self.error
        self.one.append(rec.ts)

    async def write_many(self, recs: list[Rec]) -> None:
        if self.down:
            raise self.error
        self.many.append([(r.ts, r.state is not None) for r in recs])


def buffer(w: Writer, health: StoreHealth, max_minutes: int = 100) -> StepBuffer:
    return StepBuffer(w.write_one, w.write_many, health, max_minutes=max_minutes, timeout_s=1.0, retry_s=0.0)


async def test_held_in_order_and_written_in_one_transaction_with_only_the_newest_state() -> None:
    w, h = Writer(), StoreHealth()
    b = buffer(w, h)
    assert await b.write(Rec(1, {"s": 1}))
    w.down = True
    for t in (2, 3, 4):
        assert not await b.write(Rec(t, {"s": t}))
    assert not h.up and h.outages == 1 and len(b.held) == 3
    w.down = False
    await asyncio.sleep(0.01)  # the retry pause after a failed try (as long as the try took) is over
    assert await b.write(Rec(5, {"s": 5}))
    assert w.one == [1]
    assert w.many == [[(2, False), (3, False), (4, False), (5, True)]]  # one call, in order, newest state only
    assert h.up and h.recoveries == 1 and h.total["held_steps"] == 4 and not b.held


async def test_full_backlog_and_lock_check_and_recovery_waits_for_other_holders() -> None:
    w, h = Writer(), StoreHealth()
    b = buffer(w, h, max_minutes=3)
    w.down = True
    for t in range(3):
        await b.write(Rec(t, {"s": t}))
    assert b.full
    w.down = False
    lock_ours = [False]

    async def lock_ok() -> bool:
        return lock_ours[0]

    h.lock_ok = lock_ok
    assert not await b.flush(force=True) and b.full  # not written while the lock is not provably ours
    lock_ours[0] = True
    other = [5]  # e.g. the feed still holds 5 candles
    h.holders.append(lambda: other[0])
    assert await b.flush(force=True) and not b.held
    assert not h.up  # the candles are still held: not recovered yet
    other[0] = 0
    h.ok()
    assert h.up and h.recoveries == 1


async def test_a_bug_is_not_an_outage() -> None:
    w, h = Writer(), StoreHealth()
    b = buffer(w, h)
    w.down, w.error = True, ValueError("fills for unknown orders")
    with pytest.raises(ValueError):
        await b.write(Rec(1))
    assert h.up and not b.held


def test_which_errors_mean_unavailable() -> None:
    assert is_unavailable(ConnectionRefusedError()) and is_unavailable(TimeoutError())
    assert is_unavailable(asyncpg.ConnectionDoesNotExistError("closed")) and is_unavailable(asyncpg.CannotConnectNowError("starting"))
    assert is_unavailable(asyncpg.exceptions.AdminShutdownError("terminating")) and is_unavailable(asyncpg.InterfaceError("pool"))
    assert not is_unavailable(ValueError()) and not is_unavailable(asyncpg.UniqueViolationError("dup"))


async def _kill_backend(dsn: str, conn: asyncpg.Connection) -> None:
    pid = conn.get_server_pid()
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(100):  # until the server has dropped that session (and its lock)
            if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def test_lock_retaken_after_its_connection_died_but_a_second_daemon_is_still_kept_out(db_dsn: str) -> None:
    lock = await daemon_lock.DaemonLock.acquire(db_dsn)
    try:
        await _kill_backend(db_dsn, lock.conn)  # as a server restart does to it
        assert not await lock.alive()
        assert await lock.retake() and await lock.alive() and lock.retaken == 1
        with pytest.raises(daemon_lock.DaemonAlreadyRunning):  # held again: a second daemon is refused
            await daemon_lock.DaemonLock.acquire(db_dsn)
        # the connection dies again; while the server still shows a session of this very process
        # holding it (a stalled server cleaning up), retake waits (False) instead of giving up
        await _kill_backend(db_dsn, lock.conn)
        mine = await asyncpg.connect(db_dsn, server_settings={"application_name": daemon_lock.application_name()})
        assert await mine.fetchval("SELECT pg_try_advisory_lock($1)", daemon_lock.DAEMON_LOCK_KEY)
        assert not await lock.retake()
        await mine.close()
        # another daemon (another pid) took it first: this one must not take it back, and says who
        other = await asyncpg.connect(db_dsn, server_settings={"application_name": daemon_lock.application_name(4242, "otherhost")})
        try:
            for _ in range(100):
                if await other.fetchval("SELECT pg_try_advisory_lock($1)", daemon_lock.DAEMON_LOCK_KEY):
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(daemon_lock.DaemonAlreadyRunning, match="pid 4242 on host otherhost"):
                await lock.retake()
        finally:
            await other.close()
    finally:
        await lock.release()  # never raises, even with its connection gone


async def test_a_run_lost_to_a_socket_error_starts_over_in_the_same_process(db_dsn: str, tmp_path) -> None:  # noqa: ANN001
    """`LiveTrader.run`: an `OSError`/timeout escaping a run (the store lost where a run cannot
    hold, or a network error from elsewhere) starts the run over after a short pause instead of
    ending the daemon; the line names the store only when the store does not answer; a bug
    (any other exception) still ends it."""
    from structlog.testing import capture_logs

    from bot.config import Config
    from bot.live.trader import LiveTrader
    from bot.store.db import Store

    cfg = Config.model_validate({"symbols": ["BTCUSDT", "ETHUSDT"], "database": {"dsn": db_dsn},
                                 "paths": {"data_dir": str(tmp_path / "var"), "logs_dir": str(tmp_path / "logs"),
                                           "models_dir": str(tmp_path / "models")}})  # fmt: skip
    store = await Store.connect(db_dsn)
    try:
        trader = LiveTrader(cfg, store, asyncio.Event())
        calls: list[int] = []

        async def run_once() -> int:
            calls.append(1)
            if len(calls) == 1:
                raise ConnectionResetError(104, "Connection reset by peer")
            return 0

        trader._run = run_once  # type: ignore[method-assign]
        with capture_logs() as logs:
            assert await trader.run() == 0
        assert len(calls) == 2 and trader.store_restarts == 1
        lost = [e for e in logs if e["event"] == "run_lost"]
        assert lost and "network error (ConnectionResetError" in lost[0]["text"], logs

        trader = LiveTrader(cfg, store, asyncio.Event())

        async def bug() -> int:
            raise KeyError("a bug is not an outage")

        trader._run = bug  # type: ignore[method-assign]
        with pytest.raises(KeyError):
            await trader.run()
    finally:
        await store.close()
