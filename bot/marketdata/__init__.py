"""Market data, what the daemon runs: the exchange adapter (ccxt), backfill and the live feed.
(The exchange simulator the tests and `bot simulate-exchange` use is `bot.exchange_sim`.)

Public API, by module:
  exchange     build_exchange(cfg) -> ccxt.pro.binance client (URLs, options, keys from config);
               to_ccxt_symbol / from_ccxt_symbol (BTCUSDT <-> BTC/USDT)
  feed         CandleFeed(cfg, store).run(): closed candles of every symbol, once, in order, in
               feed.queue (ClosedCandle / ExchangeGap from `events`), persisted in batches
  minutes      MinuteAssembler(cfg.symbols, cfg.feed.minute_timeout_s).minutes(feed.queue):
               (ts, bars[S, 5] float64) per minute for the feature engine
  backfill     backfill(exchange, store, symbols, days=...): resumable REST history (`bot backfill`)
  validate     candle checks with reason codes; IssueLog (counts + recent issues)
  sequencer    SymbolSequencer: the per-symbol "each minute once, in order" state machine
  retry        with_retry / Backoff: exponential backoff with jitter on 429/418/5xx/timeouts
"""
