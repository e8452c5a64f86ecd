"""The exchange simulator: a wire-compatible Binance spot exchange replaying recorded candles,
for tests, benchmarks and `bot simulate-exchange`. Not part of what the daemon runs (that is
`bot.marketdata`); nothing in the daemon's path imports it.

Public API, by module:
  server          ExchangeSimulator(book, SimSettings(...)): REST + websocket server (aiohttp)
  replay          CandleBook (recorded candles, O(1) lookup), ReplayClock, RecordedCandle, forming
  faults          Fault, FaultInjector, random_plan: planned faults on the replay clock
  matching        Account: balances, orders and fills of the simulated spot account
  binance_format  Binance's JSON shapes (klines, ws events, errors, exchangeInfo)
"""
