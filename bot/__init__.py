"""The trading daemon and its I/O: config, store, market data, brokers, CLI.

`bot` uses `models` and `risk`; they never import `bot`.
"""

__version__ = "0.1.0"
