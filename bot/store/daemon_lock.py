"""One daemon per store: a Postgres session advisory lock held for the daemon's whole life,
and the `daemon_status` row that says who holds it and how it is doing.

The lock lives on a dedicated connection (not the pool), so it is released exactly when the
daemon's process ends, however it ends (kill -9 closes the socket and the server drops the
lock). A second `bot run` on the same database fails `pg_try_advisory_lock` and is told which
process holds it: pid and host come from the holder's `application_name` (set when it
connected), "since" from that backend's start, so the answer is right even if the status row
is stale.

The lock dies with its connection, and so it does when the server restarts or the connection
is cut: `retake()` then takes it again on a new connection, unless another daemon took it
first (`DaemonAlreadyRunning`: this one must stop). While the server still holds the old session
(a stalled server cleaning up after it wakes), the holder is this very process: wait, retry.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from models.timeutil import fmt_ts

DAEMON_LOCK_KEY = 7_264_002  # arbitrary, constant: "cryptobot daemon" (migrations use 7_264_001)
APP_PREFIX = "bot run"


class DaemonAlreadyRunning(RuntimeError):
    """Another daemon holds this database's lock."""

    def __init__(self, holder: LockHolder | None):
        self.holder = holder
        if holder is None:
            msg = "another `bot run` holds this database's daemon lock (it could not be identified)"
        else:
            msg = f"another `bot run` already runs on this database: {holder.describe()}; refusing to start a second one"
        super().__init__(msg)


@dataclass(frozen=True)
class LockHolder:
    pid: int | None  # the daemon's process id (from its application_name)
    host: str | None
    since_ms: int | None  # when its lock connection was opened
    backend_pid: int

    def describe(self) -> str:
        who = f"pid {self.pid} on host {self.host}" if self.pid is not None else f"database backend {self.backend_pid}"
        since = f", since {fmt_ts(self.since_ms)} UTC" if self.since_ms is not None else ""
        return who + since


def application_name(pid: int | None = None, host: str | None = None) -> str:
    """What the lock connection calls itself (Postgres keeps 63 bytes)."""
    return f"{APP_PREFIX} pid={pid or os.getpid()} host={host or socket.gethostname()}"[:63]


def _parse_app(name: str | None) -> tuple[int | None, str | None]:
    if not name or not name.startswith(APP_PREFIX):
        return None, None
    parts = dict(p.split("=", 1) for p in name[len(APP_PREFIX):].split() if "=" in p)
    try:
        pid = int(parts["pid"])
    except (KeyError, ValueError):
        pid = None
    return pid, parts.get("host")


async def lock_holder(conn: asyncpg.Connection | asyncpg.Pool) -> LockHolder | None:
    """Who holds the daemon lock on this database, or None if nobody does."""
    row = await conn.fetchrow(
        """SELECT a.pid, a.application_name, extract(epoch FROM a.backend_start) * 1000 AS since
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1
             AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        DAEMON_LOCK_KEY,
    )
    if row is None:
        return None
    pid, host = _parse_app(row["application_name"])
    since = int(row["since"]) if row["since"] is not None else None
    return LockHolder(pid, host, since, int(row["pid"]))


class DaemonLock:
    """`await DaemonLock.acquire(dsn)` or raise `DaemonAlreadyRunning`; `await lock.release()`."""

    def __init__(self, conn: asyncpg.Connection, dsn: str = ""):
        self.conn = conn
        self.dsn = dsn
        self.retaken = 0  # times the lock was taken again after its connection died

    @classmethod
    async def acquire(cls, dsn: str) -> DaemonLock:
        conn = await asyncpg.connect(dsn, server_settings={"application_name": application_name()})
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", DAEMON_LOCK_KEY)
            if not got:
                raise DaemonAlreadyRunning(await lock_holder(conn))
        except BaseException:
            await conn.close()
            raise
        return cls(conn, dsn)

    async def alive(self, timeout: float = 10) -> bool:
        """Is the lock still ours (its connection up)? A lost connection means a lost lock."""
        if self.conn.is_closed():
            return False
        try:
            return bool(await self.conn.fetchval("SELECT true", timeout=timeout))
        except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError):
            return False

    async def retake(self, timeout: float = 10) -> bool:
        """After the lock's connection died: take the lock again on a new connection. True: held
        again; False: not yet (the server is still away, or still holds our old session); raises
        `DaemonAlreadyRunning` when another daemon took it meanwhile."""
        if not self.conn.is_closed():
            self.conn.terminate()  # a stalled or half-dead session: the server drops its lock when it sees the socket closed
        try:
            conn = await asyncpg.connect(self.dsn, timeout=timeout, server_settings={"application_name": application_name()})
        except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError):
            return False
        try:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", DAEMON_LOCK_KEY, timeout=timeout):
                self.conn = conn
                self.retaken += 1
                return True
            holder = await lock_holder(conn)
        except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError):
            conn.terminate()
            return False
        await conn.close()
        if holder is None or (holder.pid == os.getpid() and holder.host == socket.gethostname()[: len(holder.host or "")]):
            return False  # gone meanwhile, or our own old session not cleaned up yet
        raise DaemonAlreadyRunning(holder)

    async def release(self, timeout: float = 10) -> None:
        """Unlock and close; with the server away there is nothing to unlock (never raises)."""
        if self.conn.is_closed():
            return
        try:
            await self.conn.execute("SELECT pg_advisory_unlock($1)", DAEMON_LOCK_KEY, timeout=timeout)
            await self.conn.close(timeout=timeout)
        except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError):
            self.conn.terminate()


# -- the status row ----------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


async def write_started(db: asyncpg.Pool | asyncpg.Connection, *, mode: str, model_version: str | None,
                        watch_only: bool, watch_reason: str | None, details: dict[str, Any] | None = None) -> None:  # fmt: skip
    """The row of a daemon that just took the lock (replaces the previous daemon's row)."""
    t = now_ms()
    await db.execute(
        """INSERT INTO daemon_status (id, pid, host, started_ts, heartbeat_ts, stopped_ts, mode, model_version,
                                      watch_only, watch_reason, last_minute_ts, details)
           VALUES (true, $1, $2, $3, $3, NULL, $4, $5, $6, $7, NULL, $8::jsonb)
           ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, started_ts = EXCLUDED.started_ts,
               heartbeat_ts = EXCLUDED.heartbeat_ts, stopped_ts = NULL, mode = EXCLUDED.mode,
               model_version = EXCLUDED.model_version, watch_only = EXCLUDED.watch_only,
               watch_reason = EXCLUDED.watch_reason, last_minute_ts = EXCLUDED.last_minute_ts,
               details = EXCLUDED.details""",
        os.getpid(), socket.gethostname(), t, mode, model_version, watch_only, watch_reason,
        json.dumps(details or {}),
    )  # fmt: skip


async def write_heartbeat(db: asyncpg.Pool | asyncpg.Connection, *, last_minute_ts: int | None = None,
                          details: dict[str, Any] | None = None, **fields: Any) -> None:  # fmt: skip
    """Refresh heartbeat_ts (and the last minute, details and any of model_version / watch_only /
    watch_reason given) of this process's row."""
    allowed = {"model_version", "watch_only", "watch_reason", "mode"}
    bad = set(fields) - allowed
    if bad:
        raise ValueError(f"unknown daemon_status fields {sorted(bad)}")
    sets = ["heartbeat_ts = $1", "last_minute_ts = coalesce($2, last_minute_ts)",
            "details = CASE WHEN $3::jsonb IS NULL THEN details ELSE details || $3::jsonb END"]  # fmt: skip
    args: list[Any] = [now_ms(), last_minute_ts, None if details is None else json.dumps(details)]
    for k, v in fields.items():
        args.append(v)
        sets.append(f"{k} = ${len(args)}")
    args.append(os.getpid())
    await db.execute(f"UPDATE daemon_status SET {', '.join(sets)} WHERE id AND pid = ${len(args)}", *args)


async def write_stopped(db: asyncpg.Pool | asyncpg.Connection) -> None:
    t = now_ms()
    await db.execute("UPDATE daemon_status SET stopped_ts = $1, heartbeat_ts = $1 WHERE id AND pid = $2", t, os.getpid())


async def read_status(db: asyncpg.Pool | asyncpg.Connection) -> dict[str, Any] | None:
    """The status row as a dict (None if no daemon ever ran on this store), plus `running`:
    whether a daemon holds the lock right now (the row alone cannot tell after kill -9)."""
    row = await db.fetchrow("SELECT * FROM daemon_status WHERE id")
    holder = await lock_holder(db)
    if row is None and holder is None:
        return None
    out: dict[str, Any] = dict(row) if row is not None else {}
    if "details" in out and isinstance(out["details"], str):
        out["details"] = json.loads(out["details"])
    out["running"] = holder is not None
    out["lock_holder"] = None if holder is None else holder.describe()
    return out
