"""Binance spot wire formats: the JSON shapes the exchange simulator must produce so that an
unmodified ccxt client parses them exactly as it parses the real exchange.

Shapes follow Binance's spot API documentation and the fields ccxt 4.5 reads
(`binance.parse_ohlcv`, `parse_market`, `parse_order`, `parse_trade`, `parse_balance_custom`,
`pro.binance.handle_ohlcv`). Prices and quantities are decimal strings, as on the wire; they
are the shortest text that parses back to the same float64, so a value survives
float -> text -> ccxt's float() unchanged (the store comparison relies on this).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.timeutil import MINUTE_MS

# Binance error codes used by the simulator (https://developers.binance.com/docs/binance-spot-api-docs/errors).
E_UNKNOWN = -1000
E_TOO_MANY_REQUESTS = -1003
E_TIMESTAMP_OUTSIDE_RECV_WINDOW = -1021
E_INVALID_SIGNATURE = -1022
E_ILLEGAL_PARAM = -1100
E_MANDATORY_PARAM = -1102
E_INVALID_INTERVAL = -1120
E_INVALID_SYMBOL = -1121
E_FILTER_FAILURE = -1013
E_NEW_ORDER_REJECTED = -2010
E_CANCEL_REJECTED = -2011
E_NO_SUCH_ORDER = -2013
E_BAD_API_KEY_FORMAT = -2014
E_REJECTED_MBX_KEY = -2015

MSG = {
    E_TOO_MANY_REQUESTS: "Too many requests; current limit of IP is 6000 requests per minute. "
    "Please use the websocket for live updates to avoid polling the API.",
    E_TIMESTAMP_OUTSIDE_RECV_WINDOW: "Timestamp for this request is outside of the recvWindow.",
    E_INVALID_SIGNATURE: "Signature for this request is not valid.",
    E_INVALID_INTERVAL: "Invalid interval.",
    E_INVALID_SYMBOL: "Invalid symbol.",
    E_CANCEL_REJECTED: "Unknown order sent.",
    E_NO_SUCH_ORDER: "Order does not exist.",
    E_BAD_API_KEY_FORMAT: "API-key format invalid.",
    E_REJECTED_MBX_KEY: "Invalid API-key, IP, or permissions for action.",
}


def error(code: int, msg: str | None = None) -> dict[str, Any]:
    """Binance's error body: {"code": -1121, "msg": "Invalid symbol."}."""
    return {"code": code, "msg": msg if msg is not None else MSG.get(code, "An unknown error occurred.")}


def fmt(x: float) -> str:
    """Decimal text of a float, shortest round-trip form, never exponent notation.

    NaN/inf come out as "NaN"/"Infinity" (only ever sent by fault injection), which Python's
    float() — ccxt's parser — reads back as nan/inf.
    """
    x = float(x)
    if not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    s = repr(x)
    if "e" in s or "E" in s:
        s = np.format_float_positional(x, trim="-")
    elif s.endswith(".0"):
        s = s[:-2]
    return s


def decimals(x: float) -> int:
    """Number of decimals in the shortest text of x (for tick/step sizes)."""
    s = fmt(x)
    return len(s.split(".", 1)[1]) if "." in s else 0


def max_decimals(values: np.ndarray, limit: int = 8) -> int:
    """Smallest d <= limit such that every value has at most d decimals (vectorised)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    for d in range(limit + 1):
        if np.all(np.round(x, d) == x):
            return d
    return limit


def trade_count(volume: float) -> int:
    """A plausible trade count for a candle (the recorded data has none): 0 only if no volume."""
    return 0 if volume <= 0 else max(1, int(math.log10(1.0 + volume) * 10))


def fmt_array(values: np.ndarray) -> list[str]:
    """`fmt` for a whole column (the REST hot path: 1000-row pages)."""
    out = [repr(x) for x in np.asarray(values, dtype=np.float64).tolist()]
    for i, t in enumerate(out):
        if t.endswith(".0"):
            out[i] = t[:-2]
        elif "e" in t or "n" in t:  # exponent, nan, inf
            out[i] = fmt(float(t))
    return out


def kline_rows(ts: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> list[list[Any]]:
    """`kline_row` for whole columns, vectorised."""
    t = np.asarray(ts, dtype=np.int64)
    qv = np.asarray(v, dtype=np.float64) * np.asarray(c, dtype=np.float64)
    trades = np.where(v <= 0, 0, np.maximum(1, (np.log10(1.0 + np.maximum(v, 0)) * 10).astype(np.int64)))
    cols = [t.tolist(), fmt_array(o), fmt_array(h), fmt_array(lo), fmt_array(c), fmt_array(v), (t + MINUTE_MS - 1).tolist(),
            fmt_array(qv), trades.tolist(), ["0"] * len(t), ["0"] * len(t), ["0"] * len(t)]  # fmt: skip
    return [list(r) for r in zip(*cols, strict=True)]


def kline_row(ts: int, o: float, h: float, lo: float, c: float, v: float) -> list[Any]:
    """One row of GET /api/v3/klines: [openTime, o, h, l, c, v, closeTime, quoteVolume,
    trades, takerBuyBase, takerBuyQuote, ignore]. The recorded data has neither trade counts
    nor taker volumes: trades is a plausible count, quote volume is volume x close, and the
    taker fields are "0" (ccxt reads none of these three)."""
    return [
        int(ts), fmt(o), fmt(h), fmt(lo), fmt(c), fmt(v), int(ts) + MINUTE_MS - 1,
        fmt(v * c), trade_count(v), "0", "0", "0",
    ]  # fmt: skip


def kline_event(
    symbol: str,
    ts: int,
    values: tuple[str, str, str, str, str],
    closed: bool,
    event_ms: int,
    interval: str = "1m",
) -> dict[str, Any]:
    """A `<symbol>@kline_1m` websocket event. `values` are the o/h/l/c/v texts (already
    formatted, so fault injection can put any text on the wire)."""
    o, h, lo, c, v = values
    return {
        "e": "kline",
        "E": int(event_ms),
        "s": symbol,
        "k": {
            "t": int(ts), "T": int(ts) + MINUTE_MS - 1, "s": symbol, "i": interval,
            "f": 100, "L": 200, "o": o, "c": c, "h": h, "l": lo, "v": v, "n": 100,
            "x": bool(closed), "q": "0", "V": "0", "Q": "0", "B": "0",
        },  # fmt: skip
    }


def symbol_info(symbol: str, base: str, quote: str, tick: str, step: str) -> dict[str, Any]:
    """One entry of exchangeInfo's `symbols` (spot, trading, with the filters ccxt reads)."""
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "900000000", "stepSize": step},
            {"filterType": "NOTIONAL", "minNotional": "5", "applyMinToMarket": True,
             "maxNotional": "9000000", "applyMaxToMarket": False, "avgPriceMins": 5},  # fmt: skip
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(server_ms: int, symbols: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": int(server_ms),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    }
