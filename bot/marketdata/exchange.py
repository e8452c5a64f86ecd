"""The exchange adapter: a ccxt async + websocket ("pro") client built from the config, and
the mapping between our symbols (BTCUSDT) and ccxt's (BTC/USDT).

`build_exchange(cfg)` is the one place a ccxt client is made, for the daemon, the CLI and the
tests alike; pointing it at the simulator is a config change (`exchange.urls`), not a code
path. The client is a thin subclass of `ccxt.pro.binance` whose only change is to hand every
raw kline event to a callback before ccxt's own handling: ccxt's unified OHLCV arrays drop
the exchange's "closed" flag (`k.x`), and a `watch_*` call only returns the update that
resolved it (updates that arrive between two awaits stay in ccxt's cache, unannounced), so
the feed listens to the events themselves and uses `watch_ohlcv_for_symbols` only to
subscribe and to learn about connection errors.

So ccxt's own OHLCV cache is of no use to the daemon, and left alone it grows for as long as
the daemon runs: each symbol's `ArrayCacheByTimestamp` keeps `OHLCVLimit` rows (1000 by
default) and a set of the timestamps updated since a `watch_*` call last read that symbol
(`getLimit`), which only happens for the one symbol that resolved a watch -- the other
symbols' sets gained a timestamp per minute, forever (~3 MB a day for 30 symbols; found by
the week-long reliability run). The client keeps `OHLCV_KEEP` rows and marks each event's
update as read once ccxt has stored it.

Secrets go from `cfg.secrets` to ccxt and nowhere else; they are registered with the log
redactor so that no log line or exception text can show them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import ccxt
import ccxt.pro as ccxtpro
import structlog

from bot.config import Config

log = structlog.get_logger(__name__)

KlineCallback = Callable[[dict[str, Any]], None]
OHLCV_KEEP = 3  # rows of ccxt's per-symbol OHLCV cache (the feed never reads it; see the docstring)


class UnsupportedExchangeError(ValueError):
    """The configured exchange id has no adapter here."""


class BinanceClient(ccxtpro.binance):
    """`ccxt.pro.binance` that also passes each raw kline event to `on_kline`, and drops a
    websocket frame that is not JSON instead of letting it end the connection's reading.

    ccxt decodes each frame inside the callback that also schedules the next read: a frame cut
    in the middle raised there (an "Exception in callback" traceback on stderr) and the client
    read nothing more while the socket stayed up and answered pings, so the feed saw only
    silence until its stall timeout. Dropping the frame loses at most the candle it carried,
    which the feed's sequencer notices as a missing minute and refetches by REST."""

    on_kline: KlineCallback | None = None
    malformed_frames: int = 0

    def parse_json(self, http_response: Any) -> Any:
        """A REST body that starts like JSON but does not decode (cut by a proxy, a dropped
        connection) raises `ccxt.BadResponse` (retried like a 5xx; an order's outcome is then
        looked up). ccxt's own parse_json returns None for it, and the call then returns []:
        a klines page that came back broken read as "no candles there", which the backfill
        took for exchange downtime and skipped, losing those minutes."""
        if isinstance(http_response, str) and self.is_json_encoded_object(http_response):
            try:
                return self.on_json_response(http_response)
            except ValueError as e:
                raise ccxt.BadResponse(f"{self.id} answered a body that is not JSON ({len(http_response)} bytes): "
                                       f"{str(e)[:80]}") from None  # fmt: skip
        return None

    def client(self, url: str) -> Any:  # ccxt's factory of websocket connections, one per url
        c = super().client(url)
        if not getattr(c, "_bot_frames_guarded", False):
            decode_and_dispatch = c.handle_text_or_binary_message

            def guarded(data: Any) -> None:
                try:
                    decode_and_dispatch(data)
                except json.JSONDecodeError as e:  # orjson's error is a subclass too
                    self.malformed_frames += 1
                    log.warning("ws_frame_malformed", bytes=len(data), error=str(e)[:120], count=self.malformed_frames,
                                text="websocket frame that is not JSON dropped (a candle it carried is refetched)")  # fmt: skip

            c.handle_text_or_binary_message = guarded
            c._bot_frames_guarded = True
        return c

    def handle_ohlcv(self, client: Any, message: dict) -> None:  # ccxt's hook, called per event
        cb = self.on_kline
        if cb is not None:
            try:
                cb(message)
            except Exception as e:  # a consumer bug must not break ccxt's receive loop
                from bot.logs.error_lines import log_survived

                log_survived(log, "feed kline", e, what="kline_callback_failed", exc_info=True)
        super().handle_ohlcv(client, message)
        self._mark_read(message)

    def _mark_read(self, message: dict) -> None:
        """Tell ccxt's cache of this event's symbol that its updates were read (what a `watch_*`
        return does), so it forgets the timestamps it tracks for the next reader."""
        k = message.get("k") if isinstance(message, dict) else None
        if not isinstance(k, dict):
            return
        try:
            symbol = self.safe_symbol(self.safe_string_2(k, "s", "ps"), None, None, "spot")
            stored = (self.ohlcvs.get(symbol) or {}).get(self.find_timeframe(self.safe_string(k, "i")))
            if stored is not None:
                stored.getLimit(symbol, None)
        except Exception:  # noqa: BLE001 - junk events are the feed's business, not this bookkeeping's
            return


def to_ccxt_symbol(symbol: str, quote: str = "USDT") -> str:
    """BTCUSDT -> BTC/USDT (our symbols are BASE+QUOTE with no separator)."""
    if "/" in symbol:
        return symbol
    if not symbol.endswith(quote) or len(symbol) <= len(quote):
        raise ValueError(f"{symbol} does not end in the quote asset {quote}")
    return f"{symbol[: -len(quote)]}/{quote}"


def from_ccxt_symbol(symbol: str) -> str:
    """BTC/USDT -> BTCUSDT (a settle suffix such as ':USDT' is not ours and is rejected)."""
    if ":" in symbol:
        raise ValueError(f"{symbol} is a derivatives market; only spot symbols are used")
    return symbol.replace("/", "")


def unlisted_symbols(exchange: Any, symbols: Any, quote: str = "USDT") -> list[str]:
    """Our symbols the exchange does not list as active spot markets (needs `load_markets` first).
    A market the exchange marks inactive (delisted, halted) counts as not listed."""
    markets = getattr(exchange, "markets", None) or {}
    out = []
    for s in symbols:
        m = markets.get(to_ccxt_symbol(s, quote))
        if m is None or m.get("active") is False:
            out.append(s)
    return out


def exchange_options(cfg: Config) -> dict[str, Any]:
    """The ccxt constructor config for `cfg` (secrets included: never log the result)."""
    ex = cfg.exchange
    conf: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": ex.timeout_ms,
        "options": {
            "defaultType": "spot",
            # Spot only: no futures/margin/currency endpoints at startup (they need other hosts
            # and keys, and the simulator — like a spot-only key — does not serve them).
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
            "OHLCVLimit": OHLCV_KEEP,
        },
    }
    if ex.rate_limit_ms is not None:
        conf["rateLimit"] = ex.rate_limit_ms
    s = cfg.secrets
    if s.api_key is not None and s.api_secret is not None:
        conf["apiKey"] = s.api_key.get_secret_value()
        conf["secret"] = s.api_secret.get_secret_value()
    return conf


def build_exchange(cfg: Config, on_kline: KlineCallback | None = None) -> BinanceClient:
    """A ccxt pro client configured from `cfg.exchange` (+ `cfg.secrets`). Close it with
    `await client.close()`."""
    if cfg.exchange.id != "binance":
        raise UnsupportedExchangeError(
            f"exchange.id {cfg.exchange.id!r} is not supported; the market-data adapter speaks Binance spot (id: binance)"
        )
    from bot.logs.setup import register_secret

    s = cfg.secrets
    register_secret(s.api_key.get_secret_value() if s.api_key else None,
                    s.api_secret.get_secret_value() if s.api_secret else None)  # fmt: skip
    client = BinanceClient(exchange_options(cfg))
    urls = cfg.exchange.urls
    api = client.urls["api"]
    if urls.public:
        api["public"] = urls.public.rstrip("/")
    if urls.private:
        api["private"] = urls.private.rstrip("/")
    if urls.ws:
        if "/stream" not in urls.ws:
            raise ValueError(
                f"exchange.urls.ws {urls.ws!r} must contain '/stream' (ccxt decides spot vs futures from it)"
            )
        api["ws"]["spot"] = api["ws"]["margin"] = urls.ws.rstrip("/")
    if urls.ws_api:
        api["ws"]["ws-api"]["spot"] = urls.ws_api.rstrip("/")
    client.on_kline = on_kline
    log.info("exchange_client", id=cfg.exchange.id, public=api["public"], ws=api["ws"]["spot"],
             rate_limit_ms=client.rateLimit, signed=bool(s.complete))  # fmt: skip
    return client
