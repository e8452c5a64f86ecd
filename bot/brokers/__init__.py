"""Brokers that place real orders (the paper broker is in `bot.engine.broker`).

`bot.brokers.live`: orders through ccxt (Binance spot), idempotent by client order id, their
state persisted in the `orders`/`fills` tables; `bot.brokers.reconcile`: the exchange versus
the store at start and every few minutes. Only used with `mode: live` and `--confirm-live`.
"""
