"""The live loop around the pure engine: exchange, model, warm-up, restore, feed, step, persist.

`LiveTrader.run()` is what `bot run` does once it holds the store (see `bot.live.daemon`):
1. reach the exchange (`load_markets`; unreachable: one clear line, retry with jittered
   backoff until it answers or the daemon is stopped) and check the configured symbols against
   its markets: an unlisted symbol is an error naming it (the bundle's features are built for
   the configured symbol set, so trading a subset silently would change the model's inputs);
2. the promoted bundle (`model_versions` champion), loaded in a thread; none: say so, and
   unless `--no-train` backfill the training history (traded and reference symbols) and train
   the first bundle in a spawned process (progress lines in the log), then promote it if it
   clears the engine's no-edge floor; with no usable model the daemon only collects candles
   (with the retrain schedule, unless `--no-train`) until a champion is promoted, then starts
   over with it (`_collect_only`);
3. backfill by REST what the store lacks up to the exchange's clock, then warm the engine's
   features from the store in a thread, up to the *anchor* minute: the last persisted step
   after a restart, else the last closed minute;
4. restore cash, positions, pending orders and risk state (`engine_state`, written with each
   minute's records in one transaction: see `bot.store.trading`);
5. stream: the feed (from the anchor + 1 minute, REST catch-up first) -> `MinuteAssembler` ->
   `engine.step` in a worker thread -> records persisted in one transaction per minute -> log
   lines; the equity point each minute; the `daemon_status` heartbeat.
While streaming, the retrain schedule runs beside the loop (`bot.training.retrain.Retrainer`: training
in a spawned, niced, memory- and time-limited process), and between two minutes the loop
follows the store's champion (`bot.live.hotswap`): a promoted bundle scores the next minute.
A stop request ends the loop after the minute in flight is persisted (no new entries are made
after it), then the feed flushes its candles and closes (a training process still running is
killed).

Postgres restarting or stalling while streaming is survived (`bot.store.outage`): the minute's
records are held in bounded memory and written in one transaction when the store answers,
entries pause meanwhile (paper), and live mode holds before the next minute (an order is never
sent before its row is written); the feed holds its candles (bounded; dropped ones are fetched
again from the exchange); the heartbeat and the champion check skip while the store is away.

Live mode (`mode: live` and `confirm_live`, i.e. `bot run --confirm-live`): the engine's broker
is `bot.execution.live_broker.LiveBroker` instead of the paper broker (see `LiveHooks` below: the only
live-specific code of this loop); its orders and fills are written by the broker itself, before
and after they are sent, so the step records carry none; entries wait for a reconciliation
with the exchange at start and every `live.reconcile_interval_s` (`bot.execution.reconcile`).

Nothing CPU-heavy runs on the event loop: bundle loading, warm-up and each step run in a
single worker thread (so steps stay strictly ordered), training in a spawned process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ccxt
import numpy as np
import structlog

from bot.config import Config
from bot.live.step_log import LiveEvents
from bot.logs.error_lines import ErrorStreak
from bot.marketdata.exchange import build_exchange, unlisted_symbols
from bot.marketdata.retry import Backoff, describe_network_error, reachability
from bot.runtime.aio import wait_for
from bot.runtime.looplag import LoopLag
from bot.runtime.procstats import release_free_memory, runtime_figures
from bot.store import daemon_lock as status
from bot.store.outage import STORE_UNAVAILABLE, StepBuffer, StoreHealth, is_unavailable
from bot.store.trading import StepRecords, TradingStore
from models.textfmt import things
from models.timeutil import DAY_MS, MINUTE_MS, fmt_short, fmt_ts

if TYPE_CHECKING:
    from bot.store.db import Store
    from models.bundle.directory import Bundle

log = structlog.get_logger("bot.live.trader")

HEARTBEAT_S = 5.0


class StoreLostMidStep(RuntimeError):
    """Live mode: an order row could not be written inside a step (bot.store.outage)."""


def rss_mb() -> float:
    """This process's resident memory (MB), for the log and the status row."""
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _train_entry(cfg: Config, job: Any, parent_pid: int | None = None) -> dict[str, Any]:
    """In the spawned training process: dies with the daemon (`bot.training.childguard`), logs to the
    daemon's files (progress lines), trains."""
    from bot.logs.setup import setup_from_config
    from bot.training.childguard import die_with_parent
    from bot.training.job import _job_entry

    die_with_parent(parent_pid)
    setup_from_config(cfg, console=False)
    return _job_entry(job)


def freeze_heap() -> None:
    """Once the daemon is warm: collect, then move every object alive now (modules, the
    bundle, the warm feature buffers: millions of objects that live as long as the process) to
    the collector's permanent generation (`gc.freeze`). Python runs a full collection only when
    the objects that survived into the oldest generation since the last one exceed 25 % of those
    already there; with that large heap counted, the small reference cycles made each minute
    (numpy's `ctypes.data_as` in LightGBM's predict makes some) piled up for weeks before a full
    collection freed them, a slow RSS climb the week-long reliability run showed. Frozen, the
    heap is no longer counted or scanned: cycles are freed promptly and collections stay cheap."""
    import gc

    gc.collect()
    gc.freeze()
    gc.collect()  # resets the collector's count of old objects to what is left unfrozen (~none)
    release_free_memory()  # the warm-up's history is gone: give its pages back


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` is set first; True if stopped."""
    with contextlib.suppress(TimeoutError):
        await wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def reach_exchange(exchange: Any, cfg: Config, stop: asyncio.Event) -> bool:
    """`load_markets` until it works (True) or the daemon is stopped (False). Network errors
    are said once in one line (`retry.reachability`), never raised."""
    backoff = Backoff(cfg.exchange.retry_base_s, max(cfg.exchange.retry_max_s, cfg.exchange.retry_base_s))
    url = exchange.urls["api"]["public"]
    while not stop.is_set():
        try:
            await exchange.load_markets(reload=True)
        except ccxt.OperationFailed as e:  # NetworkError family: retry forever
            if not reachability.failed(e, url):
                log.warning("exchange_retry", what="load_markets", error=type(e).__name__)
            if await _sleep_or_stop(stop, backoff.next()):
                return False
            continue
        reachability.ok()
        return True
    return False


@dataclass
class LoopStats:
    minutes: int = 0
    orders: int = 0
    opened: int = 0
    closed: int = 0
    step_ms: list[float] = field(default_factory=list)


class LiveTrader:
    """See the module docstring. One per daemon process."""

    def __init__(self, cfg: Config, store: Store, stop: asyncio.Event, *, no_train: bool = False,
                 confirm_live: bool = False):  # fmt: skip
        if cfg.mode == "live" and not confirm_live:
            raise RuntimeError("mode: live needs the command-line confirmation (--confirm-live)")
        self.cfg = cfg
        self.store = store
        self.stop = stop
        self.no_train = no_train
        self.mode = cfg.mode
        self.trading = TradingStore(store.pool, self.mode, acquire_timeout=cfg.database.write_timeout_s)
        store.write_timeout = cfg.database.write_timeout_s
        self.health = StoreHealth()  # the store's availability (bot.store.outage); the daemon lock guard reports too
        self.steps = StepBuffer(lambda rec: self.trading.write_step(rec, now_ms=status.now_ms()),
                                lambda recs: self.trading.write_steps(recs, now_ms=status.now_ms()), self.health,
                                max_minutes=cfg.database.outage_buffer_minutes, timeout_s=cfg.database.write_timeout_s)  # fmt: skip
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.engine: Any = None
        self.model_version: str | None = None
        self.last_minute: int | None = None
        self.stats = LoopStats()
        self.feed: Any = None
        self.assembler: Any = None  # bot.marketdata.minutes.MinuteAssembler, while streaming
        self._exchange: Any = None
        self.lag = LoopLag()
        self.metrics: Any = None  # bot.ops.dashboard.metrics.DaemonMetrics, when the dashboard is on
        self.live: Any = None  # LiveHooks in live mode
        self.retrainer: Any = None  # bot.training.retrain.Retrainer, while streaming
        self.events = LiveEvents(self.mode)  # human-line events (bot.live.step_log)
        self.on_warm: Any = None  # called once the engine is warm (bot.live.daemon: systemd READY)
        self._pruned_day: int | None = None  # the exchange day of the last decisions retention pass
        self._heartbeat_errors = ErrorStreak("store heartbeat", "heartbeat_failed", log)
        self.store_restarts = 0  # runs started over after the store went away where a run cannot hold
        self._restart_delay = 1.0
        self._last_restart = -1e9
        self._feed_holder: Any = None  # the current feed's count of held candles, in `health.holders`
        self.control: Any = None  # bot.ops.control.Controller (the operator's commands), set by the daemon
        # held by each step with its persist (and by a reconciliation), and by an operator's engine
        # operation (`engine_op`): so an operation runs between two minutes, never inside one
        self.engine_lock = asyncio.Lock()

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    # -- startup -------------------------------------------------------------------------------

    async def run(self) -> int:
        self._exchange = build_exchange(self.cfg)
        lag = asyncio.create_task(self.lag.run(), name="loop-lag")
        try:
            while True:
                try:
                    return await self._run()
                except Exception as e:
                    if not (isinstance(e, StoreLostMidStep) or is_unavailable(e)):
                        raise
                    # the store went away where the run cannot hold (inside a live step, or
                    # while starting: bundle, state, warm-up), or a socket error escaped from
                    # elsewhere: start over from the store, as a restarted process would
                    self.store_restarts += 1
                    await self._say_run_lost(e)
                    self._forget_run()
                    if await self._sleep_before_restart() or not await self._wait_for_store():
                        return 0
        finally:
            lag.cancel()
            self.worker.shutdown(wait=True)
            with contextlib.suppress(Exception):
                await wait_for(self._exchange.close(), 10)

    async def _say_run_lost(self, e: Exception) -> None:
        """One line: the store's loss (`store_lost_mid_step` / `store_lost_in_run`), or, when
        the store answers right away, a network error that ended the run (`run_lost`)."""
        if isinstance(e, StoreLostMidStep):
            name, what = "store_lost_mid_step", f"STORE {e}"
        else:
            await self._heartbeat()  # a probe: was it the store?
            detail = f"{type(e).__name__}: {str(e)[:120]}".rstrip(": ")
            if self.health.up:
                name, what = "run_lost", f"RUN ended by a network error ({detail})"
            else:
                name, what = "store_lost_in_run", f"STORE became unavailable during the run ({detail})"
        log.error(name, restarts=self.store_restarts, error=type(e).__name__,
                  text=f"{what}: starting over from the store in this process")  # fmt: skip

    def _forget_run(self) -> None:
        """After the store went away where a run cannot hold (a live step failed half-way:
        `StoreLostMidStep`; or start-up: bundle, state, warm-up): drop everything the run built
        (engine, live broker and its order tracking, feed); the next `_run` rebuilds it from the
        store and the exchange, exactly as a process restarted after a crash does. Records held
        for the store belong to the old engine and are dropped: the new one re-steps those
        minutes from the store's last one (in live mode none are held: a step only starts with
        the backlog written)."""
        self.engine = self.live = self.feed = self.assembler = self.retrainer = None
        self.model_version = None
        self.last_minute = None
        self.steps.held.clear()
        if self._feed_holder is not None:  # candles the stopped feed could not write: the new run's
            with contextlib.suppress(ValueError):  # backfill fetches them again from the exchange
                self.health.holders.remove(self._feed_holder)
            self._feed_holder = None

    async def _sleep_before_restart(self) -> bool:
        """1 s before starting over; doubling (up to 60 s) while runs keep ending this way
        within a minute of each other. True if stopped meanwhile."""
        now = time.monotonic()
        self._restart_delay = min(60.0, self._restart_delay * 2) if now - self._last_restart < 60 else 1.0
        self._last_restart = now
        return await _sleep_or_stop(self.stop, self._restart_delay)

    async def _wait_for_store(self) -> bool:
        """Until the store answers and the daemon lock is ours again (True), or a stop (False)."""
        while not self.stop.is_set():
            await self._heartbeat()  # the probe: marks the store up or down (bot.store.outage)
            if self.health.up and not self.health.lock_lost:
                return True
            await _sleep_or_stop(self.stop, self.steps.retry_s)
        return False

    async def _run(self) -> int:
        cfg = self.cfg
        if not await reach_exchange(self._exchange, cfg, self.stop):
            return 0
        missing = unlisted_symbols(self._exchange, cfg.symbols, cfg.exchange.quote)
        if missing:
            log.error("symbols_not_listed", symbols=missing,
                      text=f"CONFIG symbols not listed by the exchange: {', '.join(missing)}; remove them from `symbols` "
                           "in the config (the model is built for the configured set) and start again")  # fmt: skip
            return 2
        missing = unlisted_symbols(self._exchange, self._symbols_with_references(), cfg.exchange.quote)
        if missing:
            log.error("symbols_not_listed", symbols=missing,
                      text=f"CONFIG reference symbols not listed by the exchange: {', '.join(missing)}; change "
                           "features.reference_symbols in the config and start again")  # fmt: skip
            return 2
        bundle = await self._bundle()
        if self.stop.is_set():
            return 0
        if bundle is None:
            if not await self._collect_only():
                return 0
            return await self._run()  # a model was promoted while collecting: start with it
        if self.mode == "live":
            from bot.live.live_mode import LiveHooks

            self.live = LiveHooks(cfg, self.store, self._exchange, self.stop)
            if not await self.live.setup():
                return 2
        self.engine = await self._in_worker(self._build_engine, bundle)
        eng = self.engine
        missing = unlisted_symbols(self._exchange, eng.symbols, cfg.exchange.quote)
        if missing:
            log.error("symbols_not_listed", symbols=missing,
                      text=f"MODEL needs reference symbols the exchange does not list: {', '.join(missing)}")  # fmt: skip
            return 2
        resume = await self.trading.resume()
        anchor = await self._prepare_history(eng.symbols, eng.features.warmup, resume.last_minute_ts)
        if anchor is None:
            return 0
        if self.live is not None:
            await self.live.load_orders(anchor, persisted=resume.last_minute_ts is not None)
        await self._warm_and_restore(anchor, resume)
        if self.live is not None:
            await self.live.reconcile(eng, self._in_worker)
        return await self._stream(anchor)

    def _build_engine(self, bundle: Bundle) -> Any:
        from bot.engine import Engine

        c = self.cfg
        if self.live is not None:
            return self.live.build_engine(bundle)
        # The same arguments `bot backtest` gives the engine (bot.cli.commands.backtest._replay).
        return Engine(c.symbols, bundle, trading=c.trading, risk=c.risk, costs=c.costs,
                      initial_equity=c.paper.initial_equity)  # fmt: skip

    async def _bundle(self) -> Any:
        from bot.store.model_versions import champion

        mv = await champion(self.store.pool)
        if mv is None:
            log.warning("no_model", text="MODEL none promoted yet (model_versions has no champion)")
            if self.no_train:
                return None
            mv = await self._train_first()
            if mv is None:
                return None
        from models.bundle.directory import BundleError, load_bundle

        t0 = time.monotonic()
        try:
            bundle = await self._in_worker(load_bundle, mv.path)
        except BundleError as e:  # a broken champion must not crash-loop the service
            log.error("model_unusable", version=mv.version, reason=str(e),
                      text=f"MODEL {mv.version} cannot be used: {e}; collecting candles only until another is "
                           "promoted (bot models rollback / promote VERSION): it is picked up without a restart")  # fmt: skip
            return None
        self.model_version = mv.version
        log.info("model_loaded", version=mv.version, seconds=round(time.monotonic() - t0, 2), rss_mb=rss_mb(),
                 text=f"MODEL {mv.version} loaded ({time.monotonic() - t0:.1f}s)")  # fmt: skip
        return bundle

    async def _train_first(self) -> Any:
        """Backfill the training history and train the first bundle in a spawned process."""
        from bot.training.job import TrainJob, code_version
        from models.config import Settings

        cfg = self.cfg
        days = cfg.train.history_days + 1
        if self.on_warm is not None:
            self.on_warm()  # systemd READY: a first backfill and training can take long; the daemon is doing its job
        log.info("train_first_start", days=days,
                 text=f"TRAIN first model: backfilling {days} days of history, then training in a separate process")  # fmt: skip
        if not await self._backfill(self._symbols_with_references(), days):  # the features read the references too
            return None
        data_dir = cfg.paths.data_dir
        job = TrainJob(
            settings=Settings(cfg.features, cfg.labels, cfg.costs, cfg.train).to_dict(), symbols=list(cfg.symbols),
            models_dir=str(cfg.paths.models_dir), dsn=self.store.dsn, cache_dir=str(data_dir / "cache"),
            work_root=str(data_dir / "train-work"), code_version=code_version(),
        )  # fmt: skip
        ctx = multiprocessing.get_context("spawn")  # not fork: LightGBM's OpenMP hangs in a forked child
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
        task = asyncio.get_running_loop().run_in_executor(pool, _train_entry, cfg, job, os.getpid())
        try:
            return await self._await_training(task, pool)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _symbols_with_references(self) -> list[str]:
        """The traded symbols, then the features' reference symbols that are not traded (the
        engine streams them as feature-only rows; the trainer reads their history)."""
        return list(dict.fromkeys([*self.cfg.symbols, *self.cfg.features.reference_symbols]))

    async def _await_training(self, task: Any, pool: Any) -> Any:
        from bot.store.model_versions import get_model_version, promote

        stopper = asyncio.ensure_future(self.stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task not in done:
            log.warning("train_first_abandoned", text="TRAIN abandoned: stop requested")
            for p in list(getattr(pool, "_processes", {}).values()):  # do not wait for a long fit
                p.terminate()
            return None
        try:
            summary = task.result()
        except Exception as e:  # noqa: BLE001 - a failed training must not end the daemon
            log.error("train_first_failed", error=type(e).__name__, detail=str(e)[:500],
                      text=f"TRAIN first model failed ({type(e).__name__}: {str(e)[:200]}); collecting candles only")  # fmt: skip
            return None
        if summary.get("status") != "candidate":
            log.error("train_first_rejected", version=summary.get("version"), status=summary.get("status"),
                      text=f"TRAIN first model {summary.get('version')} is {summary.get('status')}: not used")  # fmt: skip
            return None
        version = summary["version"]
        edge = self._first_edge(summary)
        if not edge.ok:  # with no champion, the first bundle must clear the engine's no-edge floor
            from bot.store.model_versions import set_status

            why = edge.reason.removesuffix(", watching only")
            with contextlib.suppress(Exception):  # the line below says it either way
                await set_status(self.store.pool, version, "rejected", reason=f"first model below the no-edge floor: {why}")
            log.warning("train_first_rejected", version=version, status="rejected", reason=why, pf=edge.profit_factor,
                        trades=edge.trades, text=f"TRAIN first model {version} not promoted: {why}; collecting candles only "
                                                 "until a model is promoted (the retrain schedule, or bot train --promote)")  # fmt: skip
            return None
        await promote(self.store.pool, version, status.now_ms())
        log.info("train_first_done", version=version, pf=edge.profit_factor, trades=edge.trades,
                 text=f"TRAIN first model {version} trained and promoted ({edge.reason})")  # fmt: skip
        return await get_model_version(self.store.pool, version)

    def _first_edge(self, summary: dict[str, Any]) -> Any:
        """The engine's own no-edge verdict on a freshly trained bundle's walk-forward result."""
        from bot.engine.engine import validated_edge

        return validated_edge({"version": summary["version"], "walk_forward": summary.get("walk_forward")}, self.cfg.trading)

    async def _backfill(self, symbols: Any, days: float) -> bool:
        """Backfill until it completes (network trouble: retried, said once); False if stopped."""
        from bot.history.backfill import backfill
        from bot.marketdata.retry import RetriesExhausted

        ex = self.cfg.exchange
        backoff = Backoff(ex.retry_base_s, max(ex.retry_max_s, ex.retry_base_s))
        while not self.stop.is_set():
            task = asyncio.ensure_future(backfill(self._exchange, self.store, list(symbols), days=days, quote=ex.quote,
                                                  retry_base_s=ex.retry_base_s, retry_max_s=ex.retry_max_s,
                                                  attempts=ex.retry_attempts))  # fmt: skip
            stopper = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not task.done():  # stop requested: what is written stays (backfill resumes next time)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return False
            try:
                reps = task.result()
                written = sum(r.written for r in reps)
                if written:
                    log.info("backfill_done", candles=written, text=f"BACKFILL {written:,} candles for {things(len(reps), 'symbol')}")
                return True
            except (RetriesExhausted, ccxt.OperationFailed) as e:
                err = getattr(e, "last", e)
                why = describe_network_error(err) or type(err).__name__
                (log.debug if reachability.down else log.warning)(
                    "backfill_retry", reason=why, text=f"BACKFILL interrupted ({why}): retrying")
                if await _sleep_or_stop(self.stop, backoff.next()):
                    return False
        return False

    async def _prepare_history(self, symbols: Any, warmup: int, last_step: int | None) -> int | None:
        """Backfill up to the exchange's clock; return the anchor minute (None if stopped)."""
        days = warmup * MINUTE_MS / DAY_MS + 1
        if not await self._backfill(symbols, days):
            return None
        if last_step is not None:
            return int(last_step)
        ends = [t for t in [await self.store.last_candle_ts(s) for s in symbols] if t is not None]
        if not ends:
            raise RuntimeError("no candles in the store after the backfill")
        return max(ends)

    async def _warm_and_restore(self, anchor: int, resume: Any) -> None:
        eng = self.engine
        lo = anchor - (eng.features.warmup + 1) * MINUTE_MS
        t0 = time.monotonic()
        history = {s: await self.store.read_candles(s, lo, anchor + MINUTE_MS, dtype=np.float64) for s in eng.symbols}
        read_s = time.monotonic() - t0
        await self._in_worker(eng.warm_up, history)
        del history
        log.info("warm_up_done", anchor=fmt_ts(anchor), minutes=eng.features.warmup, symbols=len(eng.symbols),
                 read_s=round(read_s, 2), seconds=round(time.monotonic() - t0, 2), rss_mb=rss_mb(),
                 loop_lag_max_ms=self.lag.take(),
                 text=f"WARM-UP {len(eng.symbols)} symbols x {eng.features.warmup} minutes through {fmt_ts(anchor)} "
                      f"in {time.monotonic() - t0:.1f}s")  # fmt: skip
        if resume.state is not None:
            await self._in_worker(eng.load_state, resume.state)
            log.info("state_restored", last_minute=fmt_ts(resume.last_minute_ts), cash=eng.cash,
                     positions=len(eng.positions), symbols=sorted(eng.positions),
                     text=f"RESTORED at {fmt_short(resume.last_minute_ts)}: cash {eng.cash:,.2f}, "
                          f"{len(eng.positions)} open position(s)")  # fmt: skip
        self.last_minute = anchor
        watch = eng.watch_reason
        await status.write_heartbeat(self.store.pool, last_minute_ts=anchor, model_version=self.model_version,
                                     watch_only=watch is not None, watch_reason=watch)  # fmt: skip
        if self.metrics is not None:
            self.metrics.model_in_use(self.model_version, watch_only=watch is not None)
        if watch:
            log.warning("watch_only", reason=watch, text=f"WATCH ONLY: {watch}")
        await self._in_worker(freeze_heap)
        log.info("engine_ready", text=f"ENGINE {eng.status_line()}")
        self.events.started(eng, self.model_version, len(eng.symbols), self.cfg)
        if self.on_warm is not None:
            self.on_warm()

    # -- streaming -----------------------------------------------------------------------------

    def _new_feed(self, symbols: Any, start_ms: int) -> Any:
        from bot.marketdata.feed import CandleFeed

        feed = CandleFeed(self.cfg, self.store, exchange=self._exchange, symbols=symbols, start_ms=start_ms)
        feed.health = self.health
        if self._feed_holder is not None:  # a feed of an earlier run (collect-only, or started over)
            with contextlib.suppress(ValueError):
                self.health.holders.remove(self._feed_holder)
        self._feed_holder = feed.held_rows
        self.health.holders.append(feed.held_rows)
        return feed

    async def _stream(self, anchor: int) -> int:
        from bot.marketdata.minutes import MinuteAssembler

        eng = self.engine
        self.feed = feed = self._new_feed(eng.symbols, anchor + MINUTE_MS)
        self.assembler = asm = MinuteAssembler(eng.symbols, timeout_s=self.cfg.feed.minute_timeout_s)
        feed_task = asyncio.create_task(feed.run(), name="feed")
        hb = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        poller = asyncio.create_task(self.live.poll_loop(), name="order-poll") if self.live is not None else None
        minutes = asm.minutes(feed.queue)
        # --- retraining (bot.training.retrain) and hot-swap (bot.live.hotswap) ---
        from bot.live.hotswap import ChampionFollower
        from bot.training.retrain import Retrainer

        follower = ChampionFollower(self)
        self.retrainer = Retrainer(self)
        self.retrainer.start()
        # ---
        try:
            while not self.stop.is_set():
                nxt = asyncio.ensure_future(anext(minutes))
                stopper = asyncio.ensure_future(self.stop.wait())
                while True:
                    done, _ = await asyncio.wait({nxt, stopper, feed_task}, return_when=asyncio.FIRST_COMPLETED,
                                                 timeout=self.live.idle_timeout() if self.live is not None else None)  # fmt: skip
                    if done or self.live is None:
                        break
                    if self.live.reconcile_due():  # live: no minute for a while, reconcile anyway
                        async with self.engine_lock:
                            await self.live.reconcile(eng, self._in_worker)
                stopper.cancel()
                if nxt not in done:
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await nxt
                    if feed_task in done and not self.stop.is_set():
                        feed_task.result()  # the feed never ends by itself: surface why
                    break
                ts, bars = nxt.result()
                if ts <= (self.last_minute or -1):
                    continue
                if not await self._store_gate():
                    break  # stopped while waiting for the store
                async with self.engine_lock:
                    if self.live is not None and self.live.reconcile_due():
                        await self.live.reconcile(eng, self._in_worker)
                    await self._step(ts, bars)
                if self.health.up:
                    try:
                        await follower.check(ts, bars)  # between two minutes: a new champion is swapped in here
                    except Exception as e:
                        if not is_unavailable(e):
                            raise
                        self.health.failed("champion check", e)
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            await self.retrainer.stop()  # kills a training process still running
            self.events.flush()
            await minutes.aclose()
            feed.stop()
            with contextlib.suppress(Exception):
                await feed_task
            hb.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hb
            await self._flush_at_stop()
            await self._heartbeat()
        return 0

    async def _store_gate(self) -> bool:
        """Before each minute's step, while the store is unavailable (`bot.store.outage`):
        paper mode pauses entries (decision rows say `store_unavailable`) and holds the records,
        but waits when the held backlog is full; live mode waits (its orders are written before
        they are sent). Waiting retries the store every few seconds. False if stopped meanwhile."""
        steps, health = self.steps, self.health
        if steps.held:
            await steps.flush()
        elif self.live is not None and health.up:
            await self._ping()  # live: make sure before a step that may write order rows
        while (steps.full or (self.live is not None and not health.up)) and not self.stop.is_set():
            if steps.held:
                await steps.flush(force=True)
            else:
                await self._heartbeat()  # the probe when nothing is held (live mode)
            if steps.full or (self.live is not None and not health.up):
                await _sleep_or_stop(self.stop, steps.retry_s)
        if self.live is None and self.engine is not None:
            self.engine.entry_block = None if health.up else STORE_UNAVAILABLE
        return not self.stop.is_set()

    async def _ping(self) -> None:
        t = self.cfg.database.write_timeout_s
        try:
            async with asyncio.timeout(2 * t), self.store.pool.acquire(timeout=t) as conn:
                await conn.fetchval("SELECT 1")
        except Exception as e:
            if not is_unavailable(e):
                raise
            self.health.failed("store check", e)

    async def _flush_at_stop(self) -> None:
        if not self.steps.held:
            return
        n = len(self.steps.held)
        if not await self.steps.flush(force=True):
            log.error("store_backlog_lost", minutes=n,
                      text=f"STORE still unavailable at stop: {n} minute(s) of trading records not written; the next "
                           "start resumes after the store's last minute and steps them again")  # fmt: skip

    async def _step(self, ts: int, bars: np.ndarray) -> None:
        eng = self.engine
        t0 = time.perf_counter()
        gate = await self.live.entry_gate(ts) if self.live is not None else None
        try:
            res, state = await self._in_worker(self._step_sync, ts, bars, gate)
        except Exception as e:
            if self.live is None or not is_unavailable(e):
                raise
            # live: the store went away between the gate and an order row, inside the step; the
            # engine's state is no longer known to match the store: restart from the store
            raise StoreLostMidStep(f"the store became unavailable during the live step of {fmt_ts(ts)} "
                                   f"({type(e).__name__})") from e  # fmt: skip
        rec = StepRecords.from_step(ts, res, state=state, model_version=self.model_version)
        if self.live is not None:  # the live broker wrote the exchange's own trades (fees as reported) already
            rec.fills, rec.cancelled = (), ()
        await self.steps.write(rec)  # held in memory while the store is unavailable (bot.store.outage)
        self.last_minute = ts
        if self.live is not None:
            self.live.after_step(ts)
        if ts // DAY_MS != self._pruned_day:
            await self._prune(ts)
        st = self.stats
        st.minutes += 1
        st.orders += len(rec.orders)
        st.opened += len(rec.opened)
        st.closed += len(rec.closed)
        st.step_ms.append((time.perf_counter() - t0) * 1000)
        if len(st.step_ms) > 10_000:
            del st.step_ms[:5_000]
        m = self.metrics
        if m is not None:
            m.step_done(len(eng.symbols), time.perf_counter() - t0)
            if rec.equity is not None:
                e = rec.equity
                m.account(equity=e.equity, cash=e.cash, gross_exposure=e.gross_exposure, open_positions=e.open_positions)
            for o in rec.orders:
                m.order_sent(o.side)
            for t in rec.closed:
                m.trade_closed(t.exit_reason)
            m.skipped(getattr(res, "skips", {}) or {})
        self.events.step(eng, ts, res, rec)  # trade lines, hourly skips, kill switch
        del eng

    async def _prune(self, ts: int) -> None:
        """Once per exchange day: the decisions retention (`daemon.decisions_keep_days`)."""
        self._pruned_day = ts // DAY_MS
        keep = self.cfg.daemon.decisions_keep_days
        if not keep:
            return
        try:
            n = await self.trading.prune_skips(ts - int(keep * DAY_MS))
        except Exception as e:  # noqa: BLE001 - housekeeping: tried again tomorrow
            log.warning("decisions_prune_failed", error=type(e).__name__)
            return
        if n:
            log.info("decisions_pruned", rows=n, keep_days=keep,
                     text=f"DECISIONS {n:,} skip rows older than {keep:g} days deleted (daemon.decisions_keep_days)")

    def _step_sync(self, ts: int, bars: np.ndarray, gate: str | None = None) -> tuple[Any, dict[str, Any]]:
        eng = self.engine
        if self.stop.is_set() and hasattr(eng, "stopping"):
            eng.stopping = True  # no new entries in the minute that ends the run
        if self.live is not None:
            self.live.apply_gate(eng, gate)  # live: no entry on a stale (caught-up) minute
        if self.control is not None:
            eng.paused = self.control.paused  # the operator's pause (bot.ops.control), read between two minutes
        res = eng.step(ts, bars)
        return res, eng.state_dict()

    async def engine_op(self, op: Any) -> Any:
        """Run `op(engine)` for the operator (`bot.ops.control`) in the engine's worker thread,
        between two minutes: the step in flight and its persist hold `engine_lock`. A
        `StepResult` it returns (a flatten's exits) is persisted as the records of the last
        minute stepped, with the engine state after it, through the same held-in-order writer
        as the minutes (`bot.store.outage.StepBuffer`), and logged like a step's trades."""
        from bot.engine.engine import StepResult
        from bot.ops.control.controller import NotReady

        async with self.engine_lock:
            eng = self.engine
            if eng is None or self.feed is None or self.last_minute is None or self.stop.is_set():
                raise NotReady("the engine is not trading")

            def run() -> tuple[Any, dict[str, Any] | None]:
                out = op(eng)
                return out, eng.state_dict() if isinstance(out, StepResult) else None

            out, state = await self._in_worker(run)
            if state is not None:
                ts = self.last_minute
                rec = StepRecords.from_step(ts, out, state=state, model_version=self.model_version)
                if self.live is not None:  # the live broker wrote its orders' fills and states itself
                    rec.fills, rec.cancelled = (), ()
                await self.steps.write(rec)
                if self.metrics is not None:
                    for t in rec.closed:
                        self.metrics.trade_closed(t.exit_reason)
                self.events.step(eng, ts, out, rec)
            return out

    async def _collect_only(self) -> bool:
        """No usable model (none promoted and --no-train, a first model below the no-edge floor,
        a broken champion): keep the candle history current (traded and reference symbols),
        trade nothing, and watch the store: True when another champion is promoted (`bot
        models promote`, `bot train --promote`, or the retrain schedule, which runs here too
        unless --no-train: with no champion it promotes a model that clears the floor), and
        the caller starts over with it; False when the daemon is stopped."""
        from bot.store.model_versions import champion_version

        reason = "no model: train one (`bot train`) and promote it (`bot models promote`)"
        log.warning("watch_only", reason=reason, text=f"WATCH ONLY: {reason}; collecting candles")
        await status.write_heartbeat(self.store.pool, watch_only=True, watch_reason=reason)
        if self.on_warm is not None:
            self.on_warm()
        was = await champion_version(self.store.pool)
        symbols = self._symbols_with_references()
        ends = [await self.store.last_candle_ts(s) for s in symbols]
        if all(t is not None for t in ends):  # what a retrain may train on before the feed moves
            self.last_minute = int(min(ends))  # type: ignore[type-var]
        self.feed = feed = self._new_feed(symbols, None)  # type: ignore[arg-type]
        feed_task = asyncio.create_task(feed.run(), name="feed")
        hb = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        drain = asyncio.create_task(self._drain(feed), name="drain")
        if not self.no_train:
            from bot.training.retrain import Retrainer

            self.retrainer = Retrainer(self)
            self.retrainer.start()
        promoted = None
        try:
            while not await _sleep_or_stop(self.stop, HEARTBEAT_S):
                with contextlib.suppress(Exception):  # the store may be down: ask again next time
                    promoted = await champion_version(self.store.pool)
                if promoted is not None and promoted != was:
                    log.info("collect_only_done", version=promoted,
                             text=f"MODEL {promoted} promoted: leaving collect-only, starting the engine with it")  # fmt: skip
                    break
        finally:
            if self.retrainer is not None:
                await self.retrainer.stop()
                self.retrainer = None
            feed.stop()
            drain.cancel()
            hb.cancel()
            for t in (feed_task, drain, hb):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.feed = None
        return not self.stop.is_set()

    async def _drain(self, feed: Any) -> None:
        """Take the feed's events (they are stored by the feed); the last minute every symbol
        has reached is what a retrain started now may train on."""
        while True:
            await feed.queue.get()
            through = feed.released_through()
            if through:
                self.last_minute = min(through.values())

    # -- status --------------------------------------------------------------------------------

    def details(self) -> dict[str, Any]:
        eng = self.engine
        d: dict[str, Any] = {"minutes_processed": self.stats.minutes, "orders": self.stats.orders,
                             "trades_opened": self.stats.opened, "trades_closed": self.stats.closed,
                             "rss_mb": rss_mb(), "loop_lag_max_ms": self.lag.take(),
                             "loop_lag_run_max_ms": round(self.lag.run_max, 1)}  # fmt: skip
        if self.stats.step_ms:
            a = np.asarray(self.stats.step_ms[-1440:])
            d["step_ms_p50"], d["step_ms_p99"] = round(float(np.percentile(a, 50)), 2), round(float(np.percentile(a, 99)), 2)
        if eng is not None:
            e = eng.equity_point(self.last_minute or 0)
            d.update(equity=round(e.equity, 2), cash=round(e.cash, 2), open_positions=e.open_positions)
        if self.feed is not None:
            d["feed_ws_up"] = bool(self.feed.ws_up)
        d["runtime"] = runtime_figures()
        d["queues"] = self.queue_sizes()
        if self.retrainer is not None:
            d.update(self.retrainer.details())
        if self.control is not None:
            d["control"] = self.control.details()
        d.update(self.health.details())
        return d

    def queue_sizes(self) -> dict[str, int]:
        """The in-memory queues and buffers between the exchange and the store (each bounded;
        the week-long reliability run samples them)."""
        q: dict[str, int] = {"step_ms_samples": len(self.stats.step_ms)}
        if self.feed is not None:
            q.update(self.feed.buffer_sizes())
        if self.assembler is not None:
            q["minutes_pending"] = len(self.assembler._pending)
        return q

    async def _heartbeat(self) -> None:
        try:
            t = self.cfg.database.write_timeout_s
            async with asyncio.timeout(2 * t), self.store.pool.acquire(timeout=t) as conn:
                await status.write_heartbeat(conn, last_minute_ts=self.last_minute, details=self.details())
        except Exception as e:  # noqa: BLE001 - the heartbeat must never end the daemon
            if is_unavailable(e):
                self.health.failed("heartbeat", e)  # said once for the whole store (bot.store.outage)
            else:
                self._heartbeat_errors.failed(e)
            return
        self._heartbeat_errors.ok()
        self.health.ok()

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._heartbeat()
            await asyncio.sleep(HEARTBEAT_S)
