"""`bot status` without a running daemon: the embedded cluster is not started just to answer,
and a store whose daemon stopped says so (exit 3) while still showing its last figures. The
case with a running daemon is in tests/integration/test_live_paper.py (a real daemon against the simulator)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.support.shared_data import ROOT


def bot(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), "status", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})  # fmt: skip


def test_status_does_not_start_the_embedded_cluster(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"paths:\n  data_dir: {tmp_path}/var\n  models_dir: {tmp_path}/var/models\n  logs_dir: {tmp_path}/logs\n")
    r = bot(cfg)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "no daemon running" in r.stdout and "not created yet" in r.stdout and "does not start it" in r.stdout
    assert not (tmp_path / "var" / "pgdata").exists()
    j = json.loads(bot(cfg, "--json").stdout)
    assert j["daemon"]["running"] is False and j["database"] == "not created yet"


async def _seed_stopped_daemon(dsn: str) -> None:
    """A store as a daemon leaves it after a clean stop: status row, engine state, one open position."""
    conn = await asyncpg.connect(dsn)
    try:
        t = 1_620_000_000_000 - 1_620_000_000_000 % 60_000
        await conn.execute("INSERT INTO daemon_status (id, pid, host, started_ts, heartbeat_ts, stopped_ts, mode, model_version, "
                           "watch_only, watch_reason, last_minute_ts, details) VALUES (true, 1, 'h', $1, $2, $2, 'paper', NULL, "
                           "true, 'no model', $2, '{}'::jsonb)", t - 3_600_000, t)  # fmt: skip
        state = {"risk": {"kill_switch": {"tripped": "daily_loss", "tripped_ms": t - 60_000}}}
        await conn.execute("INSERT INTO engine_state VALUES ('paper', $1, 900.0, 1010.0, NULL, $2, $1)", t, json.dumps(state))
        await conn.execute("INSERT INTO equity_snapshots VALUES ($1, 'paper', 1000.0, 1000.0, 0, 0)", t - t % 86_400_000 - 60_000)
        await conn.execute("INSERT INTO positions (mode, symbol, status, qty, entry_price, entry_ts) "
                           "VALUES ('paper', 'BTCUSDT', 'open', 2.0, 50.0, $1)", t - 600_000)  # fmt: skip
        await conn.execute("INSERT INTO candles VALUES ('BTCUSDT', $1, 50, 56, 49, 55.0, 1)", t)
    finally:
        await conn.close()


def test_status_after_the_daemon_stopped_shows_its_last_figures(tmp_path: Path, db_dsn: str) -> None:
    asyncio.run(_seed_stopped_daemon(db_dsn))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"symbols: [BTCUSDT, ETHUSDT]\npaths:\n  data_dir: {tmp_path}/var\n  logs_dir: {tmp_path}/logs\n")
    env = {"BOT_DATABASE_DSN": db_dsn}
    r = bot(cfg, env=env)
    assert r.returncode == 3, r.stdout + r.stderr
    out = r.stdout
    assert "daemon: NOT RUNNING" in out and "last stopped" in out
    assert "WATCH ONLY: no model" in out and "kill switch: TRIPPED (daily_loss)" in out
    assert "equity: 1,010.00" in out and "P&L +10.00 (+1.00%)" in out
    assert "BTCUSDT" in out and "unrealised +10.00 (+10.00%)" in out  # 2 x (55 - 50), marked at the last candle
    assert "held 11m" in out  # entered 10 minutes before the last minute: held to its close (exchange clock)
    assert "no candles: ETHUSDT" in out
    j = json.loads(bot(cfg, "--json", env=env).stdout)
    assert j["daemon"]["running"] is False and j["daemon"]["state"] == "stopped" and j["kill_switch"]["tripped"] == "daily_loss"
    assert j["positions"][0]["unrealised"] == 10.0 and j["feed"]["ETHUSDT"]["last_candle_ts"] is None
    assert j["positions"][0]["held_s"] == 660 and j["feed"]["BTCUSDT"]["age_s"] == 0
    assert j["today"]["pnl"] == 10.0 and j["clock"]["source"] == "engine"
