"""Answers to the chat owner's read-only commands, from the store and the log.

`/status`    mode, equity (last snapshot), open positions, today's realised P&L, champion model
`/positions` each open position with its unrealised P&L at the last stored candle close
`/pnl`       realised P&L today (UTC), last 7 days and all time, with trade counts
`/tail [N]`  the last N (default 10, at most 50) short log lines

Nothing here writes: every query is a SELECT on `positions`, `equity_snapshots`, `candles`,
`decisions` and `model_versions` (bot/store/migrations/001_init.sql). Times are
`MM-DD HH:MM` UTC like the log lines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bot.logs.event_lines import money, num, pct
from models.timeutil import DAY_MS, fmt_short

HELP = "read-only commands: /status /positions /pnl /tail [N]"


class Answers:
    """`await Answers(pool, mode=..., log_path=...)(command, args)` -> the reply text."""

    def __init__(self, pool: Any, *, mode: str, log_path: Path | None = None, quote: str = "USDT"):
        self.pool = pool
        self.mode = mode
        self.log_path = log_path
        self.quote = quote

    async def __call__(self, command: str, args: list[str]) -> str:
        handler = {
            "/status": self.status,
            "/positions": self.positions,
            "/pnl": self.pnl,
            "/tail": self.tail,
        }.get(command)
        if handler is None:
            return HELP
        return await handler(args)

    async def status(self, _args: list[str]) -> str:
        eq = await self.pool.fetchrow(
            "SELECT ts, equity, open_positions FROM equity_snapshots WHERE mode = $1 ORDER BY ts DESC LIMIT 1", self.mode
        )
        n_open = await self.pool.fetchval("SELECT count(*) FROM positions WHERE mode = $1 AND status = 'open'", self.mode)
        day0 = _utc_midnight_ms()
        today = await self.pool.fetchrow(
            "SELECT coalesce(sum(pnl), 0) AS pnl, count(*) AS n FROM positions "
            "WHERE mode = $1 AND status = 'closed' AND exit_ts >= $2",
            self.mode, day0,
        )  # fmt: skip
        champ = await self.pool.fetchval("SELECT version FROM model_versions WHERE status = 'champion'")
        last_dec = await self.pool.fetchval("SELECT max(ts) FROM decisions WHERE mode = $1", self.mode)
        lines = [f"mode {self.mode}  model {champ or 'none (watch only)'}"]
        lines.append(f"equity {eq['equity']:,.2f} {self.quote} at {fmt_short(eq['ts'])}" if eq else "equity: no snapshot yet")
        lines.append(f"open positions {n_open}")
        lines.append(f"today {money(today['pnl'])} {self.quote} realised, {today['n']} closed trades")
        lines.append(f"last decision {fmt_short(last_dec)}")
        return "\n".join(lines)

    async def positions(self, _args: list[str]) -> str:
        rows = await self.pool.fetch(
            """
            SELECT p.symbol, p.qty, p.entry_price, p.entry_ts, p.take_profit, p.stop_loss, c.close, c.ts AS price_ts
            FROM positions p
            LEFT JOIN LATERAL (SELECT close, ts FROM candles WHERE symbol = p.symbol ORDER BY ts DESC LIMIT 1) c ON true
            WHERE p.mode = $1 AND p.status = 'open'
            ORDER BY p.entry_ts
            """,
            self.mode,
        )
        if not rows:
            return "no open positions"
        out = []
        total = 0.0
        for r in rows:
            line = f"{r['symbol']} {num(r['qty'])} @ {num(r['entry_price'])} since {fmt_short(r['entry_ts'])}"
            if r["close"] is not None:
                upnl = (r["close"] - r["entry_price"]) * r["qty"]
                total += upnl
                line += f"  now {num(r['close'])}  {money(upnl)} {self.quote} ({pct(r['close'] / r['entry_price'] - 1)})"
            if r["take_profit"] is not None and r["stop_loss"] is not None:
                line += f"  TP {num(r['take_profit'])} SL {num(r['stop_loss'])}"
            out.append(line)
        out.append(f"{len(rows)} open, unrealised {money(total)} {self.quote}")
        return "\n".join(out)

    async def pnl(self, _args: list[str]) -> str:
        now = int(time.time() * 1000)
        spans = [("today", _utc_midnight_ms()), ("7 days", now - 7 * DAY_MS), ("all time", 0)]
        out = []
        for label, since in spans:
            r = await self.pool.fetchrow(
                "SELECT coalesce(sum(pnl), 0) AS pnl, count(*) AS n, count(*) FILTER (WHERE pnl > 0) AS wins "
                "FROM positions WHERE mode = $1 AND status = 'closed' AND exit_ts >= $2",
                self.mode, since,
            )  # fmt: skip
            out.append(f"{label}: {money(r['pnl'])} {self.quote}  {r['n']} trades  {r['wins']} won")
        return "\n".join(out)

    async def tail(self, args: list[str]) -> str:
        from bot.logs.setup import human_line
        from bot.ops.tail import Filter, tail_records

        n = 10
        if args and args[0].isdigit():
            n = max(1, min(50, int(args[0])))
        if self.log_path is None or not self.log_path.exists():
            return "no log yet"
        recs = list(tail_records(self.log_path, Filter(min_level="info"), n))
        return "\n".join(human_line(r, with_exception=False) for r in recs) or "log is empty"


def _utc_midnight_ms() -> int:
    now = int(time.time() * 1000)
    return now - now % DAY_MS
