"""`bot backfill [--days N] [--symbols A,B]`: fetch missing history by REST into the store (the
features' reference symbols always included), with a progress bar per symbol and overall. Safe
to interrupt at any moment (even kill -9): rerunning continues from the last stored candle of
each symbol."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.cli.commands import load_config_or_exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backfill", help="fetch candle history from the exchange into the database (resumable)")
    p.add_argument("--days", type=float, default=None,
                   help="how far back to start for symbols with nothing stored (default: feed.backfill_days)")  # fmt: skip
    p.add_argument("--symbols", nargs="+", default=None, metavar="SYMBOL",
                   help="subset of the configured symbols, space- or comma-separated (default: all)")  # fmt: skip
    p.add_argument("--concurrency", type=int, default=3, help="symbols fetched at once (default 3)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.logs.setup import setup_from_config

    setup_from_config(cfg, console=False)
    symbols = list(cfg.symbols)
    refs = [r for r in cfg.features.reference_symbols if r not in symbols]
    if args.symbols:
        wanted = [s.strip().upper().replace("/", "") for arg in args.symbols for s in arg.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in symbols and s not in refs]
        if unknown:
            print(f"--symbols: {', '.join(unknown)} not in the configured symbols", file=sys.stderr)
            return 2
        symbols = wanted
    # the features read the reference symbols too (as the daemon's backfill does): a reference
    # that is not traded was otherwise never fetched, and `bot train` then found no candles for it
    symbols += [r for r in refs if r not in symbols]
    days = cfg.feed.backfill_days if args.days is None else args.days
    if days < 0 or args.concurrency < 1:
        print("--days must be >= 0 and --concurrency >= 1", file=sys.stderr)
        return 2
    return asyncio.run(_main(cfg, symbols, days, args.concurrency))


class _RichProgress:
    """One bar per symbol (while it runs) and one overall bar, in minutes of history."""

    def __init__(self, bar, n_symbols: int):  # noqa: ANN001
        self.bar = bar
        self.tasks: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.total_rows = 0
        self.overall = bar.add_task(f"all {n_symbols} symbols", total=None, rows=0)
        self.expected = 0

    def start(self, symbol: str, total_minutes: int) -> None:
        self.tasks[symbol] = self.bar.add_task(symbol, total=max(total_minutes, 1), rows=0)
        self.rows[symbol] = 0
        self.expected += total_minutes
        self.bar.update(self.overall, total=self.expected)

    def advance(self, symbol: str, minutes: int, rows: int) -> None:
        self.rows[symbol] += rows
        self.total_rows += rows
        self.bar.update(self.tasks[symbol], advance=minutes, rows=self.rows[symbol])
        self.bar.update(self.overall, advance=minutes, rows=self.total_rows)

    def done(self, symbol: str, report) -> None:  # noqa: ANN001
        self.bar.remove_task(self.tasks.pop(symbol))


async def _main(cfg, symbols: list[str], days: float, concurrency: int) -> int:  # noqa: ANN001
    import ccxt
    from rich.table import Table

    from bot.cli.progress_bars import rows_progress
    from bot.cli.terminal import console as wide_console
    from bot.history.backfill import backfill
    from bot.marketdata.exchange import build_exchange
    from bot.marketdata.retry import RetriesExhausted
    from bot.store.db import open_store

    console = wide_console(stderr=True)
    ex = cfg.exchange
    exchange = build_exchange(cfg)
    try:
        async with open_store(cfg, log=lambda m: console.print(m)) as store:
            with rows_progress(console, "candles") as bar:
                reports = await backfill(
                    exchange, store, symbols, days=days, quote=ex.quote, concurrency=concurrency,
                    retry_base_s=ex.retry_base_s, retry_max_s=ex.retry_max_s, attempts=ex.retry_attempts,
                    progress=_RichProgress(bar, len(symbols)),
                )  # fmt: skip
    except RetriesExhausted as e:
        console.print(f"[red]backfill stopped: {e}[/red]\nRerun `bot backfill` to continue where it stopped.")
        return 1
    except ccxt.BaseError as e:
        console.print(f"[red]backfill failed: {type(e).__name__}: {e}[/red]")
        return 1
    finally:
        await exchange.close()

    from models.timeutil import fmt_ts

    table = Table(title=f"backfill ({days:g} days)")
    for col in ("symbol", "from", "resumed", "pages", "fetched", "written", "invalid", "gap minutes"):
        table.add_column(col, justify="left" if col in ("symbol", "from") else "right")
    for r in reports:
        if r.skipped:
            continue
        table.add_row(r.symbol, fmt_ts(r.start_ms), "yes" if r.resumed else "", str(r.pages), f"{r.fetched:,}",
                      f"{r.written:,}", str(r.invalid), str(r.exchange_gap_minutes))  # fmt: skip
    table.add_row("total", "", "", str(sum(r.pages for r in reports)), f"{sum(r.fetched for r in reports):,}",
                  f"{sum(r.written for r in reports):,}", str(sum(r.invalid for r in reports)),
                  str(sum(r.exchange_gap_minutes for r in reports)), style="bold")  # fmt: skip
    wide_console().print(table)
    for r in reports:
        if r.skipped:
            console.print(f"[yellow]{r.symbol} skipped: {r.skipped}[/yellow]")
    return 0
