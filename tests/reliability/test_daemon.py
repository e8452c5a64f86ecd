"""The whole daemon under faults and `kill -9` (issue 15): `bot run` as a real process, the
exchange simulator replaying real candles of the 30 symbols at a fast clock, real ccxt over
HTTP and websockets, a real Postgres, a real bundle that trades (the no-edge floor lowered in
the test's own config).

- Fault runs, paper and live: >= 200 injected faults of every kind the simulator has (candle
  faults of every kind, websocket drops, stalls and malformed frames, REST 429/418/5xx/
  timeouts/malformed bodies; in live mode every order fault too). The daemon never exits and
  writes no traceback, the candles table equals the source minute by minute for every symbol
  over the whole window, no decision becomes two orders, and the books agree (live: with the
  exchange after the final reconciliation; paper: positions and cash with the store's own
  fills). Every fault kind is printed with its count and outcome.
- Kill run, live: `kill -9` at random points, >= 10 times, one of them while a retrain's
  training process runs (started with `bot retrain --now`): after each restart the restored
  cash, positions and last minute equal what was persisted, the kill switch's day state
  survives, and at a quiet moment the store agrees with the exchange (positions, cash, open
  orders), with no manual step; the training process does not outlive the killed daemon.
The long runs are marked `reliability` (`make reliability`); `make test` runs the short
variant (fewer faults, two kills, a shorter window) and the two focused tests of the bugs these
runs found. Figures go to docs/reliability.json through tests/support/reliability_figures.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from bot.exchange_sim.faults import FEED_KINDS, ORDER_KINDS, Fault
from bot.exchange_sim.server import ExchangeSimulator
from models.timeutil import MINUTE_MS, fmt_ts
from tests.support import reliability_figures
from tests.support.daemon_faults import (
    candles_lost,
    engine_row,
    exchange_duplicates,
    fault_plan,
    fault_table,
    last_decision_ts,
    live_books_vs_exchange,
    print_fault_table,
    risk_consistent,
    store_duplicates,
    traceback_excerpts,
    tracebacks,
)
from tests.support.live_daemon import (
    FAKE_KEY,
    FAKE_SECRET,
    LiveDaemon,
    position_mismatches,
    sim_for,
    write_config,
)
from tests.support.paper_daemon import (
    ROOT,
    assert_books_consistent,
    promote_bundle,
    store_books,
    window,
)

pytestmark = pytest.mark.slow
SPEED = 120  # two exchange minutes per second

# A small training job (the kill run starts one and kills the daemon while it runs).
TRAIN = {"history_days": 2, "threads": 1, "folds": 1, "fold_days": 0.5, "regime_fit_days": 1, "row_stride": 3,
         "meta_min_samples": 30, "er_threshold": -0.002, "seed_metric_threshold": -0.002, "audit": False,
         "meta_threshold": 0.45, "lightgbm": {"num_boost_round": 40, "min_data_in_leaf": 50},
         "catboost": {"iterations": 25, "max_rows": 2000}}  # fmt: skip


def daemon_config(home: Path, dsn: str, sim: ExchangeSimulator, mode: str, *, retrain: bool = False) -> Path:
    cfg = write_config(home, dsn, sim, mode)
    data = yaml.safe_load(cfg.read_text())
    data["feed"]["stall_timeout_s"] = 2.0  # a stall is noticed after 4 exchange minutes at 120x
    if retrain:
        data["train"] = TRAIN
        data["daemon"] = {"retrain_cron": "0 3 * * 6", "retrain_eval_days": 0.5}
        data["training"] = {"threads": 1, "window_days": TRAIN["history_days"]}
    cfg.write_text(yaml.safe_dump(data))
    return cfg


class Run:
    """One daemon run against one simulator: start, restarts, kills, crash count."""

    def __init__(self, d: LiveDaemon, sim: ExchangeSimulator, dsn: str, mode: str):
        self.d, self.sim, self.dsn, self.mode = d, sim, dsn, mode
        self.crashes = 0
        self.kills = 0
        self.recovered = 0
        self.problems: list[str] = []
        self.started_at = 0  # index of the current process's first log event
        self.crash_points: list[dict[str, Any]] = []  # the daemon's own `crash_point` kills (BOT_CRASH_POINT)

    def exited(self) -> bool:
        return self.d.proc is not None and self.d.proc.returncode is not None

    async def restart_checked(self) -> None:
        """Start again after a kill (or a crash) and check the restart (see the module docstring)."""
        before = await engine_row(self.dsn, self.mode)
        sent_for = await last_decision_ts(self.dsn, self.mode)  # the dead process's last order minute
        n = len(self.d.events())
        self.d.env = {}  # a crash point is armed for one process only
        self.started_at = n
        await self.d.start()
        problems: list[str] = []
        if before is not None:
            restored = await self.d.wait_event("state_restored", after=n)
            held = sorted(p["symbol"] for p in before["state"]["positions"])
            if abs(restored["cash"] - before["cash"]) > 1e-6 or restored["symbols"] != held:
                problems.append(f"restored cash/positions {restored['cash']}/{restored['symbols']} != persisted {before['cash']}/{held}")
            if restored["last_minute"] != fmt_ts(before["last"]):
                problems.append(f"restored at {restored['last_minute']}, persisted {fmt_ts(before['last'])}")
        await self.d.wait_event("engine_ready", after=n)
        if self.mode == "live":
            await self.wait_any(("reconcile_done", "reconcile_deferred"), n)
        # Stepped two live minutes, and past every minute the dead process sent an order for: an
        # order decided in a step it never persisted is in the books only once the new engine
        # has decided that minute again (its own order then) or stepped past it (an orphan,
        # adopted after that step and waited for from the next one).
        settled = (await self.d.last_minute() or 0) + 2 * MINUTE_MS
        if sent_for is not None and before is not None and sent_for > before["last"]:
            settled = max(settled, sent_for + MINUTE_MS)
        await self.d.wait_minute(settled, timeout=120)
        # A quiet moment: the exchange clock held, and the daemon caught up with it (a restart
        # begins behind the exchange and steps the missed minutes in a burst: a step of that
        # burst sends its orders before it persists its minute, so a check in the middle of it
        # sees an exchange the store cannot show yet), then the answers in flight in.
        speed = self.sim.clock.speed
        self.sim.clock.set(speed=0)
        closed = self.sim.clock.now_ms() // MINUTE_MS * MINUTE_MS - MINUTE_MS
        try:
            await self.d.wait_minute(closed, timeout=90)
        except AssertionError as e:
            problems.append(f"never caught up with the held exchange clock: {e}")
        await asyncio.sleep(2.0)
        try:
            if self.mode == "live":
                mism = await position_mismatches(self.dsn, self.sim)
                books = await live_books_vs_exchange(self.dsn, self.sim)
                if mism:
                    problems.append(f"positions store vs exchange: {mism}")
                if books["cash_diff"] > 1.0 or books["open_unfollowed"]:
                    problems.append(f"books vs exchange: {books}")
            else:
                try:
                    assert_books_consistent(await store_books(self.dsn))
                except AssertionError as e:
                    problems.append(f"paper books: {e}")
            after = await engine_row(self.dsn, self.mode)
            if before is not None and after is not None:
                problems.extend(risk_consistent(before, after))
        finally:
            self.sim.clock.set(speed=speed)
        if problems:
            self.problems.append(f"restart {self.kills + self.crashes}: " + "; ".join(problems))
        else:
            self.recovered += 1

    async def wait_any(self, names: tuple[str, ...], after: int, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = next((e for e in self.d.events()[after:] if e["event"] in names), None)
            if ev is not None:
                return ev
            if self.exited():  # its last lines may have landed after the read above
                ev = next((e for e in self.d.events()[after:] if e["event"] in names), None)
                if ev is not None:
                    return ev
                break
            await asyncio.sleep(0.2)
        raise AssertionError(f"never saw {names}; stderr: {(self.d.home / 'stderr.txt').read_text()[-2000:]}")

    def crash_point_fired(self) -> dict[str, Any] | None:
        """The `crash_point` line of the current process, if it killed itself at its armed point."""
        return next((e for e in self.d.events()[self.started_at:] if e["event"] == "crash_point"), None)

    async def kill9(self) -> None:
        if self.exited():
            fired = self.crash_point_fired()
            if fired is not None:  # the armed BOT_CRASH_POINT: a kill -9 at that exact point
                self.crash_points.append({k: fired.get(k) for k in ("point", "client_order_id", "timestamp")})
                self.kills += 1
            else:
                self.crashes += 1
        else:
            await self.d.kill9()
            self.kills += 1
        await self.restart_checked()

    async def retrain_then_kill9(self, cfg: Path) -> dict[str, Any]:
        """`bot retrain --now`; kill -9 the daemon while the training process runs; the
        training process must die with it."""
        n = len(self.d.events())
        env = {**os.environ, "BOT_API_KEY": FAKE_KEY, "BOT_API_SECRET": FAKE_SECRET}  # a live config needs them
        cli = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot", "--config", str(cfg), "retrain", "--now"],
                                      cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
        assert cli.returncode == 0 and "asked the daemon" in cli.stdout, cli.stdout + cli.stderr
        child = await self.d.wait_event("retrain_child", after=n, timeout=120)
        await asyncio.sleep(1.5)
        pid = int(child["pid"])
        assert psutil.pid_exists(pid) and psutil.Process(pid).ppid() == self.d.proc.pid, "the training process is not running"
        await self.d.kill9()
        self.kills += 1
        gone = False
        for _ in range(50):
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                gone = True
                break
            await asyncio.sleep(0.1)
        if not gone:
            os.kill(pid, signal.SIGKILL)
        await self.restart_checked()
        return {"child_pid": pid, "child_died_with_daemon": gone}


async def daemon_run(mode: str, book: Any, bundle: Path, dsn: str, home: Path, *, hours: float, faults: dict[str, int],
                     kills: int, retrain_kill: bool, seed: int, crash_point: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One run of `bot run` in `mode` over `hours` of real candles with the planned faults and
    `kills` kill -9 restarts at random exchange times; returns the figures. `crash_point`
    (BOT_CRASH_POINT, e.g. `after_submit:entry`) is armed in the first process: it kills itself
    there (between an order's submission and the persisting of its answer), which counts as one
    more kill, and the processes after it run unarmed."""
    t0 = time.monotonic()
    start, end, _ = window(bundle, hours)
    rng = random.Random(seed)
    sim = sim_for(book, start)
    planned = fault_plan(start, end, **{**faults, "order": faults.get("order", 0) if mode == "live" else 0}, seed=seed)
    sim.add_faults(planned)
    await sim.start()
    await promote_bundle(dsn, bundle)
    cfg = daemon_config(home, dsn, sim, mode, retrain=retrain_kill)
    if retrain_kill:  # training history in the store for the retrain to read
        from tests.integration.test_retrain_daemon import import_history

        await import_history(dsn, book, start)
    d = LiveDaemon(cfg, home, dsn, mode, env={"BOT_CRASH_POINT": crash_point} if crash_point else None)
    run = Run(d, sim, dsn, mode)
    kill_at = sorted(rng.uniform(start + 15 * MINUTE_MS, end - 30 * MINUTE_MS) for _ in range(kills))
    retrain_at = kill_at.pop(len(kill_at) // 2) if retrain_kill and kill_at else None
    retrain: dict[str, Any] | None = None
    final = None
    try:
        await d.start()
        # an armed crash point may fire as soon as the first step sends an order
        ready = await run.wait_any(("engine_ready", "crash_point"), 0, timeout=300)
        if mode == "live" and ready["event"] != "crash_point":
            await run.wait_any(("reconcile_done", "crash_point"), 0)
        sim.clock.set(speed=SPEED)
        while sim.clock.now_ms() < end:
            now = sim.clock.now_ms()
            if run.exited():
                await run.kill9()  # counted as a crash, restarted
            elif retrain_at is not None and now >= retrain_at:
                retrain_at = None
                retrain = await run.retrain_then_kill9(cfg)
            elif kill_at and now >= kill_at[0]:
                kill_at.pop(0)
                await run.kill9()
            await asyncio.sleep(0.05)
        sim.clock.set(speed=0)
        await d.wait_minute(end - MINUTE_MS, timeout=300)
        if mode == "live":  # the last delayed fills, and a reconciliation with nothing in flight
            n = len(d.events())
            sim.clock.set(speed=30)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and final is None:
                final = next((e for e in d.events()[n:] if e["event"] == "reconcile_done"), None)
                await asyncio.sleep(0.2)
            sim.clock.set(speed=0)
            assert final is not None, "no complete reconciliation at the end"
            await asyncio.sleep(1.0)
        if run.exited():
            run.crashes += 1
        rc = await d.terminate()
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    events = d.events()
    table = fault_table(sim, events)
    lost = await candles_lost(dsn, book, start, end)
    if mode == "live":
        mism = await position_mismatches(dsn, sim)
        dups = exchange_duplicates(sim) + await store_duplicates(dsn, mode)
    else:
        mism = []
        try:
            assert_books_consistent(await store_books(dsn))
        except AssertionError as e:
            mism = [str(e)[:500]]
        dups = await store_duplicates(dsn, mode)
    trades = sum(1 for e in events if e.get("event") == "trade_close")
    out = {
        "mode": mode, "hours": hours, "symbols": len(book.symbols), "speed": SPEED,
        "faults_planned": len(planned), "faults_injected": sum(r["applied"] for r in table), "faults": table,
        "candles": lost, "candles_lost": lost["missing"] + lost["altered"] + lost["invented"],
        "duplicate_orders": dups, "position_mismatches": len(mism), "mismatch_detail": mism,
        "crashes": run.crashes, "tracebacks": tracebacks(home), "traceback_detail": traceback_excerpts(home), "exit_status": rc,
        "kills": run.kills, "kills_recovered": run.recovered, "restart_problems": run.problems, "retrain_kill": retrain,
        "crash_point_kills": run.crash_points,
        "orders_on_exchange": len(sim.account.orders) if mode == "live" else None, "closed_trade_lines": trades,
        "final_reconcile_mismatches": final["mismatches"] if final else None, "seconds": round(time.monotonic() - t0, 1),
    }  # fmt: skip
    print_fault_table(f"FAULT RUN {mode}: {hours} h x {len(book.symbols)} symbols at {SPEED}x, "
                      f"{out['faults_injected']} faults applied of {len(planned)} planned", table)  # fmt: skip
    print({k: v for k, v in out.items() if k != "faults"})
    return out


def assert_clean(fig: dict[str, Any], *, min_faults: int, kinds: tuple[str, ...]) -> None:
    applied = {r["kind"]: r["applied"] for r in fig["faults"]}
    assert fig["faults_injected"] >= min_faults, applied
    assert all(applied[k] >= 1 for k in kinds), {k: applied[k] for k in kinds}
    assert fig["crashes"] == 0 and fig["tracebacks"] == 0 and fig["exit_status"] == 0, (fig["traceback_detail"], fig)
    assert fig["candles_lost"] == 0 and fig["candles"]["rows"] >= 30 * 50, fig["candles"]
    assert fig["duplicate_orders"] == 0
    assert fig["position_mismatches"] == 0, fig["mismatch_detail"]
    assert fig["restart_problems"] == [] and fig["kills_recovered"] == fig["kills"], fig["restart_problems"]


# -- the focused tests of what the runs found ---------------------------------------------------


async def test_a_malformed_websocket_frame_is_dropped_and_the_connection_keeps_reading(db_dsn, book30) -> None:  # noqa: F811
    """ccxt decodes a frame inside the callback that schedules the next read: a frame that is
    not JSON used to stop all reading on a connection that stayed up (silence until the stall
    timeout, a traceback on stderr). Now it is dropped, counted, and the next frames arrive."""
    from bot.config import Config
    from bot.marketdata.feed import CandleFeed
    from bot.store.db import Store
    from tests.integration.test_feed import catch_up_and_stop, wait_until
    from tests.support.feed_checks import assert_store_equals_source

    symbols = book30.symbols[:5]
    start = 1618875600000  # 2021-04-19 23:40 UTC
    plan = [Fault("ws_malformed", start + (2 + 2 * k) * MINUTE_MS + 20_000) for k in range(5)]
    from bot.exchange_sim.replay import CandleBook

    book = CandleBook({s: book30.candles[s] for s in symbols})
    sim = sim_for(book, start)
    sim.add_faults(plan)
    await sim.start()
    store = await Store.connect(db_dsn)
    cfg = Config.model_validate({"symbols": symbols, "exchange": {"urls": sim.urls, "rate_limit_ms": 0},
                                 "feed": {"stall_timeout_s": 30.0, "backfill_days": 0, "flush_interval_s": 0.2}})  # fmt: skip
    feed = CandleFeed(cfg, store, start_ms=start - 5 * MINUTE_MS)
    run = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.wait_ready(), 30)
        sim.clock.set(speed=180)
        await wait_until(lambda: sim.clock.now_ms() >= start + 14 * MINUTE_MS, 60, "the replay window")
        end = await catch_up_and_stop(sim, feed, run)
    finally:
        feed.stop()
        await sim.stop()
    assert sim.faults.applied_counts()["ws_malformed"] == 5
    assert feed.stats["ws_stalls"] == 0 and feed.stats["ws_connects"] == 1, feed.stats  # read on, never silent
    await assert_store_equals_source(store, book, symbols, start - 5 * MINUTE_MS, end)
    await store.close()


async def test_a_klines_page_that_is_not_json_is_fetched_again_not_taken_for_downtime(db_dsn, book30) -> None:  # noqa: F811
    """ccxt returns [] for a 200 whose body is cut in the middle: the backfill read that as
    "no candles there" (exchange downtime) and skipped the page, losing its minutes. The body
    now raises BadResponse, which is retried."""
    from bot.config import Config
    from bot.exchange_sim.replay import CandleBook
    from bot.history.backfill import backfill
    from bot.marketdata.exchange import build_exchange
    from bot.store.db import Store

    symbols = ["BTCUSDT", "ETHUSDT"]
    book = CandleBook({s: book30.candles[s] for s in symbols})
    now = 1618875600000
    sim = sim_for(book, now)
    sim.add_faults([Fault("rest_malformed", now - 60_000) for _ in range(3)])
    await sim.start()
    sim.faults.due(now, connected=False)  # armed: the next three klines answers are cut
    cfg = Config.model_validate({"symbols": symbols, "exchange": {"urls": sim.urls, "rate_limit_ms": 0}})
    ex = build_exchange(cfg)
    store = await Store.connect(db_dsn)
    try:
        reps = await backfill(ex, store, symbols, days=1.5, now_ms=now, retry_base_s=0.01, retry_max_s=0.05)
        rows = {s: await store.read_candles(s, now - 2 * 86_400_000, now) for s in symbols}
    finally:
        await ex.close()
        await store.close()
        await sim.stop()
    assert sim.faults.applied_counts()["rest_malformed"] == 3
    assert all(r.exchange_gap_minutes == 0 for r in reps), [(r.symbol, r.exchange_gap_minutes) for r in reps]
    for s in symbols:
        src = book.range(s, reps[0].start_ms, now - MINUTE_MS)
        assert len(src) > 2000 and list(rows[s].ts[-len(src):]) == list(src.ts), s


async def test_a_connection_reset_while_subscribing_is_a_feed_outage_line_not_a_traceback() -> None:
    """aiohttp's ClientConnectionResetError (the socket reset while ccxt sends SUBSCRIBE)
    escaped ccxt unwrapped and was logged as feed_ws_unexpected_error with a traceback. It is
    network trouble like any other: one `feed_outage` line naming it, then a reconnect."""
    import aiohttp
    import structlog

    from bot.config import Config
    from bot.marketdata.feed import CandleFeed

    class ResetOnce:
        on_kline = None
        clients: dict = {}
        calls = 0

        async def watch_ohlcv_for_symbols(self, pairs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
            await asyncio.sleep(3600)

    cfg = Config.model_validate({"symbols": ["BTCUSDT"], "feed": {"reconnect_base_s": 0.01, "stall_timeout_s": 5.0}})
    ex = ResetOnce()
    feed = CandleFeed(cfg, None, exchange=ex)  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(feed._ws_loop())
        for _ in range(100):
            if ex.calls >= 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
    names = [e["event"] for e in logs]
    assert ex.calls >= 2 and feed.stats["ws_errors"] == 1
    outages = [e for e in logs if e["event"] == "feed_outage"]
    assert len(outages) == 1 and outages[0]["reason"] == "ClientConnectionResetError", logs
    assert outages[0]["log_level"] == "warning" and "exc_info" not in outages[0], outages[0]
    assert "feed_ws_unexpected_error" not in names, names


def test_a_training_process_dies_with_the_daemon_that_started_it(tmp_path: Path) -> None:
    """kill -9 of the daemon used to leave its training process running as an orphan (for up to
    hours, beside the restarted daemon's own). A parent starts the real retrain child against a
    database that never answers (the child waits on it), is killed with SIGKILL, and the child
    must be gone within seconds."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts TCP, never speaks: the child's store connection waits (60 s)
    port = silent.getsockname()[1]
    script = textwrap.dedent(f"""
        import asyncio, sys
        from bot.config import Config
        from bot.training.retrain import run_retrain_in_child, spec_from_config
        cfg = Config.model_validate({{"symbols": ["BTCUSDT", "ETHUSDT"],
                                      "paths": {{"data_dir": {str(tmp_path / 'var')!r}, "logs_dir": {str(tmp_path / 'logs')!r}}},
                                      "logging": {{"console": False}}}})
        spec = spec_from_config(cfg, "postgresql://bot@127.0.0.1:{port}/x", 1_700_000_000_000, None)
        def started(pid):
            print(pid, flush=True)
        asyncio.run(run_retrain_in_child(cfg, spec, timeout_s=600, on_start=started))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        child_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        time.sleep(3.0)  # the child is importing / waiting on the database
        assert psutil.pid_exists(child_pid) and psutil.Process(child_pid).ppid() == parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and psutil.pid_exists(child_pid):
            if psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.1)
        alive = psutil.pid_exists(child_pid) and psutil.Process(child_pid).status() != psutil.STATUS_ZOMBIE
        assert not alive, "the training process outlived the killed daemon"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child_pid is not None and psutil.pid_exists(child_pid):
            os.kill(child_pid, signal.SIGKILL)
        silent.close()


# -- the runs -------------------------------------------------------------------------------------


@pytest.mark.reliability
async def test_short_live_run_with_every_fault_kind_and_two_kills(db_dsn, book30, bundle_path, tmp_path) -> None:  # noqa: F811
    """The short variant: live mode, 1 h, two of every fault kind, two kill -9 restarts (50 s;
    in `make reliability` only, to keep make test's share of this suite under 2 minutes; make
    test keeps tests/integration/test_live_mode.py's live run with order faults and kill -9 restarts and
    tests/integration/test_feed.py's run with every feed fault kind)."""
    fig = await daemon_run("live", book30, bundle_path, db_dsn, tmp_path, hours=1, faults={"candle": 2, "conn": 1, "rest": 2, "order": 2}, kills=2,
                           retrain_kill=False, seed=3)  # fmt: skip
    assert_clean(fig, min_faults=30, kinds=FEED_KINDS)
    assert fig["kills"] == 2


@pytest.mark.reliability
async def test_paper_fault_run_30_symbols(db_dsn, book30, bundle_path, tmp_path) -> None:  # noqa: F811
    fig = await daemon_run("paper", book30, bundle_path, db_dsn, tmp_path, hours=4, faults={"candle": 18, "conn": 6, "rest": 12}, kills=0,
                           retrain_kill=False, seed=21)  # fmt: skip
    reliability_figures.record("daemon_fault_run_paper", fig)
    assert_clean(fig, min_faults=200, kinds=FEED_KINDS)


@pytest.mark.reliability
async def test_live_fault_run_30_symbols(db_dsn, book30, bundle_path, tmp_path) -> None:  # noqa: F811
    fig = await daemon_run("live", book30, bundle_path, db_dsn, tmp_path, hours=4, faults={"candle": 14, "conn": 5, "rest": 8, "order": 8}, kills=0,
                           retrain_kill=False, seed=22)  # fmt: skip
    reliability_figures.record("daemon_fault_run_live", fig)
    assert_clean(fig, min_faults=200, kinds=FEED_KINDS + ORDER_KINDS)


@pytest.mark.reliability
async def test_kill_9_ten_times_one_during_a_retrain(db_dsn, book30, bundle_path, tmp_path) -> None:  # noqa: F811
    """>= 10 kill -9 in one live run: one while a retrain's training process runs, one at the
    daemon's own crash point between an entry order's submission and the persisting of its
    answer (BOT_CRASH_POINT=after_submit:entry), the rest at random exchange minutes. Each
    restart takes ~20 exchange minutes at 120x (start, warm-up, catch-up, the check), hence
    5 hours for 14 planned random kills."""
    fig = await daemon_run("live", book30, bundle_path, db_dsn, tmp_path, hours=5, faults={"candle": 2, "conn": 1, "rest": 2, "order": 3}, kills=14,
                           retrain_kill=True, seed=23, crash_point="after_submit:entry")  # fmt: skip
    reliability_figures.record("daemon_kill_run", fig)
    assert fig["kills"] >= 10
    assert fig["retrain_kill"] is not None and fig["retrain_kill"]["child_died_with_daemon"], fig["retrain_kill"]
    assert [c["point"] for c in fig["crash_point_kills"]] == ["after_submit"] and fig["crash_point_kills"][0]["client_order_id"], fig
    assert fig["crashes"] == 0
    assert_clean(fig, min_faults=30, kinds=ORDER_KINDS)
