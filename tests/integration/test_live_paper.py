"""`bot run` in paper mode against the exchange simulator replaying real candles of the 30
symbols (fast clock), with a real Postgres and a real bundle:
- trade-by-trade parity with `bot backtest` over the same minutes and bundle;
- `kill -9` mid-run with open positions, restart: positions and cash equal the store, no
  decision executed twice, no minute lost, and the trades still equal the backtest's.
The no-edge floor is lowered in the tests' own config so that the small bundle trades."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from models.timeutil import DAY_MS, MINUTE_MS, fmt_ts
from tests.support.paper_daemon import (
    SPEED,
    Daemon,
    assert_backtest_parity,
    assert_books_consistent,
    assert_human_lines,
    bot_status,
    daemon_status,
    free_port,
    http_get,
    live_trades,
    minutes_with_candles,
    promote_bundle,
    run_until,
    store_books,
    window,
    write_config,
)

pytestmark = pytest.mark.slow



async def test_paper_run_gives_the_backtests_trades(db_dsn, book30, bundle_path, tmp_path) -> None:
    start, end, horizon = window(bundle_path, 6)
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    await promote_bundle(db_dsn, bundle_path)
    port = free_port()
    cfg = write_config(tmp_path, db_dsn, sim, dashboard_port=port)
    d = Daemon(cfg, tmp_path, db_dsn)
    try:
        await d.start()
        ready = await d.wait_event("engine_ready")
        assert "WATCH ONLY" not in ready["text"]
        warm = await d.wait_event("warm_up_done")
        assert warm["symbols"] == 30 and warm["minutes"] >= 7_000
        assert warm["anchor"] == fmt_ts(start - MINUTE_MS)  # steps start at `start`, as the backtest's
        await run_until(sim, end)
        await d.wait_minute(end - MINUTE_MS)
        for _ in range(100):  # the heartbeat (every 5 s) catches up with the last minute
            status = await daemon_status(db_dsn)
            if status["last_minute_ts"] >= end - MINUTE_MS:
                break
            await asyncio.sleep(0.2)
        assert status["running"] and status["pid"] == d.proc.pid and status["last_minute_ts"] >= end - MINUTE_MS
        assert status["details"]["minutes_processed"] >= 300 and status["details"]["rss_mb"] > 0
        metrics = await http_get(f"http://127.0.0.1:{port}/metrics")  # the dashboard's figures, fed by the loop
        steps = float(re.search(r"^bot_steps_total (\S+)$", metrics, re.M).group(1))
        assert steps >= 300, metrics[:2000]
        assert status["watch_only"] is False and status["model_version"] == json.loads(
            (bundle_path / "manifest.json").read_text())["version"]
        # `bot status` from another process while the daemon runs
        rc, out = await bot_status(cfg, "--json")
        st = json.loads(out)
        assert rc == 0 and st["daemon"]["running"] and st["daemon"]["pid"] == d.proc.pid and st["mode"] == "paper" and st["trading"]
        assert st["model"]["version"] == status["model_version"] and st["model"]["in_use"]
        assert st["model"]["validated_pf"] == pytest.approx(json.loads((bundle_path / "manifest.json").read_text())[
            "walk_forward"]["all"]["overall"]["profit_factor"])
        assert st["clock"]["last_minute_ts"] >= end - MINUTE_MS and st["clock"]["source"] == "engine"
        assert st["account"]["equity"] > 0
        # today = the UTC day of the last processed minute: its closed trades and realised P&L as the store has them
        day0 = st["clock"]["last_minute_ts"] - st["clock"]["last_minute_ts"] % DAY_MS
        conn = await asyncpg.connect(db_dsn)
        try:
            closed = await conn.fetchrow("SELECT count(*) AS n, coalesce(sum(pnl), 0) AS pnl FROM positions "
                                         "WHERE mode = 'paper' AND status = 'closed' AND exit_ts >= $1", day0)  # fmt: skip
        finally:
            await conn.close()
        assert st["today"]["start_ts"] == day0 and st["today"]["trades_closed"] == closed["n"] > 0
        assert abs(st["today"]["realised"] - closed["pnl"]) < 1e-6
        assert len(st["feed"]) == 30 and all(v["last_candle_ts"] is not None for v in st["feed"].values())
        assert all(v["health"] == "ok" for v in st["feed"].values())  # on the exchange clock: none is behind the engine
        assert st["kill_switch"]["tripped"] is None and st["retrain_next"]
        books = await store_books(db_dsn)
        assert sorted(p["symbol"] for p in st["positions"]) == sorted(r["symbol"] for r in books["open"])
        assert all(p["unrealised"] is not None and 0 < p["held_s"] < 2 * 86_400 for p in st["positions"])
        # the dashboard of the running daemon at the same moment (the simulator's clock is held): the same figures
        page = json.loads(await http_get(f"http://127.0.0.1:{port}/api/state"))
        assert page["status"]["last_minute_ts"] == st["clock"]["last_minute_ts"]
        assert page["account"]["today_pnl"] == pytest.approx(st["today"]["pnl"])
        assert page["account"]["equity"] == pytest.approx(st["account"]["equity"])
        assert sorted(p["symbol"] for p in page["positions"]) == sorted(p["symbol"] for p in st["positions"])
        assert page["equity"]["ts"] and page["equity"]["ts"][-1] == st["clock"]["last_minute_ts"]
        rc, text = await bot_status(cfg)
        assert rc == 0 and text.startswith("daemon: RUNNING paper") and "state:  trading" in text, text
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    status = await daemon_status(db_dsn)
    assert not status["running"] and status["stopped_ts"] is not None
    rc, text = await bot_status(cfg)
    assert rc == 3 and text.startswith("daemon: NOT RUNNING"), text
    assert_human_lines(tmp_path / "logs" / "bot.log", await live_trades(db_dsn))
    assert_books_consistent(await store_books(db_dsn))
    loaded = next(e for e in d.events() if e["event"] == "model_loaded")
    print(f"warm-up: {warm['seconds']} s ({warm['read_s']} s reading the store), RSS after loading the bundle "
          f"{loaded['rss_mb']} MB, after warm-up {warm['rss_mb']} MB; event-loop lag max during warm-up "
          f"{warm['loop_lag_max_ms']} ms, over the run {status['details']['loop_lag_run_max_ms']} ms, in the last "
          f"heartbeat window while streaming {status['details']['loop_lag_max_ms']} ms; "
          f"step p50/p99 {status['details'].get('step_ms_p50')}/{status['details'].get('step_ms_p99')} ms")
    await assert_backtest_parity(db_dsn, cfg, bundle_path, start, end, tmp_path / "bt")
    # Every minute with a candle was stepped once, and equity recorded for it.
    conn = await asyncpg.connect(db_dsn)
    try:
        eq = [r["ts"] for r in await conn.fetch("SELECT ts FROM equity_snapshots WHERE mode = 'paper' AND ts < $1 ORDER BY ts", end)]
    finally:
        await conn.close()
    assert eq == sorted(minutes_with_candles(book30, start, end))






# The protections at settings that trip on this run (checked below, in both): the stop-loss guard
# per symbol, the low-profit lock and the drawdown lookback (risk/protections.py).
PROTECTIONS = {
    "stop_loss_guard": {"stop_losses": 3, "window_minutes": 60, "pause_minutes": 30, "scope": "symbol"},
    "low_profit_lock": {"max_loss": 0.006, "trades": 2, "lock_minutes": 60},
    "drawdown_lookback": {"max_drawdown": 0.003, "hours": 2, "pause_minutes": 30},
}


async def test_paper_run_with_the_protections_on_gives_the_backtests_trades(db_dsn, book30, bundle_path, tmp_path) -> None:
    """The same parity with every protection switched on: fed by the daemon's own closed trades
    and equity exactly as by the backtest's, each trips, and the trades are still equal."""
    from risk.reasons import PROTECTION_LABELS

    start, end, horizon = window(bundle_path, 6)
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    await promote_bundle(db_dsn, bundle_path)
    cfg = write_config(tmp_path, db_dsn, sim, risk=PROTECTIONS)
    d = Daemon(cfg, tmp_path, db_dsn)
    try:
        await d.start()
        await d.wait_event("engine_ready")
        await run_until(sim, end)
        await d.wait_minute(end - MINUTE_MS)
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    assert_books_consistent(await store_books(db_dsn))
    want = await assert_backtest_parity(db_dsn, cfg, bundle_path, start, end, tmp_path / "bt")
    # each protection tripped, and skipped the same candidates in both (the backtest decides no
    # entry in its last horizon: `end_of_window` comes before the risk manager's reasons)
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = await conn.fetch("SELECT reason, count(*) AS n FROM decisions WHERE mode = 'paper' AND action = 'skip' "
                                "AND reason = ANY($1::text[]) AND ts < $2 GROUP BY reason", list(PROTECTION_LABELS),
                                end - horizon)  # fmt: skip
    finally:
        await conn.close()
    live = {r["reason"]: int(r["n"]) for r in rows}
    counts = json.loads((tmp_path / "bt" / "metrics.json").read_text())["skips"]["counts"]
    backtest = {k: int(counts.get(k, 0)) for k in PROTECTION_LABELS}
    assert all(backtest[k] >= 20 for k in PROTECTION_LABELS), backtest
    assert live == backtest
    # each trip said once as it started (a line per block), each end as it ended
    events = d.events()
    trips = [e for e in events if e["event"] == "protection"]
    assert {e["protection"] for e in trips} == set(PROTECTION_LABELS), [e["protection"] for e in trips]
    human = (tmp_path / "logs" / "bot.log").read_text()
    assert human.count(" PROTECTION ") >= len(trips) > 0
    assert any(e["event"] == "protection_cleared" for e in events)
    print(f"protections: {len(want)} trades, skips {backtest} in both, {len(trips)} trips said")


async def test_kill_9_mid_run_then_restart_loses_nothing_and_repeats_nothing(db_dsn, book30, bundle_path, tmp_path) -> None:
    start, end, horizon = window(bundle_path, 6)
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    await promote_bundle(db_dsn, bundle_path)
    cfg = write_config(tmp_path, db_dsn, sim)
    d = Daemon(cfg, tmp_path, db_dsn)
    try:
        await d.start()
        await d.wait_event("engine_ready")
        sim.clock.set(speed=SPEED)
        # Kill -9 once it has traded for a while and holds at least two positions.
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "never held two positions"
            b = await store_books(db_dsn) if await d.last_minute() is not None else None
            if b is not None and len(b["open"]) >= 2 and b["last"] >= start + 90 * MINUTE_MS:
                break
            await asyncio.sleep(0.1)
        await d.kill9()
        killed_at = sim.clock.now_ms()
        before = await store_books(db_dsn)
        assert len(before["open"]) >= 2 and before["last"] < end - horizon
        assert_books_consistent(before)
        # Restart while the exchange goes on: the minutes missed are caught up by REST.
        n = len(d.events())
        await d.start()
        restored = await d.wait_event("state_restored", after=n)
        assert restored["cash"] == before["cash"]
        assert restored["symbols"] == sorted(p["symbol"] for p in before["open"])
        assert restored["last_minute"] == fmt_ts(before["last"])
        await run_until(sim, end)
        await d.wait_minute(end - MINUTE_MS)
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    assert killed_at < end
    after = await store_books(db_dsn)
    assert_books_consistent(after)
    # No minute lost or stepped twice across the kill.
    conn = await asyncpg.connect(db_dsn)
    try:
        eq = [r["ts"] for r in await conn.fetch("SELECT ts FROM equity_snapshots WHERE mode = 'paper' AND ts < $1 ORDER BY ts", end)]
    finally:
        await conn.close()
    assert eq == sorted(minutes_with_candles(book30, start, end))
    # And the trades are still the uninterrupted backtest's.
    await assert_backtest_parity(db_dsn, cfg, bundle_path, start, end, tmp_path / "bt")


async def test_watch_only_is_said_at_start_and_in_the_status_row(db_dsn, book30, bundle_path, tmp_path) -> None:
    """With the default no-edge floor the small bundle does not qualify: it watches only."""
    start, end, _ = window(bundle_path, 1)
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    version = await promote_bundle(db_dsn, bundle_path)
    d = Daemon(write_config(tmp_path, db_dsn, sim, floor=True), tmp_path, db_dsn)
    try:
        await d.start()
        watch = await d.wait_event("watch_only")
        assert watch["text"].startswith(f"WATCH ONLY: model {version} has no validated edge"), watch["text"]
        await run_until(sim, end)
        await d.wait_minute(end - MINUTE_MS)
        status = await daemon_status(db_dsn)
        assert status["running"] and status["watch_only"] is True and status["watch_reason"] == watch["reason"]
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    conn = await asyncpg.connect(db_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM orders") == 0
        skipped = await conn.fetchval("SELECT count(*) FROM decisions WHERE action = 'skip' AND reason = 'watch_only'")
    finally:
        await conn.close()
    assert skipped > 0  # it still decides, and records why it did not enter


async def test_no_model_the_daemon_backfills_trains_promotes_and_runs(db_dsn, book30, tmp_path) -> None:
    """A fresh store: `bot run` says there is no model, backfills the training history, trains
    the first bundle in a spawned process (its progress lines in the daemon's log), promotes it
    (the floor is lowered in this config: the small bundle must clear it) and starts the engine
    with it. The features' reference symbol (BTCUSDT) is not traded here: its history is
    backfilled too, and the engine streams it as a feature-only row."""
    from tests.support.engine import APR2, SYMBOLS

    now = APR2 + 12 * 86_400_000
    traded = [s for s in SYMBOLS if s != "BTCUSDT"]
    sim = ExchangeSimulator(CandleBook({s: book30.candles[s] for s in SYMBOLS}), SimSettings(speed=0, start_ms=now))
    await sim.start()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": traded, "database": {"dsn": db_dsn},
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0},
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "retry_base_s": 0.1, "retry_max_s": 1.0},
        "feed": {"backfill_days": 0},
        "train": {"history_days": 9, "threads": 1, "folds": 1, "fold_days": 2, "regime_fit_days": 3, "row_stride": 3,
                  "meta_min_samples": 30, "er_threshold": -0.002, "seed_metric_threshold": -0.002, "audit": False,
                  "meta_threshold": 0.45, "lightgbm": {"num_boost_round": 40, "min_data_in_leaf": 50},
                  "catboost": {"iterations": 25, "max_rows": 2000}},
        "paths": {"data_dir": str(tmp_path / "var"), "models_dir": str(tmp_path / "var" / "models"),
                  "logs_dir": str(tmp_path / "logs")},
        "logging": {"console": False},
    }))  # fmt: skip
    d = Daemon(cfg, tmp_path, db_dsn)
    try:
        await d.start()
        await d.wait_event("no_model")
        await d.wait_event("train_first_start")
        done = await d.wait_event("train_first_done", timeout=400)
        loaded = await d.wait_event("model_loaded")
        assert loaded["version"] == done["version"]
        await d.wait_event("engine_ready")
        started = await d.wait_event("daemon_start")
        assert started["symbols"] == len(traded) + 1  # + the reference, as a feature-only row
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    names = [e["event"] for e in d.events()]
    assert "train_prepared" in names  # the spawned trainer's own progress, in the daemon's log
    conn = await asyncpg.connect(db_dsn)
    try:
        champ = await conn.fetchrow("SELECT version, path FROM model_versions WHERE status = 'champion'")
        days = await conn.fetchval("SELECT (max(ts) - min(ts)) / 86400000.0 FROM candles WHERE symbol = 'BTCUSDT'")
    finally:
        await conn.close()
    assert champ["version"] == done["version"] and Path(champ["path"]).is_dir()
    assert days >= 9.9  # the training history of the (untraded) reference was backfilled by REST


@pytest.mark.parametrize("floor", [100.0, 0.0])
async def test_first_model_is_promoted_only_above_the_no_edge_floor(db_dsn, bundle_path, tmp_path, floor) -> None:
    """With no champion, the first trained bundle is promoted only when it clears the engine's
    no-edge floor (`validated_edge` on its walk-forward result). Below it, it is recorded as
    rejected with the reason, one warning line says so, and the daemon collects only. The
    small real bundle's own walk-forward result is what is judged, by the daemon's own step."""
    from bot.config import load_config
    from bot.live.trader import LiveTrader
    from bot.store.db import Store
    from bot.store.model_versions import get_model_version, record_model_version

    m = json.loads((bundle_path / "manifest.json").read_text())
    pf = float(m["walk_forward"]["all"]["overall"]["profit_factor"])
    assert 0.0 < pf < 100.0
    cfg_path = write_config(tmp_path, db_dsn, None)
    text = yaml.safe_load(cfg_path.read_text())
    text["trading"] = {"min_validation_pf": floor, "min_validation_trades": 0}
    cfg_path.write_text(yaml.safe_dump(text))
    cfg = load_config(cfg_path)
    store = await Store.connect(db_dsn, pool_min=1, pool_max=2)
    trader = LiveTrader(cfg, store, asyncio.Event())
    events: list[dict[str, Any]] = []
    try:
        await record_model_version(store.pool, version=m["version"], path=str(bundle_path), created_ts=1_700_000_000_000)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result({"version": m["version"], "status": "candidate", "walk_forward": m["walk_forward"]})
        import structlog

        with structlog.testing.capture_logs() as events:
            got = await trader._await_training(done, None)
        row = await get_model_version(store.pool, m["version"])
    finally:
        trader.worker.shutdown(wait=False)
        await store.close()
    names = [e["event"] for e in events]
    if floor > pf:
        assert got is None and row.status == "rejected", row
        assert "train_first_done" not in names
        (rej,) = [e for e in events if e["event"] == "train_first_rejected"]
        assert rej["log_level"] == "warning" and f"PF {pf:.2f} < {floor:.2f}" in rej["reason"]
        assert rej["text"].startswith(f"TRAIN first model {m['version']} not promoted: ") and "collecting candles only" in rej["text"]
        assert "no-edge floor" in row.metrics["reason"] and f"PF {pf:.2f}" in row.metrics["reason"]
    else:
        assert got is not None and got.version == m["version"] and row.status == "champion"
        assert "train_first_rejected" not in names and "train_first_done" in names


async def test_collect_only_daemon_starts_trading_when_a_model_is_promoted(db_dsn, book30, bundle_path, tmp_path) -> None:
    """No champion and --no-train: the daemon collects candles only, and watches the store.
    A model promoted from another shell (what `bot models promote` does) is picked up without
    a restart: the engine starts with it and scores the next minutes (`decisions`)."""
    start, end, _ = window(bundle_path, 0.5)
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    d = Daemon(write_config(tmp_path, db_dsn, sim), tmp_path, db_dsn)
    try:
        await d.start("--no-train")
        watch = await d.wait_event("watch_only")
        assert watch["reason"].startswith("no model")
        await d.wait_event("feed_ws_up")
        assert "model_loaded" not in [e["event"] for e in d.events()]
        version = await promote_bundle(db_dsn, bundle_path)
        done = await d.wait_event("collect_only_done", timeout=60)
        assert done["version"] == version and done["text"].startswith(f"MODEL {version} promoted: leaving collect-only")
        loaded = await d.wait_event("model_loaded")
        assert loaded["version"] == version
        await d.wait_event("engine_ready")
        await run_until(sim, end)
        await d.wait_minute(end - MINUTE_MS)
        assert d.proc.returncode is None  # the same process all along
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    conn = await asyncpg.connect(db_dsn)
    try:
        scored = await conn.fetchval("SELECT count(*) FROM decisions WHERE model_version = $1", version)
    finally:
        await conn.close()
    assert scored > 0
