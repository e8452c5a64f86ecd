"""The `model_versions` table: which bundles exist, which one is the champion.

Promotion is a status change (Qlib's tags): the old champion becomes `retired` and the new one
`champion` in one transaction, so there is never zero or two champions (a partial unique index
also forbids two) and a rollback is just promoting the previous version again.

Functions take an asyncpg pool or connection (`Store.pool` works).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

STATUSES = ("candidate", "champion", "retired", "rejected")


class ModelVersionError(Exception):
    """A model-version operation that cannot be done (unknown version, illegal transition)."""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    version: str
    path: str
    status: str
    created_ts: int
    promoted_ts: int | None
    data_from_ts: int | None
    data_to_ts: int | None
    code_version: str | None
    metrics: dict[str, Any] | None

    @staticmethod
    def from_row(r: asyncpg.Record) -> ModelVersion:
        m = r["metrics"]
        return ModelVersion(
            version=r["version"],
            path=r["path"],
            status=r["status"],
            created_ts=int(r["created_ts"]),
            promoted_ts=None if r["promoted_ts"] is None else int(r["promoted_ts"]),
            data_from_ts=None if r["data_from_ts"] is None else int(r["data_from_ts"]),
            data_to_ts=None if r["data_to_ts"] is None else int(r["data_to_ts"]),
            code_version=r["code_version"],
            metrics=json.loads(m) if isinstance(m, str) else m,
        )


_COLS = "version, path, status, created_ts, promoted_ts, data_from_ts, data_to_ts, code_version, metrics"


async def record_model_version(
    db: asyncpg.Pool | asyncpg.Connection,
    *,
    version: str,
    path: str,
    created_ts: int,
    status: str = "candidate",
    data_from_ts: int | None = None,
    data_to_ts: int | None = None,
    code_version: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Insert a new bundle (a version is written once; recording it twice is an error)."""
    if status not in ("candidate", "rejected"):
        raise ModelVersionError(f"a new model version starts as candidate or rejected, not {status!r}")
    try:
        await db.execute(
            f"INSERT INTO model_versions ({_COLS}) VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8::jsonb)",
            version, path, status, int(created_ts), data_from_ts, data_to_ts, code_version,
            None if metrics is None else json.dumps(metrics, allow_nan=False),
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise ModelVersionError(f"model version {version} is already recorded") from None


async def list_model_versions(db: asyncpg.Pool | asyncpg.Connection, limit: int = 100) -> list[ModelVersion]:
    rows = await db.fetch(f"SELECT {_COLS} FROM model_versions ORDER BY created_ts DESC, version DESC LIMIT $1", limit)
    return [ModelVersion.from_row(r) for r in rows]


async def get_model_version(db: asyncpg.Pool | asyncpg.Connection, version: str) -> ModelVersion | None:
    r = await db.fetchrow(f"SELECT {_COLS} FROM model_versions WHERE version = $1", version)
    return None if r is None else ModelVersion.from_row(r)


async def champion(db: asyncpg.Pool | asyncpg.Connection) -> ModelVersion | None:
    r = await db.fetchrow(f"SELECT {_COLS} FROM model_versions WHERE status = 'champion'")
    return None if r is None else ModelVersion.from_row(r)


async def promote(pool: asyncpg.Pool, version: str, now_ms: int, *, allow_rejected: bool = False) -> ModelVersion | None:
    """Make `version` the champion; return the previous champion (now retired), if any."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE model_versions IN SHARE ROW EXCLUSIVE MODE")
        row = await conn.fetchrow(f"SELECT {_COLS} FROM model_versions WHERE version = $1", version)
        if row is None:
            raise ModelVersionError(f"unknown model version {version!r}; see `bot models list`")
        target = ModelVersion.from_row(row)
        if target.status == "champion":
            return None
        if target.status == "rejected" and not allow_rejected:
            raise ModelVersionError(
                f"model version {version} was rejected (e.g. it failed the leakage audit); pass --force to promote it anyway"
            )
        prev_row = await conn.fetchrow(f"SELECT {_COLS} FROM model_versions WHERE status = 'champion'")
        if prev_row is not None:
            await conn.execute("UPDATE model_versions SET status = 'retired' WHERE version = $1", prev_row["version"])
        await conn.execute(
            "UPDATE model_versions SET status = 'champion', promoted_ts = $2 WHERE version = $1", version, int(now_ms)
        )
    return None if prev_row is None else ModelVersion.from_row(prev_row)


async def set_status(db: asyncpg.Pool | asyncpg.Connection, version: str, status: str, *, reason: str | None = None) -> None:
    """Mark a non-champion version retired/rejected/candidate (promotion goes through `promote`);
    `reason` (why it was rejected) goes to `metrics.reason`, which `bot models list` shows."""
    if status not in ("candidate", "retired", "rejected"):
        raise ModelVersionError(f"use promote() to make a champion; {status!r} is not a settable status")
    done = await db.execute(
        """UPDATE model_versions SET status = $2,
                  metrics = CASE WHEN $3::text IS NULL THEN metrics
                                 ELSE coalesce(metrics, '{}'::jsonb) || jsonb_build_object('reason', $3::text) END
           WHERE version = $1 AND status <> 'champion'""",
        version, status, reason,
    )  # fmt: skip
    if done.endswith(" 0"):
        raise ModelVersionError(f"model version {version!r} is unknown or is the champion")


async def previous_champion(db: asyncpg.Pool | asyncpg.Connection) -> ModelVersion | None:
    """The version a rollback goes back to: the most recently promoted retired version."""
    r = await db.fetchrow(
        f"SELECT {_COLS} FROM model_versions WHERE status = 'retired' AND promoted_ts IS NOT NULL "
        "ORDER BY promoted_ts DESC, version DESC LIMIT 1"
    )
    return None if r is None else ModelVersion.from_row(r)


async def champion_version(db: asyncpg.Pool | asyncpg.Connection) -> str | None:
    """Just the champion's version: what a running daemon polls between two minutes."""
    return await db.fetchval("SELECT version FROM model_versions WHERE status = 'champion'")
