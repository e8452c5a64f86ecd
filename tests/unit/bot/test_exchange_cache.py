"""ccxt's own OHLCV cache stays small in the daemon's exchange client.

The feed reads the raw kline events (`BinanceClient.on_kline`), never ccxt's cache; left alone
that cache kept 1000 rows per symbol and, for every symbol but the one a `watch_*` call last
returned, a set of every minute it had seen: a leak of ~3 MB a day for 30 symbols, found by the
week-long reliability run (tests/reliability/test_week.py). Here many minutes of real-format
kline events go through the client's handler (a real ccxt websocket client object, not
connected) and the cache must stay bounded.
"""

from __future__ import annotations

from bot.config import Config
from bot.marketdata.exchange import OHLCV_KEEP, build_exchange

T0 = 1_618_272_000_000


def kline(sym: str, ts: int, closed: bool) -> dict:
    return {"e": "kline", "E": ts + 59_999, "s": sym,
            "k": {"t": ts, "T": ts + 59_999, "s": sym, "i": "1m", "o": "1.0", "h": "1.2", "l": "0.9", "c": "1.1",
                  "v": "5.0", "x": closed}}  # fmt: skip


async def test_ohlcv_cache_is_bounded_and_read() -> None:
    cfg = Config.model_validate({"symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT"]})
    ex = build_exchange(cfg)
    seen: list[str] = []
    ex.on_kline = lambda m: seen.append(m["k"]["s"])
    try:
        ws = ex.client("ws://127.0.0.1:9/stream/ws")  # ccxt's own client object; nothing is sent
        minutes = 1500
        for i in range(minutes):
            for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
                ex.handle_ohlcv(ws, kline(sym, T0 + i * 60_000, closed=False))  # an in-progress update
                ex.handle_ohlcv(ws, kline(sym, T0 + i * 60_000, closed=True))  # and the close
        assert len(seen) == 2 * 3 * minutes  # the feed got every event
        assert ex.ohlcvs, "ccxt stored nothing: the handler did not run"
        for sym, by_tf in ex.ohlcvs.items():
            stored = by_tf["1m"]
            assert len(stored) <= OHLCV_KEEP, (sym, len(stored))
            # updates not yet read: with the leak this was every minute ever seen for the symbol
            assert stored.getLimit(sym, None) <= 1, (sym, stored.getLimit(sym, None))
            assert stored[-1][0] == T0 + (minutes - 1) * 60_000  # the newest row is the last event
    finally:
        await ex.close()
