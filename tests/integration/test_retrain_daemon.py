"""The embedded trainer inside a running daemon: `bot run` in paper mode against the exchange
simulator replaying real candles (5 symbols of ../shared/data, fast clock), a real Postgres,
real LightGBM/CatBoost on a small config.

1. `bot retrain --now` asks the daemon (SIGUSR1) to retrain: the training runs in a spawned
   child while the loop keeps processing minutes; the challenger is judged against the
   champion (margins permissive in this config so that a non-degenerate challenger wins),
   promoted, and the very next minute is scored by the new version (`decisions.model_version`)
   with no restart and no lost minute.
2. A second retrain whose training process is killed (`kill -9`): the daemon reports the
   failure, keeps trading with the champion, and no minute is lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from models.timeutil import DAY_MS, MINUTE_MS
from tests.support.engine import APR2, SYMBOLS
from tests.support.paper_daemon import Daemon, daemon_status, minutes_with_candles, promote_bundle
from tests.support.shared_data import ROOT

pytestmark = pytest.mark.slow


def retrain_config(home: Path, dsn: str, sim: ExchangeSimulator, **daemon: object) -> Path:
    cfg = home / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": SYMBOLS, "database": {"dsn": dsn},
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "timeout_ms": 5000, "retry_base_s": 0.1, "retry_max_s": 1.0},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2, "stall_timeout_s": 5.0},
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0},
        "risk": {"cooldown_after_stop_minutes": 0},
        "costs": {"fee_rate": 0.0, "slippage_bps": 0.0},  # the engine test bundle's (zero-cost) account
        "train": {"history_days": 6, "threads": 1, "folds": 1, "fold_days": 1.5, "regime_fit_days": 3, "row_stride": 3,
                  "meta_min_samples": 30, "er_threshold": -0.002, "seed_metric_threshold": -0.002, "audit": False,
                  "meta_threshold": 0.45, "lightgbm": {"num_boost_round": 40, "min_data_in_leaf": 50},
                  "catboost": {"iterations": 25, "max_rows": 2000}},
        "training": {"threads": 1, "window_days": 6},  # the retrain's window (the store holds more)
        "daemon": {"retrain_cron": "0 3 * * 6", "retrain_eval_days": 1.0,
                   "promote_min_pf_gain": -1000.0, "promote_min_expectancy_gain": -1.0, "promote_min_trades": 0,
                   **daemon},
        "paths": {"data_dir": str(home / "var"), "models_dir": str(home / "var" / "models"), "logs_dir": str(home / "logs")},
        "logging": {"console": False},
    }))  # fmt: skip
    return cfg


async def import_history(dsn: str, book: CandleBook, until: int) -> None:
    from bot.store.db import Store

    store = await Store.connect(dsn)
    try:
        for s in book.symbols:
            await store.write_candles(s, book.range(s, APR2, until - MINUTE_MS))
    finally:
        await store.close()


def done_path(d: Daemon, version: str) -> str:
    return next(e["path"] for e in d.events() if e["event"] == "train_done" and e["version"] == version)


async def record_only(dsn: str, path: Path) -> None:
    from bot.store.model_versions import record_model_version

    m = json.loads((path / "manifest.json").read_text())
    conn = await asyncpg.connect(dsn)
    try:
        await record_model_version(conn, version=m["version"], path=str(path), created_ts=m["created_ts"],
                                   data_from_ts=m["data_from_ts"], data_to_ts=m["data_to_ts"], metrics={})  # fmt: skip
    finally:
        await conn.close()


async def wait_scored_by(dsn: str, version: str, after_ts: int, timeout: float = 120.0) -> None:
    """Until a minute after `after_ts` has a decision scored by `version`: decision rows exist
    only for minutes with candidates, so a version that ran for a few quiet minutes would leave
    no trace in `decisions` and the run-order check below would not see it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        rows = await fetch(dsn, "SELECT 1 FROM decisions WHERE mode = 'paper' AND action <> 'exit' AND model_version = $1 "
                                "AND ts > $2 LIMIT 1", version, after_ts)  # fmt: skip
        if rows:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no minute after {after_ts} was scored by {version} within {timeout:.0f} s")


async def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_retrain_in_a_running_daemon_promotes_and_hot_swaps_then_survives_a_killed_child(
    db_dsn, engine_bundle, tmp_path
) -> None:  # fmt: skip
    book = CandleBook.from_directory(ROOT.parent / "shared" / "data" / "candles_1m", SYMBOLS)
    start = APR2 + 13 * DAY_MS + 7 * 60 * MINUTE_MS
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    await import_history(db_dsn, book, start)  # a user's imported history (the retrain trains on the store)
    champ_dir = tmp_path / "champion"
    shutil.copytree(engine_bundle.path, champ_dir)
    champion = await promote_bundle(db_dsn, champ_dir)
    cfg = retrain_config(tmp_path, db_dsn, sim)
    d = Daemon(cfg, tmp_path, db_dsn)
    try:
        await d.start()
        await d.wait_event("engine_ready", timeout=300)
        sched = await d.wait_event("retrain_scheduled")
        assert sched["next_run"] and sched["next_run"].endswith("03:00")
        sim.clock.set(speed=300)  # five exchange minutes per second: minutes keep coming during the training
        await d.wait_minute(start + 2 * MINUTE_MS)

        # 1. `bot retrain --now` -> SIGUSR1 -> a training child; the loop keeps stepping
        n = len(d.events())
        cli = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot", "--config", str(cfg), "retrain", "--now"],
                                      cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert cli.returncode == 0 and "asked the daemon" in cli.stdout, cli.stdout + cli.stderr
        child = await d.wait_event("retrain_child", after=n, timeout=300)
        at_start = await d.last_minute()
        st = await daemon_status(db_dsn)
        done = await d.wait_event("retrain_done", after=n, timeout=900)
        at_done = await d.last_minute()
        assert at_done - at_start >= 10 * MINUTE_MS, "the loop did not keep processing minutes during the training"
        assert child["pid"] != d.proc.pid
        assert done["promoted"] is True, (done["reason"], done.get("challenger"))
        assert done["champion"]["version"] == champion and done["challenger"]["version"] == done["version"]
        assert "RETRAIN" in done["text"] and "PROMOTED" in done["text"] and done["reason"]
        assert 0 < done["rss_peak_mb"] < done["vm_peak_mb"] < 4096, done  # under training.memory_mb, measured in the child
        new = done["version"]
        swapped = await d.wait_event("model_swapped", after=n, timeout=120)
        # each training fits its own regime model; the feature config is the same: the buffers are
        # kept and only the regime filter is re-run under the new model (no warm-up from the store)
        assert swapped["version"] == new and swapped["previous"] == champion and swapped["features_rebuilt"] is False
        assert swapped["regime_refiltered"] is True and "features kept, regime refiltered" in swapped["text"]
        await d.wait_minute((await d.last_minute()) + 3 * MINUTE_MS)

        # 2. a second retrain, its training process killed with SIGKILL
        n = len(d.events())
        os.kill(d.proc.pid, signal.SIGUSR1)
        child2 = await d.wait_event("retrain_child", after=n, timeout=300)
        await asyncio.sleep(3)
        os.kill(child2["pid"], signal.SIGKILL)
        failed = await d.wait_event("retrain_failed", after=n, timeout=120)
        assert "SIGKILL" in failed["error"] and "champion stays" in failed["text"]
        after_kill = await d.last_minute()
        await d.wait_minute(after_kill + 5 * MINUTE_MS, timeout=120)  # it carries on
        for _ in range(50):  # the heartbeat reports the failure
            st = await daemon_status(db_dsn)
            if (st["details"].get("retrain_last") or {}).get("ok") is False:
                break
            await asyncio.sleep(0.2)
        assert st["details"]["retrain_last"]["ok"] is False and "SIGKILL" in st["details"]["retrain_last"]["reason"]
        assert st["details"]["retrain_next_run"] and st["model_version"] == new
        cli = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot", "--config", str(cfg), "db", "status"],
                                      cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        line = next(x for x in cli.stdout.splitlines() if "retrain:" in x)
        assert f"next {sched['next_run']} UTC" in line and "FAILED" in line and "SIGKILL" in line, cli.stdout

        # 3. by hand, from another shell: a bundle with the same features (feature buffers kept),
        #    then `bot models rollback`; both hot-swapped without a restart
        same_dir = tmp_path / "same-features"
        shutil.copytree(Path(done_path(d, new)), same_dir)
        m = json.loads((same_dir / "manifest.json").read_text())
        m["version"] = same = new + "-copy"
        (same_dir / "manifest.json").write_text(json.dumps(m))
        await record_only(db_dsn, same_dir)
        n = len(d.events())
        cli = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot", "--config", str(cfg), "models", "promote",
                                                       same], cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert cli.returncode == 0, cli.stdout + cli.stderr
        by_hand = await d.wait_event("model_swapped", after=n, timeout=120)
        assert by_hand["version"] == same and by_hand["features_rebuilt"] is False
        await wait_scored_by(db_dsn, same, by_hand["after_minute_ts"])
        n = len(d.events())
        cli = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot", "--config", str(cfg), "models", "rollback"],
                                      cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert cli.returncode == 0, cli.stdout + cli.stderr
        back = await d.wait_event("model_swapped", after=n, timeout=120)
        assert back["version"] == new and back["previous"] == same and back["features_rebuilt"] is False
        await wait_scored_by(db_dsn, new, back["after_minute_ts"])
        await d.wait_minute((await d.last_minute()) + 3 * MINUTE_MS)
        sim.clock.set(speed=0)
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()

    champ_row = await fetch(db_dsn, "SELECT version FROM model_versions WHERE status = 'champion'")
    assert [r["version"] for r in champ_row] == [new]  # the killed retrain changed nothing
    # entries and skips carry the version that scored the minute (an exit carries its position's)
    rows = await fetch(db_dsn, "SELECT ts, model_version FROM decisions WHERE mode = 'paper' AND action <> 'exit' ORDER BY ts")
    by_ts: dict[int, set[str]] = {}
    for r in rows:
        by_ts.setdefault(int(r["ts"]), set()).add(r["model_version"])
    assert all(len(v) == 1 for v in by_ts.values()), "a minute scored by two versions"
    versions = [next(iter(by_ts[t])) for t in sorted(by_ts)]
    runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
    assert runs == [champion, new, same, new], runs  # retrain, promote by hand, rollback; nothing else
    # each swap takes effect at the first minute after the one the daemon logged it after
    tss = sorted(by_ts)
    firsts = [tss[i] for i in range(1, len(tss)) if versions[i] != versions[i - 1]]
    assert firsts == [min(t for t in tss if t > e["after_minute_ts"]) for e in (swapped, by_hand, back)]
    # no lost minute: every minute with candles was stepped (equity recorded), across both retrains
    eq = [int(r["ts"]) for r in await fetch(db_dsn, "SELECT ts FROM equity_snapshots WHERE mode = 'paper' ORDER BY ts")]
    end = eq[-1]  # the last minute stepped before the stop (one may close while the clock is being stopped)
    assert end >= back["after_minute_ts"] + 3 * MINUTE_MS
    assert eq == sorted(minutes_with_candles(book, start, end + MINUTE_MS))
    mv = {r["version"]: r for r in await fetch(db_dsn, "SELECT version, status, metrics, data_from_ts, data_to_ts "
                                                       "FROM model_versions")}  # fmt: skip
    assert mv[new]["status"] == "champion" and mv[champion]["status"] == "retired"
    # trained on training.window_days (6) before the judging window, not on all the 13 days the store held
    span = (mv[new]["data_to_ts"] - mv[new]["data_from_ts"]) / DAY_MS
    assert 6 <= span < 7 and mv[new]["data_from_ts"] > APR2 + DAY_MS, span
    print(f"retrain: {done['seconds']} s in the child, {(at_done - at_start) // MINUTE_MS} minutes stepped meanwhile; "
          f"{done['text']}")  # fmt: skip


async def test_a_first_model_below_the_floor_then_a_retrain_that_clears_it_starts_the_engine(db_dsn, tmp_path) -> None:
    """No champion: the daemon's first training is judged by the engine's no-edge floor. Here
    the floor asks for more out-of-sample trades than the small run makes, so the first model
    is recorded as rejected and the daemon collects candles, with the retrain schedule on. A
    retrain (`bot retrain --now`) is judged with no champion by the retrain's own floor (PF
    and trade count of daemon.*, permissive here) and promoted; the collecting daemon picks it
    up without a restart and starts the engine, which says why it only watches."""
    book = CandleBook.from_directory(ROOT.parent / "shared" / "data" / "candles_1m", SYMBOLS)
    start = APR2 + 13 * DAY_MS + 7 * 60 * MINUTE_MS
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    await import_history(db_dsn, book, start)
    cfg = retrain_config(tmp_path, db_dsn, sim)
    text = yaml.safe_load(cfg.read_text())
    text["trading"]["min_validation_trades"] = 1_000_000
    cfg.write_text(yaml.safe_dump(text))
    d = Daemon(cfg, tmp_path, db_dsn)
    try:
        await d.start()
        rejected = await d.wait_event("train_first_rejected", timeout=600)
        assert "out-of-sample trades < 1000000" in rejected["reason"], rejected
        await d.wait_event("retrain_scheduled")
        sim.clock.set(speed=300)
        n = len(d.events())
        os.kill(d.proc.pid, signal.SIGUSR1)  # what `bot retrain --now` sends
        done = await d.wait_event("retrain_done", after=n, timeout=900)
        assert done["promoted"] is True and done["champion"] is None and done["reason"].startswith("first model: PF"), done
        picked = await d.wait_event("collect_only_done", after=n, timeout=60)
        assert picked["version"] == done["version"]
        loaded = await d.wait_event("model_loaded", after=n)
        assert loaded["version"] == done["version"]
        await d.wait_event("engine_ready", after=n)
        watch = await d.wait_event("watch_only", after=n)
        assert "out-of-sample trades < 1000000" in watch["reason"]  # the engine's own floor still applies
        last = await d.last_minute()
        for _ in range(600):  # None until the engine's first step is persisted (just after engine_ready)
            if last is not None:
                break
            await asyncio.sleep(0.1)
            last = await d.last_minute()
        assert last is not None, "the engine never stepped a minute"
        await d.wait_minute(last + 3 * MINUTE_MS)
        sim.clock.set(speed=0)
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    rows = {r["version"]: r for r in await fetch(db_dsn, "SELECT version, status, metrics FROM model_versions")}
    assert rows[rejected["version"]]["status"] == "rejected"
    assert "no-edge floor" in json.loads(rows[rejected["version"]]["metrics"])["reason"]
    assert rows[done["version"]]["status"] == "champion"
