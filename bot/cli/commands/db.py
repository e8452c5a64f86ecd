"""`bot db status|stop`: the database the bot uses, without starting or stopping anything by
accident.

`status` says whether the embedded cluster runs (it never starts it), where its socket is, the
psql command that reaches it, its size, who is connected, and whether a daemon holds the store
(the `bot run` advisory lock). With `database.dsn` set it reports on that server (password
masked). `stop` stops the embedded cluster cleanly (fast shutdown: a checkpoint, no recovery
at next start); it refuses while a daemon holds the lock, unless `--force`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from bot.cli.commands import load_config_or_exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="the bot's database: status, stop the embedded cluster")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    s = dsub.add_parser("status", help="running or not, socket/DSN, size, who is connected, daemon lock")
    s.set_defaults(func=_status)
    t = dsub.add_parser("stop", help="stop the embedded cluster cleanly (refused while `bot run` holds it)")
    t.add_argument("--force", action="store_true", help="stop even while a daemon is connected (it will lose its database)")
    t.set_defaults(func=_stop)


async def _inspect(dsn: str) -> dict[str, Any]:
    import asyncpg

    from bot.store.daemon_lock import lock_holder

    conn = await asyncpg.connect(dsn, timeout=10, server_settings={"application_name": "bot db status"})
    try:
        out: dict[str, Any] = {
            "database": await conn.fetchval("SELECT current_database()"),
            "server": await conn.fetchval("SHOW server_version"),
            "size_bytes": int(await conn.fetchval("SELECT pg_database_size(current_database())")),
        }
        out["clients"] = [dict(r) for r in await conn.fetch(
            """SELECT pid, datname, usename, application_name, state,
                      to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS since
               FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
               ORDER BY backend_start"""
        )]  # fmt: skip
        holder = await lock_holder(conn)
        out["daemon"] = None if holder is None else holder.describe()
        details = await conn.fetchval("SELECT details FROM daemon_status WHERE id")
        out["status_details"] = json.loads(details) if isinstance(details, str) else (details or {})
        return out
    finally:
        await conn.close()


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _status(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.config import mask_dsn
    from bot.store.db import embedded_cluster
    from bot.store.embedded import SUPERUSER, EmbeddedPostgres

    emb: EmbeddedPostgres | None = embedded_cluster(cfg)
    if emb is None:
        dsn = cfg.database.dsn.get_secret_value()
        print(f"database: external, {mask_dsn(dsn)}")
    else:
        print(f"database: embedded cluster in {emb.data_dir}")
        print(f"  socket: {emb.socket_path}")
        print(f"  psql:   psql -h {emb.socket_dir} -p {emb.port} -U {SUPERUSER} -d {emb.dbname}")
        if not emb.initialised():
            print("  state:  not created yet (the first `bot run` or command that needs it creates it)")
            return 0
        if not emb.running():
            print("  state:  stopped")
            return 0
        print("  state:  running")
        dsn = emb.dsn()
    try:
        info = asyncio.run(_inspect(dsn))
    except Exception as e:  # noqa: BLE001 - a status command reports, it does not crash
        print(f"  cannot connect: {type(e).__name__}: {mask_dsn(str(e))}", file=sys.stderr)
        return 1
    print(f"  server: PostgreSQL {info['server']}, database {info['database']}, size {_human_size(info['size_bytes'])}")
    print(f"  daemon: {info['daemon'] or 'none (no `bot run` holds this database)'}")
    d = info.get("status_details") or {}
    if info["daemon"] and "retrain_next_run" in d:  # bot.training.retrain.Retrainer.details()
        last = d.get("retrain_last") or {}
        was = (f"last {last.get('at')}: {'ok' if last.get('ok') else 'FAILED'}, {last.get('version') or '-'}"
               f"{', promoted' if last.get('promoted') else ''} ({last.get('reason')})") if last else "none since start"  # fmt: skip
        now = ", running now" if d.get("retrain_running") else ""
        print(f"  retrain: next {d.get('retrain_next_run') or 'never (daemon.retrain_cron empty)'} UTC{now}; {was}")
    clients = info["clients"]
    print(f"  connected clients: {len(clients)}")
    for c in clients:
        print(f"    pid {c['pid']:>7}  {c['application_name'] or '-':<40} {c['state'] or '-':<8} since {c['since']} UTC")
    return 0


def _stop(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.store.db import embedded_cluster

    emb = embedded_cluster(cfg, log=print)
    if emb is None:
        print("database.dsn points at an external server: `bot db stop` only stops the embedded cluster", file=sys.stderr)
        return 2
    if not emb.running():
        print(f"embedded cluster in {emb.data_dir} is not running")
        return 0
    try:
        info = asyncio.run(_inspect(emb.dsn()))
    except Exception as e:  # noqa: BLE001
        info = {"daemon": None, "clients": []}
        print(f"could not inspect the cluster before stopping ({type(e).__name__}); stopping anyway", file=sys.stderr)
    if info["daemon"] and not args.force:
        print(f"refusing to stop: a daemon uses this database ({info['daemon']}); stop it first "
              "(systemctl stop / SIGTERM), or pass --force", file=sys.stderr)  # fmt: skip
        return 1
    if info["clients"]:
        print(f"disconnecting {len(info['clients'])} client(s)")
    emb.stop()
    print(f"embedded cluster in {emb.data_dir} stopped")
    return 0
