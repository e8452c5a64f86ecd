"""The operator's commands and the control state in the store (migration 003_control.sql).

Why the store is the channel from `bot ctl` to the daemon (rather than a unix socket): every
command has to be written down with who asked and what was answered anyway, the CLI already
knows how to reach the store (an external server, or the embedded cluster of this data
directory), and a daemon on another host than the CLI works the same. The daemon polls for
pending rows twice a second (one probe of a partial index that is empty nearly always): a
poll needs nothing re-established after the store restarts, where LISTEN would.

Times are the database's clock (`_NOW`), so a command's age is measured by one clock whatever
the hosts of the CLI and the daemon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
FINAL = frozenset({"done", "confirm", "refused", "failed", "expired"})


@dataclass(frozen=True)
class CommandRow:
    """One row of `commands`."""

    id: int
    created_ts: int
    interface: str
    identity: str
    command: str
    args: list[str]
    status: str
    answer: str | None = None
    result: dict[str, Any] | None = None
    answered_ts: int | None = None

    @classmethod
    def of(cls, r: Any) -> CommandRow:
        args = r["args"]
        result = r["result"]
        return cls(int(r["id"]), int(r["created_ts"]), r["interface"], r["identity"], r["command"],
                   list(json.loads(args) if isinstance(args, str) else (args or [])), r["status"], r["answer"],
                   json.loads(result) if isinstance(result, str) else result,
                   None if r["answered_ts"] is None else int(r["answered_ts"]))  # fmt: skip


_COLS = "id, created_ts, interface, identity, command, args, status, answer, result, answered_ts"


async def insert_command(conn: Any, interface: str, identity: str, command: str, args: list[str], *,
                         status: str = "pending") -> CommandRow:  # fmt: skip
    """A new command row ('pending' for the daemon to claim, 'running' when the daemon itself
    received it)."""
    r = await conn.fetchrow(
        f"INSERT INTO commands (interface, identity, command, args, status) VALUES ($1, $2, $3, $4::jsonb, $5) "
        f"RETURNING {_COLS}", interface, identity, command, json.dumps(list(args)), status)  # fmt: skip
    return CommandRow.of(r)


async def insert_refused(conn: Any, interface: str, identity: str, command: str, args: list[str], answer: str) -> int:
    """A command that was refused before it reached the controller (a stranger): recorded, not run."""
    return int(await conn.fetchval(
        f"INSERT INTO commands (interface, identity, command, args, status, answer, answered_ts) "
        f"VALUES ($1, $2, $3, $4::jsonb, 'refused', $5, {_NOW}) RETURNING id",
        interface, identity, command, json.dumps(list(args)), answer))  # fmt: skip


async def claim_pending(conn: Any, max_age_ms: int) -> tuple[list[CommandRow], int]:
    """Take the pending commands, oldest first ('running'); those older than `max_age_ms` are
    'expired' instead (a command queued while no daemon ran is never executed later).
    Returns (claimed, number expired)."""
    async with conn.transaction():
        expired = await conn.fetchval(
            f"WITH e AS (UPDATE commands SET status = 'expired', answered_ts = {_NOW}, "
            f"answer = 'not done: no daemon took it within ' || ($1::bigint / 1000) || ' s' "
            f"WHERE status = 'pending' AND created_ts < {_NOW} - $1::bigint RETURNING 1) SELECT count(*) FROM e",
            max_age_ms)  # fmt: skip
        rows = await conn.fetch(
            f"UPDATE commands SET status = 'running' WHERE id IN (SELECT id FROM commands WHERE status = 'pending' "
            f"ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING {_COLS}")  # fmt: skip
    return sorted((CommandRow.of(r) for r in rows), key=lambda c: c.id), int(expired or 0)


async def answer_command(conn: Any, command_id: int, status: str, answer: str, result: dict[str, Any] | None) -> None:
    if status not in FINAL:
        raise ValueError(f"not a final command status: {status!r}")
    await conn.execute(
        f"UPDATE commands SET status = $2, answer = $3, result = $4::jsonb, answered_ts = {_NOW} WHERE id = $1",
        command_id, status, answer, None if result is None else json.dumps(result, default=str))  # fmt: skip


async def expire_if_pending(conn: Any, command_id: int, answer: str) -> bool:
    """The CLI gives up waiting: expire its row unless the daemon claimed it meanwhile (True if expired)."""
    n = await conn.fetchval(
        f"WITH e AS (UPDATE commands SET status = 'expired', answer = $2, answered_ts = {_NOW} "
        f"WHERE id = $1 AND status = 'pending' RETURNING 1) SELECT count(*) FROM e", command_id, answer)  # fmt: skip
    return bool(n)


async def get_command(conn: Any, command_id: int) -> CommandRow | None:
    r = await conn.fetchrow(f"SELECT {_COLS} FROM commands WHERE id = $1", command_id)
    return None if r is None else CommandRow.of(r)


async def recent_commands(conn: Any, limit: int = 20) -> list[CommandRow]:
    rows = await conn.fetch(f"SELECT {_COLS} FROM commands ORDER BY id DESC LIMIT $1", limit)
    return [CommandRow.of(r) for r in rows]


@dataclass(frozen=True)
class ControlState:
    paused: bool
    changed_ts: int | None = None
    changed_by: str | None = None


async def read_control_state(conn: Any, mode: str) -> ControlState:
    r = await conn.fetchrow("SELECT paused, changed_ts, changed_by FROM control_state WHERE mode = $1", mode)
    if r is None:
        return ControlState(False)
    return ControlState(bool(r["paused"]), int(r["changed_ts"]), r["changed_by"])


async def write_paused(conn: Any, mode: str, paused: bool, by: str, command_id: int | None) -> ControlState:
    r = await conn.fetchrow(
        f"INSERT INTO control_state (mode, paused, changed_ts, changed_by, command_id) VALUES ($1, $2, {_NOW}, $3, $4) "
        f"ON CONFLICT (mode) DO UPDATE SET paused = EXCLUDED.paused, changed_ts = EXCLUDED.changed_ts, "
        f"changed_by = EXCLUDED.changed_by, command_id = EXCLUDED.command_id RETURNING paused, changed_ts, changed_by",
        mode, paused, by, command_id)  # fmt: skip
    return ControlState(bool(r["paused"]), int(r["changed_ts"]), r["changed_by"])
