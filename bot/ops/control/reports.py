"""The read-only commands `daily [N]`, `weekly [N]`, `performance`: realised P&L per UTC day,
per ISO week, per symbol, as a few short lines for a chat or a terminal.

The figures are the operator read model's (`bot.ops.read_model.ReadModel.pnl_by`): the same
query `bot status`, Telegram and the dashboard read, so the three can never disagree.
`now_ts` is the daemon's own clock (the last minute it stepped: in a replay or the demo the
market's day, not the wall clock's).
"""

from __future__ import annotations

import time
from typing import Any

from models.timeutil import DAY_MS

DEFAULT_DAYS, DEFAULT_WEEKS, MAX_PERIODS = 7, 4, 60
WEEK_MS = 7 * DAY_MS


def _count(args: list[str], default: int) -> int:
    if not args:
        return default
    try:
        n = int(args[0])
    except ValueError:
        raise ValueError(f"{args[0]!r} is not a number of periods") from None
    if not 1 <= n <= MAX_PERIODS:
        raise ValueError(f"the number of periods must be 1..{MAX_PERIODS}, got {n}")
    return n


async def report(db: Any, mode: str, symbols: Any, kind: str, args: list[str], *, now_ts: int | None,
                 quote: str = "USDT") -> tuple[str, dict[str, Any]]:  # fmt: skip
    """(the text, the rows as data) of one report; ValueError for a bad count."""
    from bot.ops.read_model import ReadModel, week_start

    now = int(now_ts if now_ts is not None else time.time() * 1000)
    rm = ReadModel(db, mode, list(symbols))
    if kind == "daily":
        n = _count(args, DEFAULT_DAYS)
        since = now - now % DAY_MS - (n - 1) * DAY_MS
        rows, title = await rm.pnl_by("day", since_ts=since), f"realised P&L per UTC day, last {n} day(s)"
    elif kind == "weekly":
        n = _count(args, DEFAULT_WEEKS)
        since = week_start(now) - (n - 1) * WEEK_MS
        rows, title = await rm.pnl_by("week", since_ts=since), f"realised P&L per week (from Monday), last {n} week(s)"
    else:
        rows, title = await rm.pnl_by("symbol"), "realised P&L per symbol, all time, best first"
    lines = [title + ":"]
    for r in rows:
        lines.append(f"{r.label}  {r.realised:+,.2f} {quote}  {r.trades_closed} trades  {r.wins} won")
    if not rows:
        lines.append("no closed trades")
    else:
        total = sum(r.realised for r in rows)
        lines.append(f"total  {total:+,.2f} {quote}  {sum(r.trades_closed for r in rows)} trades")
    data = {"rows": [{"label": r.label, "start_ts": r.start_ts, "realised": r.realised, "trades": r.trades_closed,
                      "wins": r.wins} for r in rows]}  # fmt: skip
    return "\n".join(lines), data
