"""The trading engine: pure logic, the same for the live daemon and the backtest.

No asyncio, no ccxt, no asyncpg and no clock of its own: it is told the time, handed one
(symbols x OHLCV) matrix per closed minute, and returns order intents, decisions and account
records; brokers, the live loop, the store and the scheduler are adapters around it in `bot/`.
The records it exchanges with those adapters are in `bot.engine.records`.
"""
