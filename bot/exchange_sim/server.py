"""A wire-compatible Binance spot exchange that replays recorded candles (product feature and
test double): unmodified ccxt clients — REST and websocket ("pro") — talk to it as to Binance.

REST (`/api/v3/...`): ping, time, exchangeInfo, klines; signed (HMAC-SHA256 of the query
string + body, `X-MBX-APIKEY` header, timestamp within recvWindow) account, order
(POST/GET/DELETE), openOrders, myTrades. Errors are Binance's JSON (`{"code":-2015,...}`).

User data stream (the WebSocket API at `/ws-api/v3`, what ccxt.pro's binance `watch_orders`
uses for spot): `userDataStream.subscribe.signature` (apiKey, timestamp, HMAC-SHA256 signature of
the sorted parameters) answers `{"id", "status": 200, "result": {"subscriptionId"}}`; from then on
every order event of the account (new, each trade, cancel, expiry) is pushed on that connection
as `{"subscriptionId", "event": {"e": "executionReport", ...}}`. Connection faults (`ws_drop`,
`ws_stall`) hit these connections too.

Websocket (any path under `/ws` or `/stream`, ccxt uses `<base>/stream/ws/<n>`): answers
SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS and pushes `<symbol>@kline_1m` events: at each minute
boundary of the replay clock the closing event (`x: true`, the recorded candle) and the first
in-progress event of the new minute (`x: false`, partial values), plus in-progress updates
every `update_interval_s` of wall time. Minutes missing from the data (exchange downtime) send
nothing, as the real exchange did.

Time: `/api/v3/time` and `serverTime` are the replay clock ("the exchange's now"). Signed
requests are checked against the host's wall clock, because that is what the client signs
with (ccxt's nonce), and client and simulator share the host.

Faults (`bot.exchange_sim.faults`) are planned on the replay clock via the constructor, the
control API (`POST /_sim/faults`) or `bot simulate-exchange --faults FILE`; what was applied is
listed by `GET /_sim/faults`. `POST /_sim/clock {"now_ms":..,"speed":..}` moves the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import structlog
from aiohttp import WSMsgType, web

from bot.exchange_sim import binance_format as bf
from bot.exchange_sim.faults import Fault, FaultInjector
from bot.exchange_sim.matching import (
    Account,
    OrderRejected,
    account_json,
    cancel_json,
    execution_report,
    order_json,
    trade_json,
)
from bot.exchange_sim.replay import CandleBook, ReplayClock, forming
from models.timeutil import DAY_MS, MINUTE_MS

log = structlog.get_logger(__name__)

MAX_KLINES = 1000
DEFAULT_KLINES = 500
RECV_WINDOW_MS = 5000
MAX_CATCHUP_MINUTES = 1440  # a clock jump further than this skips ahead instead of replaying


@dataclass
class SimSettings:
    """Behaviour knobs of the simulator (CLI flags map onto these)."""

    speed: float = 1.0
    start_ms: int | None = None  # default: 8 days into the data (a 7-day backfill then has history)
    update_interval_s: float = 2.0  # wall seconds between in-progress kline updates
    fee_rate: float = 0.001
    balances: dict[str, float] = field(default_factory=lambda: {"USDT": 10_000.0})
    api_keys: dict[str, str] = field(default_factory=dict)  # api key -> secret
    timeout_delay_s: float = 30.0  # how long a rest_timeout fault holds the answer
    retry_after_s: int = 1  # Retry-After header of 429/418 faults
    rest_fault_paths: tuple[str, ...] = ("/api/v3/klines",)
    record_close_times: bool = False  # keep time.perf_counter() of each minute's close (benchmarks)
    ws_queue_size: int = 20_000  # per-connection outbound messages before it is dropped as too slow
    market_fill: str = "last"  # "last": market orders fill at the last trade price; "open": at the minute's open
    partial_fraction: float = 0.4  # what an order_partial fault fills at once


class _Conn:
    """One websocket client: its subscriptions and a writer task draining its queue.

    Queue items are (frame, on_written): `on_written` runs once the frame has been handed to
    the socket, which is when a fault carried by it counts as applied.
    """

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, combined: bool, size: int):
        self.ws = ws
        self.transport = transport
        self.combined = combined
        self.symbols: set[str] = set()
        self.queue: asyncio.Queue[tuple[str, Callable[[], None] | None] | None] = asyncio.Queue(maxsize=size)
        self.stalled = False
        self.closed = False
        self.dropping = False
        self.user_sub: int | None = None  # WebSocket API: the user data subscription id

    @property
    def live(self) -> bool:
        return not (self.closed or self.stalled or self.dropping)

    def send(self, payload: str, on_written: Callable[[], None] | None = None) -> bool:
        if not self.live:
            return False
        try:
            self.queue.put_nowait((payload, on_written))
            return True
        except asyncio.QueueFull:
            log.warning("sim_ws_slow_client_dropped", queued=self.queue.qsize())
            self.abort()
            return False

    def drop_after_queued(self) -> None:
        """Cut the TCP connection (no websocket close handshake) once what is queued is written."""
        self.dropping = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class ExchangeSimulator:
    """The simulator. `await start()` serves it on 127.0.0.1; `urls` gives ccxt's overrides."""

    def __init__(self, book: CandleBook, settings: SimSettings | None = None, faults: Iterable[Fault] = ()):
        self.book = book
        self.settings = s = settings or SimSettings()
        start = s.start_ms if s.start_ms is not None else book.first_ms + 8 * DAY_MS
        self.clock = ReplayClock(start, s.speed)
        self.faults = FaultInjector(faults)
        self.account = Account(s.balances, s.fee_rate)
        self.account.listeners.append(self._user_event)
        self._user_subs = 0
        self._assets = {sym: _split(sym) for sym in book.symbols}
        self._conns: set[_Conn] = set()
        self._held: dict[str, tuple[int, dict[str, Any]]] = {}  # out_of_order: symbol -> (minute, event)
        self.close_times: deque[tuple[str, int, float]] = deque(maxlen=500_000)
        self.stats = {"rest_requests": 0, "ws_connections": 0, "ws_messages": 0, "close_events": 0}
        self._runner: web.AppRunner | None = None
        self._pump: asyncio.Task | None = None
        self.base_url = ""
        self.app = self._make_app()
        self._exchange_info_cache: dict[str, Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 = any free port); return the base URL http://host:port."""
        self.clock.set()  # re-anchor the clock in this event loop
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        bound = sock.getsockname()[1]
        self.base_url = f"http://{host}:{bound}"
        self._exchange_info_cache = {s: self._symbol_info(s) for s in self.book.symbols}
        self._pump = asyncio.create_task(self._clock_loop(), name="sim-clock")
        log.info("sim_started", url=self.base_url, symbols=len(self.book.symbols), now_ms=self.clock.now_ms(), speed=self.clock.speed)
        return self.base_url

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        for c in list(self._conns):
            c.abort()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> ExchangeSimulator:
        if not self.base_url:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def urls(self) -> dict[str, str]:
        """The `exchange.urls` config values that point ccxt at this simulator."""
        ws = self.base_url.replace("http://", "ws://", 1)
        return {"public": f"{self.base_url}/api/v3", "private": f"{self.base_url}/api/v3", "ws": f"{ws}/stream/ws",
                "ws_api": f"{ws}/ws-api/v3"}

    def subscribed_symbols(self) -> set[str]:
        """Symbols some live websocket client is subscribed to."""
        return set(self._subscribed())

    def add_faults(self, faults: Iterable[Fault]) -> None:
        self.faults.add(faults)
        self.clock._signal()

    # -- app -------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._rest_faults])
        r = app.router
        r.add_get("/api/v3/ping", self._ping)
        r.add_get("/api/v3/time", self._time)
        r.add_get("/api/v3/exchangeInfo", self._exchange_info)
        r.add_get("/api/v3/klines", self._klines)
        r.add_get("/api/v3/account", self._account)
        r.add_post("/api/v3/order", self._order_new)
        r.add_get("/api/v3/order", self._order_get)
        r.add_delete("/api/v3/order", self._order_cancel)
        r.add_get("/api/v3/openOrders", self._open_orders)
        r.add_get("/api/v3/myTrades", self._my_trades)
        r.add_get("/ws-api/v3", self._websocket)
        for p in ("/ws", "/ws/{tail:.*}", "/stream", "/stream/{tail:.*}"):
            r.add_get(p, self._websocket)
        r.add_get("/_sim/status", self._ctl_status)
        r.add_post("/_sim/clock", self._ctl_clock)
        r.add_get("/_sim/faults", self._ctl_faults_get)
        r.add_post("/_sim/faults", self._ctl_faults_post)
        r.add_get("/_sim/close_times", self._ctl_close_times)
        r.add_get("/_sim/orders", self._ctl_orders)
        r.add_post("/_sim/balances", self._ctl_balances)
        return app

    @web.middleware
    async def _rest_faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            self.stats["rest_requests"] += 1
        if request.path in self.settings.rest_fault_paths:
            f = self.faults.take_rest_fault()
            if f is not None:
                now = self.clock.now_ms()
                self.faults.record(f.kind, request.query.get("symbol"), now, now, request.path)
                log.info("sim_fault_rest", kind=f.kind, path=request.path, symbol=request.query.get("symbol"))
                retry = {"Retry-After": str(self.settings.retry_after_s)}
                if f.kind == "rest_429":
                    return _json(bf.error(bf.E_TOO_MANY_REQUESTS), 429, retry)
                if f.kind == "rest_418":
                    until = int(time.time() * 1000) + self.settings.retry_after_s * 1000
                    return _json(bf.error(bf.E_TOO_MANY_REQUESTS, f"Way too many requests; IP(127.0.0.1) banned until {until}. "
                                          "Please use the websocket for live updates to avoid bans."), 418, retry)  # fmt: skip
                if f.kind == "rest_5xx":
                    return web.Response(status=503, text="<html><body><h1>503 Service Unavailable</h1></body></html>",
                                        content_type="text/html")  # fmt: skip
                if f.kind == "rest_timeout":
                    await asyncio.sleep(self.settings.timeout_delay_s)
                if f.kind == "rest_malformed":  # the real answer, cut in the middle: a 200 that is not JSON
                    good = await handler(request)
                    body = good.text if isinstance(good, web.Response) and good.text else '[[0,"1.0"]]'
                    return web.Response(status=200, text=body[: max(1, len(body) // 2)], content_type="application/json")
        return await handler(request)

    # -- public REST -----------------------------------------------------------------------

    async def _ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def _time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": self.clock.now_ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        if self._exchange_info_cache is None:
            self._exchange_info_cache = {s: self._symbol_info(s) for s in self.book.symbols}
        wanted: list[str] | None = None
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                wanted = list(json.loads(request.query["symbols"]))
            except ValueError:
                return _json(bf.error(bf.E_ILLEGAL_PARAM, "Illegal characters found in parameter 'symbols'."), 400)
        if wanted is not None:
            bad = [w for w in wanted if w not in self._exchange_info_cache]
            if bad:
                return _json(bf.error(bf.E_INVALID_SYMBOL), 400)
        items = [self._exchange_info_cache[s] for s in (wanted or self.book.symbols)]
        return _json(bf.exchange_info(self.clock.now_ms(), items))

    def _symbol_info(self, symbol: str) -> dict[str, Any]:
        c = self.book.candles[symbol]
        n = min(len(c), 5000)
        price_dec = bf.max_decimals(np.concatenate([c.open[:n], c.high[:n], c.low[:n], c.close[:n]]))
        qty_dec = bf.max_decimals(c.volume[:n])
        base, quote = self._assets[symbol]
        return bf.symbol_info(symbol, base, quote, bf.fmt(10.0 ** -min(price_dec, 8)), bf.fmt(10.0 ** -min(qty_dec, 8)))

    async def _klines(self, request: web.Request) -> web.Response:
        q = request.query
        symbol = q.get("symbol")
        if not symbol:
            return _json(bf.error(bf.E_MANDATORY_PARAM, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."), 400)
        if symbol not in self.book.candles:
            return _json(bf.error(bf.E_INVALID_SYMBOL), 400)
        if q.get("interval") != "1m":
            return _json(bf.error(bf.E_INVALID_INTERVAL, "Invalid interval; the simulator serves 1m candles only."), 400)
        try:
            limit = int(q.get("limit", DEFAULT_KLINES))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return _json(bf.error(bf.E_ILLEGAL_PARAM, "Illegal characters found in a parameter."), 400)
        limit = max(1, min(limit, MAX_KLINES))
        now = self.clock.now_ms()
        forming_ts = now - now % MINUTE_MS
        hi = forming_ts if end is None else min(end, forming_ts)
        rows = self.book.range(symbol, start, hi)
        rows = rows.slice(0, limit) if start is not None else rows.slice(max(0, len(rows) - limit), len(rows))
        out = bf.kline_rows(*rows.columns())
        if len(rows) and int(rows.ts[-1]) == forming_ts:
            row = self.book.get(symbol, forming_ts)
            assert row is not None
            out[-1] = bf.kline_row(forming_ts, *forming(row, (now - forming_ts) / MINUTE_MS))
        return _json(out)

    # -- signed REST -----------------------------------------------------------------------

    async def _signed(self, request: web.Request) -> dict[str, str] | web.Response:
        """Check key, signature and timestamp; return the request's parameters or an error."""
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            return _json(bf.error(bf.E_BAD_API_KEY_FORMAT), 401)
        secret = self.settings.api_keys.get(key)
        if secret is None:
            return _json(bf.error(bf.E_REJECTED_MBX_KEY), 401)
        qs = request.query_string
        body = (await request.text()) if request.can_read_body else ""
        total = qs + body
        sig_at = total.rfind("signature=")
        if sig_at < 0:
            return _json(bf.error(bf.E_MANDATORY_PARAM, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."), 400)
        signature = total[sig_at + len("signature="):].split("&", 1)[0]
        payload = (qs.replace(f"&signature={signature}", "").replace(f"signature={signature}", "")
                   + body.replace(f"&signature={signature}", "").replace(f"signature={signature}", ""))  # fmt: skip
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return _json(bf.error(bf.E_INVALID_SIGNATURE), 400)
        params = dict(parse_qsl(qs, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        try:
            ts = int(params.get("timestamp", ""))
            window = int(params.get("recvWindow", RECV_WINDOW_MS))
        except ValueError:
            return _json(bf.error(bf.E_MANDATORY_PARAM, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."), 400)
        wall = int(time.time() * 1000)
        if ts > wall + 1000 or wall - ts > window:
            return _json(bf.error(bf.E_TIMESTAMP_OUTSIDE_RECV_WINDOW), 400)
        return params

    async def _account(self, request: web.Request) -> web.Response:
        p = await self._signed(request)
        if isinstance(p, web.Response):
            return p
        return _json(account_json(self.account, self.clock.now_ms()))

    def _last_price(self, symbol: str, now: int) -> float | None:
        ts = now - now % MINUTE_MS
        row = self.book.get(symbol, ts)
        if row is not None and self.settings.market_fill == "open":
            return row.open
        if row is not None:
            return forming(row, (now - ts) / MINUTE_MS)[3]
        prev = self.book.last_at_or_before(symbol, ts)
        return prev.close if prev is not None else None

    async def _order_new(self, request: web.Request) -> web.Response:
        p = await self._signed(request)
        if isinstance(p, web.Response):
            return p
        symbol = p.get("symbol", "")
        if symbol not in self.book.candles:
            return _json(bf.error(bf.E_INVALID_SYMBOL), 400)
        base, quote = self._assets[symbol]
        now = self.clock.now_ms()
        fault = self.faults.take_order_fault(now)
        fraction = 1.0
        if fault is not None:
            self.faults.record(fault.kind, symbol, now, now, p.get("newClientOrderId", ""))
            log.info("sim_fault_order", kind=fault.kind, symbol=symbol, client_order_id=p.get("newClientOrderId"))
            retry = {"Retry-After": str(self.settings.retry_after_s)}
            if fault.kind == "order_reject_balance":
                return _json(bf.error(bf.E_NEW_ORDER_REJECTED, "Account has insufficient balance for requested action."), 400)
            if fault.kind == "order_reject_filter":
                return _json(bf.error(bf.E_FILTER_FAILURE, "Filter failure: PRICE_FILTER"), 400)
            if fault.kind == "order_429":
                return _json(bf.error(bf.E_TOO_MANY_REQUESTS), 429, retry)
            if fault.kind == "order_418":
                return _json(bf.error(bf.E_TOO_MANY_REQUESTS, "Way too many requests; IP(127.0.0.1) banned. "
                                      "Please use the websocket for live updates to avoid bans."), 418, retry)  # fmt: skip
            if fault.kind == "order_5xx":
                return web.Response(status=503, text="<html><body><h1>503 Service Unavailable</h1></body></html>",
                                    content_type="text/html")  # fmt: skip
            fraction = {"order_partial": self.settings.partial_fraction, "order_delayed": 0.0}.get(fault.kind, 1.0)
        try:
            o = self.account.place(
                symbol=symbol, base=base, quote=quote, side=p.get("side", ""), type_=p.get("type", ""),
                quantity=_num(p.get("quantity")), quote_order_qty=_num(p.get("quoteOrderQty")),
                price=_num(p.get("price")), time_in_force=p.get("timeInForce"),
                client_order_id=p.get("newClientOrderId"), now_ms=now, last_price=self._last_price(symbol, now),
                now_fraction=fraction,
            )  # fmt: skip
        except OrderRejected as e:
            return _json(bf.error(e.code, e.msg), 400)
        except ValueError:
            return _json(bf.error(bf.E_ILLEGAL_PARAM, "Illegal characters found in a parameter."), 400)
        log.info("sim_order", symbol=symbol, side=o.side, type=o.type, qty=o.orig_qty, price=o.price, status=o.status)
        if fault is not None and fault.kind == "order_lost_response":  # placed; the answer never arrives in time
            await asyncio.sleep(self.settings.timeout_delay_s)
        resp = p.get("newOrderRespType", "FULL" if o.type == "MARKET" else "ACK").upper()
        if resp == "ACK":
            return _json({"symbol": o.symbol, "orderId": o.order_id, "orderListId": -1,
                          "clientOrderId": o.client_order_id, "transactTime": o.update_ms})  # fmt: skip
        return _json(order_json(o, full=resp == "FULL", transact=True))

    async def _signed_order(self, request: web.Request, not_found: int) -> Any:
        """The order a signed request names (orderId or origClientOrderId), or the Binance error
        response: bad signature, unknown symbol, bad id, or no such order (`not_found`)."""
        p = await self._signed(request)
        if isinstance(p, web.Response):
            return p
        o = self._lookup(p)
        return _json(bf.error(not_found), 400) if o is None else o

    def _lookup(self, p: dict[str, str]) -> Any:
        symbol = p.get("symbol", "")
        if symbol not in self.book.candles:
            return _json(bf.error(bf.E_INVALID_SYMBOL), 400)
        oid = p.get("orderId")
        try:
            order = self.account.find(symbol, int(oid) if oid else None, p.get("origClientOrderId"))
        except ValueError:
            return _json(bf.error(bf.E_ILLEGAL_PARAM, "Illegal characters found in parameter 'orderId'."), 400)
        if oid is None and not p.get("origClientOrderId"):
            return _json(bf.error(bf.E_MANDATORY_PARAM, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"), 400)
        return order

    async def _order_get(self, request: web.Request) -> web.Response:
        o = await self._signed_order(request, bf.E_NO_SUCH_ORDER)
        return o if isinstance(o, web.Response) else _json(order_json(o))

    async def _order_cancel(self, request: web.Request) -> web.Response:
        o = await self._signed_order(request, bf.E_CANCEL_REJECTED)
        if isinstance(o, web.Response):
            return o
        base, quote = self._assets[o.symbol]
        try:
            self.account.cancel(o, base, quote, self.clock.now_ms())
        except OrderRejected as e:
            return _json(bf.error(e.code, e.msg), 400)
        return _json(cancel_json(o))

    async def _open_orders(self, request: web.Request) -> web.Response:
        p = await self._signed(request)
        if isinstance(p, web.Response):
            return p
        symbol = p.get("symbol")
        if symbol is not None and symbol not in self.book.candles:
            return _json(bf.error(bf.E_INVALID_SYMBOL), 400)
        return _json([order_json(o) for o in self.account.open_orders(symbol)])

    async def _my_trades(self, request: web.Request) -> web.Response:
        p = await self._signed(request)
        if isinstance(p, web.Response):
            return p
        symbol = p.get("symbol")
        if not symbol:
            return _json(bf.error(bf.E_MANDATORY_PARAM, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."), 400)
        trades = [t for t in self.account.trades if t.symbol == symbol]
        if "orderId" in p:
            trades = [t for t in trades if t.order_id == int(p["orderId"])]
        if "startTime" in p:
            trades = [t for t in trades if t.time_ms >= int(p["startTime"])]
        if "endTime" in p:
            trades = [t for t in trades if t.time_ms <= int(p["endTime"])]
        if "fromId" in p:
            trades = [t for t in trades if t.trade_id >= int(p["fromId"])]
        limit = max(1, min(int(p.get("limit", 500)), 1000))
        return _json([trade_json(t) for t in trades[:limit]])

    # -- websocket -------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        transport = request.transport
        await ws.prepare(request)
        combined = request.path.startswith("/stream") and "streams" in request.query
        conn = _Conn(ws, transport, combined, self.settings.ws_queue_size)
        if combined:
            for stream in request.query["streams"].split("/"):
                sym = _stream_symbol(stream)
                if sym in self.book.candles:
                    conn.symbols.add(sym)
        self._conns.add(conn)
        self.stats["ws_connections"] += 1
        writer = asyncio.create_task(self._ws_writer(conn))
        log.info("sim_ws_connected", path=request.path, connections=len(self._conns))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    if not conn.stalled:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT and not conn.stalled:
                    if request.path.startswith("/ws-api"):
                        self._ws_api_command(conn, msg.data)
                    else:
                        self._ws_command(conn, msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            conn.closed = True
            self._conns.discard(conn)
            with contextlib.suppress(asyncio.QueueFull):
                conn.queue.put_nowait(None)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            with contextlib.suppress(Exception):
                await ws.close()
            log.info("sim_ws_closed", connections=len(self._conns))
        return ws

    def _ws_command(self, conn: _Conn, text: str) -> None:
        try:
            cmd = json.loads(text)
            method, rid = cmd.get("method"), cmd.get("id")
        except (ValueError, AttributeError):
            conn.send(json.dumps({"error": {"code": 3, "msg": "Invalid JSON: expected an object"}}))
            return
        params = cmd.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            syms = []
            for stream in params:
                sym = _stream_symbol(str(stream))
                if sym is None or sym not in self.book.candles:
                    conn.send(json.dumps({"error": {"code": 2, "msg": f"Invalid request: unknown stream {stream}"}, "id": rid}))
                    return
                syms.append(sym)
            if method == "SUBSCRIBE":
                conn.symbols.update(syms)
            else:
                conn.symbols.difference_update(syms)
            conn.send(json.dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            conn.send(json.dumps({"result": sorted(f"{s.lower()}@kline_1m" for s in conn.symbols), "id": rid}))
        else:
            conn.send(json.dumps({"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"}, "id": rid}))

    def _ws_api_command(self, conn: _Conn, text: str) -> None:
        """A WebSocket API request (JSON-RPC-like): the user data stream subscription."""
        try:
            cmd = json.loads(text)
            method, rid = cmd.get("method"), cmd.get("id")
            params = {str(k): str(v) for k, v in (cmd.get("params") or {}).items()}
        except (ValueError, AttributeError):
            conn.send(json.dumps({"id": None, "status": 400, "error": {"code": -1102, "msg": "Invalid JSON request"}}))
            return

        def error(status: int, code: int, msg: str) -> None:
            conn.send(json.dumps({"id": rid, "status": status, "error": {"code": code, "msg": msg}}))

        if method == "userDataStream.subscribe.signature":
            secret = self.settings.api_keys.get(params.get("apiKey", ""))
            if secret is None:
                return error(401, bf.E_REJECTED_MBX_KEY, "API-key format invalid.")
            payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")
            expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, params.get("signature", "")):
                return error(400, bf.E_INVALID_SIGNATURE, "Signature for this request is not valid.")
            try:
                ts, window = int(params["timestamp"]), int(params.get("recvWindow", RECV_WINDOW_MS))
            except (KeyError, ValueError):
                return error(400, bf.E_MANDATORY_PARAM, "Mandatory parameter 'timestamp' was not sent.")
            wall = int(time.time() * 1000)
            if ts > wall + 1000 or wall - ts > window:
                return error(400, bf.E_TIMESTAMP_OUTSIDE_RECV_WINDOW, "Timestamp for this request is outside of the recvWindow.")
            if conn.user_sub is None:
                conn.user_sub = self._user_subs
                self._user_subs += 1
            log.info("sim_user_stream_subscribed", subscription=conn.user_sub)
            conn.send(json.dumps({"id": rid, "status": 200, "result": {"subscriptionId": conn.user_sub}}))
        elif method in ("userDataStream.unsubscribe", "session.logout"):
            conn.user_sub = None
            conn.send(json.dumps({"id": rid, "status": 200, "result": {}}))
        else:
            error(400, -1100, f"Unknown method {method}")
        return None

    def _user_event(self, kind: str, o: Any, f: Any) -> None:
        """An account event: an `executionReport` to every user data subscription."""
        subs = [c for c in self._conns if c.user_sub is not None]
        if not subs:
            return
        ev = execution_report(kind, o, f, self.clock.now_ms())
        for c in subs:
            c.send(json.dumps({"subscriptionId": c.user_sub, "event": ev}))

    async def _ws_writer(self, conn: _Conn) -> None:
        try:
            while True:
                item = await conn.queue.get()
                if item is None:
                    if conn.dropping and conn.transport is not None:
                        conn.closed = True
                        conn.transport.close()  # FIN after the queued frames: an abrupt drop, nothing lost in flight
                    return
                if conn.closed:
                    return
                if conn.stalled:
                    continue
                payload, on_written = item
                await conn.ws.send_str(payload)
                self.stats["ws_messages"] += 1
                if on_written is not None:
                    on_written()
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            return
        except Exception as e:  # the peer went away mid-send
            log.info("sim_ws_writer_end", error=type(e).__name__)

    # -- the replay pump -------------------------------------------------------------------

    async def _clock_loop(self) -> None:
        now = self.clock.now_ms()
        last_closed = now - now % MINUTE_MS - MINUTE_MS
        last_update = time.monotonic()
        while True:
            try:
                now = self.clock.now_ms()
                for f in self.faults.due(now, connected=any(c.live for c in self._conns)):
                    self._connection_fault(f, now)
                if now - (last_closed + MINUTE_MS) < 0:  # clock moved backwards
                    last_closed = now - now % MINUTE_MS - MINUTE_MS
                if (now - last_closed) // MINUTE_MS > MAX_CATCHUP_MINUTES:
                    last_closed = now - now % MINUTE_MS - MINUTE_MS
                    log.warning("sim_clock_jump_skipped", now_ms=now)
                while last_closed + 2 * MINUTE_MS <= now:
                    m = last_closed + MINUTE_MS
                    self._emit_close(m, now)
                    last_closed = m
                    if m + 2 * MINUTE_MS > now:  # the new minute is forming now
                        self._emit_forming(m + MINUTE_MS, now)
                        last_update = time.monotonic()
                if time.monotonic() - last_update >= self.settings.update_interval_s:
                    self._emit_forming(last_closed + MINUTE_MS, now)
                    last_update = time.monotonic()
                until_close = self.clock.real_seconds_until(last_closed + 2 * MINUTE_MS)
                until_update = max(0.0, self.settings.update_interval_s - (time.monotonic() - last_update))
                waits = [w for w in (until_close, until_update, self._next_timed_fault_s()) if w is not None]
                await self.clock.wait_changed(min(waits) if waits else None)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad tick kill the exchange
                log.exception("sim_clock_loop_error")
                await asyncio.sleep(0.05)

    def _next_timed_fault_s(self) -> float | None:
        nxt = self.faults.next_timed_ms()
        if nxt is None:
            return None
        w = self.clock.real_seconds_until(nxt)
        return 0.05 if w == 0.0 else w  # due but waiting for a connection: look again soon

    def _subscribed(self) -> dict[str, list[_Conn]]:
        out: dict[str, list[_Conn]] = {}
        for c in self._conns:
            if not c.live:
                continue
            for s in c.symbols:
                out.setdefault(s, []).append(c)
        return out

    def _broadcast(self, conns: list[_Conn], symbol: str, event: dict[str, Any],
                   on_written: Callable[[], None] | None = None) -> int:  # fmt: skip
        text = json.dumps(event, separators=(",", ":"))
        sent = 0
        for c in conns:
            payload = text if not c.combined else json.dumps(
                {"stream": f"{symbol.lower()}@kline_1m", "data": event}, separators=(",", ":"))
            sent += c.send(payload, on_written)
        return sent

    def _emit_close(self, m: int, now: int) -> None:
        subs = self._subscribed()
        for symbol in self.book.symbols:
            row = self.book.get(symbol, m)
            if row is None:
                continue
            if self.settings.record_close_times:
                self._note_close(symbol, m)
            if self.account.open_orders(symbol):
                base, quote = self._assets[symbol]
                self.account.on_candle(symbol, base, quote, m, row.high, row.low, m + MINUTE_MS, row.close)
            conns = subs.get(symbol)
            if not conns:
                continue
            # A held-back (out_of_order) candle must overtake a normal close: no new fault until it is out.
            kind = None if symbol in self._held else self.faults.take_candle_fault(symbol, m)
            values = [bf.fmt(x) for x in row.values()]
            ts = m
            if kind == "nan":
                values[3] = "NaN"
            elif kind == "zero":
                values[2] = "0"
            elif kind == "high_low":
                h, lo = row.high, row.low
                values[1], values[2] = bf.fmt(lo), bf.fmt(h if h > lo else h * 1.01 + 1e-8)
            elif kind == "neg_volume":
                values[4] = bf.fmt(-(row.volume if row.volume > 0 else 1.0))
            elif kind == "unaligned":
                ts = m + 1_234
            event = bf.kline_event(symbol, ts, tuple(values), True, now)  # type: ignore[arg-type]
            if kind == "skip":
                self.faults.record("skip", symbol, m, now, "closing event not sent")
                continue
            if kind == "out_of_order":
                self._held[symbol] = (m, event)
                continue
            on_written = None
            if kind is not None:
                on_written = self._recorder(kind, symbol, m, f"t={ts}" if kind == "unaligned" else ",".join(values))
            self._broadcast(conns, symbol, event, on_written)
            self.stats["close_events"] += 1
            if kind == "duplicate":
                self._broadcast(conns, symbol, event)
            held = self._held.get(symbol)
            if held is not None and held[0] < m:
                # The held-back candle follows the next minute's close on the same connections.
                del self._held[symbol]
                rec = self._recorder("out_of_order", symbol, held[0], "sent after the next minute's close")
                self._broadcast(conns, symbol, held[1], rec)

    def _recorder(self, kind: str, symbol: str, m: int, detail: str) -> Callable[[], None]:
        """Record the fault once, when its first frame reaches a socket."""
        done = False

        def on_written() -> None:
            nonlocal done
            if not done:
                done = True
                self.faults.record(kind, symbol, m, self.clock.now_ms(), detail)

        return on_written

    def _note_close(self, symbol: str, m: int) -> None:
        """When minute m of `symbol` closed, as time.perf_counter() (CLOCK_MONOTONIC on Linux,
        comparable across processes): the reference for end-to-end delay measurements."""
        self.close_times.append((symbol, m, time.perf_counter()))

    def _emit_forming(self, m: int, now: int) -> None:
        subs = self._subscribed()
        if not subs:
            return
        frac = (now - m) / MINUTE_MS
        if frac < 0 or frac >= 1:
            return
        for symbol, conns in subs.items():
            row = self.book.get(symbol, m)
            if row is None:
                continue
            values = tuple(bf.fmt(x) for x in forming(row, frac))
            self._broadcast(conns, symbol, bf.kline_event(symbol, m, values, False, now))  # type: ignore[arg-type]

    def _connection_fault(self, f: Fault, now: int) -> None:
        conns = [c for c in self._conns if c.live]
        for c in conns:
            if f.kind == "ws_drop":
                c.drop_after_queued()
            elif f.kind == "ws_stall":
                c.stalled = True
            elif f.kind == "ws_malformed":  # applied when the frame reaches a socket
                sym = next(iter(sorted(c.symbols)), "BTCUSDT")
                text = json.dumps(bf.kline_event(sym, now - now % MINUTE_MS, ("1", "1", "1", "1", "1"), False, now))
                c.send(text[: len(text) // 2], self._recorder(f.kind, None, now, "a kline frame cut in half"))
        if f.kind != "ws_malformed":
            self.faults.record(f.kind, None, now, now, f"{len(conns)} connection(s)")
        log.info("sim_fault_connection", kind=f.kind, connections=len(conns))

    # -- control API -----------------------------------------------------------------------

    async def _ctl_status(self, request: web.Request) -> web.Response:
        return _json({"now_ms": self.clock.now_ms(), "speed": self.clock.speed, "symbols": list(self.book.symbols),
                      "first_ms": self.book.first_ms, "last_ms": self.book.last_ms,
                      "connections": len(self._conns), "stats": self.stats})  # fmt: skip

    async def _ctl_clock(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            self.clock.set(body.get("now_ms"), body.get("speed"))
        except ValueError as e:
            return _json({"error": str(e)}, 400)
        return _json({"now_ms": self.clock.now_ms(), "speed": self.clock.speed})

    async def _ctl_faults_get(self, request: web.Request) -> web.Response:
        return _json({"applied": [a.as_dict() for a in self.faults.applied],
                      "pending": self.faults.pending(), "counts": self.faults.applied_counts()})  # fmt: skip

    async def _ctl_close_times(self, request: web.Request) -> web.Response:
        return _json([list(x) for x in self.close_times])

    async def _ctl_orders(self, request: web.Request) -> web.Response:
        """Every order the account ever placed (tests count duplicates and open orders here)."""
        return _json([order_json(o) for o in self.account.orders.values()])

    async def _ctl_balances(self, request: web.Request) -> web.Response:
        """Move balances outside trading (a deposit, a withdrawal, a fee charged elsewhere):
        `{"USDT": -100.0}` adds the amounts to the free balances."""
        try:
            body = {str(k): float(v) for k, v in (await request.json()).items()}
        except (ValueError, AttributeError, TypeError) as e:
            return _json({"error": f"bad balances: {e}"}, 400)
        for asset, delta in body.items():
            self.account._add(asset, delta)
        return _json(account_json(self.account, self.clock.now_ms())["balances"])

    async def _ctl_faults_post(self, request: web.Request) -> web.Response:
        try:
            items = await request.json()
            self.add_faults(Fault(i["kind"], int(i["at_ms"]), i.get("symbol")) for i in items)
        except (ValueError, KeyError, TypeError) as e:
            return _json({"error": f"bad fault list: {e}"}, 400)
        return _json({"pending": self.faults.pending()})


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status,
                        content_type="application/json", headers=headers)  # fmt: skip


def _num(v: str | None) -> float | None:
    return None if v is None or v == "" else float(v)


def _split(symbol: str) -> tuple[str, str]:
    for quote in ("USDT", "USDC", "BUSD", "FDUSD", "BTC", "ETH", "BNB", "EUR", "TRY"):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise ValueError(f"cannot split {symbol} into base and quote assets")


def _stream_symbol(stream: str) -> str | None:
    """'btcusdt@kline_1m' -> 'BTCUSDT' (None for other stream kinds/intervals)."""
    name, _, kind = stream.partition("@")
    return name.upper() if kind == "kline_1m" else None
