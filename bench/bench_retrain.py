"""Retraining beside a trading loop: event-loop lag and memory, child process vs thread.

    python -m bench retrain            # records retrain.* and system.peak_rss_mb_retrain
    python -m bench.bench_retrain --quick   # 5 symbols, nothing recorded

Setup: an embedded Postgres (bot.store.embedded, the small-machine settings, durability on as
in production) holding the real 1m candles of the 30 symbols of ../shared/data/symbols30.txt
for `DAYS` days; this process plays the daemon: an asyncio loop that measures its own lag
(a 20 ms sleep, how late it wakes up), does a store round trip every second (the heartbeat)
and runs the real engine on the 30 symbols (a bundle from a first, unmeasured retrain; features
warmed from the store) stepping one stored minute every 0.5 s in a worker thread, as
`bot.live.trader` does. On it, the same retrain (now judged against that bundle as the champion) (`bot.training.retrain`: train the challenger on the
store's candles with the last `EVAL_DAYS` held out, then score it on them) runs twice:
1. in a spawned child, as the daemon does (`run_retrain_in_child`: nice 10, RLIMIT_AS,
   `training.threads`=1) -- `retrain.loop_lag_p99_ms`;
2. the baseline: the same `run_retrain` in a thread of the loop's own process
   (`asyncio.to_thread`) -- `retrain.loop_lag_baseline_p99_ms`.
Memory, sampled every 0.25 s during run 1: the loop process's RSS growth over its RSS before
the retrain (`retrain.daemon_rss_growth_mb`; baseline: the same growth in run 2, where the
training lives in the loop's process), and the RSS of the whole tree -- this process, its
training child and every process of the embedded Postgres cluster -- summed
(`system.peak_rss_mb_retrain`; a sum of RSS counts Postgres' shared buffers once per backend
that touched them, so it over- rather than under-states). Run 1 goes first so that the
baseline's imports cannot shrink its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.harness import figure, record, require_shared_data, symbols30

DAYS = 21
EVAL_DAYS = 2
START = 1_617_321_600_000  # 2021-04-02, the first day of ../shared/data
DAY_MS = 86_400_000


def config(home: Path, dsn: str, symbols: list[str], history_days: int) -> Any:
    from bot.config import Config

    return Config.model_validate({
        "symbols": symbols, "database": {"dsn": dsn},
        "train": {"history_days": history_days, "folds": 1, "fold_days": 3, "regime_fit_days": 5, "audit": False,
                  "optuna_trials": 0},
        "daemon": {"retrain_eval_days": EVAL_DAYS},
        "training": {"threads": 1, "memory_mb": 4096, "window_days": history_days},
        "paths": {"data_dir": str(home / "var"), "models_dir": str(home / "var" / "models"), "logs_dir": str(home / "logs")},
        "logging": {"console": False, "level": "warning"},
    })  # fmt: skip


class Sampler:
    """Loop lag (20 ms sleeps) and RSS of this process and of the whole tree."""

    def __init__(self, pg_dir: Path):
        self.pg_dir = pg_dir
        self.me = psutil.Process()
        self.lags: list[float] = []
        self.self_rss: list[float] = []
        self.tree_rss: list[float] = []

    def _pg_procs(self) -> list[psutil.Process]:
        try:
            pid = int((self.pg_dir / "postmaster.pid").read_text().split()[0])
            p = psutil.Process(pid)
            return [p, *p.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return []

    def rss_tree(self) -> float:
        total = 0
        for p in [self.me, *self.me.children(recursive=True), *self._pg_procs()]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    async def lag(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.02)
            self.lags.append((time.perf_counter() - t - 0.02) * 1000)

    async def memory(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.self_rss.append(self.me.memory_info().rss / 2**20)
            self.tree_rss.append(await asyncio.to_thread(self.rss_tree))
            await asyncio.sleep(0.25)

    @staticmethod
    async def heartbeat(pool: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await pool.fetchval("SELECT count(*) FROM model_versions")
            await asyncio.sleep(1.0)


class Trading:
    """The daemon's own work: the engine (a real bundle, 30 symbols, warmed from the store)
    stepping one stored minute every 0.5 s in a worker thread, as `bot.live.trader` does."""

    def __init__(self, engine: Any, minutes: np.ndarray, bars: np.ndarray):
        import concurrent.futures

        self.engine, self.minutes, self.bars, self.i = engine, minutes, bars, 0
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set() and self.i < len(self.minutes):
            await loop.run_in_executor(self.worker, self.engine.step, int(self.minutes[self.i]), self.bars[self.i])
            self.i += 1
            await asyncio.sleep(0.5)


async def build_trading(store: Any, cfg: Any, bundle_path: str, warm_to: int, end: int) -> Trading:
    from bot.engine import Engine
    from models.bundle.directory import load_bundle

    bundle = await asyncio.to_thread(load_bundle, bundle_path)
    c = cfg
    eng = Engine(c.symbols, bundle, trading=c.trading.model_copy(update={"min_validation_pf": 0.0,
                 "min_validation_trades": 0}), risk=c.risk, costs=c.costs, initial_equity=10_000.0)  # fmt: skip
    lo = warm_to - (eng.features.warmup + 1) * 60_000
    hist = {s: await store.read_candles(s, lo, warm_to, dtype=np.float64) for s in eng.symbols}
    await asyncio.to_thread(eng.warm_up, hist)
    minutes = np.arange(warm_to, end, 60_000, dtype=np.int64)
    bars = np.full((len(minutes), len(eng.symbols), 5), np.nan)
    for k, s in enumerate(eng.symbols):
        cs = await store.read_candles(s, warm_to, end, dtype=np.float64)
        pos = (cs.ts - warm_to) // 60_000
        for j, col in enumerate((cs.open, cs.high, cs.low, cs.close, cs.volume)):
            bars[pos, k, j] = col
    return Trading(eng, minutes, bars)


async def measure(pool: Any, pg_dir: Path, work: Any, trading: Trading) -> dict[str, float]:
    s = Sampler(pg_dir)
    base_self = s.me.memory_info().rss / 2**20
    base_tree = s.rss_tree()
    stop = asyncio.Event()
    i0 = trading.i
    tasks = [asyncio.create_task(s.lag(stop)), asyncio.create_task(s.memory(stop)),
             asyncio.create_task(Sampler.heartbeat(pool, stop)), asyncio.create_task(trading.run(stop))]  # fmt: skip
    t0 = time.monotonic()
    try:
        out = await work()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    lags = np.asarray(s.lags)
    return {"seconds": time.monotonic() - t0, "lag_p50": float(np.percentile(lags, 50)),
            "lag_p99": float(np.percentile(lags, 99)), "lag_max": float(lags.max()), "samples": len(lags),
            "self_before": base_self, "self_peak": max(s.self_rss), "tree_before": base_tree,
            "tree_peak": max(s.tree_rss), "steps": trading.i - i0, "result": out}  # fmt: skip


async def main_async(symbols: list[str], quick: bool) -> list[Any]:
    from bot.store.db import Store
    from bot.store.embedded import SMALL_MACHINE_SETTINGS, EmbeddedPostgres
    from bot.store.migrate import migrate
    from bot.training.retrain import run_retrain, run_retrain_in_child, spec_from_config
    from models.candles import candle_files, read_candles_csv

    data = require_shared_data()
    home = Path(tempfile.mkdtemp(prefix="bench-retrain-", dir="/tmp"))
    os.chmod(home, 0o755)
    pg = EmbeddedPostgres(home / "pgdata", dbname="bot")
    pg.start()
    try:
        store = await Store.connect(pg.dsn(), pool_min=1, pool_max=2)
        async with store.pool.acquire() as conn:
            await migrate(conn)
        end = START + DAYS * DAY_MS
        files = candle_files(data, symbols)
        t0 = time.monotonic()
        for s in symbols:
            await store.write_candles(s, read_candles_csv(files[s]).between(START, end))
        print(f"imported {len(symbols)} symbols x {DAYS} days in {time.monotonic() - t0:.0f} s", flush=True)
        history = DAYS - EVAL_DAYS - 6  # what is left after the held-out days and the feature warm-up
        cfg = config(home, pg.dsn(), symbols, history)
        from bot.logs.setup import setup_from_config

        setup_from_config(cfg, console=False)
        spec = spec_from_config(cfg, pg.dsn(), end, None)
        load0 = os.getloadavg()

        async def in_child() -> Any:
            r = await run_retrain_in_child(cfg, spec, timeout_s=3 * 3600)
            assert r.ok, r.error
            return r

        async def in_thread() -> Any:
            spec.models_dir = str(home / "var" / "models-thread")
            return await asyncio.to_thread(run_retrain, spec)

        # the daemon's own bundle: a first retrain (not measured), then the engine trading on it
        first = await in_child()
        spec.champion_path = first.path
        trading = await build_trading(store, cfg, first.path, end - EVAL_DAYS * DAY_MS, end)
        print(f"engine ready: {len(trading.engine.symbols)} symbols, RSS {psutil.Process().memory_info().rss / 2**20:.0f} MB",
              flush=True)  # fmt: skip
        child = await measure(store.pool, pg.data_dir, in_child, trading)
        print({k: v for k, v in child.items() if k != "result"}, flush=True)
        thread = await measure(store.pool, pg.data_dir, in_thread, trading)
        print({k: v for k, v in thread.items() if k != "result"}, flush=True)
        load1 = os.getloadavg()
        await store.close()
    finally:
        pg.stop()
        shutil.rmtree(home, ignore_errors=True)
    pgs = ", ".join(f"{k}={SMALL_MACHINE_SETTINGS[k]}" for k in ("shared_buffers", "work_mem", "max_connections"))
    what = (f"real 1m candles, {len(symbols)} symbols x {DAYS} days of ../shared/data in an embedded Postgres ({pgs}); "
            f"retrain = train on {history} days (1 fold + final fit, no audit/Optuna, 1 thread) + judge on {EVAL_DAYS} days")  # fmt: skip
    note = (f"child {child['seconds']:.0f} s, thread {thread['seconds']:.0f} s; engine steps meanwhile "
            f"{child['steps']} / {thread['steps']}; loop lag max child {child['lag_max']:.0f} ms "
            f"/ thread {thread['lag_max']:.0f} ms; load average before {load0[0]:.1f}, after {load1[0]:.1f} "
            "(other helpers' tests on the same 2 cores)")  # fmt: skip
    if quick:
        return []
    return [
        figure("retrain.loop_lag_p99_ms", child["lag_p99"], "ms", data=what, baseline=thread["lag_p99"],
               higher_is_better=False, note="target <= 50 ms; baseline = the same retrain in a thread of the loop's "
               "process; " + note),  # fmt: skip
        figure("retrain.loop_lag_baseline_p99_ms", thread["lag_p99"], "ms", data=what, note=note),
        figure("retrain.daemon_rss_growth_mb", child["self_peak"] - child["self_before"], "MB", data=what,
               baseline=thread["self_peak"] - thread["self_before"], higher_is_better=False,
               note="the loop process's peak RSS minus its RSS before; baseline = the growth when training in a thread"),  # fmt: skip
        figure("system.peak_rss_mb_retrain", child["tree_peak"], "MB", data=what,
               note=f"target <= 1536 MB; sum of RSS of the loop process, the training child and all Postgres processes "
                    f"(before the retrain: {child['tree_before']:.0f} MB)"),  # fmt: skip
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="5 symbols, nothing recorded")
    args = ap.parse_args()
    syms = symbols30()
    figs = asyncio.run(main_async(syms[:5] if args.quick else syms, args.quick))
    if figs:
        record(figs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
