"""`bot import-candles DIR [--symbols A,B]`: bulk-load SYMBOL.csv.gz files into the store."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.commands import load_config_or_exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-candles", help="load SYMBOL.csv.gz candle files into the database")
    p.add_argument("directory", metavar="DIR", help="directory of SYMBOL.csv.gz files (ts,open,high,low,close,volume)")
    p.add_argument("--symbols", default=None, help="comma-separated subset (default: every file in DIR)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.logs.setup import setup_from_config

    setup_from_config(cfg, console=False)
    return asyncio.run(_main(cfg, args))


async def _main(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001
    from rich.table import Table

    from bot.cli.progress_bars import rows_progress
    from bot.cli.terminal import console as wide_console
    from bot.history.importer import import_directory
    from bot.store.db import open_store
    from models.candles import candle_files

    console = wide_console(stderr=True)
    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else None
    try:
        n_files = len(candle_files(args.directory, symbols))
    except FileNotFoundError as e:
        console.print(f"[red]{e}[/red]")
        return 2
    async with open_store(cfg, log=lambda m: console.print(m)) as store:
        with rows_progress(console, "rows") as bar:
            task = bar.add_task("importing", total=n_files, rows=0)

            def step(symbol: str, rows: int) -> None:
                bar.update(task, advance=1, description=f"imported {symbol}", rows=bar.tasks[0].fields["rows"] + rows)

            reports = await import_directory(store, args.directory, symbols, on_progress=step)

    table = Table(title=f"import {args.directory}")
    for col in ("symbol", "rows read", "written", "duplicates skipped", "rejected", "gaps", "missing minutes"):
        table.add_column(col, justify="left" if col == "symbol" else "right")
    for r in reports:
        table.add_row(r.symbol, f"{r.rows_read:,}", f"{r.written:,}", f"{r.duplicates_skipped:,}",
                      f"{r.rejected:,}", str(r.gaps), f"{r.missing_minutes:,}")  # fmt: skip
    table.add_row("total", f"{sum(r.rows_read for r in reports):,}", f"{sum(r.written for r in reports):,}",
                  f"{sum(r.duplicates_skipped for r in reports):,}", f"{sum(r.rejected for r in reports):,}",
                  str(sum(r.gaps for r in reports)), f"{sum(r.missing_minutes for r in reports):,}", style="bold")  # fmt: skip
    wide_console().print(table)
    return 0
