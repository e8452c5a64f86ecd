"""Postgres persistence (asyncpg only): migrations, candles, orders, fills, positions, equity,
model versions and decisions; plus the embedded private cluster used when no DSN is set."""

from bot.store.db import Store, open_store

__all__ = ["Store", "open_store"]
