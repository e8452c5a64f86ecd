"""Reconciliation: the exchange versus the store, at start and every few minutes.

The rules (each mismatch is logged with both sides and the rule applied):
1. Orders the store has and has not seen finish are looked up by client order id; what the
   exchange says is adopted (state, fills), or the order is final as "not placed" when the
   exchange provably never had it (see `bot.execution.live_broker`).
2. An open order on the exchange whose client order id has our shape (`OUR_ID`) and that the
   store does not know is **adopted** (written to the store, followed until it ends). A foreign
   open order (placed by hand, another bot) is **left alone** and reported.
3. Balances: the exchange is the truth. The quote balance (free + locked) becomes the engine's
   cash. A position the exchange holds less of than the store (beyond one lot step) is cut to
   what the exchange holds (to nothing when it holds nothing). Base assets the exchange holds
   beyond the bot's positions are reported and left alone (they may be the user's).
Balances and positions are only compared when no outcome is in flight: no order of ours
unfinished, none finished and not yet booked by the engine, and, after a restart, none sent for
a minute after the restored state that the re-stepping engine has not decided again yet (its
fill would show on the exchange before the engine books it); until then that part is
*deferred* (said in the log, entries go on: blocking them would change the re-stepped
decisions). Such an order the engine has stepped past without deciding it again is an
*orphan*: reported, and handed to the engine, which waits for it and books it as its own
(`LiveExecutor.orphaned`; the live loop looks for orphans after every step too, so the books
hold them before the next entries are decided). A reconciliation that cannot ask the
exchange is *pending*, and the engine does not enter until one completes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ccxt
import structlog

from bot.engine.records import OrderIntent
from bot.execution.live_broker import OUR_ID, LiveExecutor, Tracked, engine_client_id, now_ms
from bot.execution.orders import FROM_EXCHANGE

log = structlog.get_logger("bot.execution.reconcile")

CASH_TOLERANCE = 0.01  # quote units: rounding of the exchange's 8-decimal balances


@dataclass(frozen=True, slots=True)
class Mismatch:
    kind: str  # cash | position | unmanaged_holding | foreign_open_order | adopted_open_order
    symbol: str | None
    store: Any  # the store's figure (a quantity or cash), not the Store
    exchange: Any
    rule: str


@dataclass
class Reconciliation:
    complete: bool  # False: orders in flight or the exchange could not be asked; try again
    mismatches: list[Mismatch] = field(default_factory=list)
    cash: float | None = None  # the engine's cash from now on (None: unchanged)
    positions: dict[str, float] = field(default_factory=dict)  # symbol -> qty to set (0: drop the position)
    reason: str = ""
    deferred: bool = False  # orders were answered, balances not compared (outcomes in flight)


async def reconcile(ex: LiveExecutor, *, cash: float, positions: Mapping[str, float], symbols: Sequence[str],
                    qty_steps: Mapping[str, float], engine_ts: int | None = None) -> Reconciliation:  # fmt: skip
    """One reconciliation (see the module docstring); returns what to apply to the engine."""
    out = Reconciliation(False)
    try:
        # 1. orders the store did not see finish (after a crash: every unfinished one)
        for so in [o for o in ex.known.values() if o.status not in ("filled", "cancelled", "rejected", "expired")]:
            it = ex.intent_of(so)
            ex.known.pop(so.engine_id, None)
            t = ex._from_stored(it, so)
            t.adopted = True  # its outcome goes to the engine only if the engine asks for it again
            ex.tracked[so.engine_id] = t
        for t in ex.unfinished():
            if t.status in ("new", "submitted") and not t.busy:
                await ex.resolve(t, deadline_s=0)
        await ex.poll_open()
        # 2. open orders on the exchange
        ex.ex.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
        mine = {t.xcid for t in ex.tracked.values()}
        for o in await ex.ex.fetch_open_orders():
            info = o.get("info") or {}
            cid = str(info.get("clientOrderId") or o.get("clientOrderId") or "")
            sym = str(info.get("symbol") or "")
            if cid in mine:
                continue
            if OUR_ID.match(cid):
                await _adopt(ex, cid, sym, info)
                out.mismatches.append(Mismatch("adopted_open_order", sym, None, cid, "ours by its id: adopted and followed"))
            else:
                out.mismatches.append(Mismatch("foreign_open_order", sym, None, cid, "not ours: left alone"))
        in_flight = [t.xcid for t in ex.unfinished()]
        if engine_ts is not None:
            for t in ex.orphans_through(engine_ts):
                out.mismatches.append(orphan_mismatch(t))
        in_flight += [xcid for _, xcid, _, _ in ex.unclaimed()]
        # outcomes final on the exchange that the engine books at its next step (orphans found
        # just above included): expected on our side
        cash_adj, pos_adj = 0.0, dict.fromkeys(symbols, 0.0)
        for _, f, _ in list(ex.outbox):
            if f is None:
                continue
            sign = 1.0 if f.side == "buy" else -1.0
            cash_adj -= sign * f.qty * f.price + f.fee
            pos_adj[f.symbol] = pos_adj.get(f.symbol, 0.0) + sign * f.qty
        if in_flight:
            out.complete = True
            out.deferred = True
            out.reason = f"{len(in_flight)} order outcome(s) in flight: {', '.join(in_flight[:5])}"
            return _logged(out)
        # 3. balances and positions
        bal = await ex.ex.fetch_balance()
    except ccxt.BaseError as e:
        out.reason = f"exchange error {type(e).__name__}"
        return _logged(out)
    total = bal.get("total") or {}
    q = float(total.get(ex.quote) or 0.0)
    cash = cash + cash_adj
    positions = {s: float(positions.get(s, 0.0)) + pos_adj.get(s, 0.0) for s in symbols}
    if abs(q - cash) > CASH_TOLERANCE:
        out.mismatches.append(Mismatch("cash", None, round(cash, 8), q, "the exchange is the truth: cash set to its balance"))
        out.cash = q - cash_adj  # the engine's cash before it books the fills in flight
    for sym in symbols:
        base = sym[: -len(ex.quote)]
        held = float(total.get(base) or 0.0)
        mine_qty = float(positions.get(sym, 0.0))
        tol = 2 * float(qty_steps.get(sym, 1e-8)) + 1e-9 * max(held, mine_qty)
        if held + tol < mine_qty:
            out.mismatches.append(Mismatch("position", sym, mine_qty, held,
                                           "the exchange is the truth: position cut to its balance"))  # fmt: skip
            want = held - pos_adj.get(sym, 0.0)
            out.positions[sym] = want if want > tol else 0.0
        elif held > mine_qty + tol and not math.isclose(held, mine_qty):
            out.mismatches.append(Mismatch("unmanaged_holding", sym, mine_qty, held,
                                           "more on the exchange than the bot holds: left alone"))  # fmt: skip
    out.complete = True
    return _logged(out)


def orphan_mismatch(t: Tracked) -> Mismatch:
    return Mismatch("orphan_order", t.intent.symbol, None, t.xcid,
                    "sent before a crash, not decided again after it: the engine books it as the exchange has it")


async def _adopt(ex: LiveExecutor, cid: str, symbol: str, info: Mapping[str, Any]) -> None:
    side = str(info.get("side", "BUY")).lower()
    qty = float(info.get("origQty") or 0.0)
    status = FROM_EXCHANGE.get(str(info.get("status")), "accepted")
    await ex.store.adopt(cid, symbol, side, qty, now_ms(), status, str(info.get("orderId")))
    eid = engine_client_id(cid)
    it = OrderIntent(eid, symbol, side, "entry" if eid.startswith("E-") else "exit", qty, 0, float("nan"), "adopted")  # type: ignore[arg-type]
    t = Tracked(it, 1 if "." not in cid else int(cid.rsplit(".", 1)[1]), cid, status, str(info.get("orderId")))
    t.sent_ms = now_ms()
    t.adopted = True
    ex.tracked[eid] = t
    ex.counts["adopted"] += 1


def log_mismatch(m: Mismatch) -> None:
    log.warning("reconcile_mismatch", kind=m.kind, symbol=m.symbol, store=m.store, exchange=m.exchange, rule=m.rule,
                text=f"RECONCILE {m.kind} {m.symbol or ''}: store {m.store} vs exchange {m.exchange}; {m.rule}")  # fmt: skip


def _logged(r: Reconciliation) -> Reconciliation:
    for m in r.mismatches:
        log_mismatch(m)
    if r.deferred:
        log.info("reconcile_deferred", reason=r.reason, mismatches=len(r.mismatches),
                 text=f"RECONCILE orders checked; balances deferred ({r.reason})")  # fmt: skip
    elif r.complete:
        log.info("reconcile_done", mismatches=len(r.mismatches),
                 text=f"RECONCILE done: {len(r.mismatches)} mismatch(es)")  # fmt: skip
    else:
        log.warning("reconcile_pending", reason=r.reason, text=f"RECONCILE pending ({r.reason}); entries blocked")
    return r
