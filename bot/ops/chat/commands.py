"""Answers to the chat owner's read-only commands: the operator read model and the log.

`/status`    mode, model, daemon, equity, open positions, today's P&L (the same figures as `bot status`)
`/positions` each open position with its unrealised P&L at the last stored candle close
`/pnl`       realised P&L today, over the last 7 days and all time, with trade counts
`/tail [N]`  the last N (default 10, at most 50) short log lines

Every figure comes from `bot.ops.read_model` (one read-only transaction per answer), so "today",
"held" and "the last 7 days" are on the exchange clock, as in `bot status` and the dashboard.
Numbers are formatted by `models.textfmt` like the log lines; times are `MM-DD HH:MM` UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.ops.read_model import ReadModel
from models.textfmt import MISSING, count, duration, money, num, pct, pf
from models.timeutil import fmt_short

HELP = "read-only commands: /status /positions /pnl /tail [N]"


class Answers:
    """`await Answers(pool, mode=..., symbols=..., log_path=...)(command, args)` -> the reply text."""

    def __init__(self, pool: Any, *, mode: str, symbols: Sequence[str] = (), log_path: Path | None = None,
                 quote: str = "USDT") -> None:  # fmt: skip
        self.model = ReadModel(pool, mode, list(symbols), recent_trades=0, recent_decisions=1, equity_points=2)
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
        v = await self.model.view()
        q = self.quote
        m = v.model
        model = "none (watch only)" if m is None else f"{m.version} ({m.status}, PF {pf(m.validated_pf)})"
        state = f"WATCH ONLY: {v.watch_reason}" if v.watch_only else "trading" if v.trading else v.daemon.state_text
        lines = [f"mode {v.mode}  model {model}", state]
        a = v.account
        lines.append(f"equity {money(a.equity, sign=False)} {q} at {fmt_short(a.ts)}" if a else "equity: no snapshot yet")
        u = v.unrealised
        lines.append(f"open positions {len(v.positions)}" + ("" if u is None else f", unrealised {money(u)} {q}"))
        t = v.today
        if t is not None:
            p = MISSING if t.pnl is None else f"{money(t.pnl)} {q}" + ("" if t.pnl_pct is None else f" ({pct(t.pnl_pct)})")
            lines.append(f"today ({fmt_short(t.start_ts)[:5]}) P&L {p}, realised {money(t.realised)} {q} over "
                         f"{count(t.trades_closed)} closed trades")  # fmt: skip
        if v.kill_switch.tripped:
            lines.append(f"KILL SWITCH {v.kill_switch.tripped} since {fmt_short(v.kill_switch.since_ts)}: no new entries")
        lines.extend(p.text for p in v.protections)
        lines.append(f"last minute {fmt_short(v.clock.last_minute_ts)}"
                     + (f", last decision {fmt_short(v.decisions[0].ts)}" if v.decisions else ""))  # fmt: skip
        return "\n".join(lines)

    async def positions(self, _args: list[str]) -> str:
        v = await self.model.view()
        if not v.positions:
            return "no open positions"
        q = self.quote
        out = []
        for p in v.positions:
            line = f"{p.symbol} {num(p.qty)} @ {num(p.entry_price)} since {fmt_short(p.entry_ts)}  held {duration(p.held_s)}"
            if p.mark is not None:
                line += f"  now {num(p.mark)}  {money(p.unrealised)} {q} ({pct(p.unrealised_pct)})"
            if p.take_profit is not None and p.stop_loss is not None:
                line += f"  TP {num(p.take_profit)} SL {num(p.stop_loss)}"
            out.append(line)
        out.append(f"{len(v.positions)} open, unrealised {money(v.unrealised)} {q}")
        return "\n".join(out)

    async def pnl(self, _args: list[str]) -> str:
        return "\n".join(f"{s.label}: {money(s.realised)} {self.quote}  {count(s.trades_closed)} trades  {count(s.wins)} won"
                         for s in await self.model.pnl_spans())  # fmt: skip

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
