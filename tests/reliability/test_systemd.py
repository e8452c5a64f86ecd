"""systemd restarts the daemon after a crash and after a watchdog miss (issue 15).

systemd cannot run as PID 1 here, so tests/support/systemd_harness.py plays its part for the real
`systemd/cryptobot.service` (its Type=notify, Restart=, RestartSec=, WatchdogSec=, timeouts and
RestartPreventExitStatus= read from the file), with a real NOTIFY_SOCKET, WATCHDOG_USEC and
WATCHDOG_PID. The unit's durations are run at 1/20 of their length (WatchdogSec 120 s -> 6 s,
RestartSec 10 s -> 0.5 s), their ratios kept. `bot run` trades in paper mode against the
exchange simulator replaying real candles; then
(a) `kill -9`: the harness restarts it after RestartSec; READY again; the state it restores is
    the one the store held at the kill (cash, open positions) and no minute is lost;
(b) a stalled loop (SIGSTOP: the process stops, so do the pings from its event loop): after
    WatchdogSec without a ping the harness sends SIGABRT (+SIGCONT, as systemd), the daemon
    dies by it, is restarted and READY again, and again no minute is lost.
`systemd-analyze verify` of the unit is tests/integration/test_systemd_unit.py; the protocol itself
(READY, pings from the loop, STOPPING) is tests/integration/test_sdnotify.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from models.timeutil import DAY_MS, MINUTE_MS, fmt_ts
from tests.support.engine import APR2, SYMBOLS
from tests.support.paper_daemon import minutes_with_candles, promote_bundle
from tests.support.reliability_figures import record
from tests.support.shared_data import DATA_DIR, ROOT
from tests.support.systemd_harness import (
    ServiceHarness,
    ServiceUnit,
    parse_timespan,
    restart_wanted,
)
from tests.support.week_run import import_history

UNIT = ROOT / "systemd" / "cryptobot.service"
SCALE = 1 / 20
START = APR2 + 11 * DAY_MS


def test_the_harness_reads_the_real_unit_as_systemd_does() -> None:
    assert parse_timespan("15min") == 900 and parse_timespan("10") == 10 and parse_timespan("1min 30s") == 90
    assert parse_timespan("500ms") == 0.5 and parse_timespan("infinity") == float("inf")
    with pytest.raises(ValueError):
        parse_timespan("ten seconds")
    u = ServiceUnit.from_file(UNIT)
    assert (u.type, u.restart, u.restart_sec, u.watchdog_sec) == ("notify", "always", 10.0, 120.0)
    assert u.timeout_start_sec == 900 and u.timeout_stop_sec == 60 and u.timeout_abort_sec == 60
    assert u.restart_prevent_exit_status == {2, 3} and u.kill_signal == signal.SIGTERM
    assert u.watchdog_signal == signal.SIGABRT and u.notify_access == "main"
    assert (u.start_limit_interval_sec, u.start_limit_burst) == (600, 10)
    assert u.exec_start[-1] == "run" and u.exec_start[0].endswith("/bot")
    # systemd.service(5)'s restart table, for the results the harness produces
    assert restart_wanted("always", "success", 0) and restart_wanted("on-failure", "watchdog", None)
    assert not restart_wanted("on-failure", "success", 0) and restart_wanted("on-abnormal", "signal", -9)
    assert not restart_wanted("on-abnormal", "exit-code", 1) and not restart_wanted("no", "signal", -9)


def test_exit_codes_the_unit_prevents_are_not_restarted(tmp_path: Path) -> None:
    """A config error (exit 2) is not restarted, and a service that never says READY is killed
    after TimeoutStartSec and restarted (Restart=always), as the unit says."""
    u = ServiceUnit.from_file(UNIT).scaled(SCALE / 10)  # TimeoutStartSec 4.5 s, RestartSec 0.05 s
    h = ServiceHarness(u, argv=[sys.executable, "-c", "import sys; sys.exit(2)"], cwd=tmp_path)
    h.start()
    try:
        failed = h.wait_for("failed", timeout=30)
    finally:
        h.stop()
    assert h.kinds() == ["start", "exit", "failed"] and failed.detail["prevented"] is True
    silent = ServiceHarness(u, argv=[sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path)
    silent.start()
    try:
        silent.wait_for("start", count=2, timeout=30)
    finally:
        silent.stop()
    k = silent.kinds()
    assert k[:5] == ["start", "start_timeout", "kill", "exit", "restart_scheduled"], k
    assert silent.of("kill")[0].detail["signal"] == "SIGTERM"


def write_config(home: Path, dsn: str, sim: ExchangeSimulator) -> Path:
    cfg = home / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": SYMBOLS, "database": {"dsn": dsn},
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "timeout_ms": 5000, "retry_base_s": 0.1, "retry_max_s": 1.0},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2, "stall_timeout_s": 5.0},
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0},
        "risk": {"cooldown_after_stop_minutes": 0},
        "costs": {"fee_rate": 0.0, "slippage_bps": 0.0},
        "daemon": {"retrain_cron": ""},
        "paths": {"data_dir": str(home / "var"), "models_dir": str(home / "var" / "models"), "logs_dir": str(home / "logs")},
        "logging": {"console": False},
        "dashboard": {"enabled": False},
    }))  # fmt: skip
    return cfg


async def store_state(dsn: str) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    try:
        es = await conn.fetchrow("SELECT last_minute_ts, cash FROM engine_state WHERE mode = 'paper'")
        pos = await conn.fetch("SELECT symbol FROM positions WHERE mode = 'paper' AND status = 'open' ORDER BY symbol")
        eq = await conn.fetch("SELECT ts FROM equity_snapshots WHERE mode = 'paper' ORDER BY ts")
    finally:
        await conn.close()
    return {"last": int(es["last_minute_ts"]) if es else None, "cash": float(es["cash"]) if es else None,
            "positions": [r["symbol"] for r in pos], "equity_ts": [int(r["ts"]) for r in eq]}  # fmt: skip


def restored_events(home: Path) -> list[dict[str, object]]:
    out = []
    for line in (home / "logs" / "bot.jsonl").read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("event") == "state_restored":
            out.append(e)
    return out


def assert_restored(ev: dict[str, object], st: dict[str, object]) -> None:
    """The `state_restored` line of a restart against the store as the dead process left it."""
    assert ev["last_minute"] == fmt_ts(int(st["last"])), (ev, st["last"])  # type: ignore[arg-type]
    assert sorted(ev["symbols"]) == st["positions"], (ev, st)  # type: ignore[arg-type]
    assert abs(float(ev["cash"]) - float(st["cash"])) < 1e-6, (ev, st)  # type: ignore[arg-type]


async def wait_minutes(dsn: str, after: int, n: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await store_state(dsn)
        if st["last"] is not None and st["last"] >= after + n * MINUTE_MS:  # type: ignore[operator]
            return int(st["last"])  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
    raise AssertionError(f"the daemon did not step {n} minutes after {after} within {timeout:.0f} s")


@pytest.mark.slow
async def test_crash_and_watchdog_miss_are_restarted_with_state_recovered(db_dsn: str, engine_bundle: object,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    unit = ServiceUnit.from_file(UNIT)
    run = unit.scaled(SCALE)
    book = CandleBook.from_directory(DATA_DIR, SYMBOLS)
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=START, update_interval_s=0.5))
    await sim.start()
    await import_history(db_dsn, book, START - 7 * DAY_MS, START)
    champ = tmp_path / "champion"
    shutil.copytree(Path(engine_bundle.path), champ)  # type: ignore[attr-defined]
    await promote_bundle(db_dsn, champ)
    cfg = write_config(tmp_path, db_dsn, sim)
    argv = [sys.executable, "-m", "bot", "--config", str(cfg), "run"]  # ExecStart, with this checkout's interpreter
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the unit's Environment=
    h = ServiceHarness(run, argv=argv, env=env, cwd=tmp_path, log_path=tmp_path / "journal.txt")
    figures: dict[str, object] = {"scale": SCALE, "watchdog_sec": run.watchdog_sec, "restart_sec": run.restart_sec}
    try:
        h.start()
        await asyncio.to_thread(h.wait_for, "ready", 1, run.timeout_start_sec)
        sim.clock.set(speed=120)  # two exchange minutes a second: the daemon trades
        first_pid = h.pid
        await wait_minutes(db_dsn, START, 20)

        # (a) kill -9 of the main process
        os.kill(first_pid, signal.SIGKILL)  # type: ignore[arg-type]
        t_kill = time.monotonic()
        ex = await asyncio.to_thread(h.wait_for, "exit", 1, 30)
        at_kill = await store_state(db_dsn)  # the new process needs seconds before it writes anything
        assert ex.detail["signal"] == "SIGKILL" and ex.detail["result"] == "signal"
        sched = await asyncio.to_thread(h.wait_for, "restart_scheduled", 1, 10)
        start2 = await asyncio.to_thread(h.wait_for, "start", 2, 30)
        ready2 = await asyncio.to_thread(h.wait_for, "ready", 2, run.timeout_start_sec)
        assert start2.t - ex.t >= run.restart_sec * 0.9 and h.pid != first_pid
        figures["crash_to_ready_s"] = round(ready2.t - t_kill, 1)
        restored = restored_events(tmp_path)
        assert len(restored) == 1, restored  # the first start had no state to restore
        r = restored[0]
        # the state the store held at the kill (each minute persisted in one transaction)
        assert_restored(r, at_kill)
        figures["positions_at_kill"] = len(at_kill["positions"])  # type: ignore[arg-type]
        await wait_minutes(db_dsn, int(at_kill["last"]), 10)  # type: ignore[arg-type]

        # (b) the loop stalls: SIGSTOP (no pings can come), the watchdog fires
        second_pid = h.pid
        pings_before = len(h.of("watchdog_ping"))
        os.kill(second_pid, signal.SIGSTOP)  # type: ignore[arg-type]
        t_stall = time.monotonic()
        wd = await asyncio.to_thread(h.wait_for, "watchdog_timeout", 1, run.watchdog_sec * 4)
        kill = next(e for e in h.of("kill") if e.detail["why"] == "watchdog")
        assert kill.detail["signal"] == "SIGABRT" and kill.detail["pid"] == second_pid
        ex2 = await asyncio.to_thread(h.wait_for, "exit", 2, run.timeout_abort_sec + 10)  # type: ignore[operator]
        at_stall = await store_state(db_dsn)
        assert ex2.detail["result"] == "watchdog" and ex2.detail["signal"] in ("SIGABRT", "SIGKILL"), ex2.detail
        figures["stall_to_watchdog_kill_s"] = round(wd.t - t_stall, 1)
        figures["watchdog_exit_signal"] = ex2.detail["signal"]
        # WatchdogSec after the last ping (pings every WatchdogSec/2: the stall began after one of them)
        assert wd.detail["silent_s"] >= run.watchdog_sec
        assert run.watchdog_sec / 2 - 0.5 <= wd.t - t_stall <= run.watchdog_sec + 1
        ready3 = await asyncio.to_thread(h.wait_for, "ready", 3, run.timeout_start_sec)
        figures["stall_to_ready_s"] = round(ready3.t - t_stall, 1)
        assert h.pid not in (first_pid, second_pid) and len(h.of("watchdog_ping")) > pings_before
        await wait_minutes(db_dsn, int(at_stall["last"]), 10)  # type: ignore[arg-type]
        restored = restored_events(tmp_path)
        assert len(restored) == 2, restored
        assert_restored(restored[1], at_stall)
        figures["positions_at_stall"] = len(at_stall["positions"])  # type: ignore[arg-type]
        sim.clock.set(speed=0)
        await asyncio.sleep(2)
    finally:
        await asyncio.to_thread(h.stop, 120)
        await sim.stop()
    k = h.kinds()
    assert k.count("start") == 3 and k.count("ready") == 3 and k[-1] == "inactive", k
    stop_exit = h.of("exit")[-1]
    assert stop_exit.detail["code"] == 0, stop_exit.detail  # `systemctl stop`: SIGTERM, a clean exit
    # no minute lost across the kill and the watchdog restart: every minute with candles was stepped
    end = await store_state(db_dsn)
    eq = end["equity_ts"]
    assert eq == sorted(minutes_with_candles(book, START, eq[-1] + MINUTE_MS))  # type: ignore[index,operator]
    figures.update(restarts=k.count("restart_scheduled"), crash_restarts=1, watchdog_restarts=1,
                   minutes_stepped=len(eq), unit={"Restart": unit.restart, "RestartSec": unit.restart_sec,  # type: ignore[arg-type]
                                                  "WatchdogSec": unit.watchdog_sec})  # fmt: skip
    print("systemd harness:", figures, "sched", sched.detail)
    record("systemd", figures)
