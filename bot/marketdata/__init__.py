"""Market data: the exchange adapter (ccxt), the exchange simulator, backfill and the live feed."""
