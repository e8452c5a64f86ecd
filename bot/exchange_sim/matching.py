"""The simulator's account and order matching: spot balances, orders that fill against the
replayed candles, fees. Enough of Binance's behaviour for a live broker to be tested against
it: market orders fill at once at the last trade price, limit orders rest until the price
touches them (checked on each candle that opens after the order was placed, so no fill ever
uses prices from before the order existed), funds are locked while an order rests, and the
fee is taken in the asset received (Binance's rule without BNB discounts).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bot.exchange_sim import binance_format as bf

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


class OrderRejected(Exception):
    """An order Binance would refuse; carries the Binance error code and message."""

    def __init__(self, code: int, msg: str):
        self.code = code
        self.msg = msg
        super().__init__(f"{code}: {msg}")


@dataclass
class Fill:
    trade_id: int
    order_id: int
    symbol: str
    price: float
    qty: float
    commission: float
    commission_asset: str
    time_ms: int
    is_buyer: bool
    is_maker: bool


@dataclass
class SimOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT / LIMIT_MAKER
    orig_qty: float
    price: float  # 0 for market orders
    time_in_force: str | None
    time_ms: int
    status: str = "NEW"  # NEW / FILLED / CANCELED / EXPIRED / REJECTED
    executed_qty: float = 0.0
    cum_quote: float = 0.0
    update_ms: int = 0
    fills: list[Fill] = field(default_factory=list)
    quote_order_qty: float = 0.0


def _q(x: float) -> float:
    """Round quantities and amounts to 8 decimals (Binance's asset precision)."""
    return float(round(Decimal(repr(x)), 8))


class Account:
    """Balances, orders and trades of the one simulated account."""

    def __init__(self, balances: dict[str, float], fee_rate: float = 0.001):
        self.free: dict[str, float] = {a: float(v) for a, v in balances.items()}
        self.locked: dict[str, float] = {a: 0.0 for a in balances}
        self.fee_rate = fee_rate
        self.orders: dict[int, SimOrder] = {}
        self.by_client_id: dict[tuple[str, str], int] = {}
        self.trades: list[Fill] = []
        self._order_ids = itertools.count(1_000_001)
        self._trade_ids = itertools.count(5_000_001)
        self.update_ms = 0
        #: called on every order event: (execution type NEW|TRADE|CANCELED|EXPIRED, order, the
        #: trade of a TRADE event): the server's user data stream (`executionReport`)
        self.listeners: list[Callable[[str, SimOrder, Fill | None], None]] = []

    def _notify(self, kind: str, o: SimOrder, f: Fill | None = None) -> None:
        for cb in self.listeners:
            cb(kind, o, f)

    # -- orders ----------------------------------------------------------------------------

    def place(
        self, *, symbol: str, base: str, quote: str, side: str, type_: str, quantity: float | None,
        quote_order_qty: float | None, price: float | None, time_in_force: str | None,
        client_order_id: str | None, now_ms: int, last_price: float | None, now_fraction: float = 1.0,
    ) -> SimOrder:  # fmt: skip
        """Place an order. `now_fraction` < 1: a market order fills only that part of its
        quantity now, the rest at the next minute's close (0: all of it then; a delayed fill)."""
        side, type_ = side.upper(), type_.upper()
        if side not in ("BUY", "SELL"):
            raise OrderRejected(bf.E_ILLEGAL_PARAM, "Illegal characters found in parameter 'side'; legal range is 'BUY', 'SELL'.")
        if type_ not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
            raise OrderRejected(bf.E_ILLEGAL_PARAM, f"Unsupported order type {type_!r}; the simulator supports MARKET, LIMIT, LIMIT_MAKER.")
        if client_order_id and (symbol, client_order_id) in self.by_client_id:
            existing = self.orders[self.by_client_id[(symbol, client_order_id)]]
            if existing.status in OPEN_STATUSES:
                raise OrderRejected(bf.E_NEW_ORDER_REJECTED, "Duplicate order sent.")
        if last_price is None or last_price <= 0:
            raise OrderRejected(bf.E_NEW_ORDER_REJECTED, "Market is closed.")
        if type_ == "MARKET":
            if quantity is None and quote_order_qty is None:
                raise OrderRejected(bf.E_MANDATORY_PARAM, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
            qty = quantity if quantity is not None else _q(quote_order_qty / last_price)  # type: ignore[operator]
            px = 0.0
        else:
            if quantity is None or price is None:
                raise OrderRejected(bf.E_MANDATORY_PARAM, "Mandatory parameter 'quantity' or 'price' was not sent, was empty/null, or malformed.")
            qty, px = quantity, price
            if type_ == "LIMIT" and not time_in_force:
                raise OrderRejected(bf.E_MANDATORY_PARAM, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
        if qty <= 0:
            raise OrderRejected(bf.E_FILTER_FAILURE, "Filter failure: LOT_SIZE")
        ref = px if px > 0 else last_price
        if qty * ref < 5.0:
            raise OrderRejected(bf.E_FILTER_FAILURE, "Filter failure: NOTIONAL")
        marketable = type_ == "MARKET" or (side == "BUY" and px >= last_price) or (side == "SELL" and px <= last_price)
        if type_ == "LIMIT_MAKER" and marketable:
            raise OrderRejected(bf.E_NEW_ORDER_REJECTED, "Order would immediately match and take.")
        # Funds: a buy needs quote, a sell needs base.
        need_asset, need = (quote, qty * (ref if marketable else px)) if side == "BUY" else (base, qty)
        if self.free.get(need_asset, 0.0) + 1e-12 < need:
            raise OrderRejected(bf.E_NEW_ORDER_REJECTED, "Account has insufficient balance for requested action.")
        oid = next(self._order_ids)
        order = SimOrder(
            order_id=oid, client_order_id=client_order_id or f"sim{oid}", symbol=symbol, side=side, type=type_,
            orig_qty=qty, price=px, time_in_force=time_in_force if type_ == "LIMIT" else ("GTC" if type_ == "LIMIT_MAKER" else None),
            time_ms=now_ms, update_ms=now_ms, quote_order_qty=quote_order_qty or 0.0,
        )  # fmt: skip
        self.orders[oid] = order
        self.by_client_id[(symbol, order.client_order_id)] = oid
        self._notify("NEW", order)
        if marketable and type_ == "MARKET" and now_fraction < 1.0:
            part = _q(qty * max(now_fraction, 0.0))
            if part > 0:
                self._fill(order, base, quote, last_price, now_ms, maker=False, qty=part)
        elif marketable:
            self._fill(order, base, quote, last_price, now_ms, maker=False)
        else:
            self._lock(need_asset, need)
            if time_in_force in ("IOC", "FOK"):
                self._unlock(need_asset, need)
                order.status = "EXPIRED"
                self._notify("EXPIRED", order)
        return order

    def find(self, symbol: str, order_id: int | None, client_order_id: str | None) -> SimOrder | None:
        if order_id is not None:
            o = self.orders.get(order_id)
            return o if o is not None and o.symbol == symbol else None
        if client_order_id:
            oid = self.by_client_id.get((symbol, client_order_id))
            return self.orders.get(oid) if oid is not None else None
        return None

    def cancel(self, order: SimOrder, base: str, quote: str, now_ms: int) -> SimOrder:
        if order.status not in OPEN_STATUSES:
            raise OrderRejected(bf.E_CANCEL_REJECTED, "Unknown order sent.")
        if order.type != "MARKET":
            if order.side == "BUY":
                self._unlock(quote, order.orig_qty * order.price)
            else:
                self._unlock(base, order.orig_qty)
        order.status = "CANCELED"
        order.update_ms = now_ms
        self._notify("CANCELED", order)
        return order

    def open_orders(self, symbol: str | None) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.status in OPEN_STATUSES and (symbol is None or o.symbol == symbol)]

    def on_candle(self, symbol: str, base: str, quote: str, ts: int, high: float, low: float, close_ms: int,
                  close: float | None = None) -> None:  # fmt: skip
        """A minute closed: fill resting limit orders of `symbol` that its range touched.

        Only orders placed before the candle opened are eligible (no fill from prices that
        happened before the order existed).
        """
        for o in self.open_orders(symbol):
            if o.time_ms > ts:
                continue
            if o.type == "MARKET":  # the rest of a partial / delayed market order, at the close
                self._fill(o, base, quote, close if close is not None else (high + low) / 2, close_ms, maker=False,
                           qty=_q(o.orig_qty - o.executed_qty))  # fmt: skip
                continue
            touched = (o.side == "BUY" and low <= o.price) or (o.side == "SELL" and high >= o.price)
            if touched:
                if o.side == "BUY":
                    self._unlock(quote, o.orig_qty * o.price)
                else:
                    self._unlock(base, o.orig_qty)
                self._fill(o, base, quote, o.price, close_ms, maker=True)

    # -- internals -------------------------------------------------------------------------

    def _fill(self, o: SimOrder, base: str, quote: str, price: float, now_ms: int, *, maker: bool,
              qty: float | None = None) -> None:  # fmt: skip
        qty = o.orig_qty if qty is None else qty
        cost = _q(qty * price)
        if o.side == "BUY":
            fee = _q(qty * self.fee_rate)
            self._add(quote, -cost)
            self._add(base, qty - fee)
            fee_asset = base
        else:
            fee = _q(cost * self.fee_rate)
            self._add(base, -qty)
            self._add(quote, cost - fee)
            fee_asset = quote
        f = Fill(next(self._trade_ids), o.order_id, o.symbol, price, qty, fee, fee_asset, now_ms, o.side == "BUY", maker)
        o.fills.append(f)
        self.trades.append(f)
        o.executed_qty = _q(o.executed_qty + qty)
        o.cum_quote = _q(o.cum_quote + cost)
        o.status = "FILLED" if o.executed_qty >= o.orig_qty - 1e-12 else "PARTIALLY_FILLED"
        o.update_ms = now_ms
        self.update_ms = now_ms
        self._notify("TRADE", o, f)

    def _add(self, asset: str, amount: float) -> None:
        self.free[asset] = _q(self.free.get(asset, 0.0) + amount)
        self.locked.setdefault(asset, 0.0)

    def _lock(self, asset: str, amount: float) -> None:
        self.free[asset] = _q(self.free.get(asset, 0.0) - amount)
        self.locked[asset] = _q(self.locked.get(asset, 0.0) + amount)

    def _unlock(self, asset: str, amount: float) -> None:
        self.locked[asset] = _q(max(0.0, self.locked.get(asset, 0.0) - amount))
        self.free[asset] = _q(self.free.get(asset, 0.0) + amount)


# -- wire encodings ----------------------------------------------------------------------------


def order_json(o: SimOrder, *, full: bool = False, transact: bool = False) -> dict[str, Any]:
    """GET /api/v3/order shape; `transact`/`full` give the POST /api/v3/order (FULL) shape."""
    d: dict[str, Any] = {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        "price": bf.fmt(o.price),
        "origQty": bf.fmt(o.orig_qty),
        "executedQty": bf.fmt(o.executed_qty),
        "cummulativeQuoteQty": bf.fmt(o.cum_quote),
        "origQuoteOrderQty": bf.fmt(o.quote_order_qty),
        "status": o.status,
        "timeInForce": o.time_in_force or "GTC",
        "type": o.type,
        "side": o.side,
        "workingTime": o.time_ms,
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }
    if transact:
        d["transactTime"] = o.update_ms
    else:
        d.update({"stopPrice": "0", "icebergQty": "0", "time": o.time_ms, "updateTime": o.update_ms,
                  "isWorking": o.status in OPEN_STATUSES})  # fmt: skip
    if full:
        d["fills"] = [
            {"price": bf.fmt(f.price), "qty": bf.fmt(f.qty), "commission": bf.fmt(f.commission),
             "commissionAsset": f.commission_asset, "tradeId": f.trade_id}  # fmt: skip
            for f in o.fills
        ]
    return d


def execution_report(kind: str, o: SimOrder, f: Fill | None, event_ms: int) -> dict[str, Any]:
    """The user data stream's `executionReport` event for one order event (Binance spot)."""
    return {
        "e": "executionReport", "E": event_ms, "s": o.symbol, "c": o.client_order_id, "S": o.side, "o": o.type,
        "f": o.time_in_force or "GTC", "q": bf.fmt(o.orig_qty), "p": bf.fmt(o.price), "P": "0.00000000",
        "F": "0.00000000", "g": -1, "C": o.client_order_id if kind == "CANCELED" else "", "x": kind, "X": o.status,
        "r": "NONE", "i": o.order_id, "l": bf.fmt(f.qty if f else 0.0), "z": bf.fmt(o.executed_qty),
        "L": bf.fmt(f.price if f else 0.0), "n": bf.fmt(f.commission if f else 0.0),
        "N": f.commission_asset if f else None, "T": o.update_ms, "t": f.trade_id if f else -1, "v": 0,
        "I": 0, "w": o.status in OPEN_STATUSES, "m": bool(f.is_maker) if f else False, "M": False, "O": o.time_ms,
        "Z": bf.fmt(o.cum_quote), "Y": bf.fmt(_q(f.qty * f.price) if f else 0.0), "Q": bf.fmt(o.quote_order_qty),
        "W": o.time_ms, "V": "EXPIRE_MAKER",
    }  # fmt: skip


def cancel_json(o: SimOrder) -> dict[str, Any]:
    d = order_json(o, transact=True)
    d["origClientOrderId"] = o.client_order_id
    return d


def trade_json(f: Fill) -> dict[str, Any]:
    return {
        "symbol": f.symbol, "id": f.trade_id, "orderId": f.order_id, "orderListId": -1,
        "price": bf.fmt(f.price), "qty": bf.fmt(f.qty), "quoteQty": bf.fmt(_q(f.price * f.qty)),
        "commission": bf.fmt(f.commission), "commissionAsset": f.commission_asset, "time": f.time_ms,
        "isBuyer": f.is_buyer, "isMaker": f.is_maker, "isBestMatch": True,
    }  # fmt: skip


def account_json(a: Account, now_ms: int) -> dict[str, Any]:
    fee_bps = int(round(a.fee_rate * 10_000))
    return {
        "makerCommission": fee_bps, "takerCommission": fee_bps, "buyerCommission": 0, "sellerCommission": 0,
        "commissionRates": {"maker": bf.fmt(a.fee_rate), "taker": bf.fmt(a.fee_rate), "buyer": "0", "seller": "0"},
        "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
        "requireSelfTradePrevention": False, "preventSor": False, "updateTime": a.update_ms or now_ms,
        "accountType": "SPOT",
        "balances": [
            {"asset": k, "free": bf.fmt(a.free.get(k, 0.0)), "locked": bf.fmt(a.locked.get(k, 0.0))}
            for k in sorted(set(a.free) | set(a.locked))
        ],
        "permissions": ["SPOT"], "uid": 354937868,
    }  # fmt: skip
