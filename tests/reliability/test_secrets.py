"""Secrets never leak (issue 15): with a recognisable fake API key, API secret and Telegram
token in the environment, run `bot run` (paper, against the exchange simulator, a fast clock,
dashboard on), `bot backtest`, `bot config check`, `bot db status` and a command that fails,
then look for the secrets -- whole, or any 12-character piece of them -- in every log file,
every report file, every command's output and error text, the dashboard's pages (/,
/api/state, /metrics) and every row of every table of the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from models.timeutil import MINUTE_MS
from tests.support.engine import SYMBOLS
from tests.support.paper_daemon import (
    Daemon,
    free_port,
    http_get,
    promote_bundle,
    run_until,
    window,
)
from tests.support.reliability_figures import record
from tests.support.shared_data import DATA_DIR, ROOT

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SECRETS = {
    "BOT_API_KEY": "FAKEKEY-7c1e9b44d2a0-LEAKCHECK-key",
    "BOT_API_SECRET": "FAKESECRET-52f0a9e3b817-LEAKCHECK-secret",
    "BOT_TELEGRAM_TOKEN": "123456789:FAKETGTOKEN-a9d3c27e51bb-LEAKCHECK",
    "TELEGRAM_BOT_TOKEN": "123456789:FAKETGTOKEN-a9d3c27e51bb-LEAKCHECK",
}


def needles() -> set[str]:
    """Each secret whole and every 12-character window of it (a truncated leak counts), minus
    the windows all secrets share by construction ('LEAKCHECK' markers are not secret)."""
    out: set[str] = set()
    for s in set(SECRETS.values()):
        out.add(s)
        out.update(s[i : i + 12] for i in range(len(s) - 11))
    return {n for n in out if "LEAKCHECK" not in n and not n.startswith("-")}


def find(text: str, where: str, hits: list[str]) -> None:
    for n in needles():
        if n in text:
            hits.append(f"{where}: contains {n!r}")
            return


async def dump_db(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        tables = [r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
        return {t: "\n".join(str(dict(r)) for r in await conn.fetch(f'SELECT * FROM "{t}"')) for t in tables}
    finally:
        await conn.close()


def bot(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "160"})  # fmt: skip


async def test_no_secret_in_logs_reports_pages_output_or_database(
    db_dsn: str, engine_bundle: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe: list[str] = []
    find(f"x{SECRETS['BOT_API_SECRET'][:14]}x", "probe", probe)  # the scan does see a partial leak
    assert probe
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    bundle = Path(engine_bundle.path)
    start, end, _ = window(bundle, 1)
    book = CandleBook.from_directory(DATA_DIR, SYMBOLS)
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    await promote_bundle(db_dsn, bundle)
    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": SYMBOLS, "database": {"dsn": db_dsn},
        "exchange": {"urls": sim.urls, "rate_limit_ms": 0, "timeout_ms": 5000, "retry_base_s": 0.1, "retry_max_s": 1.0},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2, "stall_timeout_s": 5.0},
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0},
        "paths": {"data_dir": str(tmp_path / "var"), "models_dir": str(tmp_path / "var" / "models"), "logs_dir": str(tmp_path / "logs")},
        "logging": {"console": True, "level": "debug"},
        "dashboard": {"enabled": True, "port": port},
    }))  # fmt: skip
    hits: list[str] = []
    d = Daemon(cfg, tmp_path, db_dsn)
    pages: dict[str, str] = {}
    try:
        await d.start()
        await d.wait_event("engine_ready")
        await run_until(sim, end)
        await d.wait_minute(end - MINUTE_MS)
        for path in ("/", "/api/state", "/metrics"):
            pages[path] = await http_get(f"http://127.0.0.1:{port}{path}")
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    for path, text in pages.items():
        find(text, f"dashboard {path}", hits)
    assert "bot_steps_total" in pages["/metrics"] and pages["/api/state"].strip().startswith("{")
    outputs = {
        "backtest": bot(cfg, "backtest", "--model", str(bundle), "--candles", str(DATA_DIR), "--from", str(start),
                        "--to", str(end), "--symbols", ",".join(SYMBOLS), "--out", str(tmp_path / "report")),
        "config check": bot(cfg, "config", "check", "--show"),
        "db status": bot(cfg, "db", "status"),
        "failing backtest": bot(cfg, "backtest", "--model", str(tmp_path / "no-such-bundle"), "--out", str(tmp_path / "r2")),
    }
    assert outputs["backtest"].returncode == 0, outputs["backtest"].stderr[-2000:]
    assert outputs["config check"].returncode == 0 and outputs["db status"].returncode == 0
    assert outputs["failing backtest"].returncode != 0
    for name, r in outputs.items():
        find(r.stdout + r.stderr, f"`bot {name}` output", hits)
    # `config check` shows the secrets are there (masked), so the scan is not vacuous
    assert "api_key: '********'" in outputs["config check"].stdout or "api_key: ********" in outputs["config check"].stdout
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "var" not in p.relative_to(tmp_path).parts[:1]]
    files = [p for p in files if p.name != "config.yaml"]
    assert any(p.name == "bot.jsonl" for p in files) and any(p.suffix == ".html" for p in files), [p.name for p in files]
    for p in files:
        find(p.read_bytes().decode("utf-8", "replace"), f"file {p.relative_to(tmp_path)}", hits)
    rows = await dump_db(db_dsn)
    assert rows.get("candles") and rows.get("daemon_status") is not None
    for table, text in rows.items():
        find(text, f"table {table}", hits)
    record("secrets", {"found": len(hits), "hits": hits, "files_scanned": len(files), "tables_scanned": len(rows),
                       "pages_scanned": sorted(pages), "commands": sorted(outputs) + ["run"]})  # fmt: skip
    assert not hits, "\n".join(hits)
    print(json.dumps({"files": len(files), "tables": len(rows)}))
