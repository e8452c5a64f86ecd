"""A store as the paper daemon leaves it in the middle of a replayed 2021 day (the demo's case:
the exchange clock says 2021-04-11 21:16 while the wall clock says today), for the operator read
model's tests: engine state, a heartbeat row that lags the engine (it is written every few
seconds, a 600x replay moves 50 exchange minutes in 5 s), equity snapshots of the run since
the evening before, open and closed positions on both days, decisions, candles, a champion.

`await seed_replayed_day(dsn)` writes the rows and returns a `ReplayedDay` with the figures a
reader must show for them, computed here from the rows (not by the code under test). Hold the
daemon's advisory lock (`bot.store.daemon_lock.DaemonLock`) to look like a running daemon:
`async with replayed(dsn, tmp) as r` does both and gives a `Replay` with every renderer (`bot
status` as a subprocess, Telegram's answers, the dashboard on a real socket).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bot.ops.chat.commands import Answers
from bot.ops.dashboard.config import DashboardConfig
from bot.ops.dashboard.metrics import DaemonMetrics
from bot.ops.dashboard.server import make_app
from bot.ops.dashboard.state import DashboardState
from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, parse_time
from tests.support.paper_daemon import free_port
from tests.support.shared_data import ROOT

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
DAY0 = parse_time("2021-04-11")
LAST_MINUTE = parse_time("2021-04-11T21:16")  # the last minute the engine processed
RUN_START = parse_time("2021-04-10T20:00")  # the run's first equity snapshot
HEARTBEAT_LAG_MIN = 50  # the heartbeat row's minute is this far behind the engine's
VERSION = "20210411T000000Z-replay01"


def equity_at(ts: int) -> float:
    """The run's equity curve: 10,000 rising ~40 a day with a wiggle."""
    k = (ts - RUN_START) // MINUTE_MS
    return round(10_000.0 + k / 36.0 + 6.0 * math.sin(k / 17.0), 6)


@dataclass
class ReplayedDay:
    wall_ms: int
    snapshots: list[tuple[int, float]]
    closes: dict[str, float]  # the last candle close per symbol (marks)
    open_positions: dict[str, dict[str, float]]  # symbol -> qty, entry_price, entry_ts
    closed_today: list[float] = field(default_factory=list)  # P&L of today's exits
    closed_before: list[float] = field(default_factory=list)  # P&L of yesterday's exits
    skips_last_hour: dict[str, int] = field(default_factory=dict)

    @property
    def equity(self) -> float:
        return self.snapshots[-1][1]

    @property
    def day_base(self) -> float:
        """The equity at the day's start: the last snapshot before 00:00 UTC."""
        return [e for t, e in self.snapshots if t < DAY0][-1]

    @property
    def today_pnl(self) -> float:
        return self.equity - self.day_base

    @property
    def today_realised(self) -> float:
        return sum(self.closed_today)

    def held_s(self, symbol: str) -> float:
        """From the entry to the close of the last processed minute (exchange clock)."""
        return (LAST_MINUTE + MINUTE_MS - self.open_positions[symbol]["entry_ts"]) / 1000

    def unrealised(self, symbol: str) -> float:
        p = self.open_positions[symbol]
        return p["qty"] * (self.closes[symbol] - p["entry_price"])


async def seed_replayed_day(dsn: str, *, wall_ms: int | None = None, mode: str = "paper") -> ReplayedDay:
    wall = int(time.time() * 1000) if wall_ms is None else wall_ms
    snaps = [(t, equity_at(t)) for t in range(RUN_START, LAST_MINUTE + MINUTE_MS, MINUTE_MS)]
    cash = 6_000.0
    # candles: BTC one minute ahead of the engine (the feed stores before the engine steps),
    # ETH at the last minute, SOL 5 minutes behind it, XRP none
    last = {"BTCUSDT": (LAST_MINUTE + MINUTE_MS, 60_500.0), "ETHUSDT": (LAST_MINUTE, 2_150.0),
            "SOLUSDT": (LAST_MINUTE - 5 * MINUTE_MS, 131.0)}  # fmt: skip
    candles = []
    for sym, (t_last, close) in last.items():
        for k in range(30):
            c = close * (1 - 0.0005 * k)
            candles.append((sym, t_last - k * MINUTE_MS, c, c, c, c, 1.0))
    opened = {"BTCUSDT": {"qty": 0.03, "entry_price": 60_000.0, "entry_ts": LAST_MINUTE - 40 * MINUTE_MS},
              "ETHUSDT": {"qty": 0.8, "entry_price": 2_200.0, "entry_ts": LAST_MINUTE - 90 * MINUTE_MS}}  # fmt: skip
    today = [("SOLUSDT", 130.0, DAY0 + 2 * HOUR_MS, 131.3, 13.0, "tp"), ("XRPUSDT", 1.40, DAY0 + 9 * HOUR_MS, 1.386, -7.0, "sl"),
             ("ETHUSDT", 2_100.0, LAST_MINUTE - 3 * HOUR_MS, 2_120.0, 4.25, "timeout")]  # fmt: skip
    before = [("BTCUSDT", 59_000.0, DAY0 - 2 * HOUR_MS, 59_590.0, 29.5, "tp")]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table("candles", records=candles,
                                         columns=["symbol", "ts", "open", "high", "low", "close", "volume"])  # fmt: skip
        await conn.copy_records_to_table(
            "equity_snapshots", columns=["ts", "mode", "equity", "cash", "gross_exposure", "open_positions"],
            records=[(t, mode, e, cash, e - cash, 2) for t, e in snaps])  # fmt: skip
        pos = ("INSERT INTO positions (mode, symbol, status, qty, entry_price, entry_ts, take_profit, stop_loss, expires_ts, "
               "exit_price, exit_ts, exit_reason, pnl, model_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
               "$13, $14)")  # fmt: skip
        rows = [(mode, s, "open", p["qty"], p["entry_price"], int(p["entry_ts"]), p["entry_price"] * 1.01, p["entry_price"] * 0.99,
                 int(p["entry_ts"]) + 2 * HOUR_MS, None, None, None, None, VERSION) for s, p in opened.items()]  # fmt: skip
        for s, entry, exit_ts, exit_px, pnl, why in today + before:
            rows.append((mode, s, "closed", 10.0, entry, exit_ts - 30 * MINUTE_MS, None, None, None, exit_px, exit_ts, why, pnl,
                         VERSION))  # fmt: skip
        await conn.executemany(pos, rows)
        skips = {"max_positions": 7, "non_positive_er": 4}
        dec = []
        for reason, n in skips.items():  # within the last hour of the exchange clock
            dec += [(LAST_MINUTE - k * MINUTE_MS, mode, "SOLUSDT", "skip", reason, 0.001, 0.6, None) for k in range(n)]
        dec += [(LAST_MINUTE - 2 * HOUR_MS, mode, "XRPUSDT", "skip", "kill_switch", None, None, None)]  # older
        dec += [(LAST_MINUTE - 41 * MINUTE_MS, mode, "BTCUSDT", "enter", "taken", 0.003, 0.71, 0.021)]
        await conn.executemany("INSERT INTO decisions (ts, mode, symbol, action, reason, er, probability, size_fraction) "
                               "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", dec)  # fmt: skip
        await conn.execute("INSERT INTO model_versions (version, path, status, created_ts, promoted_ts, data_from_ts, data_to_ts, "
                           "metrics) VALUES ($1, '/nowhere', 'champion', $2, $2, $3, $4, $5::jsonb)", VERSION, wall - HOUR_MS,
                           DAY0 - 9 * DAY_MS, DAY0, json.dumps({"walk_forward": {"profit_factor": 1.12, "trades": 340}}))  # fmt: skip
        state = {"cash": cash, "risk": {"kill_switch": {"tripped": None}}}
        await conn.execute("INSERT INTO engine_state (mode, last_minute_ts, cash, equity, model_version, state, updated_ts) "
                           "VALUES ($1, $2, $3, $4, $5, $6, $7)", mode, LAST_MINUTE, cash, snaps[-1][1], VERSION,
                           json.dumps(state), wall - 400)  # fmt: skip
        await conn.execute(
            "INSERT INTO daemon_status (id, pid, host, started_ts, heartbeat_ts, stopped_ts, mode, model_version, watch_only, "
            "watch_reason, last_minute_ts, details) VALUES (true, $1, 'replayhost', $2, $3, NULL, $4, $5, false, NULL, $6, $7::jsonb)",
            4242, wall - 150_000, wall - 3_000, mode, VERSION, LAST_MINUTE - HEARTBEAT_LAG_MIN * MINUTE_MS,
            json.dumps({"retrain_next_run": "2026-12-08 03:00", "minutes_processed": 1517}))  # fmt: skip
    finally:
        await conn.close()
    return ReplayedDay(wall, snaps, {s: c for s, (_, c) in last.items()}, opened,
                       [x[4] for x in today], [x[4] for x in before], skips)  # fmt: skip


class Replay:
    """The seeded store, the lock held as a running daemon holds it, a pool, and the renderers."""

    def __init__(self, dsn: str, day: ReplayedDay, pool: asyncpg.Pool, tmp: Path) -> None:
        self.dsn, self.day, self.pool, self.tmp = dsn, day, pool, tmp
        self.metrics = DaemonMetrics()
        self.dash = DashboardState(db=pool, mode="paper", symbols=SYMBOLS, metrics=self.metrics)
        self.cfg = tmp / "config.yaml"
        self.cfg.write_text(f"symbols: [{', '.join(SYMBOLS)}]\npaths:\n  data_dir: {tmp}/var\n  logs_dir: {tmp}/logs\n")

    async def bot_status(self, *args: str) -> tuple[int, str]:
        p = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "--config", str(self.cfg), "status", *args,
                                                 cwd=ROOT, env={**os.environ, "BOT_DATABASE_DSN": self.dsn},
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
        out, err = await asyncio.wait_for(p.communicate(), 120)
        return p.returncode or 0, out.decode() + err.decode()

    async def status_json(self) -> dict[str, Any]:
        rc, out = await self.bot_status("--json")
        assert rc == 0, out
        return json.loads(out)

    def telegram(self) -> Answers:
        return Answers(self.pool, mode="paper", symbols=SYMBOLS)

    async def served(self) -> tuple[web.AppRunner, str]:
        runner = web.AppRunner(make_app(self.dash, DashboardConfig(refresh_s=60)), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner, f"http://127.0.0.1:{port}"

    async def fetch(self, path: str) -> str:
        """GET `path` from the dashboard served on a real socket."""
        runner, base = await self.served()
        try:
            async with aiohttp.ClientSession() as http, http.get(base + path) as r:
                assert r.status == 200, await r.text()
                return await r.text()
        finally:
            await runner.cleanup()


@asynccontextmanager
async def replayed(dsn: str, tmp: Path) -> AsyncIterator[Replay]:
    """The replayed day seeded, the daemon's lock held as a running daemon holds it, a pool."""
    from bot.store.daemon_lock import DaemonLock

    day = await seed_replayed_day(dsn)
    lock = await DaemonLock.acquire(dsn)  # the daemon runs: it holds the store's advisory lock
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    try:
        yield Replay(dsn, day, pool, tmp)
    finally:
        await pool.close()
        await lock.release()
