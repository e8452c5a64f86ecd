"""A week, fast (issue 15): `bot run` in paper mode with a trading bundle and the retrain
schedule on, against the exchange simulator replaying 7 days of real 1m candles for 30
symbols at a fast clock (tests/support/week_run.py). Sampled every few simulated hours from outside the
process (/proc: RSS, fds, threads) and inside (/metrics: asyncio tasks; the heartbeat: queue
sizes), with every table's row count and the log directory's size. It must show:

- RSS at the end within 5 % of RSS after the warm-up;
- asyncio tasks, threads and open fds flat (the end equals the baseline up to a few; a retrain
  in flight briefly adds a child's pipes and a task);
- every in-memory queue within its configured bound;
- tables: `candles` grows by design (30 rows a minute, the history the trainer reads),
  `equity_snapshots` one row per stepped minute, `orders`/`fills`/`positions` with trades,
  `decisions` at most one row per symbol and minute; `engine_state` and `daemon_status` one row
  each, the engine state's size bounded; the log directory bounded by its rotation;
- the daemon keeps up: it is never more than a few simulated minutes behind the clock and
  catches up within seconds when the clock stops.

`make test` runs a few simulated hours (no retrain) with the same bounds; `make reliability` the
week, with at least one retrain (promoted, so a hot swap happens too) and records
`rss_growth_pct` (+ task/fd growth and the table) for docs/reliability.json.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.marketdata.feed import MAX_OUTBOX
from models.timeutil import DAY_MS
from tests.support.engine import APR2
from tests.support.reliability_figures import record
from tests.support.week_run import LOG_BACKUPS, LOG_MAX_MB, WeekResult, WeekSpec, run_week

START = APR2 + 11 * DAY_MS  # 2021-04-13 00:00 UTC: after the test bundle's training data (to 04-11)
QUEUE_BOUNDS = {"feed_queue": 256, "feed_outbox": MAX_OUTBOX + 100, "feed_persist_rows": 5_000 + 30,
                "feed_seq_pending": 30 * 20_000, "feed_rest_bad": 1_000, "feed_issues_kept": 20_000,
                "minutes_pending": 1440, "step_ms_samples": 10_000}  # fmt: skip


def check_bounds(res: WeekResult, *, retrains: bool) -> None:
    print("\n" + res.table())
    spec, base, end = res.spec, res.baseline, res.end
    n_sym = len(spec.symbols)
    print(f"wall {res.wall_s:.0f} s for {spec.minutes} simulated minutes at {spec.speed:g}x (start-up {res.startup_s:.0f} s, "
          f"catch-up after the clock stopped {res.catch_up_s:.1f} s); {res.minutes_stepped} minutes stepped, "
          f"{res.trades_opened} trades opened, step p99 {res.step_ms_p99} ms; retrains {len(res.retrains)}, swaps {res.swaps}; "
          f"RSS growth {res.rss_growth_pct():+.2f} %, tasks {res.growth('tasks'):+d}, fds {res.growth('fds'):+d}, "
          f"threads {res.growth('threads'):+d}")  # fmt: skip
    assert not res.errors, res.errors
    assert len(res.samples) >= 5
    # memory: the end within 5 % of the baseline taken after the warm-up
    assert res.rss_growth_pct() < 5.0, f"RSS {base.rss_mb:.1f} -> {end.rss_mb:.1f} MB"
    # tasks, threads, fds: flat (a retrain in flight briefly adds a child, its pipes and a task)
    assert base.tasks is not None and end.tasks is not None
    # One-off steps are allowed (the first retrain starts multiprocessing's resource tracker, a
    # pipe, and the store pool opens up to its 4 connections; a retrain still in flight at the
    # end holds a task and its child's sentinel), growth is not: the second half is flat.
    half = [s for s in res.after_warmup() if s.sim_ms >= (base.sim_ms + end.sim_ms) // 2]
    # (tasks also vary by what is in flight when /metrics is read: a query, a REST call, the request itself)
    for attr, step, band in (("tasks", 4, 4), ("threads", 2, 2), ("fds", 5, 2)):
        vals = [getattr(s, attr) for s in res.samples]
        assert getattr(end, attr) - getattr(base, attr) <= step and res.spread(attr) <= 8 + step, (attr, vals)
        assert max(getattr(s, attr) for s in half) - min(getattr(s, attr) for s in half) <= band, (attr, vals)
    # in-memory queues within their bounds, in every sample
    for s in res.samples:
        assert s.queues, "the heartbeat reports no queue sizes"
        for k, v in s.queues.items():
            assert v <= QUEUE_BOUNDS[k], (k, v, s.sim_ms)
    # tables: candles by design (the trainer's history), one equity row a minute, at most one
    # decision per symbol and minute, one engine_state / daemon_status row, bounded state
    stepped = (end.sim_ms - base.sim_ms) // 60_000
    assert res.run_candles == res.source_candles  # every minute of every symbol, once (candles grow by design)
    # one equity row per minute stepped (exact: the end is quiet; the clock may stop a few minutes past the end)
    assert end.rows["equity_snapshots"] == (end.sim_ms - spec.start_ms) // 60_000 + 1
    assert end.rows["decisions"] - base.rows["decisions"] <= stepped * n_sym
    keep_ms = int(spec.decisions_keep_days * DAY_MS)
    if spec.minutes * 60_000 > keep_ms + DAY_MS:  # the retention ran: no skip row older than it keeps
        assert res.oldest_skip_ms is not None and res.oldest_skip_ms >= end.sim_ms - keep_ms - DAY_MS, res.oldest_skip_ms
    assert end.rows["engine_state"] == 1 and end.rows["daemon_status"] == 1
    assert end.rows["model_versions"] <= 1 + len(res.retrains)
    assert max(s.state_bytes for s in res.samples) <= 64_000
    assert max(s.log_bytes for s in res.samples) <= 2 * (LOG_BACKUPS + 1) * LOG_MAX_MB * 2**20 * 1.05
    # keeping up: a few simulated minutes behind at most, and caught up within seconds
    per_s = spec.speed / 60  # simulated minutes per wall second
    assert max(s.lag_min for s in res.samples) <= max(5.0, 4 * per_s), [round(s.lag_min, 1) for s in res.samples]
    assert res.catch_up_s < 15
    assert res.minutes_stepped >= spec.minutes and res.trades_opened > 0
    if retrains:
        assert any(r["event"] == "retrain_done" for r in res.retrains), res.retrains
        assert res.swaps >= 1


@pytest.mark.reliability
async def test_a_few_hours_fast_stay_bounded(db_dsn: str, engine_bundle: object, tmp_path: Path) -> None:
    """The short variant: 6 simulated hours, 30 symbols, 1200x (30 s; in `make reliability`
    only, beside the week, to keep make test's share of this suite under 2 minutes)."""
    spec = WeekSpec(start_ms=START, minutes=6 * 60, speed=1200, sample_every_min=30, warmup_min=90)
    res = await run_week(spec, db_dsn, tmp_path, Path(engine_bundle.path))  # type: ignore[attr-defined]
    check_bounds(res, retrains=False)


@pytest.mark.reliability
@pytest.mark.slow
async def test_a_week_fast_stays_bounded(db_dsn: str, engine_bundle: object, tmp_path: Path) -> None:
    """7 simulated days, 30 symbols, the retrain schedule on (every 8 wall minutes)."""
    speed = float(os.environ.get("WEEK_SPEED", "600"))
    # all the history the data has before the week (11 days): the wall-clock cron may fire in
    # the week's first exchange hours, and a retrain's first fold then starts ~7 days back, which
    # needs its own 5.5 days of feature warm-up before it (with 8 days imported such a retrain
    # failed with "too few training rows": correct of the daemon, the champion stayed, but the
    # run is meant to go through retrains)
    spec = WeekSpec(start_ms=START, minutes=7 * 1440, speed=speed, sample_every_min=180, warmup_min=1440,
                    retrain_cron=os.environ.get("WEEK_RETRAIN_CRON", "*/8 * * * *"), history_days=11)  # fmt: skip
    res = await run_week(spec, db_dsn, tmp_path, Path(engine_bundle.path))  # type: ignore[attr-defined]
    base, end = res.baseline, res.end
    record("week", {
        "rss_growth_pct": res.rss_growth_pct(), "rss_mb": [base.rss_mb, end.rss_mb], "rss_peak_mb": max(s.hwm_mb for s in res.samples),
        "tasks": [base.tasks, end.tasks], "fds": [base.fds, end.fds], "threads": [base.threads, end.threads],
        "task_growth": res.growth("tasks"), "fd_growth": res.growth("fds"), "thread_growth": res.growth("threads"),
        "simulated_days": spec.minutes / 1440, "symbols": len(spec.symbols), "speed": spec.speed,
        "wall_s": round(res.wall_s), "startup_s": round(res.startup_s), "catch_up_s": round(res.catch_up_s, 1),
        "max_lag_min": round(max(s.lag_min for s in res.samples), 1), "minutes_stepped": res.minutes_stepped,
        "trades_opened": res.trades_opened, "step_ms_p99": res.step_ms_p99, "retrains": len(res.retrains),
        "swaps": res.swaps, "rows_start": base.rows, "rows_end": end.rows, "log_bytes_end": end.log_bytes,
        "table": res.table(),
    })  # fmt: skip
    check_bounds(res, retrains=True)


async def test_decisions_retention_deletes_old_skips_only(store: object) -> None:
    """`daemon.decisions_keep_days`: skip rows older than the cut go, entries and exits stay."""
    from bot.store.trading import TradingStore

    pool = store.pool  # type: ignore[attr-defined]
    t0 = START
    rows = [(t0 + i * DAY_MS // 4, m, "BTCUSDT", a, "r") for i in range(8) for m in ("paper", "live")
            for a in ("skip", "enter", "exit")]  # fmt: skip
    async with pool.acquire() as conn:
        await conn.executemany("INSERT INTO decisions (ts, mode, symbol, action, reason) VALUES ($1, $2, $3, $4, $5)", rows)
    cut = t0 + DAY_MS  # rows at t0, +6h, +12h, +18h are older
    assert await TradingStore(pool, "paper").prune_skips(cut) == 4
    async with pool.acquire() as conn:
        left = await conn.fetch("SELECT ts, mode, action FROM decisions")
    gone = {(int(r[0]), r[1], r[3]) for r in rows if r[3] == "skip" and r[1] == "paper" and r[0] < cut}
    assert {(int(r["ts"]), r["mode"], r["action"]) for r in left} == {(int(r[0]), r[1], r[3]) for r in rows} - gone
    assert await TradingStore(pool, "paper").prune_skips(cut) == 0  # idempotent


@pytest.mark.reliability
@pytest.mark.slow
async def test_how_fast_the_clock_can_run(db_dsn: str, engine_bundle: object, tmp_path: Path) -> None:
    """The clock doubles every few simulated hours (600x .. 9600x, 30 symbols, no retrain): at
    each speed, how far behind the exchange clock the daemon is (in wall seconds: simulated
    minutes behind / simulated minutes per second). It keeps up while that stays about one
    sample apart; the fastest such speed is recorded (`extra.week_keep_up`)."""
    ramp = [(0, 600.0), (180, 1200.0), (360, 2400.0), (720, 4800.0), (1440, 9600.0)]
    spec = WeekSpec(start_ms=START, minutes=2880, speed=600, sample_every_min=30, warmup_min=60, ramp=ramp)
    res = await run_week(spec, db_dsn, tmp_path, Path(engine_bundle.path))  # type: ignore[attr-defined]
    print("\n" + res.table())
    phases = {}
    for v in sorted({s.speed for s in res.samples if s.speed}):
        lags = [s.lag_min for s in res.samples if s.speed == v]
        phases[v] = {"samples": len(lags), "max_lag_min": round(max(lags), 1), "last_lag_min": round(lags[-1], 1),
                     "max_lag_wall_s": round(max(lags) / (v / 60), 2)}  # fmt: skip
    kept = [v for v, p in phases.items() if p["max_lag_wall_s"] <= 3.0]  # a growing backlog shows as seconds behind
    print("keep-up by speed:", phases, "catch-up", round(res.catch_up_s, 1), "s")
    record("week_keep_up", {"phases": {str(k): v for k, v in phases.items()}, "fastest_kept_up": max(kept) if kept else None,
                            "catch_up_s": round(res.catch_up_s, 1), "step_ms_p99": res.step_ms_p99})  # fmt: skip
    assert phases and 600.0 in kept, phases  # the speed the week runs at is kept up with
