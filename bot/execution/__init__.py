"""Brokers that place real orders (the paper broker is in `bot.engine.broker`).

`bot.execution.live_broker`: orders through ccxt (Binance spot), idempotent by client order id, their
state persisted in the `orders`/`fills` tables; `bot.execution.reconcile`: the exchange versus
the store at start and every few minutes. Only used with `mode: live` and `--confirm-live`.
"""
