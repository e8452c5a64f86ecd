"""`bot research GRID.yaml --candles DIR`: a grid of trainer configurations by nested walk-forward.

    bot research grids/levers.yaml --candles ../shared/data/candles_1m --symbols @../shared/data/symbols30.txt
    bot research grids/levers.yaml --candles DIR --universe all86=all --workers 2
    bot research grids/levers.yaml --candles DIR --study NAME      # join / resume a study (any machine with the DSN)

Configurations are compared on inner folds inside the first weeks; the chosen one is fitted on
them and judged once on the outer block (the last `--outer-days`). The study lives in the
project's Postgres (the configured DSN or the embedded cluster) through Optuna, so workers on
other machines sharing the DSN join it by name. Writes var/reports/research-<study>.md/.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.commands import load_config_or_exit

if TYPE_CHECKING:
    from bot.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("research", help="nested walk-forward research over a grid of configurations")
    p.add_argument("grid", metavar="GRID.yaml", help="the grid spec (see models.research.grid)")
    p.add_argument("--candles", required=True, metavar="DIR", help="directory of SYMBOL.csv.gz files")
    p.add_argument("--symbols", help="the default universe: comma-separated or @FILE (default: config symbols)")
    p.add_argument("--universe", action="append", default=[], metavar="NAME=SYMBOLS",
                   help="a named universe for the grid's `universe` key: comma list, @FILE or 'all' (every file in DIR)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine (default 1; 0 = run no trials, only report what the study holds)")  # fmt: skip
    p.add_argument("--allow-partial", action="store_true",
                   help="choose among the finished variants even if some are not (the count of configurations tried says so)")  # fmt: skip
    p.add_argument("--study", help="Optuna study name (default: grid name + digest of the data and settings)")
    p.add_argument("--dsn", help="Postgres DSN of the study (default: the store's; 'memory' = no database, one worker)")
    p.add_argument("--from", dest="start", metavar="T0", help="data start (default: first UTC midnight of the data)")
    p.add_argument("--to", dest="end", metavar="T1", help="data end, exclusive (default: after the last candle)")
    p.add_argument("--outer-days", type=float, default=14.0, help="length of the final outer block (default 14)")
    p.add_argument("--inner-folds", type=int, default=2, help="inner walk-forward folds (default 2)")
    p.add_argument("--no-outer", action="store_true", help="stop after the inner folds (do not fit the choice)")
    p.add_argument("--no-audit", action="store_true", help="skip the leakage audit of the chosen configuration")
    p.add_argument("--out", metavar="BASE", help="report path without suffix (default var/reports/research-<study>)")
    p.set_defaults(func=_run)


def _universe(text: str, source_symbols: list[str]) -> list[str]:
    from bot.cli.commands import read_symbols

    if text == "all":
        return list(source_symbols)
    return read_symbols(text, ())


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.history.sources import CandleSourceError, CsvCandleSource
    from bot.logs.setup import setup_from_config
    from bot.training.job import TrainingSetupError
    from models.research.grid import GridError, load_grid
    from models.research.runner import Setup, study_name
    from models.timeutil import TimeParseError, fmt_ts, parse_time
    from models.training.run import Settings
    from models.training.splits import DAY_MS, floor_day

    setup_from_config(cfg, console=False)
    try:
        grid = load_grid(args.grid)
        source = CsvCandleSource(args.candles)
        present = source.symbols()
        universes = {"default": _universe(args.symbols, present) if args.symbols else list(cfg.symbols)}
        for spec in args.universe:
            name, _, val = spec.partition("=")
            if not name or not val:
                raise GridError(f"--universe {spec!r}: expected NAME=SYMBOLS")
            universes[name] = _universe(val, present)
        for name, syms in universes.items():
            miss = [s for s in syms if s not in present]
            if miss:
                raise TrainingSetupError(f"universe {name}: no candle file in {args.candles} for {', '.join(miss)}")
        anchor = cfg.features.reference_symbols[0]
        b = source.bounds(anchor)
        if b is None:
            raise TrainingSetupError(f"no candles for {anchor} in {args.candles}")
        start = parse_time(args.start) if args.start else floor_day(b[0] + DAY_MS - 1)
        end = parse_time(args.end) if args.end else b[1] + 60_000
    except (GridError, TrainingSetupError, CandleSourceError, TimeParseError, OSError) as e:
        print(f"research: {e}", file=sys.stderr)
        return 2
    data_dir = Path(cfg.paths.data_dir)
    setup = Setup(
        candles_dir=str(Path(args.candles).resolve()), universes=universes,
        base_settings=Settings(cfg.features, cfg.labels, cfg.costs, cfg.train).to_dict(), data_start=start, data_end=end,
        cache_dir=str(data_dir / "cache"), work_root=str(data_dir / "research-work"), outer_days=args.outer_days,
        inner_folds=args.inner_folds, data_id=str(Path(args.candles).resolve()),
    )  # fmt: skip
    name = args.study or study_name(grid, setup)
    print(f"research {grid.name}: data {fmt_ts(start)} .. {fmt_ts(end)} UTC, {grid.n_configurations} configurations "
          f"({len(grid.train)} trained variants x {len(grid.rules)} entry rules), study {name}", file=sys.stderr)  # fmt: skip
    t0 = time.monotonic()
    try:
        if args.dsn == "memory":
            rep = _research(setup, grid, None, name, args)
        elif args.dsn:
            from bot.training.job import optuna_url

            rep = _research(setup, grid, optuna_url(args.dsn), name, args)
        else:
            rep = asyncio.run(_with_store(cfg, setup, grid, name, args))
    except (ValueError, RuntimeError, TrainingSetupError) as e:
        print(f"research failed: {e}", file=sys.stderr)
        return 1
    rep["meta"]["wall_seconds"] = round(time.monotonic() - t0, 1)
    rep["meta"]["peak_rss_mb_self"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    rep["meta"]["peak_rss_mb_children"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    _write(rep, args, name, data_dir)
    return 0


async def _with_store(cfg: Config, setup: Any, grid: Any, name: str, args: argparse.Namespace) -> dict[str, Any]:
    from bot.store.db import open_store
    from bot.training.job import optuna_url

    async with open_store(cfg, log=lambda m: print(m, file=sys.stderr)) as store:
        url = optuna_url(store.dsn)
        return await asyncio.to_thread(_research, setup, grid, url, name, args)


class _Messages:
    """Progress as plain lines on stderr (the grid runs for a long time; no bars)."""

    def begin(self, key: str, label: str, total: float) -> None:
        pass

    def advance(self, key: str, n: float = 1.0) -> None:
        pass

    def end(self, key: str) -> None:
        pass

    def message(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def _research(setup: Any, grid: Any, storage: str | None, name: str, args: argparse.Namespace) -> dict[str, Any]:
    from models.research.runner import research

    return research(setup, grid, storage=storage, name=name, workers=args.workers, outer=not args.no_outer,
                    audit=not args.no_audit, allow_partial=args.allow_partial, progress=_Messages())  # type: ignore[arg-type]  # fmt: skip


def _write(rep: dict[str, Any], args: argparse.Namespace, name: str, data_dir: Path) -> None:
    from models.research.runner import _json_default
    from models.research.table import markdown

    base = Path(args.out) if args.out else data_dir / "reports" / f"research-{name}"
    base.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(rep)
    base.with_suffix(".md").write_text(md)
    base.with_suffix(".json").write_text(json.dumps(rep, indent=1, default=_json_default) + "\n")
    m = rep["meta"]
    sys.stdout.write(md.split("## Every configuration")[0])
    sys.stdout.write(f"configurations tried: {m['configurations']}; variants whose trial trained (not from cache): {m['trained_here']}; "
                     f"wall {m['wall_seconds']:.0f} s\nreport: {base.with_suffix('.md')} and .json\n")  # fmt: skip
