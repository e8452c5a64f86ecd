"""Scheduled retraining in its own process, judged champion/challenger, promoted atomically.

One retrain (`run_retrain_in_child`, used by the daemon's scheduler, `bot retrain --now` and
`bot train --promote`):
1. the training process is started with multiprocessing's **spawn** context (not fork:
   LightGBM's OpenMP runtime hangs in a forked child once OpenMP ran in the parent); in the
   child, before anything heavy is imported: `os.nice(daemon.retrain_nice)` (the trading loop
   keeps the CPU it needs), `RLIMIT_AS` = `daemon.retrain_memory_mb` (an allocation past it
   raises MemoryError in the child, never in the daemon), and the thread count
   `daemon.retrain_threads` for LightGBM/CatBoost;
2. the child trains on the store's candles up to the last closed minute, **minus** the judging
   window: the challenger's data ends an embargo before the last `daemon.retrain_eval_days`,
   which are then used to score the challenger and the champion by the same simulation
   (`models.bundle.champion.judge`); the bundle is written (atomically) and recorded in
   `model_versions` as `candidate` (may be promoted) or `rejected` with the reason in
   `metrics.reason` (`bot models list` shows it);
3. the parent awaits the child without blocking the event loop (it polls the exit code), kills
   it after `daemon.retrain_timeout_s`; a child that dies (MemoryError, SIGKILL from the OOM
   killer or a user, an exception) is reported and the champion stays;
4. a challenger the child judged better is verified (loaded: file hashes, boosters, feature
   columns) and promoted in one transaction (`bot.store.model_versions.promote`); a running
   daemon notices the new champion between two minutes (`bot.live.trader`) and swaps bundles.

Scheduling (`Retrainer`, in the daemon): an APScheduler `AsyncIOScheduler` on the daemon's
event loop, cron `daemon.retrain_cron` in UTC. `coalesce=True`: runs missed while the daemon
was down collapse into one (retraining twice on the same data is pointless);
`misfire_grace_time=daemon.retrain_misfire_grace_s`: a run missed by at most that long (e.g. the
PC was asleep at 03:00) still happens at start, a run missed by more waits for the next cron
time. A retrain already in progress makes a trigger a no-op (one training process at most).
The next run time is written to the `daemon_status` row (`details.retrain_next_run`), with the
outcome of the last retrain (`details.retrain_last`). SIGUSR1 (what `bot retrain --now`
sends) triggers a retrain now.

Memory limit under systemd: `RLIMIT_AS` caps the child's *virtual* size, which is why the
default leaves room above the resident peak. A unit can instead (or also) cap resident memory
with a cgroup: `MemoryMax=` on the service caps daemon + training together (the kernel's OOM
killer then picks the biggest process, the trainer); to cap the trainer alone, start it in its
own scope (`systemd-run --scope -p MemoryMax=1G ...`). The RLIMIT_AS path needs no privileges
and works outside systemd, so it is what the code does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bot.runtime import crashpoint
from models.timeutil import MINUTE_MS, fmt_short, fmt_ts

if TYPE_CHECKING:
    from bot.config import Config
    from bot.live.trader import LiveTrader

log = structlog.get_logger("bot.training.retrain")


@dataclass
class RetrainSpec:
    """What the training process needs; picklable (it crosses the spawn boundary)."""

    settings: dict[str, Any]  # models.config.Settings.to_dict(), threads already set
    symbols: list[str]
    models_dir: str
    end_ms: int  # exclusive: the minute after the last closed one
    eval_days: float
    margins: dict[str, Any]  # models.bundle.champion.Margins fields
    champion_path: str | None
    nice: int = 10
    memory_mb: int = 0
    work_root: str | None = None
    cache_dir: str | None = None
    code_version: str | None = None
    dsn: str | None = field(default=None, repr=False)  # never logged


@dataclass
class RetrainResult:
    """The outcome of one retrain, as the parent sees it."""

    ok: bool  # the child finished and judged a challenger
    version: str | None = None
    promote: bool = False
    reason: str = ""
    verdict: dict[str, Any] | None = None
    train_window: tuple[int, int] | None = None
    error: str | None = None
    pid: int | None = None
    seconds: float = 0.0
    promoted: bool = False  # the parent did promote it
    path: str | None = None

    def line(self) -> str:
        """The one human line of the retrain."""
        if not self.ok:
            return f"RETRAIN failed: {self.error}; the champion stays"
        v = self.verdict or {}
        win = v.get("window") or {}
        rng = f"{fmt_short(win['start'])}..{fmt_short(win['end'])}" if win else "-"
        ch, cp = _brief(v.get("challenger")), _brief(v.get("champion"))
        what = "PROMOTED" if self.promoted else "rejected"
        return f"RETRAIN {self.version} judged on {rng}: challenger {ch} vs champion {cp}: {what} ({self.reason})"


def _brief(s: dict[str, Any] | None) -> str:
    if not s:
        return "none"
    pf = "-" if s.get("profit_factor") is None else f"{s['profit_factor']:.2f}"
    ex = "-" if s.get("expectancy") is None else f"{s['expectancy'] * 100:+.3f}%"
    return f"PF {pf} exp {ex} n={s.get('trades', 0)}"


def spec_from_config(cfg: Config, dsn: str, end_ms: int, champion_path: str | None) -> RetrainSpec:
    from bot.training.job import code_version
    from models.config import Settings

    d = cfg.daemon
    train = cfg.train.model_copy(update={"threads": d.retrain_threads})
    data_dir = Path(cfg.paths.data_dir)
    return RetrainSpec(
        settings=Settings(cfg.features, cfg.labels, cfg.costs, train).to_dict(), symbols=list(cfg.symbols),
        models_dir=str(cfg.paths.models_dir), end_ms=int(end_ms), eval_days=d.retrain_eval_days,
        margins={"min_pf_gain": d.promote_min_pf_gain, "min_expectancy_gain": d.promote_min_expectancy_gain,
                 "min_trades": d.promote_min_trades, "floor_pf": cfg.trading.min_validation_pf},
        champion_path=champion_path, nice=d.retrain_nice, memory_mb=d.retrain_memory_mb,
        work_root=str(data_dir / "train-work"), cache_dir=str(data_dir / "cache"), code_version=code_version(), dsn=dsn,
    )  # fmt: skip


# --- in the training process ---------------------------------------------------------------


def _limit_child(spec: RetrainSpec) -> None:
    """Lower priority and cap the address space of this (child) process."""
    import resource

    if spec.nice:
        with contextlib.suppress(OSError):
            os.nice(spec.nice)
    if spec.memory_mb:
        cap = int(spec.memory_mb) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    threads = str(int(spec.settings["train"].get("threads") or 1))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads


def _child_entry(cfg: Config, spec: RetrainSpec, result_path: str, parent_pid: int | None = None) -> None:
    """Entry point of the spawned training process: dies with the daemon (`bot.training.childguard`),
    limits, logging, the job, a result file."""
    from bot.training.childguard import die_with_parent

    die_with_parent(parent_pid)
    _limit_child(spec)
    code = 0
    try:
        from bot.logs.setup import setup_from_config

        setup_from_config(cfg, console=False)
        out: dict[str, Any] = {"ok": True, **run_retrain(spec)}
    except MemoryError:
        out, code = {"ok": False, "error": f"out of memory (limit daemon.retrain_memory_mb={spec.memory_mb} MB)"}, 1
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which keeps the champion
        out, code = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}, 1
    try:
        tmp = result_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, default=str)
        os.replace(tmp, result_path)
    except BaseException:  # noqa: BLE001 - nothing to report with; the exit code says it
        code = code or 1
    os._exit(code)  # no atexit work (thread pools, OpenMP) that could hang the exit


def run_retrain(spec: RetrainSpec) -> dict[str, Any]:
    """Train the challenger, judge it against the champion, record it (see the module docstring)."""
    import shutil

    from bot.history.sources import StoreCandleSource
    from bot.training.job import TrainJob, _record, train_and_write
    from models.bundle.champion import Margins, holdout_window, judge
    from models.bundle.directory import BundleError, load_bundle
    from models.progress import LogProgress

    t0 = time.monotonic()
    job = TrainJob(settings=spec.settings, symbols=spec.symbols, models_dir=spec.models_dir, dsn=spec.dsn, record=False,
                   optuna=False, cache_dir=spec.cache_dir, work_root=spec.work_root, code_version=spec.code_version)  # fmt: skip
    from bot.training.job import settings_from

    settings = settings_from(spec.settings)
    embargo = settings.train.embargo_bars * MINUTE_MS
    train_end, w0, w1 = holdout_window(spec.end_ms, spec.eval_days, embargo)
    job.end_ms = train_end
    source = StoreCandleSource.connect(spec.dsn or "")
    if spec.work_root:
        Path(spec.work_root).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="judge-", dir=spec.work_root))
    try:
        out = train_and_write(job, source, LogProgress())
        challenger = load_bundle(out.path, threads=settings.train.n_threads)
        champion = None
        if spec.champion_path:
            try:
                champion = load_bundle(spec.champion_path, threads=settings.train.n_threads)
            except BundleError as e:
                log.warning("retrain_champion_unreadable", error=str(e)[:300])
        verdict = judge(source, challenger, champion, (w0, w1), Margins(**spec.margins), costs=settings.costs,
                        embargo_ms=embargo, work_dir=scratch)  # fmt: skip
    finally:
        source.close()
        shutil.rmtree(scratch, ignore_errors=True)
    out.status = "candidate" if verdict.promote else "rejected"
    out.metrics = {**out.metrics, "reason": verdict.reason, "champion_challenger": verdict.to_dict()}
    if spec.dsn:
        import asyncio as _asyncio

        _asyncio.run(_record(spec.dsn, out))
    return {"version": out.version, "path": str(out.path), "promote": verdict.promote, "reason": verdict.reason,
            "verdict": verdict.to_dict(), "train_window": [out.start, out.end], "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip


# --- in the parent -------------------------------------------------------------------------


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"killed by {name}" + (" (kill -9 or the kernel's OOM killer)" if -code == signal.SIGKILL else "")
    return f"exited with status {code}"


async def run_retrain_in_child(cfg: Config, spec: RetrainSpec, *, timeout_s: float,
                               on_start: Any = None, stop: asyncio.Event | None = None) -> RetrainResult:  # fmt: skip
    """Start the training process, await it without blocking the loop, read its result.

    Killed (and reported) after `timeout_s`, or when `stop` is set (the daemon is stopping)."""
    ctx = multiprocessing.get_context("spawn")
    fd, result_path = tempfile.mkstemp(prefix="retrain-", suffix=".json")
    os.close(fd)
    os.unlink(result_path)
    proc = ctx.Process(target=_child_entry, args=(cfg, spec, result_path, os.getpid()), name="retrain", daemon=True)
    t0 = time.monotonic()
    proc.start()
    if on_start is not None:
        on_start(proc.pid)
    crashpoint.reached("during_retrain")  # test hook: the daemon dies while its trainer runs
    why: str | None = None
    try:
        while proc.exitcode is None:  # waitpid(WNOHANG): never blocks
            if time.monotonic() - t0 > timeout_s:
                why = f"time limit daemon.retrain_timeout_s={timeout_s:g} s exceeded: killed"
            elif stop is not None and stop.is_set():
                why = "daemon stopping: training abandoned"
            if why:
                proc.kill()
                await asyncio.to_thread(proc.join, 10)
                break
            await asyncio.sleep(0.25)
    except asyncio.CancelledError:
        proc.kill()
        raise
    secs = round(time.monotonic() - t0, 1)
    res = RetrainResult(ok=False, pid=proc.pid, seconds=secs)
    data: dict[str, Any] = {}
    if why is None and os.path.exists(result_path):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(Path(result_path).read_text())
    with contextlib.suppress(OSError):
        os.unlink(result_path)
    if why is not None:
        res.error = why
    elif not data:
        res.error = f"training process {_exit_reason(proc.exitcode)} without a result"
    elif not data.get("ok"):
        res.error = f"training process failed: {data.get('error')}"
    else:
        tw = data.get("train_window")
        res = RetrainResult(ok=True, version=data["version"], promote=bool(data["promote"]), reason=data["reason"],
                            verdict=data.get("verdict"), train_window=tuple(tw) if tw else None, pid=proc.pid,
                            seconds=secs, path=data["path"])  # fmt: skip
    return res


async def promote_checked(pool: Any, version: str, path: str, *, expect_champion: str | None, reason: str) -> str | None:
    """Verify the bundle files (loaded in a thread), then promote in one transaction. Returns
    why it was not promoted, or None."""
    from bot.store import daemon_lock
    from bot.store.model_versions import ModelVersionError, champion, promote
    from models.bundle.directory import BundleError, load_bundle

    try:
        await asyncio.to_thread(load_bundle, path)
    except BundleError as e:
        return f"bundle does not verify: {e}"
    cur = await champion(pool)
    if (cur.version if cur else None) != expect_champion:
        return f"the champion changed during training (now {cur.version if cur else 'none'})"
    try:
        prev = await promote(pool, version, daemon_lock.now_ms())
    except ModelVersionError as e:
        return str(e)
    log.info("model_promoted", version=version, previous=prev.version if prev else None, reason=reason, by="retrain",
             text=f"MODEL {version} promoted (was {prev.version if prev else 'none'}): {reason}")  # fmt: skip
    return None


async def retrain_once(cfg: Config, pool: Any, dsn: str, end_ms: int, *, on_start: Any = None,
                       stop: asyncio.Event | None = None) -> RetrainResult:  # fmt: skip
    """One whole retrain against the store at `dsn` (candles already there): child, judge,
    promote; logged as one human line (`retrain_done` / `retrain_failed`)."""
    from bot.store.model_versions import champion

    champ = await champion(pool)
    spec = spec_from_config(cfg, dsn, end_ms, champ.path if champ else None)
    log.info("retrain_start", end=fmt_ts(end_ms), champion=champ.version if champ else None,
             text=f"RETRAIN started on data up to {fmt_ts(end_ms)} (champion {champ.version if champ else 'none'})")  # fmt: skip
    res = await run_retrain_in_child(cfg, spec, timeout_s=cfg.daemon.retrain_timeout_s, on_start=on_start, stop=stop)
    if res.ok and res.promote:
        why_not = await promote_checked(pool, res.version or "", res.path or "", expect_champion=champ.version if champ else None,
                                        reason=res.reason)  # fmt: skip
        if why_not is None:
            res.promoted = True
        else:
            res.reason = why_not
            from bot.store.model_versions import set_status

            with contextlib.suppress(Exception):
                await set_status(pool, res.version or "", "rejected", reason=why_not)
    if res.ok:
        v = res.verdict or {}
        win = v.get("window") or {}
        ch, cp = v.get("challenger") or {}, v.get("champion") or {}
        log.info("retrain_done", version=res.version, status="champion" if res.promoted else "rejected",
                 window_start=win.get("start"), window_end=win.get("end"), pf=ch.get("profit_factor"),
                 expectancy=ch.get("expectancy"), trades=ch.get("trades"), champion_version=champ.version if champ else None,
                 champion_pf=cp.get("profit_factor"), champion_expectancy=cp.get("expectancy"), challenger=ch or None,
                 champion=cp or None, promoted=res.promoted, reason=res.reason, seconds=res.seconds,
                 text=res.line())  # fmt: skip
    else:
        log.error("retrain_failed", error=res.error, detail="the champion stays", pid=res.pid, seconds=res.seconds,
                  text=res.line())
    return res


class Retrainer:
    """The daemon's retrain schedule and the one retrain in flight (see the module docstring).

    `trader` is the `bot.live.trader.LiveTrader`: its store, stop event, last minute and backfill."""

    def __init__(self, trader: LiveTrader):
        self.trader = trader
        self.cfg = trader.cfg
        self.scheduler: Any = None
        self.task: asyncio.Task[Any] | None = None
        self.child_pid: int | None = None
        self.last: dict[str, Any] | None = None
        self.runs = 0

    def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger

        d = self.cfg.daemon
        self.scheduler = AsyncIOScheduler(timezone=dt.UTC)
        if d.retrain_cron.strip():
            self.scheduler.add_job(self._on_cron, CronTrigger.from_crontab(d.retrain_cron, timezone=dt.UTC), id="retrain",
                                   misfire_grace_time=d.retrain_misfire_grace_s, coalesce=True, max_instances=1)  # fmt: skip
        self.scheduler.start()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.run_now)
        nxt = self.next_run()
        log.info("retrain_scheduled", cron=d.retrain_cron, next_run=fmt_ts(nxt) if nxt else None,
                 text=f"RETRAIN schedule '{d.retrain_cron}' UTC, next {fmt_ts(nxt) if nxt else 'never'}")  # fmt: skip

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    def next_run(self) -> int | None:
        job = self.scheduler.get_job("retrain") if self.scheduler is not None else None
        t = getattr(job, "next_run_time", None)
        return None if t is None else int(t.timestamp() * 1000)

    def details(self) -> dict[str, Any]:
        """For the daemon_status row (`bot status` / `bot db status`)."""
        nxt = self.next_run()
        return {"retrain_next_run": fmt_ts(nxt) if nxt else None, "retrain_running": self.running,
                "retrain_child_pid": self.child_pid if self.running else None, "retrain_last": self.last}  # fmt: skip

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def _on_cron(self) -> None:
        """The cron job. A coroutine function on purpose: `AsyncIOScheduler` runs those on the
        daemon's event loop, but a plain function in a worker thread, where `run_now` finds no
        running loop and the scheduled retrain never started (only SIGUSR1 did; found by the
        week-long reliability run)."""
        self.run_now()

    def run_now(self) -> bool:
        """Start a retrain unless one runs (False then)."""
        if self.running:
            log.info("retrain_busy", text="RETRAIN already running: trigger ignored")
            return False
        self.task = asyncio.get_running_loop().create_task(self._run(), name="retrain")
        return True

    async def _run(self) -> None:
        tr = self.trader
        try:
            # the store's candles (kept current by the feed) up to the last closed, processed minute
            end = (tr.last_minute or 0) + MINUTE_MS

            def started(pid: int) -> None:
                self.child_pid = pid
                log.info("retrain_child", pid=pid, text=f"RETRAIN training process pid {pid}")

            res = await retrain_once(self.cfg, tr.store.pool, tr.store.dsn, end, on_start=started, stop=tr.stop)
            self.runs += 1
            self.last = {"at": fmt_ts(int(time.time() * 1000)), "ok": res.ok, "version": res.version,
                         "promoted": res.promoted, "reason": res.reason if res.ok else res.error, "seconds": res.seconds}  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed retrain never ends the daemon
            self.last = {"at": fmt_ts(int(time.time() * 1000)), "ok": False, "reason": f"{type(e).__name__}: {e}"[:300]}
            log.error("retrain_failed", error=f"{type(e).__name__}: {str(e)[:300]}", detail="the champion stays",
                      text=f"RETRAIN failed: {type(e).__name__}: {str(e)[:200]}; the champion stays")  # fmt: skip
        finally:
            with contextlib.suppress(Exception):
                await tr._heartbeat()
