"""A long unattended run, fast: `bot run` (paper, a trading bundle, the retrain schedule on)
against the exchange simulator replaying real candles of 30 symbols at a fast clock, sampled
every few simulated hours from outside the process (/proc/PID: VmRSS, fds, threads) and from
inside (the dashboard's /metrics: asyncio tasks; the heartbeat row: queue sizes), with the row
count of every table and the size of the log directory. Used by tests/reliability/test_week.py
(a week in `make reliability`, a few hours in `make test`).

The retrain schedule is APScheduler's cron on the *wall* clock (as in production, where wall
and exchange clock agree), so the run's cron is set in wall minutes (e.g. `*/8 * * * *`) for a
retrain to happen while the week replays.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, fmt_short
from tests.support.engine import APR2
from tests.support.paper_daemon import Daemon, promote_bundle
from tests.support.shared_data import DATA_DIR, symbols30

TABLES = ("candles", "orders", "fills", "positions", "equity_snapshots", "decisions", "model_versions", "engine_state",
          "daemon_status", "schema_migrations")  # fmt: skip
LOG_MAX_MB, LOG_BACKUPS = 2, 3  # small rotation in the run, so that a week shows it bounds the directory
DAEMON_NICE = 5  # as the unit's Nice=5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WeekSpec:
    start_ms: int  # first simulated minute of the run (the store holds history before it)
    minutes: int  # simulated length
    speed: float  # exchange minutes... per wall minute: 600 = 10 simulated minutes a second
    sample_every_min: int  # simulated minutes between samples
    warmup_min: int  # simulated minutes after which the baseline is taken
    retrain_cron: str = ""  # wall-clock cron (empty: no schedule)
    decisions_keep_days: float = 2.0  # the retention of skip decisions (the default is 30: a week would not show it)
    history_days: float = 8.0  # imported before the start (warm-up ~5.5 days; the retrain trains on the store)
    symbols: list[str] = field(default_factory=symbols30)
    ramp: list[tuple[int, float]] = field(default_factory=list)  # (simulated minute offset, speed from there on)


@dataclass
class Sample:
    sim_ms: int
    wall_s: float
    lag_min: float  # exchange clock minus the last minute the daemon persisted
    rss_mb: float  # /proc/PID/status VmRSS
    hwm_mb: float  # VmHWM (peak)
    fds: int  # /proc/PID/fd
    threads: int  # /proc/PID/status Threads
    tasks: int | None  # bot_asyncio_tasks from /metrics
    queues: dict[str, int]
    rows: dict[str, int]
    state_bytes: int  # engine_state.state length
    log_bytes: int
    children: int  # child processes (a retrain in flight)
    speed: float = 0.0  # the clock's speed when sampled


@dataclass
class WeekResult:
    spec: WeekSpec
    samples: list[Sample]
    baseline: Sample
    wall_s: float  # the replay itself (daemon start to the last minute processed)
    startup_s: float  # daemon start to engine ready
    catch_up_s: float  # after the clock stopped, until the daemon had processed the last minute
    retrains: list[dict[str, Any]]
    swaps: int
    minutes_stepped: int
    trades_opened: int
    step_ms_p99: float | None
    events: dict[str, int]
    errors: list[str]
    run_candles: int  # stored candles of the run's minutes, at the end
    source_candles: int  # the simulator's candles of those minutes (what the exchange served)
    oldest_skip_ms: int | None  # the oldest skip decision left at the end (retention)

    @property
    def end(self) -> Sample:
        return self.samples[-1]

    def after_warmup(self) -> list[Sample]:
        return [s for s in self.samples if s.sim_ms >= self.baseline.sim_ms]

    def rss_growth_pct(self) -> float:
        return round((self.end.rss_mb - self.baseline.rss_mb) / self.baseline.rss_mb * 100, 2)

    def growth(self, attr: str) -> int:
        return int(getattr(self.end, attr) - getattr(self.baseline, attr))

    def spread(self, attr: str) -> int:
        vals = [getattr(s, attr) for s in self.after_warmup() if getattr(s, attr) is not None]
        return int(max(vals) - min(vals))

    def table(self) -> str:
        head = (f"{'sim time':>11} {'wall s':>7} {'lag m':>6} {'RSS MB':>7} {'peak':>6} {'fds':>4} {'thr':>4} {'tasks':>5} "
                f"{'kids':>4} {'feedq':>6} {'candles':>9} {'orders':>6} {'posit.':>6} {'equity':>6} {'decis.':>7} "
                f"{'state B':>7} {'logs KB':>8}")  # fmt: skip
        out = [head]
        for s in self.samples:
            mark = " <- baseline" if s is self.baseline else ""
            out.append(f"{fmt_short(s.sim_ms):>11} {s.wall_s:7.0f} {s.lag_min:6.1f} {s.rss_mb:7.1f} {s.hwm_mb:6.0f} {s.fds:4d} "
                       f"{s.threads:4d} {s.tasks if s.tasks is not None else '-':>5} {s.children:4d} "
                       f"{sum(v for k, v in s.queues.items() if k.startswith('feed') or k == 'minutes_pending'):6d} {s.rows['candles']:9d} {s.rows['orders']:6d} {s.rows['positions']:6d} "
                       f"{s.rows['equity_snapshots']:6d} {s.rows['decisions']:7d} {s.state_bytes:7d} "
                       f"{s.log_bytes // 1024:8d}{mark}")  # fmt: skip
        return "\n".join(out)


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def children_of(pid: int) -> int:
    try:
        return len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return 0


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0


def write_config(home: Path, dsn: str, sim: ExchangeSimulator, spec: WeekSpec, dash_port: int) -> Path:
    cfg = home / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": spec.symbols, "database": {"dsn": dsn},
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "timeout_ms": 5000, "retry_base_s": 0.1, "retry_max_s": 1.0},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2, "stall_timeout_s": 5.0},
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0},  # the small bundle trades
        "risk": {"cooldown_after_stop_minutes": 0},
        "costs": {"fee_rate": 0.0, "slippage_bps": 0.0},  # the test bundle's (zero-cost) account
        # retraining small enough to finish in a minute or two on 1 thread (30 symbols, 6 days)
        "train": {"history_days": 6, "threads": 1, "folds": 1, "fold_days": 1.5, "regime_fit_days": 3, "row_stride": 5,
                  "meta_min_samples": 30, "er_threshold": -0.002, "seed_metric_threshold": -0.002, "audit": False,
                  "meta_threshold": 0.45, "lightgbm": {"num_boost_round": 40, "min_data_in_leaf": 50},
                  "catboost": {"iterations": 25, "max_rows": 2000}},
        # promoted whatever it scores, so the run also goes through a hot swap
        "training": {"threads": 1, "timeout_s": 1800, "window_days": 6},
        "daemon": {"retrain_cron": spec.retrain_cron, "retrain_eval_days": 1.0,
                   "promote_min_pf_gain": -1000.0, "promote_min_expectancy_gain": -1.0,
                   "promote_min_trades": 0, "decisions_keep_days": spec.decisions_keep_days},
        "paths": {"data_dir": str(home / "var"), "models_dir": str(home / "var" / "models"), "logs_dir": str(home / "logs")},
        "logging": {"console": False, "max_mb": LOG_MAX_MB, "backups": LOG_BACKUPS},
        "dashboard": {"enabled": True, "port": dash_port},
    }))  # fmt: skip
    return cfg


async def import_history(dsn: str, book: CandleBook, start: int, until: int) -> None:
    from bot.store.db import Store

    store = await Store.connect(dsn)
    try:
        for s in book.symbols:
            await store.write_candles(s, book.range(s, start, until - MINUTE_MS))
    finally:
        await store.close()


async def read_tasks(http: aiohttp.ClientSession, port: int) -> int | None:
    try:
        async with http.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    m = re.search(r"^bot_asyncio_tasks (\S+)$", text, re.M)
    return int(float(m.group(1))) if m else None


async def sample(conn: asyncpg.Connection, http: aiohttp.ClientSession, d: Daemon, sim: ExchangeSimulator, port: int,
                 home: Path, t0: float) -> Sample:  # fmt: skip
    pid = d.proc.pid  # type: ignore[union-attr]
    st = proc_status(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    es = await conn.fetchrow("SELECT last_minute_ts, length(state) AS n FROM engine_state WHERE mode = 'paper'")
    rows = {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}  # after: the feed runs ahead
    det = await conn.fetchval("SELECT details FROM daemon_status")
    det = json.loads(det) if isinstance(det, str) else (det or {})
    last = int(es["last_minute_ts"]) if es else 0
    return Sample(
        sim_ms=last, wall_s=time.monotonic() - t0, lag_min=(sim.clock.now_ms() - last) / MINUTE_MS,
        rss_mb=int(st["VmRSS"].split()[0]) / 1024, hwm_mb=int(st["VmHWM"].split()[0]) / 1024, fds=fds,
        threads=int(st["Threads"]), tasks=await read_tasks(http, port), queues=dict(det.get("queues") or {}), rows=rows,
        state_bytes=int(es["n"]) if es else 0, log_bytes=dir_bytes(home / "logs"), children=children_of(pid),
        speed=sim.clock.speed,
    )  # fmt: skip


def count_events(path: Path) -> tuple[dict[str, int], list[dict[str, Any]], list[str]]:
    """Event counts, the retrain results and every error line of the JSON log and its backups
    (rotation keeps the last LOG_BACKUPS files: a week's early lines may be gone)."""
    counts: dict[str, int] = {}
    retrains: list[dict[str, Any]] = []
    errors: list[str] = []
    for p in sorted(path.parent.glob(path.name + "*")):
        for line in p.read_text(errors="replace").splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            ev = e.get("event", "?")
            counts[ev] = counts.get(ev, 0) + 1
            if ev in ("retrain_done", "retrain_failed"):
                retrains.append(e)
            if e.get("level") in ("error", "critical") and "daemon stopping" not in str(e.get("error")):  # a retrain cut by the stop
                errors.append(f"{ev}: {e.get('text') or e.get('error') or ''}"[:300])
    return counts, retrains, errors


async def run_week(spec: WeekSpec, dsn: str, home: Path, bundle_dir: Path) -> WeekResult:
    book = CandleBook.from_directory(DATA_DIR, spec.symbols)
    end = spec.start_ms + spec.minutes * MINUTE_MS
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=spec.start_ms, update_interval_s=0.5))
    await sim.start()
    await import_history(dsn, book, max(APR2, spec.start_ms - int(spec.history_days * DAY_MS)), spec.start_ms)
    champ = home / "champion"
    shutil.copytree(bundle_dir, champ)
    await promote_bundle(dsn, champ)
    port = free_port()
    cfg = write_config(home, dsn, sim, spec, port)
    d = Daemon(cfg, home, dsn)
    conn = await asyncpg.connect(dsn)
    http = aiohttp.ClientSession()
    samples: list[Sample] = []
    try:
        t0 = time.monotonic()
        await d.start()
        os.setpriority(os.PRIO_PROCESS, d.proc.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + DAEMON_NICE))  # type: ignore[union-attr]
        await d.wait_event("engine_ready", timeout=300)
        startup_s = time.monotonic() - t0
        await d.wait_event("retrain_scheduled", timeout=60)
        t1 = time.monotonic()
        sim.clock.set(speed=spec.speed)
        nxt = spec.start_ms
        t_stop: float | None = None
        while True:
            last = await d.last_minute() or 0
            if d.proc.returncode is not None:  # type: ignore[union-attr]
                raise AssertionError(f"the daemon exited ({d.proc.returncode}) at {fmt_short(last)}:\n"  # type: ignore[union-attr]
                                     + (home / "stderr.txt").read_text()[-3000:])  # fmt: skip
            if t_stop is None and spec.ramp:
                off = (sim.clock.now_ms() - spec.start_ms) // MINUTE_MS
                want = [v for m, v in spec.ramp if off >= m][-1]
                if want != sim.clock.speed:
                    sim.clock.set(speed=want)
            if t_stop is None and sim.clock.now_ms() >= end:
                sim.clock.set(speed=0)  # the last minute has closed: hold the clock
                t_stop = time.monotonic()
            if last >= nxt:
                samples.append(await sample(conn, http, d, sim, port, home, t1))
                nxt = max(nxt + spec.sample_every_min * MINUTE_MS, last + MINUTE_MS)
            if last >= end - MINUTE_MS:
                break
            if t_stop is not None and time.monotonic() - t_stop > 300:
                raise AssertionError(f"the daemon did not catch up within 300 s of the clock stopping (at {fmt_short(last)})")
            await asyncio.sleep(0.25)
        catch_up_s = time.monotonic() - (t_stop or time.monotonic())
        wall_s = time.monotonic() - t1
        await asyncio.sleep(6)  # quiet (the clock stopped): one more heartbeat, the feed's last flush
        if samples[-1].sim_ms >= end - MINUTE_MS:
            samples.pop()
        samples.append(await sample(conn, http, d, sim, port, home, t1))
        oldest_skip = await conn.fetchval("SELECT min(ts) FROM decisions WHERE action = 'skip'")
        run_candles = int(await conn.fetchval("SELECT count(*) FROM candles WHERE ts >= $1 AND ts < $2", spec.start_ms, end))
        source_candles = sum(len(book.range(s, spec.start_ms, end - MINUTE_MS)) for s in book.symbols)
        assert await d.terminate() == 0
        det = json.loads(await conn.fetchval("SELECT details FROM daemon_status"))  # written at the stop
    finally:
        await http.close()
        await conn.close()
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
            await d.proc.wait()
        await sim.stop()
    counts, retrains, errors = count_events(home / "logs" / "bot.jsonl")
    base = next(s for s in samples if s.sim_ms >= spec.start_ms + spec.warmup_min * MINUTE_MS)
    return WeekResult(spec=spec, samples=samples, baseline=base, wall_s=wall_s, startup_s=startup_s, catch_up_s=catch_up_s,
                      retrains=retrains, swaps=counts.get("model_swapped", 0), minutes_stepped=int(det["minutes_processed"]),
                      trades_opened=int(det["trades_opened"]), step_ms_p99=det.get("step_ms_p99"), events=counts,
                      errors=errors, run_candles=run_candles, source_candles=source_candles,
                      oldest_skip_ms=None if oldest_skip is None else int(oldest_skip))  # fmt: skip


__all__ = ["HOUR_MS", "WeekResult", "WeekSpec", "run_week"]
