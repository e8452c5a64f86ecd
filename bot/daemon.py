"""The daemon's lifecycle: start the store (embedded Postgres by default), announce readiness,
keep the systemd watchdog fed, stop cleanly on SIGINT/SIGTERM.

Crash-only: there is one way to start, and it is also how the daemon recovers after a crash
(the store is re-opened, migrations are a no-op, state is reloaded). The trading engine
(feed -> features -> score -> risk -> broker) is wired in here by a later issue.
"""

from __future__ import annotations

import asyncio
import signal
import time

import structlog

from bot import sdnotify
from bot.config import Config, mask_dsn
from bot.store.db import open_store

log = structlog.get_logger("bot.daemon")


async def run_daemon(cfg: Config, stop: asyncio.Event | None = None) -> int:
    """Run until `stop` is set or SIGINT/SIGTERM arrives. Returns the process exit status."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass

    t0 = time.monotonic()
    dsn = cfg.database.dsn.get_secret_value()
    log.info("daemon_starting", mode=cfg.mode, symbols=len(cfg.symbols),
             text=f"START mode={cfg.mode} symbols={len(cfg.symbols)}")  # fmt: skip
    async with open_store(cfg, log=lambda m: log.info("db", text=m)) as store:
        version = await store.schema_version()
        where = f"external {mask_dsn(dsn)}" if dsn else f"embedded {cfg.paths.data_dir}/pgdata"
        log.info("daemon_up", db=where, schema=version, startup_s=round(time.monotonic() - t0, 2),
                 text=f"UP {cfg.mode} mode, db {where} (schema v{version}), {time.monotonic() - t0:.1f}s")  # fmt: skip
        sdnotify.notify("READY=1")
        ping = sdnotify.watchdog_interval_s()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=ping or 3600)
            except TimeoutError:
                pass
            if ping:
                sdnotify.notify("WATCHDOG=1")
        sdnotify.notify("STOPPING=1")
        log.info("daemon_stopping", text="STOPPING")
    log.info("daemon_stopped", text="STOPPED cleanly")
    return 0
