"""The live order state machine in Postgres (`orders` and `fills` tables, mode 'live').

States (the `orders.status` CHECK): new (row written, nothing sent) -> submitted (about to be
sent / sent, answer not seen) -> accepted (acknowledged by the exchange) -> partially_filled ->
filled | cancelled | rejected | expired. A status only ever moves forward (`RANK`), so an
out-of-date answer arriving late cannot undo a newer one. The row is written *before* the order
is sent: after any crash the store knows every client order id that may be on the exchange.

Fills are the exchange's trades, one row each, keyed by (order, trade id), with the fee and
fee asset exactly as the exchange reports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bot.engine.records import OrderIntent

RANK = {"new": 0, "submitted": 1, "accepted": 2, "partially_filled": 3,
        "filled": 4, "cancelled": 4, "rejected": 4, "expired": 4}  # fmt: skip
FINAL = frozenset(("filled", "cancelled", "rejected", "expired"))
#: Binance order status -> ours
FROM_EXCHANGE = {"NEW": "accepted", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled", "CANCELED": "cancelled",
                 "PENDING_CANCEL": "accepted", "REJECTED": "rejected", "EXPIRED": "expired",
                 "EXPIRED_IN_MATCH": "expired"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Trade:
    """One execution as the exchange reports it (fee in `fee_asset`)."""

    trade_id: str
    qty: float
    price: float
    fee: float
    fee_asset: str
    ts: int


@dataclass
class StoredOrder:
    client_order_id: str  # the id sent to the exchange
    engine_id: str  # the engine's id (the exchange id without the attempt suffix)
    symbol: str
    side: str
    leg: str
    qty: float
    status: str
    decision_ts: int
    exchange_order_id: str | None
    reason: dict[str, Any]
    trades: list[Trade] = field(default_factory=list)


class OrderStore:
    """Reads and writes of live orders; every write is one short transaction."""

    def __init__(self, pool: asyncpg.Pool, mode: str = "live"):
        self.pool = pool
        self.mode = mode

    async def insert_new(self, it: OrderIntent, xcid: str, qty: float, attempt: int, now_ms: int,
                         meta: dict[str, Any] | None = None, limit_price: float | None = None) -> bool:  # fmt: skip
        """Write the order as 'new' before it is sent. False if the id was already there.
        `meta`: the engine's decision behind an entry (barrier fractions, er, p, decision minute),
        kept so that a process restarted after a crash can book the fill of an order it did not
        decide again (see `LiveExecutor.orphaned`)."""
        body: dict[str, Any] = {"reason": it.reason, "ref_price": it.ref_price if it.ref_price == it.ref_price else None,
                                "attempt": attempt, "engine_id": it.client_order_id}  # fmt: skip
        if limit_price is not None:
            body["limit_price"] = limit_price
        if meta:
            body["meta"] = {k: (None if isinstance(v, float) and v != v else v) for k, v in meta.items()}
        reason = json.dumps(body)
        row = await self.pool.fetchval(
            """INSERT INTO orders (client_order_id, mode, symbol, side, type, qty, price, status, reason, created_ts,
                                   updated_ts, leg, decision_ts, model_version)
               VALUES ($1, $2, $3, $4, $11, $5, $12, 'new', $6::jsonb, $7, $7, $8, $9, $10)
               ON CONFLICT (client_order_id) DO NOTHING RETURNING id""",
            xcid, self.mode, it.symbol, it.side, qty, reason, now_ms, it.leg, int(it.decision_ts), it.model_version,
            "market" if limit_price is None else "limit", limit_price,
        )  # fmt: skip
        return row is not None

    async def adopt(self, xcid: str, symbol: str, side: str, qty: float, now_ms: int, status: str,
                    exchange_order_id: str | None) -> None:  # fmt: skip
        """An order of ours the exchange has and the store has not (it was sent by a process that
        died before its row became visible): written as the exchange reports it."""
        leg = "entry" if xcid.startswith("E-") else "exit"
        await self.pool.execute(
            """INSERT INTO orders (client_order_id, mode, symbol, side, type, qty, status, reason, created_ts, updated_ts,
                                   leg, exchange_order_id)
               VALUES ($1, $2, $3, $4, 'market', $5, $6, '{"adopted": true}'::jsonb, $7, $7, $8, $9)
               ON CONFLICT (client_order_id) DO NOTHING""",
            xcid, self.mode, symbol, side, qty, status, now_ms, leg, exchange_order_id,
        )  # fmt: skip

    async def set_status(self, xcid: str, status: str, now_ms: int, *, exchange_order_id: str | None = None,
                         reason: dict[str, Any] | None = None, filled_qty: float | None = None,
                         avg_price: float | None = None) -> None:  # fmt: skip
        """Move the order forward to `status` (never backwards); merge `reason` into its reason."""
        await self.pool.execute(
            """UPDATE orders SET status = CASE WHEN $3 >= (CASE status WHEN 'new' THEN 0 WHEN 'submitted' THEN 1
                                     WHEN 'accepted' THEN 2 WHEN 'partially_filled' THEN 3 ELSE 4 END)
                                     AND status NOT IN ('filled', 'cancelled', 'rejected', 'expired')
                                     THEN $2 ELSE status END,
                      exchange_order_id = coalesce($4, exchange_order_id),
                      reason = coalesce(reason, '{}'::jsonb) || coalesce($5::jsonb, '{}'::jsonb),
                      filled_qty = coalesce($6, filled_qty), avg_price = coalesce($7, avg_price), updated_ts = $8
               WHERE client_order_id = $1""",
            xcid, status, RANK[status], exchange_order_id, json.dumps(reason) if reason else None, filled_qty, avg_price,
            now_ms,
        )  # fmt: skip

    async def add_trades(self, xcid: str, symbol: str, side: str, trades: list[Trade]) -> None:
        if not trades:
            return
        await self.pool.execute(
            """INSERT INTO fills (order_id, trade_id, symbol, side, qty, price, fee, fee_asset, ts)
               SELECT o.id, u.tid, $2, $3, u.qty, u.price, u.fee, u.asset, u.ts
               FROM orders o, unnest($4::text[], $5::float8[], $6::float8[], $7::float8[], $8::text[], $9::bigint[])
                    AS u(tid, qty, price, fee, asset, ts)
               WHERE o.client_order_id = $1
               ON CONFLICT (order_id, trade_id) DO NOTHING""",
            xcid, symbol, side, [t.trade_id for t in trades], [t.qty for t in trades], [t.price for t in trades],
            [t.fee for t in trades], [t.fee_asset for t in trades], [t.ts for t in trades],
        )  # fmt: skip

    async def load(self, *, since_ts: int | None = None, open_only: bool = False) -> list[StoredOrder]:
        """Live orders (not final ones only, or those decided since `since_ts`), with their trades."""
        where = "o.mode = $1 AND (o.status NOT IN ('filled', 'cancelled', 'rejected', 'expired')"
        where += ")" if open_only else " OR o.decision_ts >= $2 OR o.decision_ts IS NULL)"
        args: list[Any] = [self.mode] if open_only else [self.mode, since_ts or 0]
        rows = await self.pool.fetch(
            f"""SELECT o.client_order_id, o.symbol, o.side, o.leg, o.qty, o.status, o.decision_ts, o.exchange_order_id,
                       o.reason, coalesce(json_agg(json_build_array(f.trade_id, f.qty, f.price, f.fee, f.fee_asset, f.ts))
                                          FILTER (WHERE f.id IS NOT NULL), '[]') AS trades
                FROM orders o LEFT JOIN fills f ON f.order_id = o.id WHERE {where}
                GROUP BY o.id ORDER BY o.id""",
            *args,
        )  # fmt: skip
        out = []
        for r in rows:
            reason = json.loads(r["reason"]) if r["reason"] else {}
            xcid = r["client_order_id"]
            out.append(StoredOrder(xcid, reason.get("engine_id") or xcid.split(".", 1)[0], r["symbol"], r["side"],
                                   r["leg"] or "entry", float(r["qty"]), r["status"], int(r["decision_ts"] or 0),
                                   r["exchange_order_id"], reason,
                                   [Trade(str(t[0]), float(t[1]), float(t[2]), float(t[3]), str(t[4] or ""), int(t[5]))
                                    for t in json.loads(r["trades"])]))  # fmt: skip
        return out
