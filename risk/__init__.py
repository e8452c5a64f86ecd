"""Position sizing and risk limits: pure functions and small state objects over numpy arrays.

No I/O and no clock of its own: time is passed in. Used identically by the live engine and the
backtest. Never imports `bot`.
"""
