"""The trading tables: what each engine step persists, and what a restart reads back.

One closed minute's records (orders, fills, opened and closed positions, decisions, the equity
point) and the engine's serialised state go to Postgres in **one transaction**, with one
statement per table (arrays through `unnest`, so a minute is one round trip per table however
many symbols it touched). `engine_state.last_minute_ts` is written in the same transaction, so
after any stop (kill -9 included) the store holds either all of a minute or none of it, and
the restarted daemon resumes at the minute after `last_minute_ts`.

Every write is idempotent: orders are keyed by `client_order_id` (deterministic: bundle
version, symbol, decision minute, leg), fills by (order, trade id), positions by their entry
order id, decisions by (mode, ts, symbol, action, reason), equity by (mode, ts). Writing the
same step twice changes nothing; a replayed minute cannot become a second order.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bot.engine.records import ClosedTrade, DecisionRow, EquityPoint, Fill, OrderIntent, Position


@dataclass
class StepRecords:
    """Everything one step produced that the store keeps (any of the lists may be empty)."""

    ts: int  # the minute the step processed (open time)
    orders: Sequence[OrderIntent] = ()
    fills: Sequence[Fill] = ()
    opened: Sequence[Position] = ()
    closed: Sequence[ClosedTrade] = ()
    decisions: Sequence[DecisionRow] = ()
    equity: EquityPoint | None = None
    state: dict[str, Any] | None = None  # the engine's state_dict() after the step
    model_version: str | None = None
    cancelled: Sequence[tuple[str, str]] = ()  # (client_order_id, reason) of orders dropped unfilled (paper)

    @classmethod
    def from_step(cls, ts: int, result: Any, *, state: dict[str, Any] | None, model_version: str | None,
                  fills: Iterable[Fill] = (), opened: Iterable[Position] = (),
                  closed: Iterable[ClosedTrade] = ()) -> StepRecords:  # fmt: skip
        """From an engine `StepResult` (duck-typed), plus records reported outside the step
        (e.g. a broker's fills handed to `engine.on_fills` between steps)."""
        return cls(
            ts=ts,
            orders=tuple(getattr(result, "orders", ()) or ()),
            fills=tuple(fills) + tuple(getattr(result, "fills", ()) or ()),
            opened=tuple(opened) + tuple(getattr(result, "opened", ()) or ()),
            closed=tuple(closed) + tuple(getattr(result, "closed", ()) or ()),
            decisions=tuple(getattr(result, "decisions", ()) or ()),
            equity=getattr(result, "equity", None),
            state=state,
            model_version=model_version,
            cancelled=tuple(getattr(result, "cancelled", ()) or ()),
        )


@dataclass
class Resume:
    """What a restart needs from the store (for one mode)."""

    last_minute_ts: int | None
    cash: float | None
    equity: float | None
    model_version: str | None
    state: dict[str, Any] | None
    open_positions: list[Position] = field(default_factory=list)
    used_order_ids: set[str] = field(default_factory=set)


def jsonable(o: Any) -> Any:
    """Plain JSON data: NaN/inf -> None (jsonb has no NaN), numpy scalars/arrays -> Python."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple | set | frozenset):
        return [jsonable(v) for v in o]
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return jsonable(dataclasses.asdict(o))
    tolist = getattr(o, "tolist", None)  # numpy scalars and arrays
    if tolist is not None:
        return jsonable(tolist())
    return o


def _plain(o: Any) -> Any:
    """json.dumps fallback for the engine state: numpy scalars/arrays, dataclasses, sets."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, set | frozenset):
        return sorted(o)
    tolist = getattr(o, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def dumps(o: Any) -> str:
    return json.dumps(jsonable(o), separators=(",", ":"), allow_nan=False)


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _position_from_details(d: dict[str, Any]) -> Position:
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(Position):
        if f.name not in d:
            continue
        v = d[f.name]
        kw[f.name] = _nan(v) if f.type in ("float", float) else v
    return Position(**kw)


class TradingStore:
    """Trading-table reads and writes for one mode ('paper', 'live' or 'backtest')."""

    def __init__(self, pool: asyncpg.Pool, mode: str, *, acquire_timeout: float | None = None):
        self.pool = pool
        self.mode = mode
        # Bounds taking a pool connection *and* giving it back (asyncpg resets it on release): without
        # it, a write cancelled on a stalled server waits for the server to wake (bot.store.outage).
        self.acquire_timeout = acquire_timeout

    # -- writes ------------------------------------------------------------------------------

    async def write_step(self, rec: StepRecords, *, now_ms: int) -> None:
        """Persist one step atomically (see the module docstring). Safe to call twice."""
        async with self.pool.acquire(timeout=self.acquire_timeout) as conn, conn.transaction():
            await self._write(conn, rec, now_ms)

    async def write_steps(self, recs: Sequence[StepRecords], *, now_ms: int) -> None:
        """Persist several consecutive steps in ONE transaction, in order (the backlog held while
        the store was unavailable: `bot.store.outage`). Only the last may carry the engine state."""
        async with self.pool.acquire(timeout=self.acquire_timeout) as conn, conn.transaction():
            for rec in recs:
                await self._write(conn, rec, now_ms)

    async def _write(self, conn: asyncpg.Connection, rec: StepRecords, now_ms: int) -> None:
        await self._orders(conn, rec.orders, now_ms)
        await self._cancelled(conn, rec.cancelled, now_ms)
        await self._fills(conn, rec.fills, now_ms)
        # A position may close in the step that opened it, and a symbol may close one position
        # and open the next in one step (one open position per symbol is a unique index).
        new = {(p.symbol, int(p.entry_ts)) for p in rec.opened}
        await self._closed(conn, [t for t in rec.closed if (t.symbol, int(t.entry_ts)) not in new])
        await self._opened(conn, rec.opened)
        await self._closed(conn, [t for t in rec.closed if (t.symbol, int(t.entry_ts)) in new])
        await self._decisions(conn, rec.decisions)
        if rec.equity is not None:
            e = rec.equity
            await conn.execute(
                """INSERT INTO equity_snapshots (ts, mode, equity, cash, gross_exposure, open_positions)
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (mode, ts) DO NOTHING""",
                e.ts, self.mode, e.equity, e.cash, e.gross_exposure, e.open_positions,
            )  # fmt: skip
        if rec.state is not None:
            cash = rec.equity.cash if rec.equity is not None else float(rec.state.get("cash", 0.0))
            equity = rec.equity.equity if rec.equity is not None else cash
            await conn.execute(
                """INSERT INTO engine_state (mode, last_minute_ts, cash, equity, model_version, state, updated_ts)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (mode) DO UPDATE SET last_minute_ts = EXCLUDED.last_minute_ts,
                       cash = EXCLUDED.cash, equity = EXCLUDED.equity, model_version = EXCLUDED.model_version,
                       state = EXCLUDED.state, updated_ts = EXCLUDED.updated_ts
                   WHERE engine_state.last_minute_ts <= EXCLUDED.last_minute_ts""",
                self.mode, rec.ts, cash, equity, rec.model_version, json.dumps(rec.state, default=_plain), now_ms,
            )  # fmt: skip

    async def _orders(self, conn: asyncpg.Connection, orders: Sequence[OrderIntent], now_ms: int) -> None:
        if not orders:
            return
        await conn.execute(
            """INSERT INTO orders (client_order_id, mode, symbol, side, type, qty, price, status, reason,
                                   created_ts, updated_ts, leg, decision_ts, model_version)
               SELECT u.coid, $1, u.symbol, u.side, u.type, u.qty, u.price, 'submitted',
                      jsonb_build_object('reason', u.reason, 'ref_price', u.ref_price), $2, $2,
                      u.leg, u.decision_ts, u.model_version
               FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::float8[],
                           $9::text[], $10::float8[], $11::text[], $12::bigint[], $13::text[])
                    AS u(coid, symbol, side, type, qty, price, reason, ref_price, leg, decision_ts, model_version)
               ON CONFLICT (client_order_id) DO NOTHING""",
            self.mode, now_ms,
            [o.client_order_id for o in orders], [o.symbol for o in orders], [o.side for o in orders],
            [o.order_type for o in orders], [float(o.qty) for o in orders], [o.limit_price for o in orders],
            [o.reason for o in orders], [_finite(o.ref_price) for o in orders], [o.leg for o in orders],
            [int(o.decision_ts) for o in orders], [o.model_version for o in orders],
        )  # fmt: skip

    async def _cancelled(self, conn: asyncpg.Connection, cancelled: Sequence[tuple[str, str]], now_ms: int) -> None:
        """Orders the paper broker dropped unfilled (`no_next_bar`, an operator's flatten): the
        row says so, with the reason, instead of staying 'submitted'."""
        if not cancelled:
            return
        await conn.execute(
            """UPDATE orders o SET status = 'cancelled', updated_ts = $3,
                      reason = coalesce(o.reason, '{}'::jsonb) || jsonb_build_object('cancelled', u.why)
               FROM unnest($2::text[], $4::text[]) AS u(coid, why)
               WHERE o.mode = $1 AND o.client_order_id = u.coid AND o.status IN ('new', 'submitted', 'accepted')""",
            self.mode, [c for c, _ in cancelled], now_ms, [w for _, w in cancelled],
        )  # fmt: skip

    async def _fills(self, conn: asyncpg.Connection, fills: Sequence[Fill], now_ms: int) -> None:
        if not fills:
            return
        cols = (
            [f.client_order_id for f in fills], [f.trade_id for f in fills], [f.symbol for f in fills],
            [f.side for f in fills], [float(f.qty) for f in fills], [float(f.price) for f in fills],
            [float(f.fee) for f in fills], [int(f.ts) for f in fills],
        )  # fmt: skip
        missing = await conn.fetch(
            "SELECT c FROM unnest($1::text[]) AS c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.client_order_id = c)",
            cols[0],
        )
        if missing:
            raise ValueError(f"fills for unknown orders: {[r['c'] for r in missing][:5]}")
        await conn.execute(
            """WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[],
                                                $6::float8[], $7::float8[], $8::bigint[])
                          AS u(coid, trade_id, symbol, side, qty, price, fee, ts)),
                    ins AS (INSERT INTO fills (order_id, trade_id, symbol, side, qty, price, fee, fee_asset, ts)
                            SELECT o.id, u.trade_id, u.symbol, u.side, u.qty, u.price, u.fee, 'USDT', u.ts
                            FROM u JOIN orders o ON o.client_order_id = u.coid
                            ON CONFLICT (order_id, trade_id) DO NOTHING)
               UPDATE orders o SET status = 'filled', filled_qty = s.qty, avg_price = s.px, updated_ts = $9
               FROM (SELECT coid, sum(qty) AS qty, CASE WHEN count(*) = 1 THEN max(price)
                                ELSE sum(qty * price) / sum(qty) END AS px FROM u GROUP BY coid) s
               WHERE o.client_order_id = s.coid""",
            *cols, now_ms,
        )  # fmt: skip

    async def _opened(self, conn: asyncpg.Connection, opened: Sequence[Position]) -> None:
        if not opened:
            return
        await conn.execute(
            """INSERT INTO positions (mode, symbol, status, qty, entry_price, entry_ts, take_profit, stop_loss,
                                      expires_ts, model_version, entry_order_id, details)
               SELECT $1, u.symbol, 'open', u.qty, u.entry_price, u.entry_ts, u.tp, u.sl, u.expires_ts,
                      u.model_version, u.coid, u.details::jsonb
               FROM unnest($2::text[], $3::float8[], $4::float8[], $5::bigint[], $6::float8[], $7::float8[],
                           $8::bigint[], $9::text[], $10::text[], $11::text[])
                    AS u(symbol, qty, entry_price, entry_ts, tp, sl, expires_ts, model_version, coid, details)
               ON CONFLICT (mode, entry_order_id) DO NOTHING""",
            self.mode,
            [p.symbol for p in opened], [float(p.qty) for p in opened], [float(p.entry_price) for p in opened],
            [int(p.entry_ts) for p in opened], [_finite(p.tp_price) for p in opened],
            [_finite(p.sl_price) for p in opened], [int(p.expires_ts) for p in opened],
            [p.model_version for p in opened], [p.client_order_id for p in opened], [dumps(p) for p in opened],
        )  # fmt: skip

    async def _closed(self, conn: asyncpg.Connection, closed: Sequence[ClosedTrade]) -> None:
        if not closed:
            return
        await conn.execute(
            """UPDATE positions p SET status = 'closed', exit_price = u.exit_price, exit_ts = u.exit_ts,
                      exit_reason = u.reason, pnl = u.pnl,
                      details = p.details || jsonb_build_object('trade', u.trade::jsonb)
               FROM unnest($2::text[], $3::bigint[], $4::float8[], $5::bigint[], $6::text[], $7::float8[], $8::text[])
                    AS u(symbol, entry_ts, exit_price, exit_ts, reason, pnl, trade)
               WHERE p.mode = $1 AND p.symbol = u.symbol AND p.entry_ts = u.entry_ts AND p.status = 'open'""",
            self.mode,
            [t.symbol for t in closed], [int(t.entry_ts) for t in closed], [float(t.exit_price) for t in closed],
            [int(t.exit_ts) for t in closed], [t.exit_reason for t in closed], [float(t.pnl) for t in closed],
            [dumps(t) for t in closed],
        )  # fmt: skip

    async def write_reconciled(self, cuts: Sequence[tuple[ClosedTrade, Position | None]], *, state: dict[str, Any],
                               last_minute_ts: int, cash: float, equity: float) -> None:  # fmt: skip
        """Positions cut by reconciliation (`Engine.cut_position`) and the engine state after the
        cut, in one transaction (a crash cannot record a cut twice or lose one). All of a
        position cut -> its open row is closed with the trade (exit reason 'reconciled', its
        PnL); part of it -> the open row keeps the rest, and the cut part is a closed row of its
        own (entry order id `<entry id>/reconciled@<exit time>`), so realised PnL sums stay true.
        The state is written only over the same minute (a newer step wins)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._closed(conn, [t for t, rest in cuts if rest is None])
            for trade, rest in cuts:
                if rest is None:
                    continue
                await conn.execute(
                    """UPDATE positions SET qty = $3, details = $4::jsonb
                       WHERE mode = $1 AND symbol = $2 AND status = 'open'""",
                    self.mode, rest.symbol, float(rest.qty), dumps(rest),
                )  # fmt: skip
                await conn.execute(
                    """INSERT INTO positions (mode, symbol, status, qty, entry_price, entry_ts, take_profit, stop_loss,
                                              expires_ts, exit_price, exit_ts, exit_reason, pnl, model_version,
                                              entry_order_id, details)
                       VALUES ($1, $2, 'closed', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb)
                       ON CONFLICT (mode, entry_order_id) DO NOTHING""",
                    self.mode, trade.symbol, float(trade.qty), float(trade.entry_price), int(trade.entry_ts),
                    _finite(rest.tp_price), _finite(rest.sl_price), int(rest.expires_ts), float(trade.exit_price),
                    int(trade.exit_ts), trade.exit_reason, float(trade.pnl), trade.model_version,
                    f"{rest.client_order_id}/reconciled@{int(trade.exit_ts)}",
                    dumps({**jsonable(dataclasses.replace(rest, qty=trade.qty)), "trade": jsonable(trade)}),
                )  # fmt: skip
            await conn.execute(
                """UPDATE engine_state SET state = $3, cash = $4, equity = $5
                   WHERE mode = $1 AND last_minute_ts = $2""",
                self.mode, int(last_minute_ts), json.dumps(state, default=_plain), float(cash), float(equity),
            )  # fmt: skip

    async def _decisions(self, conn: asyncpg.Connection, rows: Sequence[DecisionRow]) -> None:
        if not rows:
            return
        await conn.execute(
            """INSERT INTO decisions (ts, mode, symbol, action, reason, er, probability, size_fraction,
                                      model_version, details)
               SELECT u.ts, $1, u.symbol, u.action, u.reason, u.er, u.p, u.size, u.mv, u.details::jsonb
               FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::float8[],
                           $8::float8[], $9::text[], $10::text[])
                    AS u(ts, symbol, action, reason, er, p, size, mv, details)
               ON CONFLICT (mode, ts, symbol, action, reason) DO NOTHING""",
            self.mode,
            [int(d.ts) for d in rows], [d.symbol for d in rows], [d.action for d in rows], [d.reason for d in rows],
            [_finite(d.er) for d in rows], [_finite(d.probability) for d in rows],
            [_finite(d.size_fraction) for d in rows], [d.model_version for d in rows],
            [dumps(d.details or {}) for d in rows],
        )  # fmt: skip

    # -- reads -------------------------------------------------------------------------------

    async def resume(self) -> Resume:
        """The state a restart continues from (all None/empty on a fresh store)."""
        async with self.pool.acquire() as conn:
            st = await conn.fetchrow(
                "SELECT last_minute_ts, cash, equity, model_version, state FROM engine_state WHERE mode = $1",
                self.mode,
            )
            pos = await conn.fetch(
                "SELECT details FROM positions WHERE mode = $1 AND status = 'open' ORDER BY entry_ts, symbol",
                self.mode,
            )
            ids = await conn.fetch("SELECT client_order_id FROM orders WHERE mode = $1", self.mode)
        return Resume(
            last_minute_ts=None if st is None else int(st["last_minute_ts"]),
            cash=None if st is None else float(st["cash"]),
            equity=None if st is None else float(st["equity"]),
            model_version=None if st is None else st["model_version"],
            state=None if st is None else json.loads(st["state"]),
            open_positions=[_position_from_details(json.loads(r["details"])) for r in pos],
            used_order_ids={r["client_order_id"] for r in ids},
        )

    async def prune_skips(self, before_ts: int) -> int:
        """Delete this mode's `skip` decisions older than `before_ts` (the retention of
        `daemon.decisions_keep_days`): one row per symbol and minute without an entry, the one
        trading table that grows with time rather than with trades. Entries and exits stay,
        with the orders and positions they explain. Returns the rows deleted."""
        async with self.pool.acquire() as conn:
            done = await conn.execute("DELETE FROM decisions WHERE mode = $1 AND action = 'skip' AND ts < $2",
                                      self.mode, int(before_ts))  # fmt: skip
        return int(done.split()[-1])

    async def open_positions(self) -> list[Position]:
        return (await self.resume()).open_positions

    async def counts(self) -> dict[str, int]:
        """Rows per trading table for this mode (tests and `bot status`)."""
        q = {
            "orders": "SELECT count(*) FROM orders WHERE mode = $1",
            "fills": "SELECT count(*) FROM fills f JOIN orders o ON o.id = f.order_id WHERE o.mode = $1",
            "positions_open": "SELECT count(*) FROM positions WHERE mode = $1 AND status = 'open'",
            "positions_closed": "SELECT count(*) FROM positions WHERE mode = $1 AND status = 'closed'",
            "decisions": "SELECT count(*) FROM decisions WHERE mode = $1",
            "equity_snapshots": "SELECT count(*) FROM equity_snapshots WHERE mode = $1",
        }
        async with self.pool.acquire() as conn:
            return {k: int(await conn.fetchval(sql, self.mode)) for k, sql in q.items()}


def _finite(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
