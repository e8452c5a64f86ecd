"""The one operator read model: what `bot status`, Telegram, the dashboard and `/metrics` show.

`ReadModel(db, mode, symbols).view()` reads the store in **one read-only REPEATABLE READ
transaction** (every figure of a view is of the same moment) and returns an `OperatorView` of
typed values; the renderers only format them (`models.textfmt`, `models.timeutil`). It works
from any process, daemon or not: the daemon writes its `daemon_status` row (start, a heartbeat
every few seconds, model, watch-only reason, details such as the next retrain) and, each minute,
`engine_state`, `positions`, `decisions` and `equity_snapshots` in one transaction.

Two clocks, and which figure uses which:
- **the exchange clock** (`Clock`): the last minute the engine processed,
  `engine_state.last_minute_ts` (before the engine's first minute: `daemon_status.last_minute_ts`,
  else the last equity snapshot, else the newest candle of the symbols; in an empty store the
  wall clock's last closed minute). Its *close*, `last_minute_ts + 60 s`, is "now" on this
  clock (`Clock.exchange_ms`). "Today" (the UTC day of the last minute), every age of a candle,
  every "held" of a position or trade, "the last hour" of skip counts and the span of the equity
  chart are on it, so a replay or the demo reads like live.
- **the wall clock** (`Clock.wall_ms`, the reader's `time.time()`): figures about the process:
  uptime, heartbeat age, how long ago the engine wrote its last minute (`last_step_age_s`: a
  stalled engine shows here whatever the market's clock says), the next retrain (a cron time).

Whether a daemon runs right now is whether one holds the store's advisory lock
(`bot.store.daemon_lock`), which the status row alone cannot tell after a kill -9. Open
positions are marked at the last candle in the store (unrealised P&L before exit costs).

`ReadModel.pnl_spans()` (today, 7 days, all time) and `ReadModel.pnl_by("day"|"week"|"symbol")`
give realised P&L per period for the chat's /pnl and later reports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg

from models.textfmt import duration
from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, fmt_date, fmt_ts, to_datetime

FEED_OK_S = 150.0  # a symbol at most ~2 minutes behind the engine's last minute is fine
FEED_STALE_S = 600.0  # beyond 10 minutes behind it is stale (between: late)
HEARTBEAT_STALE_S = 180.0  # wall clock: a daemon holding the lock but silent this long is stalled
EQUITY_POINTS = 600
RECENT_TRADES = 15
RECENT_DECISIONS = 25
MODEL_ROWS = 8
WEEK_MS = 7 * DAY_MS
_MONDAY_MS = 4 * DAY_MS  # 1970-01-05, the first Monday after the epoch: weeks start on Mondays (ISO)


# -- the values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """The two clocks of one view (see the module docstring)."""

    wall_ms: int  # the reader's wall clock: process figures
    last_minute_ts: int  # open of the last minute the engine processed
    exchange_ms: int  # its close (last_minute_ts + 60 s): "now" on the exchange clock
    source: Literal["engine", "heartbeat", "snapshot", "candles", "wall"]  # where last_minute_ts came from
    day_start_ts: int  # 00:00 UTC of the last minute's day: "today"


@dataclass(frozen=True)
class DaemonState:
    """The daemon process. Ages and uptime on the wall clock."""

    running: bool  # a daemon holds the store's advisory lock now
    state: Literal["running", "stale", "stopped", "vanished", "never"]
    state_text: str  # one line for people
    lock_holder: str | None = None
    pid: int | None = None
    host: str | None = None
    mode: str | None = None
    started_ts: int | None = None
    stopped_ts: int | None = None
    heartbeat_ts: int | None = None
    uptime_s: float | None = None  # wall clock, while running
    heartbeat_age_s: float | None = None  # wall clock
    last_step_age_s: float | None = None  # wall clock: since the engine wrote its last minute
    details: dict[str, Any] = field(default_factory=dict)  # from the heartbeat (rss, loop lag, feed, store)


@dataclass(frozen=True)
class ModelInUse:
    version: str
    status: str
    validated_pf: float | None  # the out-of-sample PF the no-edge floor reads
    validated_trades: int | None
    in_use: bool  # the daemon's model (False: the champion, no daemon using it)


@dataclass(frozen=True)
class KillSwitch:
    tripped: str | None = None  # the reason, None when off (or unknown: no engine state)
    since_ts: int | None = None  # exchange clock


@dataclass(frozen=True)
class Protection:
    """A protection blocking entries now (`risk.protections`), on the exchange clock: read from
    the risk part of the engine state, active while the next minute's decision is before its end."""

    protection: str  # the decision log's reason: stop_loss_guard | low_profit_lock | drawdown_lookback
    scope: str  # "*" = every symbol, else the one symbol it blocks
    since_ts: int
    until_ts: int
    text: str  # one line for people: what it blocks, until when, and why


@dataclass(frozen=True)
class Account:
    """Equity and cash of the last processed minute (engine_state, else the last equity snapshot)."""

    ts: int  # the minute of these figures
    equity: float
    cash: float
    exposure: float  # market value of the open positions at the engine's marks (equity - cash)
    exposure_pct: float | None  # of equity
    source: Literal["engine", "snapshot"]


@dataclass(frozen=True)
class PnL:
    """P&L over a period on the exchange clock: realised from closed trades (exits in
    [start_ts, end_ts)), and for "today" also the equity change (`pnl`: realised plus the
    change in unrealised, against the equity at the day's start)."""

    label: str
    start_ts: int | None
    end_ts: int | None
    realised: float
    trades_closed: int
    wins: int
    pnl: float | None = None
    pnl_pct: float | None = None


@dataclass(frozen=True)
class Position:
    symbol: str
    qty: float
    entry_price: float
    entry_ts: int
    take_profit: float | None
    stop_loss: float | None
    expires_ts: int | None
    model_version: str | None
    mark: float | None  # close of the last candle in the store
    mark_ts: int | None
    value: float | None
    unrealised: float | None  # at the mark, before exit costs
    unrealised_pct: float | None
    held_s: float  # exchange clock: from the entry to the close of the last processed minute


@dataclass(frozen=True)
class FeedSymbol:
    symbol: str
    last_candle_ts: int | None
    age_s: float | None  # exchange clock: how far the last candle's close is behind the last minute's close (>= 0)
    health: Literal["ok", "late", "stale", "none"]


@dataclass(frozen=True)
class Trade:
    symbol: str
    qty: float
    entry_price: float
    entry_ts: int
    exit_price: float | None
    exit_ts: int | None
    exit_reason: str | None
    pnl: float | None
    pnl_pct: float | None  # of the entry value
    held_s: float | None  # exchange clock


@dataclass(frozen=True)
class Decision:
    ts: int
    symbol: str
    action: str
    reason: str
    er: float | None
    probability: float | None
    size_fraction: float | None


@dataclass(frozen=True)
class SkipCount:
    reason: str
    count: int


@dataclass(frozen=True)
class EquityCurve:
    """The run's equity points: the snapshots of this mode from the first to the last processed
    minute (exchange clock; or the last `hours` of it), at most `points + 1` of them: the first
    snapshot and the last one of each `bucket_ms` bucket."""

    ts: list[int]
    equity: list[float]
    start_ts: int | None
    end_ts: int | None
    bucket_ms: int
    hours: float | None  # the cap asked for (None: the whole run)


@dataclass(frozen=True)
class ModelVersion:
    version: str
    status: str
    created_ts: int | None
    promoted_ts: int | None
    data_from_ts: int | None
    data_to_ts: int | None
    validated_pf: float | None
    validated_trades: int | None


@dataclass(frozen=True)
class Paused:
    """The operator paused entries (`bot ctl pause`, bot.ops.control): no new positions, exits
    go on. Persisted in `control_state`, so true of a stopped daemon's next start too."""

    since_ts: int
    by: str


@dataclass(frozen=True)
class OperatorView:
    """Everything an operator reads, of one moment (see the module docstring for the clocks)."""

    mode: str
    clock: Clock
    daemon: DaemonState
    model: ModelInUse | None
    trading: bool  # a daemon runs, not watch-only, with a model
    watch_only: bool | None
    watch_reason: str | None
    kill_switch: KillSwitch
    protections: list[Protection]  # active ones, soonest end first (none: [])
    account: Account | None
    today: PnL
    positions: list[Position]
    feed: dict[str, FeedSymbol]  # in the order of the configured symbols
    trades: list[Trade]  # the most recent closed trades, newest exit first
    decisions: list[Decision]  # the most recent decisions, newest first
    skips_last_hour: list[SkipCount]  # exchange clock: the 60 minutes up to the last one
    equity: EquityCurve
    models: list[ModelVersion]
    retrain_next: str | None  # wall clock (the cron schedule), UTC text
    retrain_last: Any
    paused: Paused | None = None  # entries paused by the operator

    @property
    def unrealised(self) -> float | None:
        """Unrealised P&L of the open positions that have a mark (None without any)."""
        us = [p.unrealised for p in self.positions if p.unrealised is not None]
        return sum(us) if us else None


def to_json(x: Any) -> Any:
    """A view (or any of its parts) as plain JSON data: dataclasses as dicts, NaN/inf as None."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        d = {f.name: to_json(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, OperatorView):
            d["unrealised"] = to_json(x.unrealised)
        return d
    if isinstance(x, Mapping):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_json(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


# -- reading ---------------------------------------------------------------------------------


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def _f(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def validated_pf(metrics: Any, path: str | None = None) -> float | None:
    """The out-of-sample PF recorded in model_versions, else in the bundle's manifest (the
    figure the engine's no-edge floor reads)."""
    wf = (_json(metrics) or {}).get("walk_forward") or {}
    pf = wf.get("profit_factor")
    if pf is None and path:
        try:
            m = json.loads((Path(path) / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        pf = (((m.get("walk_forward") or {}).get("all") or {}).get("overall") or {}).get("profit_factor")
    return None if pf is None else float(pf)


def _validated_trades(metrics: Any) -> int | None:
    t = ((_json(metrics) or {}).get("walk_forward") or {}).get("trades")
    return None if t is None else int(t)


def week_start(ts: int) -> int:
    """00:00 UTC of the Monday of `ts`'s ISO week."""
    return (ts - _MONDAY_MS) // WEEK_MS * WEEK_MS + _MONDAY_MS


def _week_label(ts: int) -> str:
    y, w, _ = to_datetime(ts).isocalendar()
    return f"{y}-W{w:02d}"


class ReadModel:
    """The store reads behind every operator view (`db`: an asyncpg pool or connection, or a
    `Store`, whose `.pool` is used). `mode_from_daemon`: read the mode of the daemon's status
    row when there is one (`bot status` run with a config whose mode differs from the daemon's)."""

    def __init__(self, db: Any, mode: str, symbols: list[str] | tuple[str, ...], *, mode_from_daemon: bool = False,
                 recent_trades: int = RECENT_TRADES, recent_decisions: int = RECENT_DECISIONS,
                 equity_points: int = EQUITY_POINTS, equity_hours: float | None = None) -> None:  # fmt: skip
        self.db = getattr(db, "pool", db)
        self.mode = mode
        self.symbols = list(symbols)
        self.mode_from_daemon = mode_from_daemon
        self.recent_trades = recent_trades
        self.recent_decisions = recent_decisions
        self.equity_points = max(2, int(equity_points))
        self.equity_hours = equity_hours or None

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection in a read-only REPEATABLE READ transaction: all reads see one moment."""
        if isinstance(self.db, asyncpg.Connection):
            async with self.db.transaction(isolation="repeatable_read", readonly=True):
                yield self.db
            return
        async with self.db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn

    # -- the view --------------------------------------------------------------------------

    async def view(self, *, wall_ms: int | None = None) -> OperatorView:
        """Everything, read once (see `OperatorView`)."""
        wall = int(time.time() * 1000) if wall_ms is None else int(wall_ms)
        async with self._snapshot() as conn:
            row, holder = await _daemon_row(conn)
            mode = (row or {}).get("mode") if self.mode_from_daemon and row else None
            mode = mode or self.mode
            es = await conn.fetchrow("SELECT last_minute_ts, cash, equity, state, updated_ts FROM engine_state WHERE mode = $1",
                                     mode)  # fmt: skip
            pos_rows = await conn.fetch(
                """SELECT symbol, qty, entry_price, entry_ts, take_profit, stop_loss, expires_ts, model_version
                   FROM positions WHERE mode = $1 AND status = 'open' ORDER BY entry_ts, symbol""", mode)  # fmt: skip
            wanted = list(dict.fromkeys([*self.symbols, *(r["symbol"] for r in pos_rows)]))
            last = {r["symbol"]: r for r in await conn.fetch(
                """SELECT s AS symbol, c.ts, c.close FROM unnest($1::text[]) AS s
                   LEFT JOIN LATERAL (SELECT ts, close FROM candles WHERE symbol = s ORDER BY ts DESC LIMIT 1) c ON true""",
                wanted)}  # fmt: skip
            snap = None if es is not None else await _last_snapshot_ts(conn, mode)
            clock = _clock(wall, es, row, snap, [last[s]["ts"] for s in self.symbols if last[s]["ts"] is not None])
            daemon = _daemon(row, holder, es, wall)
            model = await _model_in_use(conn, row)
            account = await _account(conn, mode, es, clock)
            today = await _today(conn, mode, account, clock)
            positions = [_position(r, last.get(r["symbol"]), clock) for r in pos_rows]
            feed = {s: _feed(s, last[s]["ts"], clock) for s in self.symbols}
            trades = await self._trades(conn, mode, clock)
            decisions, skips = await self._decisions(conn, mode, clock)
            equity = await self._equity(conn, mode, clock)
            models = await _models(conn)
            paused = await _paused(conn, mode)
        watch = bool(row.get("watch_only")) if row else None
        details = (row or {}).get("details") or {}
        return OperatorView(
            mode=mode, clock=clock, daemon=daemon, model=model,
            trading=daemon.running and not watch and bool((row or {}).get("model_version")),
            watch_only=watch, watch_reason=(row or {}).get("watch_reason"), kill_switch=_kill_switch(es),
            protections=_protections(es, clock),
            account=account, today=today, positions=positions, feed=feed, trades=trades, decisions=decisions,
            skips_last_hour=skips, equity=equity, models=models,
            retrain_next=details.get("retrain_next_run"), retrain_last=details.get("retrain_last"), paused=paused,
        )  # fmt: skip

    async def _trades(self, conn: asyncpg.Connection, mode: str, clock: Clock) -> list[Trade]:
        rows = await conn.fetch(
            """SELECT symbol, qty, entry_price, entry_ts, exit_price, exit_ts, exit_reason, pnl FROM positions
               WHERE mode = $1 AND status = 'closed' ORDER BY exit_ts DESC NULLS LAST, id DESC LIMIT $2""",
            mode, self.recent_trades)  # fmt: skip
        out = []
        for r in rows:
            qty, entry, pnl = float(r["qty"]), float(r["entry_price"]), _f(r["pnl"])
            cost = qty * entry
            out.append(Trade(
                symbol=r["symbol"], qty=qty, entry_price=entry, entry_ts=int(r["entry_ts"]), exit_price=_f(r["exit_price"]),
                exit_ts=r["exit_ts"], exit_reason=r["exit_reason"], pnl=pnl,
                pnl_pct=None if pnl is None or cost <= 0 else pnl / cost,
                held_s=None if r["exit_ts"] is None else (int(r["exit_ts"]) - int(r["entry_ts"])) / 1000,
            ))  # fmt: skip
        return out

    async def _decisions(self, conn: asyncpg.Connection, mode: str, clock: Clock) -> tuple[list[Decision], list[SkipCount]]:
        rows = await conn.fetch(
            """SELECT ts, symbol, action, reason, er, probability, size_fraction FROM decisions
               WHERE mode = $1 ORDER BY ts DESC, id DESC LIMIT $2""", mode, self.recent_decisions)  # fmt: skip
        recent = [Decision(ts=int(r["ts"]), symbol=r["symbol"], action=r["action"], reason=r["reason"], er=_f(r["er"]),
                           probability=_f(r["probability"]), size_fraction=_f(r["size_fraction"])) for r in rows]  # fmt: skip
        srows = await conn.fetch(
            """SELECT reason, count(*) AS n FROM decisions WHERE mode = $1 AND action = 'skip' AND ts >= $2 AND ts < $3
               GROUP BY reason ORDER BY n DESC, reason""", mode, clock.exchange_ms - HOUR_MS, clock.exchange_ms)  # fmt: skip
        return recent, [SkipCount(r["reason"], int(r["n"])) for r in srows]

    async def _equity(self, conn: asyncpg.Connection, mode: str, clock: Clock) -> EquityCurve:
        """One index probe per bucket (the last snapshot at or before its end), so the cost is
        the number of points, not the length of the run."""
        end = clock.last_minute_ts
        first = await conn.fetchval("SELECT min(ts) FROM equity_snapshots WHERE mode = $1 AND ts <= $2", mode, end)
        if first is None:
            return EquityCurve([], [], None, None, MINUTE_MS, self.equity_hours)
        start = int(first) if self.equity_hours is None else max(int(first), end - int(self.equity_hours * HOUR_MS) + MINUTE_MS)
        span = end - start + MINUTE_MS
        bucket = -(-span // self.equity_points // MINUTE_MS) * MINUTE_MS  # whole minutes, at most `equity_points` buckets
        n = -(-span // bucket)
        rows = await conn.fetch(
            """SELECT ts, equity FROM (
                   SELECT ts, equity FROM equity_snapshots WHERE mode = $1 AND ts >= $2 ORDER BY ts LIMIT 1) f
               UNION
               SELECT s.ts, s.equity FROM generate_series(1::bigint, $4::bigint) AS k
               CROSS JOIN LATERAL (SELECT ts, equity FROM equity_snapshots
                                   WHERE mode = $1 AND ts >= $2 AND ts <= least($2 + k * $3::bigint - 1, $5)
                                   ORDER BY ts DESC LIMIT 1) s
               ORDER BY ts""",
            mode, start, bucket, n, end)  # fmt: skip
        return EquityCurve([int(r["ts"]) for r in rows], [float(r["equity"]) for r in rows], start, end, bucket,
                           self.equity_hours)  # fmt: skip

    # -- P&L per period --------------------------------------------------------------------

    async def pnl_spans(self, *, wall_ms: int | None = None) -> list[PnL]:
        """Realised P&L today, over the last 7 days and all time, on the exchange clock."""
        wall = int(time.time() * 1000) if wall_ms is None else int(wall_ms)
        async with self._snapshot() as conn:
            clock = await self._clock_only(conn, wall)
            spans = [("today", clock.day_start_ts), ("7 days", clock.exchange_ms - 7 * DAY_MS), ("all time", None)]
            return [await _realised(conn, self.mode, label, since, None) for label, since in spans]

    async def pnl_by(self, by: Literal["day", "week", "symbol"], *, since_ts: int | None = None,
                     until_ts: int | None = None) -> list[PnL]:  # fmt: skip
        """Realised P&L of closed trades per UTC day, per ISO week (Monday 00:00 UTC) or per
        symbol, by exit time; oldest period first (symbols: by P&L, best first)."""
        key = {"day": f"exit_ts - exit_ts % {DAY_MS}",
               "week": f"(exit_ts - {_MONDAY_MS}) / {WEEK_MS} * {WEEK_MS} + {_MONDAY_MS}",
               "symbol": "symbol"}.get(by)  # fmt: skip
        if key is None:
            raise ValueError(f"pnl_by: by must be 'day', 'week' or 'symbol', got {by!r}")
        async with self._snapshot() as conn:
            rows = await conn.fetch(
                f"""SELECT {key} AS k, min(exit_ts) AS first, max(exit_ts) AS last, coalesce(sum(pnl), 0) AS pnl,
                           count(*) AS n, count(*) FILTER (WHERE pnl > 0) AS wins
                    FROM positions WHERE mode = $1 AND status = 'closed' AND exit_ts >= coalesce($2, exit_ts)
                         AND exit_ts < coalesce($3, exit_ts + 1)
                    GROUP BY 1 ORDER BY {'pnl DESC, 1' if by == 'symbol' else '1'}""",
                self.mode, since_ts, until_ts)  # fmt: skip
        out = []
        for r in rows:
            if by == "symbol":
                label, start, end = r["k"], int(r["first"]), int(r["last"]) + 1
            else:
                start = int(r["k"])
                label, end = (fmt_date(start), start + DAY_MS) if by == "day" else (_week_label(start), start + WEEK_MS)
            out.append(PnL(label, start, end, float(r["pnl"]), int(r["n"]), int(r["wins"])))
        return out

    async def _clock_only(self, conn: asyncpg.Connection, wall: int) -> Clock:
        es = await conn.fetchrow("SELECT last_minute_ts FROM engine_state WHERE mode = $1", self.mode)
        row, _ = await _daemon_row(conn, with_lock=False)
        newest = await conn.fetch("SELECT (SELECT ts FROM candles WHERE symbol = s ORDER BY ts DESC LIMIT 1) AS ts "
                                  "FROM unnest($1::text[]) AS s", self.symbols)  # fmt: skip
        snap = None if es is not None else await _last_snapshot_ts(conn, self.mode)
        return _clock(wall, es, row, snap, [r["ts"] for r in newest if r["ts"] is not None])


# -- the parts -------------------------------------------------------------------------------


async def _daemon_row(conn: asyncpg.Connection, *, with_lock: bool = True) -> tuple[dict[str, Any] | None, Any]:
    """The daemon_status row (None if no daemon ever ran here, or the table is absent) and the
    advisory lock's holder."""
    from bot.store.daemon_lock import lock_holder

    holder = await lock_holder(conn) if with_lock else None
    if not await conn.fetchval("SELECT to_regclass('daemon_status') IS NOT NULL"):
        return None, holder
    r = await conn.fetchrow("SELECT * FROM daemon_status WHERE id")
    if r is None:
        return None, holder
    row = dict(r)
    row["details"] = _json(row.get("details")) or {}
    return row, holder


async def _paused(conn: asyncpg.Connection, mode: str) -> Paused | None:
    if mode not in ("paper", "live") or not await conn.fetchval("SELECT to_regclass('control_state') IS NOT NULL"):
        return None
    from bot.store.control import read_control_state

    st = await read_control_state(conn, mode)
    return Paused(int(st.changed_ts or 0), st.changed_by or "?") if st.paused else None


async def _last_snapshot_ts(conn: asyncpg.Connection, mode: str) -> int | None:
    v = await conn.fetchval("SELECT ts FROM equity_snapshots WHERE mode = $1 ORDER BY ts DESC LIMIT 1", mode)
    return None if v is None else int(v)


def _clock(wall: int, es: Any, row: Mapping[str, Any] | None, snapshot_ts: int | None, candle_ts: list[int]) -> Clock:
    """The exchange clock: the engine's last minute, else the heartbeat's, else the last equity
    snapshot's, else the newest candle of the symbols."""
    if es is not None and es["last_minute_ts"] is not None:
        lm, src = int(es["last_minute_ts"]), "engine"
    elif row is not None and row.get("last_minute_ts") is not None:
        lm, src = int(row["last_minute_ts"]), "heartbeat"
    elif snapshot_ts is not None:
        lm, src = snapshot_ts, "snapshot"
    elif candle_ts:
        lm, src = int(max(candle_ts)), "candles"
    else:  # an empty store: nothing to be on another clock with
        lm, src = wall - wall % MINUTE_MS - MINUTE_MS, "wall"
    return Clock(wall, lm, lm + MINUTE_MS, src, lm - lm % DAY_MS)  # type: ignore[arg-type]


def _daemon(row: Mapping[str, Any] | None, holder: Any, es: Any, wall: int) -> DaemonState:
    step_age = None if es is None or es["updated_ts"] is None else (wall - int(es["updated_ts"])) / 1000
    lock = None if holder is None else holder.describe()
    if row is None:
        if holder is not None:
            return DaemonState(True, "running", f"running ({lock}; no status row yet)", lock_holder=lock,
                               last_step_age_s=step_age)  # fmt: skip
        return DaemonState(False, "never", "no daemon has run on this store", last_step_age_s=step_age)
    hb = row.get("heartbeat_ts")
    hb_age = None if hb is None else (wall - int(hb)) / 1000
    who = f"pid {row['pid']} on {row['host']}"
    if holder is not None:
        if hb_age is not None and hb_age > HEARTBEAT_STALE_S:
            state, text = "stale", f"no heartbeat for {duration(hb_age)} ({who})"
        else:
            state, text = "running", f"running ({who})"
    elif row.get("stopped_ts") is not None:
        state, text = "stopped", f"stopped {fmt_ts(row['stopped_ts'])} UTC"
    else:
        state, text = "vanished", f"not running: last seen {fmt_ts(hb)} UTC (it did not stop cleanly)"
    started = row.get("started_ts")
    return DaemonState(
        running=holder is not None, state=state, state_text=text, lock_holder=lock, pid=row.get("pid"),  # type: ignore[arg-type]
        host=row.get("host"), mode=row.get("mode"), started_ts=started, stopped_ts=row.get("stopped_ts"), heartbeat_ts=hb,
        uptime_s=(wall - int(started)) / 1000 if holder is not None and started else None,
        heartbeat_age_s=hb_age, last_step_age_s=step_age, details=dict(row.get("details") or {}),
    )  # fmt: skip


async def _model_in_use(conn: asyncpg.Connection, row: Mapping[str, Any] | None) -> ModelInUse | None:
    """The model the daemon uses, else the champion, with its validated PF."""
    version = (row or {}).get("model_version")
    m = None
    if version:
        m = await conn.fetchrow("SELECT version, status, metrics, path FROM model_versions WHERE version = $1", version)
    if m is None:
        m = await conn.fetchrow("SELECT version, status, metrics, path FROM model_versions WHERE status = 'champion'")
    if m is None:
        return None
    return ModelInUse(m["version"], m["status"], validated_pf(m["metrics"], m["path"]), _validated_trades(m["metrics"]),
                      bool(version) and m["version"] == version)  # fmt: skip


def _kill_switch(es: Any) -> KillSwitch:
    if es is None:
        return KillSwitch()
    try:
        state = _json(es["state"]) or {}
    except ValueError:
        return KillSwitch()
    ks = (state.get("risk") or {}).get("kill_switch") or {}
    return KillSwitch(ks.get("tripped"), ks.get("tripped_ms"))


def _protections(es: Any, clock: Clock) -> list[Protection]:
    """The protections that block the engine's next decision (the minute after the last one,
    `clock.exchange_ms`), from the persisted risk state (`risk.active_protections`)."""
    # imported here: `bot status` imports this module and stays light (risk pulls in numpy)
    from bot.logs.event_lines import protection_text
    from risk.protections import active_protections

    if es is None:
        return []
    try:
        state = _json(es["state"]) or {}
    except ValueError:
        return []
    out = []
    for b in active_protections(state.get("risk"), clock.exchange_ms):
        out.append(Protection(b["protection"], b["scope"], int(b["since_ms"]), int(b["until_ms"]), protection_text(b)))
    return out


async def _account(conn: asyncpg.Connection, mode: str, es: Any, clock: Clock) -> Account | None:
    if es is not None:
        ts, eq, cash, src = int(es["last_minute_ts"]), float(es["equity"]), float(es["cash"]), "engine"
    else:
        r = await conn.fetchrow("SELECT ts, equity, cash FROM equity_snapshots WHERE mode = $1 AND ts <= coalesce($2, ts) "
                                "ORDER BY ts DESC LIMIT 1", mode, clock.last_minute_ts)  # fmt: skip
        if r is None:
            return None
        ts, eq, cash, src = int(r["ts"]), float(r["equity"]), float(r["cash"]), "snapshot"
    exposure = eq - cash  # equity = cash + the open positions at the engine's marks (spot, long only)
    return Account(ts, eq, cash, exposure, exposure / eq if eq > 0 else None, src)  # type: ignore[arg-type]


async def _realised(conn: asyncpg.Connection, mode: str, label: str, since: int | None, until: int | None) -> PnL:
    r = await conn.fetchrow(
        """SELECT coalesce(sum(pnl), 0) AS pnl, count(*) AS n, count(*) FILTER (WHERE pnl > 0) AS wins FROM positions
           WHERE mode = $1 AND status = 'closed' AND exit_ts >= coalesce($2, exit_ts) AND exit_ts < coalesce($3, exit_ts + 1)""",
        mode, since, until)  # fmt: skip
    return PnL(label, since, until, float(r["pnl"]), int(r["n"]), int(r["wins"]))


async def _today(conn: asyncpg.Connection, mode: str, account: Account | None, clock: Clock) -> PnL:
    """Today on the exchange clock: realised from the day's exits, and the equity change since
    the day's start (the last snapshot before 00:00 UTC; a run that started today: its first)."""
    day0 = clock.day_start_ts
    real = await _realised(conn, mode, "today", day0, None)
    base = await conn.fetchval("SELECT equity FROM equity_snapshots WHERE mode = $1 AND ts < $2 ORDER BY ts DESC LIMIT 1",
                               mode, day0)  # fmt: skip
    if base is None:
        base = await conn.fetchval("SELECT equity FROM equity_snapshots WHERE mode = $1 AND ts >= $2 ORDER BY ts LIMIT 1",
                                   mode, day0)  # fmt: skip
    pnl = None if base is None or account is None else account.equity - float(base)
    return dataclasses.replace(real, end_ts=clock.exchange_ms, pnl=pnl,
                               pnl_pct=None if pnl is None or not base else pnl / float(base))  # fmt: skip


def _position(r: Mapping[str, Any], mark: Mapping[str, Any] | None, clock: Clock) -> Position:
    qty, entry = float(r["qty"]), float(r["entry_price"])
    px = None if mark is None else _f(mark["close"])
    return Position(
        symbol=r["symbol"], qty=qty, entry_price=entry, entry_ts=int(r["entry_ts"]), take_profit=_f(r["take_profit"]),
        stop_loss=_f(r["stop_loss"]), expires_ts=r["expires_ts"], model_version=r["model_version"], mark=px,
        mark_ts=None if px is None else int(mark["ts"]), value=None if px is None else qty * px,  # type: ignore[index]
        unrealised=None if px is None else qty * (px - entry), unrealised_pct=None if px is None else px / entry - 1.0,
        held_s=max(0.0, (clock.exchange_ms - int(r["entry_ts"])) / 1000),
    )  # fmt: skip


def _feed(symbol: str, ts: int | None, clock: Clock) -> FeedSymbol:
    if ts is None:
        return FeedSymbol(symbol, ts, None, "none")
    age = max(0.0, (clock.exchange_ms - (int(ts) + MINUTE_MS)) / 1000)  # a candle ahead of the engine is not late
    health = "ok" if age <= FEED_OK_S else "late" if age <= FEED_STALE_S else "stale"
    return FeedSymbol(symbol, int(ts), age, health)  # type: ignore[arg-type]


async def _models(conn: asyncpg.Connection) -> list[ModelVersion]:
    rows = await conn.fetch(
        """SELECT version, status, created_ts, promoted_ts, data_from_ts, data_to_ts, metrics FROM model_versions
           ORDER BY (status = 'champion') DESC, created_ts DESC LIMIT $1""", MODEL_ROWS)  # fmt: skip
    return [ModelVersion(r["version"], r["status"], r["created_ts"], r["promoted_ts"], r["data_from_ts"], r["data_to_ts"],
                         validated_pf(r["metrics"]), _validated_trades(r["metrics"])) for r in rows]  # fmt: skip
