"""The daemon's lifecycle: store, one-daemon lock, status row, watchdog, the live loop, stop.

Crash-only: there is one way to start, and it is also how the daemon recovers after a crash
(the store is re-opened, migrations are a no-op, state is reloaded by `bot.live.trader`). Order:
open the store (embedded Postgres by default; migrations run), take the daemon lock (a second
`bot run` on the same database is refused, naming the holder), own the embedded cluster from
then on (it is stopped when the daemon exits), write the `daemon_status` row, then hand over
to `bot.live.trader.LiveTrader`, which tells systemd READY once the engine is warm (or, without a model, once it collects candles or starts training the
first one): `systemctl start` returns when the daemon trades, and `TimeoutStartSec` in the unit
bounds how long reaching the exchange, the catch-up backfill and the warm-up may take. The
systemd watchdog is fed from the event loop the whole time, start-up included (a slow warm-up
runs in a worker thread and does not stop the pings), so only a stalled loop stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import structlog

from bot.config import Config, mask_dsn
from bot.runtime import sdnotify
from bot.runtime.aio import wait_for
from bot.runtime.slow_stop import watch_stop
from bot.store import daemon_lock
from bot.store.db import Store, open_store
from models.textfmt import things

log = structlog.get_logger("bot.live.daemon")

EXIT_ALREADY_RUNNING = 3
EXIT_LOCK_LOST = 4
LOCK_CHECK_S = 10.0
LOCK_RETRY_S = 2.0  # while the lock's connection is down: how often to try to take it again
STORE_RETRY_BASE_S, STORE_RETRY_MAX_S = 1.0, 30.0  # an external database that does not answer at start


async def _watchdog(interval: float) -> None:
    while True:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def _guard_lock(lock: daemon_lock.DaemonLock, stop: asyncio.Event, lost: list[bool], health: object) -> None:
    """The lock lives as long as its connection: when that drops (the database restarted or
    stalled) the daemon takes it again as soon as the server answers, and meanwhile writes no
    trading records (`health.lock_lost`: the held backlog waits, see `bot.store.outage`). If
    another daemon took it first, this one stops (systemd starts it again, through the lock)."""
    last_check = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(LOCK_RETRY_S)  # (the step writer's check may find it lost first)
        if not health.lock_lost:  # type: ignore[attr-defined]
            if time.monotonic() - last_check < LOCK_CHECK_S:
                continue
            last_check = time.monotonic()
            if await lock.alive():
                continue
            _lock_dropped(health)
        try:
            if await lock.retake():
                health.lock_lost = False  # type: ignore[attr-defined]
                log.info("daemon_lock_retaken", retaken=lock.retaken, text="LOCK taken again")
        except daemon_lock.DaemonAlreadyRunning as e:
            log.error("daemon_lock_lost", holder=e.holder.describe() if e.holder else None,
                      text=f"LOCK lost: another daemon took it while the database was away ({e}); stopping")  # fmt: skip
            lost.append(True)
            stop.set()


def _lock_checker(lock: daemon_lock.DaemonLock, health: object) -> object:
    """For the trading-record backlog (`bot.store.outage.StepBuffer`): written only while the
    lock is provably ours (so never beside a second daemon that started while ours was lost)."""

    async def check() -> bool:
        if health.lock_lost:  # type: ignore[attr-defined]
            return False
        if await lock.alive(timeout=5):
            return True
        _lock_dropped(health)  # the guard takes it again
        return False

    return check


def _lock_dropped(health: object) -> None:
    health.lock_lost = True  # type: ignore[attr-defined]
    log.warning("daemon_lock_dropped",
                text="LOCK connection dropped (database restarted or stalled): taking it again when it answers")  # fmt: skip


async def _start_dashboard(cfg: Config, store: object, trader: object) -> object | None:
    """The local page and /metrics (`bot.ops.dashboard`), fed by the trader's `DaemonMetrics`."""
    if not cfg.dashboard.enabled:
        return None
    from bot.live.step_log import DEMO_NOTICE, is_demo
    from bot.ops.dashboard.metrics import DaemonMetrics
    from bot.ops.dashboard.server import start_dashboard
    from bot.ops.dashboard.state import DashboardState

    trader.metrics = DaemonMetrics()  # type: ignore[attr-defined]
    trader.metrics.lag_fed = True  # type: ignore[attr-defined]  # one loop-lag sampler: the trader's
    trader.lag.sink = trader.metrics.loop_lag  # type: ignore[attr-defined]
    state = DashboardState(db=store, mode=cfg.mode, symbols=cfg.symbols, metrics=trader.metrics,  # type: ignore[attr-defined]
                           live=trader.details, notice=DEMO_NOTICE if is_demo() else None)  # type: ignore[attr-defined]  # fmt: skip
    control = None
    if trader.control is not None:  # type: ignore[attr-defined]  # the operator's commands, behind a token
        from bot.ops.control.dashboard import announce, load_or_create_token, token_path

        path = token_path(cfg.paths.data_dir)
        control = (trader.control, load_or_create_token(path))  # type: ignore[attr-defined]
    runner = await start_dashboard(state, cfg, control)
    if runner is not None and control is not None:
        announce(path, control[1], f"http://{cfg.dashboard.host}:{cfg.dashboard.port}/")
    return runner


async def _start_control(cfg: Config, store: Store, trader: object, config_path: Path | None) -> asyncio.Task[None]:
    """The operator's controller (`bot.ops.control`): the pause a previous run left, then the
    task that answers `bot ctl` rows from the store."""
    from bot.ops.control.controller import Controller

    control = Controller(cfg, store, trader, config_path=config_path)
    await control.load()
    trader.control = control  # type: ignore[attr-defined]
    return asyncio.create_task(control.serve(), name="control")


async def _start_telegram(cfg: Config, store: object) -> object | None:
    """Telegram push of the human lines and the owner's chat commands (`bot.ops.chat`); imported
    only when `telegram.enabled` (the client library costs memory the daemon need not carry)."""
    if not cfg.telegram.enabled:
        return None
    from bot.ops.chat.push import TelegramService

    return await TelegramService.for_daemon(cfg, store.pool)  # type: ignore[attr-defined]


_held_signals: list[str] = []


def hold_stop_signals() -> None:
    """Keep SIGINT/SIGTERM that arrive before `run_daemon` installs its loop handlers (while the
    logs are set up and the heavy modules import: seconds on a busy small machine), so that a stop
    asked that early is a clean stop instead of the default kill. Main thread only."""

    def held(signum: int, _frame: object) -> None:
        _held_signals.append(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, held)


async def run_daemon(cfg: Config, stop: asyncio.Event | None = None, *, no_train: bool = False,
                     confirm_live: bool = False, config_path: Path | None = None) -> int:  # fmt: skip
    """Run until `stop` is set or SIGINT/SIGTERM arrives. Returns the process exit status.
    `config_path`: the file `cfg` came from (the operator's `reload` reads it again)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    why: list[str] = []

    def _on_signal(sig: signal.Signals) -> None:
        why.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, _on_signal, sig)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    if _held_signals:  # asked to stop before the loop ran (`hold_stop_signals`)
        why.append(_held_signals[0])
        stop.set()
    # the signal handlers first, then the heavy import (ccxt, numpy, the models: seconds on a busy
    # small machine): a SIGTERM in that window would otherwise kill the process uncleanly
    from bot.live.trader import LiveTrader

    ping = sdnotify.watchdog_interval_s()
    dog = asyncio.create_task(_watchdog(ping), name="watchdog") if ping else None
    slow = asyncio.create_task(watch_stop(stop), name="stop-watch")

    t0 = time.monotonic()
    dsn = cfg.database.dsn.get_secret_value()
    log.info("daemon_starting", mode=cfg.mode, symbols=len(cfg.symbols),
             text=f"STARTING {cfg.mode}, {things(len(cfg.symbols), 'symbol')}: opening the store")  # fmt: skip
    rc = 0
    telegram: object | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            store = await _open_store_until_up(cfg, stop, stack)
            if store is None:  # stopped before the store answered
                log.info("daemon_stop", mode=cfg.mode, reason=why[0] if why else "clean", rc=0,
                         uptime_s=round(time.monotonic() - t0, 1))  # fmt: skip
                return 0
            try:
                lock = await daemon_lock.DaemonLock.acquire(store.dsn)
            except daemon_lock.DaemonAlreadyRunning as e:
                log.error("daemon_already_running", holder=e.holder.describe() if e.holder else None, text=str(e))
                return EXIT_ALREADY_RUNNING
            store.own_cluster = True
            telegram = await _start_telegram(cfg, store)  # from here on, so the UP line goes out too
            try:
                version = await store.schema_version()
                where = f"external {mask_dsn(dsn)}" if dsn else f"embedded {cfg.paths.data_dir}/pgdata"
                await daemon_lock.write_started(store.pool, mode=cfg.mode, model_version=None, watch_only=False,
                                                watch_reason=None, details={"db": where})  # fmt: skip
                log.info("daemon_up", db=where, schema=version, startup_s=round(time.monotonic() - t0, 2),
                         text=f"UP {cfg.mode} mode, db {where} (schema v{version}), {time.monotonic() - t0:.1f}s")  # fmt: skip
                lost: list[bool] = []
                trader = LiveTrader(cfg, store, stop, no_train=no_train, confirm_live=confirm_live)
                trader.health.lock_ok = _lock_checker(lock, trader.health)
                guard = asyncio.create_task(_guard_lock(lock, stop, lost, trader.health), name="lock-guard")
                trader.on_warm = _ready_once()
                control = await _start_control(cfg, store, trader, config_path)
                if telegram is not None:
                    telegram.attach_control(trader.control)  # type: ignore[attr-defined]
                dashboard = await _start_dashboard(cfg, store, trader)
                try:
                    rc = await trader.run()
                finally:
                    guard.cancel()
                    control.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await control
                    if dashboard is not None:
                        await dashboard.cleanup()
                if lost and rc == 0:
                    rc = EXIT_LOCK_LOST
                sdnotify.notify("STOPPING=1")
                log.info("daemon_stopping", text="STOPPING")
            finally:
                with contextlib.suppress(Exception):
                    await wait_for(daemon_lock.write_stopped(store.pool), cfg.database.write_timeout_s)
                await lock.release()
    finally:
        slow.cancel()
        if dog is not None:
            dog.cancel()
    reason = why[0] if why else ("clean" if rc == 0 else f"exit {rc}")
    if why and rc:
        reason += f", exit {rc}"
    log.info("daemon_stop", mode=cfg.mode, reason=reason, rc=rc, uptime_s=round(time.monotonic() - t0, 1))
    if telegram is not None:
        await telegram.aclose()  # sends what waits, the stop line included (a few seconds at most)
    return rc


async def _open_store_until_up(cfg: Config, stop: asyncio.Event, stack: contextlib.AsyncExitStack) -> Store | None:
    """Open the store; an external server that does not answer yet (a network error, or the
    database host still booting) is retried with backoff until it does, said once, instead of
    ending the daemon. None if stopped meanwhile. The embedded cluster is started by
    `open_store` itself: if it cannot be reached, that is not a network error and is raised."""
    from bot.marketdata.retry import Backoff
    from bot.store.outage import describe, is_unavailable

    external = bool(cfg.database.dsn.get_secret_value())
    backoff = Backoff(STORE_RETRY_BASE_S, STORE_RETRY_MAX_S)
    said = False
    while not stop.is_set():
        try:
            return await stack.enter_async_context(open_store(cfg, log=lambda m: log.info("db", text=m)))
        except Exception as e:
            if not (external and is_unavailable(e)):
                raise
            why = describe(e.__cause__ or e)  # (open_store's ConnectionError carries the socket's error)
            (log.debug if said else log.warning)(
                "store_unreachable", db=mask_dsn(cfg.database.dsn.get_secret_value()), reason=why,
                text=f"STORE {mask_dsn(cfg.database.dsn.get_secret_value())} does not answer ({why}): retrying until it does")  # fmt: skip
            said = True
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), backoff.next())
    return None


def _ready_once() -> object:
    """systemd READY=1, once (the trader calls it when it is doing its steady job)."""
    said: list[bool] = []

    def ready() -> None:
        if not said:
            said.append(True)
            sdnotify.notify("READY=1")

    return ready
