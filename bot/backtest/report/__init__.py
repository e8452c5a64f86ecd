"""The backtest report: metrics.json, trades.csv, equity.png and one self-contained report.html.

`write_report` is the one entry point (`bot backtest` calls it). matplotlib is imported only
inside it, so importing this package is cheap.
"""

from bot.backtest.report.writer import write_report

__all__ = ["write_report"]
