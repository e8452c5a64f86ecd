"""The paper daemon as a real process against the exchange simulator: config, start and stop, the
store's books, the trades of the backtest beside them (shared by the daemon, live-mode and
reliability tests)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator
from models.config import CostConfig
from models.timeutil import HOUR_MS, MINUTE_MS, fmt_ts
from tests.support.shared_data import DATA_DIR, ROOT, symbols30

SPEED = 600  # 10 exchange minutes per second


def window(bundle: Path, hours: float) -> tuple[int, int, int]:
    """(first minute, end exclusive, label horizon ms): starts an hour after the training data."""
    m = json.loads((bundle / "manifest.json").read_text())
    start = int(m["data_to_ts"]) + HOUR_MS
    return start, start + int(hours * HOUR_MS), int(m["label_config"]["horizon_bars"]) * MINUTE_MS


def write_config(home: Path, dsn: str, sim: ExchangeSimulator | None, *, floor: bool = False,
                 dashboard_port: int | None = None, risk: dict[str, Any] | None = None) -> Path:
    """The tests' config; `risk` keys are added to the risk section (e.g. the protections)."""
    urls = sim.urls if sim is not None else {}
    cfg = home / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": symbols30(),
        "database": {"dsn": dsn},
        "exchange": {"urls": urls, "rate_limit_ms": 0, "timeout_ms": 5000, "retry_base_s": 0.1, "retry_max_s": 1.0},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2, "stall_timeout_s": 5.0},
        # no validated edge needed: a test (unless `floor`: the defaults)
        "trading": {} if floor else {"min_validation_pf": 0.0, "min_validation_trades": 0},
        "risk": {"cooldown_after_stop_minutes": 0, **(risk or {})},
        "paths": {"data_dir": str(home / "var"), "models_dir": str(home / "var" / "models"), "logs_dir": str(home / "logs")},
        "logging": {"console": False},
        "dashboard": {"enabled": dashboard_port is not None, "port": dashboard_port or 8787},
    }))  # fmt: skip
    return cfg


async def promote_bundle(dsn: str, path: Path) -> str:
    from bot.store.model_versions import promote, record_model_version

    m = json.loads((path / "manifest.json").read_text())
    conn = await asyncpg.connect(dsn)
    try:
        await record_model_version(conn, version=m["version"], path=str(path), created_ts=1_700_000_000_000,
                                   data_from_ts=m["data_from_ts"], data_to_ts=m["data_to_ts"])  # fmt: skip
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        await promote(pool, m["version"], 1_700_000_000_001)
    finally:
        await pool.close()
    return m["version"]


class Daemon:
    """`bot run` as a subprocess, watched through its JSON log and the store."""

    def __init__(self, cfg: Path, home: Path, dsn: str):
        self.cfg, self.home, self.dsn = cfg, home, dsn
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(self.cfg), "run", *args, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=open(self.home / "stderr.txt", "ab"),  # noqa: SIM115
        )  # fmt: skip

    def events(self) -> list[dict[str, Any]]:
        p = self.home / "logs" / "bot.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out

    async def wait_event(self, name: str, after: int = 0, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = [e for e in self.events()[after:] if e["event"] == name]
            if evs:
                return evs[-1]
            if self.proc is not None and self.proc.returncode is not None:
                break
            await asyncio.sleep(0.2)
        tail = "\n".join(json.dumps(e)[:300] for e in self.events()[-30:])
        err = (self.home / "stderr.txt").read_text()[-3000:] if (self.home / "stderr.txt").exists() else ""
        raise AssertionError(f"never saw {name}; last events:\n{tail}\nstderr:\n{err}")

    async def last_minute(self) -> int | None:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval("SELECT last_minute_ts FROM engine_state WHERE mode = 'paper'")
        finally:
            await conn.close()

    async def wait_minute(self, ts: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = await self.last_minute()
            if last is not None and last >= ts:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the daemon never processed {fmt_ts(ts)} (last {fmt_ts(await self.last_minute())})")

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 120)

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()


async def bot_ctl(cfg: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`bot ctl ...` as a subprocess with no terminal on stdin: (exit status, stdout + stderr)."""
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "--config", str(cfg), "ctl", *args, cwd=ROOT,
                                             stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})  # fmt: skip
    out, err = await asyncio.wait_for(p.communicate(), 120)
    return p.returncode or 0, (out.decode() + err.decode()).strip()


async def run_until(sim: ExchangeSimulator, end: int) -> None:
    """Run the exchange clock fast to just past `end`, then hold it."""
    sim.clock.set(speed=SPEED)
    while sim.clock.now_ms() < end + MINUTE_MS:
        await asyncio.sleep(0.05)
    sim.clock.set(speed=0)


def backtest_trades(cfg: Path, bundle: Path, start: int, end: int, out: Path) -> list[dict[str, str]]:
    import subprocess

    res = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(cfg), "backtest", "--model", str(bundle), "--candles", str(DATA_DIR),
         "--from", str(start), "--to", str(end), "--symbols", ",".join(symbols30()), "--block-minutes", "1",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    with open(out / "trades.csv") as f:
        return list(csv.DictReader(f))


KEY = ("symbol", "decision_ts", "entry_ts", "exit_ts", "exit_reason", "qty", "entry_price", "exit_price", "fees", "pnl")


def key_of(t: dict[str, Any]) -> tuple:
    return tuple(str(t[k]) if k in ("symbol", "exit_reason") else (int(t[k]) if k.endswith("_ts") else float(t[k]))
                 for k in KEY)  # fmt: skip


async def live_trades(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT details FROM positions WHERE mode = 'paper' AND status = 'closed' ORDER BY exit_ts, symbol")
    finally:
        await conn.close()
    return [json.loads(r["details"])["trade"] for r in rows]


async def assert_backtest_parity(dsn: str, cfg: Path, bundle: Path, start: int, end: int, out: Path) -> list[dict[str, str]]:
    """The daemon's closed trades decided before the backtest's end-of-window cut (one label
    horizon before `end`) equal `bot backtest`'s over [start, end), trade by trade, and there
    are enough of them to mean something; returns the backtest's trades."""
    horizon = window(bundle, 0)[2]
    got = [t for t in await live_trades(dsn) if int(t["decision_ts"]) < end - horizon]
    want = backtest_trades(cfg, bundle, start, end, out)
    assert len(want) >= 50, f"only {len(want)} trades: parity over few trades proves little"
    assert sorted(map(key_of, got)) == sorted(map(key_of, want))
    return want


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_get(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as r:
        assert r.status == 200
        return await r.text()


async def daemon_status(dsn: str) -> dict[str, Any]:
    from bot.store.daemon_lock import read_status

    conn = await asyncpg.connect(dsn)
    try:
        st = await read_status(conn)
    finally:
        await conn.close()
    assert st is not None
    return st


async def bot_status(cfg: Path, *args: str) -> tuple[int, str]:
    """`bot status` as a subprocess, without blocking this loop (the simulator runs on it)."""
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "--config", str(cfg), "status", *args, cwd=ROOT,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(p.communicate(), 120)
    return p.returncode or 0, out.decode() + err.decode()


# The documented short forms (bot/logs/event_lines.py) of the daemon's lines in bot.log.
T = r"\d\d-\d\d \d\d:\d\d"


HUMAN = {
    "start": re.compile(rf"^{T} START paper  model \S+(  PF \d+\.\d\d)?  30 symbols  trading(  .+)?$"),
    "open": re.compile(rf"^{T} BUY [A-Z0-9]+USDT [\d.]+ @ [\d.]+  er [+-]\d+\.\d\d%  p \d\.\d\d  size \d+\.\d%  \[paper\]$"),
    "close": re.compile(rf"^{T} SELL [A-Z0-9]+USDT [\d.]+ @ [\d.]+  [+-][\d,]+\.\d\d USDT \([+-]\d+\.\d\d%\)  "
                        r"(TP|SL|timeout|gap timeout|flatten)  held \S+  \[paper\]$"),
    "skips": re.compile(rf"^{T} SKIPS 1h: \d+  .*\(\d+ entered\)$"),
    "stop": re.compile(rf"^{T} STOP paper  \(SIGTERM\)  up \S+$"),
}


def assert_human_lines(log: Path, trades: list[dict[str, Any]]) -> None:
    """Each kind of line that occurred has its short form; trade lines carry the bar time."""
    from models.timeutil import fmt_short

    lines = log.read_text().splitlines()
    for kind, word in (("start", "START"), ("open", "BUY"), ("close", "SELL"), ("skips", "SKIPS"), ("stop", "STOP")):
        got = [ln for ln in lines if ln[12:].startswith(word + " ")]
        if kind != "skips":
            assert got, f"no {kind} line in bot.log"
        bad = [ln for ln in got if not HUMAN[kind].match(ln)]
        assert not bad, f"{kind} lines not in the documented form: {bad[:3]}"
    sells = [ln for ln in lines if ln[12:].startswith("SELL ")]
    want = {f"{fmt_short(int(t['exit_ts']))} SELL {t['symbol']} " for t in trades}
    assert {ln[: ln.index(" ", 17) + 1] for ln in sells} <= want, "a SELL line's time is not its bar time"


def minutes_with_candles(book: CandleBook, start: int, end: int) -> set[int]:
    out: set[int] = set()
    for s in book.symbols:
        c = book.range(s, start, end - MINUTE_MS)
        out.update(int(t) for t in c.ts)
    return out


async def store_books(dsn: str) -> dict[str, Any]:
    """Cash and positions as the store holds them, and the cash the fills imply."""
    conn = await asyncpg.connect(dsn)
    try:
        st = await conn.fetchrow("SELECT last_minute_ts, cash, state FROM engine_state WHERE mode = 'paper'")
        open_pos = await conn.fetch("SELECT symbol, qty, entry_price, entry_ts, entry_order_id FROM positions "
                                    "WHERE mode = 'paper' AND status = 'open' ORDER BY symbol")  # fmt: skip
        flows = await conn.fetchrow(
            """SELECT coalesce(sum(CASE WHEN f.side = 'sell' THEN f.qty * f.price ELSE -f.qty * f.price END), 0) AS net,
                      coalesce(sum(f.fee), 0) AS fees, count(*) AS n
               FROM fills f JOIN orders o ON o.id = f.order_id WHERE o.mode = 'paper'"""
        )
        dup_fills = await conn.fetchval("SELECT count(*) FROM (SELECT order_id FROM fills GROUP BY order_id HAVING count(*) > 1) x")
        unfilled_old = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE mode = 'paper' AND status NOT IN ('filled', 'cancelled') AND decision_ts < $1",
            st["last_minute_ts"] - MINUTE_MS)
        cancelled = await conn.fetch("SELECT client_order_id, reason->>'cancelled' AS why FROM orders "
                                     "WHERE mode = 'paper' AND status = 'cancelled' ORDER BY client_order_id")
        dup_decisions = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM orders GROUP BY symbol, decision_ts, leg HAVING count(*) > 1) x")
        overlaps = await conn.fetchval(
            """SELECT count(*) FROM positions a JOIN positions b ON a.symbol = b.symbol AND a.id < b.id AND a.mode = b.mode
               WHERE b.entry_ts <= coalesce(a.exit_ts, 9e18) AND a.entry_ts <= coalesce(b.exit_ts, 9e18)""")  # fmt: skip
    finally:
        await conn.close()
    state = json.loads(st["state"])
    return {"last": int(st["last_minute_ts"]), "cash": float(st["cash"]), "state": state,
            "open": [dict(r) for r in open_pos], "fills_cash": 10_000.0 + float(flows["net"]) - float(flows["fees"]),
            "fills": int(flows["n"]), "dup_fills": dup_fills, "unfilled_old": unfilled_old,
            "dup_decisions": dup_decisions, "overlaps": overlaps,
            "cancelled": [(r["client_order_id"], r["why"]) for r in cancelled]}  # fmt: skip


def assert_books_consistent(b: dict[str, Any]) -> None:
    assert b["dup_fills"] == 0 and b["dup_decisions"] == 0 and b["overlaps"] == 0, b
    assert b["unfilled_old"] == 0, b  # every order decided before the last minute was executed (once) or cancelled
    assert abs(b["cash"] - b["fills_cash"]) < 1e-6, (b["cash"], b["fills_cash"])  # cash = what the fills say
    assert b["state"]["cash"] == b["cash"]
    held = sorted((p["symbol"], p["qty"], p["entry_price"]) for p in b["state"]["positions"])
    assert held == sorted((p["symbol"], p["qty"], p["entry_price"]) for p in b["open"])


def live_bundle(cache: Path, work: Path) -> Path:
    """The engine tests' small real bundle (5 symbols, 9 days), trained on a zero-cost account
    so that its er is often positive and the risk manager takes trades; cached under `cache`
    across sessions (keyed by the settings and the code)."""
    import json

    from bot.training.job import bundle_manifest, new_version
    from models.bundle.directory import write_bundle
    from models.training.run import run_training
    from tests.support.engine import (
        APR2,
        SYMBOLS,
        TRAIN_END,
        CsvSource,
        _code_digest,
        cache_lock,
        small_settings,
    )

    settings = dataclasses.replace(small_settings(), costs=CostConfig(fee_rate=0.0, slippage_bps=0.0))
    key = hashlib.sha256(json.dumps({"set": settings.to_dict(), "code": _code_digest(), "live": 1}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]  # fmt: skip
    with cache_lock(cache):
        found = list((cache / key).glob("*/manifest.json"))
        if found:
            return found[0].parent
        run = run_training(CsvSource(DATA_DIR), SYMBOLS, settings, start_ms=APR2, end_ms=TRAIN_END, work_dir=work)
        manifest = bundle_manifest(run, created_ms=1_700_000_000_000, code="test")
        return write_bundle(cache / key, new_version(1_700_000_000_000, manifest), run.predictor, manifest)
