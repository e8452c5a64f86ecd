"""`bot import-candles DIR [--symbols A,B]`: bulk-load candle files into the store.

Binance kline archives, freqtrade json/json.gz/feather and our SYMBOL.csv.gz, mixed, picked by
content (`bot.history.importer`). Exit status: 0 when every file was imported, 1 when any was
refused (one line each, on stderr and in the log), 2 when DIR or a named symbol has no files.
"""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.commands import load_config_or_exit
from models.textfmt import things

FORMATS = ("Binance kline archives (SYMBOL-1m-YYYY-MM[-DD].zip), freqtrade files (BASE_QUOTE-1m.json, "
           ".json.gz, .feather) and SYMBOL.csv.gz (ts,open,high,low,close,volume), searched recursively")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-candles", help="load candle files (Binance archives, freqtrade, csv.gz) into the database")
    p.add_argument("directory", metavar="DIR", help=f"directory of candle files: {FORMATS}")
    p.add_argument("--symbols", default=None, help="comma-separated subset (default: every symbol with files in DIR)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.logs.setup import setup_from_config

    setup_from_config(cfg, console=False)
    return asyncio.run(_main(cfg, args))


async def _main(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from bot.cli.progress_bars import rows_progress
    from bot.cli.terminal import console as wide_console
    from bot.history.importer import find_candle_files, import_directory
    from bot.store.db import open_store

    console = wide_console(stderr=True)
    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else None
    try:
        n_symbols = len(find_candle_files(args.directory, symbols)[0])
    except FileNotFoundError as e:
        console.print(f"[red]{escape(str(e))}[/red]")
        return 2
    async with open_store(cfg, log=lambda m: console.print(m)) as store:
        with rows_progress(console, "rows") as bar:
            task = bar.add_task("importing", total=n_symbols, rows=0)

            def step(symbol: str, rows: int) -> None:
                bar.update(task, advance=1, description=f"imported {symbol}", rows=bar.tasks[0].fields["rows"] + rows)

            result = await import_directory(store, args.directory, symbols, on_progress=step)

    reports = result.reports
    # seven columns that fit 80 characters (symbols and numbers never cut); the files each
    # symbol came from follow as one line per symbol
    table = Table(title=f"import {args.directory}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("symbol", no_wrap=True)
    for col in ("rows read", "written", "duplicates", "rejected", "gaps", "missing min"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in reports:
        table.add_row(r.symbol, f"{r.rows_read:,}", f"{r.written:,}", f"{r.duplicates_skipped:,}",
                      f"{r.rejected:,}", str(r.gaps), f"{r.missing_minutes:,}")  # fmt: skip
    table.add_row("total", f"{sum(r.rows_read for r in reports):,}", f"{sum(r.written for r in reports):,}",
                  f"{sum(r.duplicates_skipped for r in reports):,}", f"{sum(r.rejected for r in reports):,}",
                  str(sum(r.gaps for r in reports)), f"{sum(r.missing_minutes for r in reports):,}", style="bold")  # fmt: skip
    out = wide_console()
    out.print(table)
    for r in reports:
        out.print(f"{r.symbol} from {escape(r.sources)}", soft_wrap=True)
    if reports:
        out.print(f"{sum(r.files for r in reports):,} files", soft_wrap=True)
    if result.ignored:
        console.print(f"ignored {len(result.ignored)} files not named like candle files: "
                      f"{escape(', '.join(result.ignored[:10]))}{' ...' if len(result.ignored) > 10 else ''}", soft_wrap=True)  # fmt: skip
    for r in result.refused:
        tail = f"; {r.symbol} not imported" if r.symbol else ""
        console.print(f"[red]REFUSED[/red] {escape(r.file)}: {escape(r.reason)}{escape(tail)}", soft_wrap=True)
    if result.refused:
        n_sym = len(result.refused_symbols)
        console.print(f"[red]{len(result.refused)} refused[/red]" + (f"; nothing written for {things(n_sym, 'symbol')}: "
                      f"{', '.join(result.refused_symbols)}" if n_sym else ""), soft_wrap=True)  # fmt: skip
        return 1
    return 0
