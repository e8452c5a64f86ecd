"""The live broker: the engine's orders through ccxt (Binance spot), never sent twice.

Two halves:
- `LiveExecutor` (async, on the daemon's event loop) does the talking: for each order it writes
  the row ('new') **before** sending, marks it 'submitted', sends it with its deterministic
  client order id as `newClientOrderId`, and moves it through the state machine of
  `bot.execution.orders` as answers arrive. When the answer is lost (timeout, connection reset,
  5xx, crash) it never sends again blindly: it looks the order up by client order id
  (`fetch_order` with `origClientOrderId`, then `fetch_my_trades` for the fills). An order the
  exchange still does not know `recv_window_ms` + 1 s after it was signed can never be placed
  any more (Binance refuses a request older than its recvWindow): only then is it final as
  "not placed", and only then may a *new attempt* with another id (`<id>.2`, ...) be sent.
  429/418 answers (nothing placed) are retried with the same id after a backoff; rejections
  (balance, filters) are dropped with a reason code (`bot.execution.errors`).
  Fills come from the exchange's user data stream where it has one (`watch_loop`: ccxt
  `watch_orders`, one `executionReport` per order event) and are polled in any case for orders
  still open (`poll_open`: every `fill_poll_interval_s`, every `stream_poll_interval_s` while
  the stream is up), the safety net for reports lost in a drop.
- `LiveBroker` (sync, the engine's `Broker` protocol, called from the engine's worker thread)
  hands intents to the executor and blocks until they are answered; `poll`/`flush` return what
  became final: one aggregated `Fill` per order (partial fills summed, quantity net of a fee
  taken in the base asset, fees in quote value) or a cancellation with its reason code.

Exits are sent as market orders (the engine's barrier price is its paper fill model; a resting
limit at a take-profit the price already left would never fill). An entry the engine asks as a
limit order is sent as a LIMIT (`live.limit_time_in_force`) at its price on the tick grid
(never worse than asked) and cancelled after `live.limit_ttl_s` (what filled of it stays); the
engine asks only for market orders today.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import ccxt
import numpy as np
import structlog

from bot.engine.broker import BrokerUpdate
from bot.engine.records import Fill, OrderIntent
from bot.execution.config import LiveConfig
from bot.execution.errors import Kind, classify
from bot.execution.orders import FINAL, FROM_EXCHANGE, RANK, OrderStore, StoredOrder, Trade
from bot.runtime import crashpoint

log = structlog.get_logger("bot.execution.live_broker")

#: Binance's newClientOrderId rule, and the shape of ours (`bot.engine.client_order_id` plus an
#: optional attempt suffix): an open order whose id matches OUR_ID is the bot's.
BINANCE_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
OUR_ID = re.compile(r"^[EX]-[A-Z0-9]{1,12}-\d{1,10}-[0-9a-f]{8}(\.\d{1,2})?$")
MAX_ATTEMPTS = 99


def exchange_client_id(engine_id: str, attempt: int) -> str:
    xcid = engine_id if attempt == 1 else f"{engine_id}.{attempt}"
    if not BINANCE_CLIENT_ID.match(xcid):
        raise ValueError(f"client order id {xcid!r} breaks Binance's newClientOrderId rule")
    return xcid


def engine_client_id(xcid: str) -> str:
    return xcid.split(".", 1)[0]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Tracked:
    """One engine order (all its attempts) while the executor follows it."""

    intent: OrderIntent
    attempt: int
    xcid: str
    status: str = "new"
    exchange_order_id: str | None = None
    sent_ms: int = 0
    executed: float = 0.0
    trades: dict[str, Trade] = field(default_factory=dict)
    reason: str | None = None  # why it ended without a fill
    outcome_ready: bool = False
    busy: bool = False  # being sent or looked up: the poller leaves it alone
    adopted: bool = False  # found by reconciliation (exchange or store): no engine waits for its outcome yet
    orphan: bool = False  # adopted, and the engine stepped past its minute without asking for it
    meta: dict[str, Any] | None = None  # the engine's decision behind an entry (kept with the order)
    last_report: tuple | None = None  # the last user data stream report applied
    limit_price: float | None = None  # a limit order: its price, on the tick grid
    expires_at: float | None = None  # time.monotonic() when a resting limit order is cancelled


class LiveExecutor:
    """Sends and follows orders (see the module docstring). Event-loop side only."""

    def __init__(self, exchange: Any, store: OrderStore, cfg: LiveConfig, quote: str = "USDT"):
        self.ex = exchange
        self.store = store
        self.cfg = cfg
        self.quote = quote
        self.tracked: dict[str, Tracked] = {}  # engine id -> order
        self.known: dict[str, StoredOrder] = {}  # engine id -> its latest stored attempt (from the store at start)
        self.outbox: deque[tuple[str, Fill | None, str | None]] = deque()  # (engine id, fill, cancel reason)
        self.adoptions: deque[Tracked] = deque()  # orphans for the engine to wait for (`orphaned`)
        self.anchor: int | None = None
        self.counts: dict[str, int] = {"sent": 0, "lookups": 0, "retries": 0, "rejected": 0, "not_placed": 0,
                                       "adopted": 0, "reports": 0, "polls": 0}  # fmt: skip
        self.stream_up = False  # the user data stream (`watch_loop`) is subscribed and answering

    # -- start ---------------------------------------------------------------------------------

    async def load(self, since_ts: int, anchor: int | None = None) -> None:
        """The store's orders (recent ones and every unfinished one): ids that exist are never sent
        again. `anchor`: the last minute of the restored engine state; orders decided after it
        were sent by a process that died before it persisted that minute: the restarted engine
        decides them again and gets their outcome (`unclaimed`)."""
        self.anchor = anchor
        for o in await self.store.load(since_ts=since_ts):
            prev = self.known.get(o.engine_id)
            if prev is None or int(o.reason.get("attempt", 1)) >= int(prev.reason.get("attempt", 1)):
                self.known[o.engine_id] = o

    # -- placing -------------------------------------------------------------------------------

    async def place_all(self, intents: Sequence[OrderIntent], metas: Mapping[str, dict[str, Any] | None] | None = None) -> None:
        metas = metas or {}
        await asyncio.gather(*(self.place(it, metas.get(it.client_order_id)) for it in intents))

    async def place(self, it: OrderIntent, meta: dict[str, Any] | None = None) -> None:
        """Send `it` once, or follow the order already sent for it. `meta`: the engine's
        decision behind an entry, written with the order (see `OrderStore.insert_new`)."""
        eid = it.client_order_id
        if eid in self.tracked:
            t = self.tracked[eid]
            if t.adopted:  # found by reconciliation, now claimed by the engine: it hears the outcome
                t.adopted = False
                if t.outcome_ready:
                    t.outcome_ready = False
                    self._finish(t)
                return
            if not (t.outcome_ready and t.executed <= 0 and t.intent.leg == "exit"):
                return  # in flight or done: the engine hears about it once
            attempt = t.attempt + 1  # an exit that was definitely not placed: a new attempt
        elif eid in self.known:
            so = self.known.pop(eid)
            t = self._from_stored(it, so)
            self.tracked[eid] = t
            if so.status in FINAL:
                self._finish(t)
                if not (t.executed <= 0 and it.leg == "exit"):
                    return
                attempt = t.attempt + 1
            else:
                t.busy = True
                try:
                    await self.resolve(t)
                finally:
                    t.busy = False
                return
        else:
            attempt = 1
        if attempt > MAX_ATTEMPTS:
            log.error("order_attempts_exhausted", client_order_id=eid, text=f"ORDER {eid}: {MAX_ATTEMPTS} attempts, giving up")
            return
        qty = await self._qty(it, attempt)
        t = Tracked(it, attempt, exchange_client_id(eid, attempt), meta=meta, limit_price=self._limit_price(it))
        self.tracked[eid] = t
        if qty <= 0:
            t.reason = "rejected_below_lot_size"
            await self.store.insert_new(it, t.xcid, max(it.qty, 1e-12), attempt, now_ms(), meta, t.limit_price)
            await self._final(t, "rejected", t.reason)
            return
        t.busy = True
        try:
            crashpoint.reached("before_order_row", it.leg, client_order_id=t.xcid)  # test hook: nothing written or sent yet
            if not await self.store.insert_new(it, t.xcid, qty, attempt, now_ms(), meta, t.limit_price):
                await self.resolve(t)  # the id is already in the store: it may be on the exchange
                return
            await self._send(t, qty)
        finally:
            t.busy = False

    async def _qty(self, it: OrderIntent, attempt: int) -> float:
        """The quantity rounded down to the lot step (a later attempt of an exit sells at most
        what the account holds: the first may have been refused for fee dust)."""
        sym = self._sym(it.symbol)
        qty = it.qty
        if it.side == "sell" and attempt > 1:
            with contextlib.suppress(ccxt.BaseError):
                bal = await self.ex.fetch_balance()
                qty = min(qty, float((bal.get(sym.split("/")[0]) or {}).get("free") or 0.0))
        try:
            return float(self.ex.amount_to_precision(sym, qty))
        except ccxt.BaseError:  # below the precision: nothing to send
            return 0.0

    async def _send(self, t: Tracked, qty: float) -> None:
        it = t.intent
        sym = self._sym(it.symbol)
        cfg = self.cfg
        delay = cfg.retry_base_s
        for n in range(cfg.retry_attempts):
            t.sent_ms = now_ms()
            await self.store.set_status(t.xcid, "submitted", t.sent_ms)
            t.status = "submitted"
            try:
                self.counts["sent"] += 1
                params = {"newClientOrderId": t.xcid, "newOrderRespType": "FULL", "recvWindow": cfg.recv_window_ms}
                if t.limit_price is not None:
                    t.expires_at = time.monotonic() + cfg.limit_ttl_s
                    o = await self.ex.create_order(sym, "limit", it.side, qty, t.limit_price,
                                                   {**params, "timeInForce": cfg.limit_time_in_force})  # fmt: skip
                else:
                    o = await self.ex.create_order(sym, "market", it.side, qty, None, params)
            except ccxt.BaseError as e:
                kind, code = classify(e)
                log.warning("order_error", client_order_id=t.xcid, symbol=it.symbol, kind=kind.value, reason=code,
                            error=type(e).__name__, text=f"ORDER {t.xcid} {it.side} {it.symbol}: {code} ({kind.value})")  # fmt: skip
                if kind is Kind.RETRY and n + 1 < cfg.retry_attempts:
                    self.counts["retries"] += 1
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, cfg.retry_max_s)
                    continue
                if kind is Kind.UNKNOWN:
                    await self.resolve(t)
                    return
                self.counts["rejected"] += 1
                await self._final(t, "rejected", code)
                return
            crashpoint.reached("after_submit", it.leg, client_order_id=t.xcid)  # test hook: accepted, nothing of the answer written
            log.info("order_sent", client_order_id=t.xcid, symbol=it.symbol, side=it.side, qty=qty,
                     status=(o.get("info") or {}).get("status"))  # fmt: skip
            await self._apply(t, o.get("info") or {})
            return

    # -- following -----------------------------------------------------------------------------

    async def resolve(self, t: Tracked, *, deadline_s: float | None = None) -> bool:
        """Look `t` up by client order id until the exchange answers for it: found (its state
        and fills adopted) or provably never placed. False if the exchange could not be asked
        before `deadline_s` (it stays tracked; the next poll or reconciliation asks again)."""
        sym = self._sym(t.intent.symbol)
        end = time.monotonic() + (deadline_s if deadline_s is not None else self.cfg.submit_timeout_s)
        grace = self.cfg.recv_window_ms + 1000
        while True:
            self.counts["lookups"] += 1
            try:
                o = await self.ex.fetch_order(None, sym, {"origClientOrderId": t.xcid})
            except ccxt.OrderNotFound:
                if t.status == "new" or now_ms() - t.sent_ms > grace:
                    self.counts["not_placed"] += 1
                    await self._final(t, "expired", "order_not_placed")
                    return True
            except ccxt.BaseError as e:
                log.info("order_lookup_retry", client_order_id=t.xcid, error=type(e).__name__)
            else:
                await self._apply(t, o.get("info") or {})
                return True
            if time.monotonic() > end:
                return False
            await asyncio.sleep(min(1.0, grace / 4000))

    def _limit_price(self, it: OrderIntent) -> float | None:
        """A limit order's price on the market's tick grid, never worse than asked (a buy rounds
        down, a sell up); None for a market order. The engine's exits carry their barrier as a
        limit price for its paper fill model: they are sent at market (see the module)."""
        if it.order_type != "limit" or it.leg != "entry" or not it.limit_price or not it.limit_price > 0:
            return None
        market = self.ex.markets.get(self._sym(it.symbol)) or {}
        tick = (market.get("precision") or {}).get("price")
        if not tick or self.ex.precisionMode != ccxt.TICK_SIZE:
            return float(it.limit_price)
        step, px = Decimal(str(tick)), Decimal(str(it.limit_price))
        n = (px / step).to_integral_value(rounding=ROUND_FLOOR if it.side == "buy" else ROUND_CEILING)
        return float(n * step)

    async def expire_limits(self) -> None:
        """Cancel each resting limit order past its `live.limit_ttl_s`; what filled of it stays
        (the outcome is its fills, or a cancellation with reason `limit_expired`)."""
        now = time.monotonic()
        for t in list(self.tracked.values()):
            if t.expires_at is None or now < t.expires_at or t.outcome_ready or t.status in FINAL or t.busy:
                continue
            t.busy = True
            try:
                sym = self._sym(t.intent.symbol)
                try:
                    o = await self.ex.cancel_order(None, sym, {"origClientOrderId": t.xcid})
                except (ccxt.OrderNotFound, ccxt.InvalidOrder):  # ended meanwhile (filled): its state decides
                    o = await self.ex.fetch_order(None, sym, {"origClientOrderId": t.xcid})
                t.reason = "limit_expired"
                log.info("order_expired", client_order_id=t.xcid, symbol=t.intent.symbol,
                         text=f"ORDER {t.xcid} limit {t.limit_price} not filled in {self.cfg.limit_ttl_s:g}s: cancelled")  # fmt: skip
                await self._apply(t, o.get("info") or {})
            except ccxt.BaseError as e:
                log.info("order_cancel_retry", client_order_id=t.xcid, error=type(e).__name__)
            finally:
                t.busy = False

    async def watch_loop(self) -> None:
        """Fills as they happen, from the exchange's user data stream (ccxt `watch_orders`: for
        Binance spot the WebSocket API's `userDataStream.subscribe.signature`, then an
        `executionReport` per order event). A drop is said once; the stream is subscribed again
        with backoff, and polling (`poll_open`) goes back to its fast interval meanwhile: it is the
        safety net for any report lost in a drop."""
        delay = 1.0
        while True:
            try:
                if not self.stream_up:
                    await self.ex.authenticate()  # the subscription; its answer says the stream is up
                    self.stream_up = True
                    delay = 1.0
                    log.info("order_stream_up", text="ORDERS user data stream up: fills arrive as they happen")
                got = await self.ex.watch_orders()
                # ccxt returns the updates since the last call, but one that arrived while this
                # loop was busy can be folded into an order already returned: the cache holds each
                # order's latest report, so every report of an order still followed is applied
                # (trades a folded report hides are fetched: `_settle`)
                cached = list(getattr(self.ex, "orders", None) or [])
                for o in [*got, *cached]:
                    await self.on_report(o.get("info") or {})
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the stream must never end the daemon; polling covers it
                if self.stream_up:
                    log.warning("order_stream_down", error=type(e).__name__,
                                text=f"ORDERS user data stream down ({type(e).__name__}): fills by polling meanwhile")  # fmt: skip
                self.stream_up = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def poll_open(self) -> None:
        """Look up every order still open or unanswered (fills, delayed fills, cancellations)."""
        for t in list(self.tracked.values()):
            if t.outcome_ready or t.status in FINAL or t.busy:
                continue
            self.counts["polls"] += 1
            if t.status in ("new", "submitted"):
                await self.resolve(t, deadline_s=0)
                continue
            try:
                o = await self.ex.fetch_order(t.exchange_order_id, self._sym(t.intent.symbol), {"origClientOrderId": t.xcid})
            except ccxt.BaseError as e:
                log.info("order_poll_failed", client_order_id=t.xcid, error=type(e).__name__)
                continue
            await self._apply(t, o.get("info") or {})

    async def _apply(self, t: Tracked, info: Mapping[str, Any]) -> None:
        """Take the exchange's view of the order (a POST /order FULL answer or a GET /order)."""
        oid = str(info["orderId"]) if info.get("orderId") is not None else t.exchange_order_id
        for f in info.get("fills") or []:
            tid = str(f["tradeId"])
            t.trades.setdefault(tid, Trade(tid, float(f["qty"]), float(f["price"]), float(f["commission"]),
                                           str(f["commissionAsset"]), int(info.get("transactTime") or now_ms())))  # fmt: skip
        await self._settle(t, str(info.get("status")), oid, float(info.get("executedQty") or 0.0))

    async def on_report(self, info: Mapping[str, Any]) -> bool:
        """One `executionReport` of the user data stream (`watch_orders`): the order's new state
        and, for a TRADE event, its trade with the fee as reported. False if it is not an order
        this process follows (a foreign one, or one of ours not loaded: polling and
        reconciliation deal with those)."""
        cid = str((info.get("C") if info.get("x") == "CANCELED" and info.get("C") else info.get("c")) or "")
        t = self.tracked.get(engine_client_id(cid)) if cid else None
        if t is None or t.xcid != cid or t.outcome_ready:
            return False
        key = (info.get("x"), info.get("X"), info.get("z"), info.get("t"))
        if key == t.last_report:
            return False  # already applied (the loop re-reads ccxt's cache of latest reports)
        t.last_report = key
        self.counts["reports"] += 1
        if info.get("x") == "TRADE" and int(info.get("t", -1)) >= 0:
            tid = str(info["t"])
            t.trades.setdefault(tid, Trade(tid, float(info["l"]), float(info["L"]), float(info.get("n") or 0.0),
                                           str(info.get("N") or ""), int(info.get("T") or now_ms())))  # fmt: skip
        await self._settle(t, str(info.get("X")), str(info["i"]) if info.get("i") is not None else None,
                           float(info.get("z") or 0.0))  # fmt: skip
        return True

    async def _settle(self, t: Tracked, exchange_status: str, oid: str | None, executed: float) -> None:
        """The order's state from the exchange's status and cumulative executed quantity, with
        the trades gathered so far (missing ones fetched); stored, and final -> the engine's."""
        if t.outcome_ready:
            return
        status = FROM_EXCHANGE.get(exchange_status, "accepted")
        if RANK[status] < RANK.get(t.status, 0):
            status = t.status  # an answer older than one already seen (REST and stream race)
        oid = oid or t.exchange_order_id
        t.exchange_order_id = oid
        base = t.intent.symbol[: -len(self.quote)]
        if executed > sum(x.qty for x in t.trades.values()) + 1e-12:
            with contextlib.suppress(ccxt.BaseError):
                for tr in await self.ex.fetch_my_trades(self._sym(t.intent.symbol), None, None, {"orderId": oid}):
                    r = tr.get("info") or {}
                    tid = str(r.get("id"))
                    t.trades.setdefault(tid, Trade(tid, float(r["qty"]), float(r["price"]), float(r["commission"]),
                                                   str(r["commissionAsset"]), int(r["time"])))  # fmt: skip
        got = sum(x.qty for x in t.trades.values())
        if status in FINAL and got + 1e-12 < executed:
            status = "partially_filled"  # trades not all seen yet: ask again at the next poll
        t.executed = got
        vwap = sum(x.qty * x.price for x in t.trades.values()) / got if got > 0 else None
        await self.store.add_trades(t.xcid, t.intent.symbol, t.intent.side, list(t.trades.values()))
        await self.store.set_status(t.xcid, status, now_ms(), exchange_order_id=oid, filled_qty=got or None,
                                    avg_price=vwap)  # fmt: skip
        t.status = status
        del base
        if got > 0:
            crashpoint.reached("after_fill", t.intent.leg, client_order_id=t.xcid)  # test hook: fills stored, not booked by the engine
        if status in FINAL:
            self._finish(t)

    async def _final(self, t: Tracked, status: str, reason: str) -> None:
        t.reason = reason
        t.status = status
        await self.store.set_status(t.xcid, status, now_ms(), reason={"code": reason})
        self._finish(t)

    def _finish(self, t: Tracked) -> None:
        """The engine's view of a final order: one fill (all trades summed) or a cancellation."""
        if t.outcome_ready:
            return
        t.outcome_ready = True
        it = t.intent
        trades = list(t.trades.values())
        qty = sum(x.qty for x in trades)
        log.info("order_final", client_order_id=t.xcid, symbol=it.symbol, side=it.side, status=t.status, filled=qty,
                 reason=t.reason, trades=len(trades))  # fmt: skip
        if t.adopted and not t.orphan:
            return  # the engine may still decide it again: it hears the outcome then (`place`)
        if qty <= 0:
            self.outbox.append((it.client_order_id, None, t.reason or f"order_{t.status}"))
            return
        base = it.symbol[: -len(self.quote)]
        vwap = sum(x.qty * x.price for x in trades) / qty
        fee_base = sum(x.fee for x in trades if x.fee_asset == base)
        fee_quote = sum(x.fee for x in trades if x.fee_asset == self.quote)
        net = qty - fee_base if it.side == "buy" else qty
        fill = Fill(it.client_order_id, f"x{t.exchange_order_id}", it.symbol, it.side, net, vwap,
                    fee_quote + fee_base * vwap, max(x.ts for x in trades), ref_price=vwap)  # fmt: skip
        self.outbox.append((it.client_order_id, fill, None))

    def _from_stored(self, it: OrderIntent, so: StoredOrder) -> Tracked:
        t = Tracked(it, int(so.reason.get("attempt", 1)), so.client_order_id, so.status, so.exchange_order_id)
        meta = (so.reason or {}).get("meta")
        if meta:
            t.meta = {k: (float("nan") if v is None and k in ("er", "p", "tp_frac", "sl_frac") else v) for k, v in meta.items()}
        t.trades = {x.trade_id: x for x in so.trades}
        if (so.reason or {}).get("limit_price") is not None:  # a limit order: its time to live starts again
            t.limit_price = float(so.reason["limit_price"])
            t.expires_at = time.monotonic() + self.cfg.limit_ttl_s
        t.executed = sum(x.qty for x in so.trades)
        t.reason = (so.reason or {}).get("code")
        t.sent_ms = now_ms()  # unknown: count the grace from now (a restart is long after any send anyway)
        return t

    def _sym(self, symbol: str) -> str:
        return f"{symbol[: -len(self.quote)]}/{self.quote}"

    def unfinished(self) -> list[Tracked]:
        return [t for t in self.tracked.values() if not t.outcome_ready]

    def unclaimed(self) -> list[tuple[str, str, str, int]]:
        """Orders sent for minutes after the restored state that the engine has not asked about
        again: (engine id, client order id, symbol, decision minute)."""
        if self.anchor is None:
            return []
        a = self.anchor
        out = [(o.engine_id, o.client_order_id, o.symbol, o.decision_ts) for o in self.known.values() if o.decision_ts > a]
        out += [(eid, t.xcid, t.intent.symbol, t.intent.decision_ts) for eid, t in self.tracked.items()
                if t.adopted and not t.orphan and t.intent.decision_ts > a]  # fmt: skip
        return out

    @staticmethod
    def intent_of(so: StoredOrder, reason: str = "restart") -> OrderIntent:
        """The engine intent behind a stored order (its price is not kept: NaN)."""
        return OrderIntent(so.engine_id, so.symbol, so.side, so.leg, so.qty, so.decision_ts, float("nan"), reason)  # type: ignore[arg-type]

    def orphaned(self, engine_id: str) -> Tracked | None:
        """The engine stepped past this order's minute without deciding it again (it was sent by a
        process that died before it persisted that minute, and the restarted engine decided
        otherwise, e.g. no entry on a stale minute). Its outcome is still real: the engine is
        handed the order (`BrokerUpdate.adopted`, with the decision's meta kept with the order)
        and waits for it as for its own, so the store keeps what the exchange holds."""
        so = self.known.pop(engine_id, None)
        if so is not None:
            t = self._from_stored(self.intent_of(so, "orphan"), so)
            self.tracked[engine_id] = t
            final = so.status in FINAL
        else:
            t = self.tracked.get(engine_id)
            if t is None or t.orphan:
                return None
            final = t.outcome_ready  # it ended while nobody asked for it: its outcome was held back
        t.orphan = True
        t.adopted = False  # the engine waits for it from now on
        self.adoptions.append(t)
        if final:
            t.outcome_ready = False
            self._finish(t)
        return t

    def prune(self, before_ts: int) -> int:
        """Forget orders decided before `before_ts` whose outcome the engine has (bounded memory
        over months; the store keeps them, and no decision that old is ever made again)."""
        old = [eid for eid, t in self.tracked.items()
               if t.outcome_ready and not t.adopted and 0 < t.intent.decision_ts < before_ts
               and not any(e == eid for e, _, _ in self.outbox)]  # fmt: skip
        for eid in old:
            del self.tracked[eid]
        for eid in [e for e, so in self.known.items() if 0 < so.decision_ts < before_ts and so.status in FINAL]:
            del self.known[eid]
        return len(old)

    def orphans_through(self, engine_ts: int) -> list[Tracked]:
        """After the engine stepped `engine_ts`: orders sent for that minute or an earlier one by a
        process that died before persisting it, which the engine did not decide again (see
        `orphaned`)."""
        out = []
        for eid, _, _, decision_ts in self.unclaimed():
            if decision_ts <= engine_ts:
                t = self.orphaned(eid)
                if t is not None:
                    out.append(t)
        return out


class LiveBroker:
    """The engine's `Broker` over a `LiveExecutor` (see the module docstring). Thread-side:
    the engine calls it from its worker thread; the executor runs on `loop`."""

    def __init__(self, executor: LiveExecutor, loop: asyncio.AbstractEventLoop, cfg: LiveConfig):
        self.ex = executor
        self.loop = loop
        self.cfg = cfg
        self._lock = threading.Lock()
        self._interest: set[str] = set()  # engine ids the engine waits for (this process)
        #: the engine's decision behind an entry id (`Engine.pending_meta`), written with the order
        self.meta_of: Any = None

    def _run(self, coro: Any, timeout: float) -> None:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            fut.result(timeout)
        except concurrent.futures.TimeoutError:
            log.warning("orders_unresolved", text="ORDERS not all answered in time; they are followed by look-up")

    def submit(self, intents: Sequence[OrderIntent]) -> None:
        if not intents:
            return
        with self._lock:
            self._interest.update(it.client_order_id for it in intents)
        self._run(self.ex.place_all(list(intents), self._metas(intents)), self.cfg.submit_timeout_s)

    def _metas(self, intents: Sequence[OrderIntent]) -> dict[str, dict[str, Any] | None]:
        if self.meta_of is None:
            return {}
        return {it.client_order_id: self.meta_of(it.client_order_id) for it in intents if it.leg == "entry"}

    def _drain(self, exits_only: bool) -> BrokerUpdate:
        up = BrokerUpdate()
        keep = []
        with self._lock:
            while self.ex.adoptions:  # before the outcomes: the engine must know them to book them
                t = self.ex.adoptions.popleft()
                self._interest.add(t.intent.client_order_id)
                up.adopted.append((t.intent, t.meta))
            while self.ex.outbox:
                item = self.ex.outbox.popleft()
                eid, fill, why = item
                if exits_only and not eid.startswith("X-"):
                    keep.append(item)
                    continue
                if eid not in self._interest:
                    # not asked for by this engine (yet): after a restart it may decide it again
                    t = self.ex.tracked.get(eid)
                    if t is not None:
                        t.adopted = True
                    continue
                self._interest.discard(eid)
                if fill is not None:
                    up.fills.append(fill)
                else:
                    up.cancelled.append((eid, why or "order_not_filled"))
            self.ex.outbox.extendleft(reversed(keep))
        return up

    def poll(self, ts_ms: int, bars: np.ndarray, index: Mapping[str, int]) -> BrokerUpdate:
        return self._drain(False)

    def flush(self) -> BrokerUpdate:
        return self._drain(True)

    def pending(self) -> list[OrderIntent]:
        with self._lock:
            return [t.intent for t in self.ex.tracked.values() if t.intent.client_order_id in self._interest]

    def restore(self, pending: Sequence[OrderIntent], seen: Sequence[str] = ()) -> None:
        """After a restart: the engine still waits for these; report what became of them."""
        with self._lock:
            self._interest.update(it.client_order_id for it in pending)
        self._run(self.ex.place_all(list(pending), self._metas(pending)), self.cfg.submit_timeout_s)
