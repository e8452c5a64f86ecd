"""`bot backtest --model BUNDLE [--from T0 --to T1] [--symbols ...] [--candles DIR] [--out DIR]`.

Replays candles (from the store, or straight from a directory of `SYMBOL.csv.gz` files) through
the same engine the daemon runs (`bot.backtest.runner`), then writes the report directory
(`bot.backtest.report.write_report`: metrics.json, trades.csv, equity.png, report.html).

- T0 defaults to the end of the bundle's training range plus its embargo, T1 to the end of the
  data. A window that overlaps the training data (plus one label horizon) is refused unless
  `--allow-in-sample`; the report title then says "in-sample".
- The `trading:` config section applies: with a bundle below `trading.min_validation_pf` the
  engine watches only, and the backtest says so (lower the floor knowingly with
  `--min-validation-pf`, or in the config).
- `--walk-forward`: train on each window of `--train-days` and test the next `--test-days`
  through the engine, one fold after the other (each fold starts with the equity the previous
  one ended with), and report the folds and the total.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.commands import load_config_or_exit

if TYPE_CHECKING:
    from bot.config import Config
    from bot.history.sources import HistorySource
    from models.bundle.directory import Bundle



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backtest", help="replay candles through the trading engine and write a report")
    p.add_argument("--model", metavar="BUNDLE", help="bundle directory (or a version under paths.models_dir)")
    p.add_argument("--candles", metavar="DIR", help="read SYMBOL.csv.gz files from DIR instead of the database")
    p.add_argument("--from", dest="start", metavar="T0", help="first minute, UTC (default: training end + embargo)")
    p.add_argument("--to", dest="end", metavar="T1", help="end, exclusive (default: after the last candle)")
    p.add_argument("--symbols", help="comma-separated or @FILE (default: the bundle's symbols)")
    p.add_argument("--out", default="backtest", metavar="DIR", help="report directory (default ./backtest)")
    p.add_argument("--allow-in-sample", action="store_true", help="allow a window that overlaps the training data")
    p.add_argument("--min-validation-pf", type=float, help="override trading.min_validation_pf (0 = trade any bundle)")
    p.add_argument("--min-validation-trades", type=int, help="override trading.min_validation_trades")
    p.add_argument("--sizing", choices=("risk", "equal_slots"), help="override trading.sizing")
    p.add_argument("--block-minutes", type=int, default=1440, help="score features in blocks of N minutes (1 = per minute)")
    p.add_argument("--walk-forward", action="store_true", help="train on each window, test on the next (needs --from/--to)")
    p.add_argument("--train-days", type=float, default=14.0, help="walk-forward training window (days)")
    p.add_argument("--test-days", type=float, help="walk-forward test window (default train.fold_days)")
    p.set_defaults(func=_run)


def _trading(cfg: Config, args: argparse.Namespace) -> Any:
    upd = {}
    if args.min_validation_pf is not None:
        upd["min_validation_pf"] = args.min_validation_pf
    if args.min_validation_trades is not None:
        upd["min_validation_trades"] = args.min_validation_trades
    if args.sizing:
        upd["sizing"] = args.sizing
    return cfg.trading.model_copy(update=upd)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from rich.console import Console

    from bot.logs.setup import setup_from_config

    setup_from_config(cfg, console=False)
    console = Console(stderr=True, soft_wrap=True)  # error lines stay whole (grep-able)
    if not args.walk_forward and not args.model:
        console.print("[red]backtest: --model is required (or use --walk-forward to train the bundles)[/red]")
        return 2
    try:
        if args.candles:
            from bot.history.sources import CsvCandleSource

            return _with_source(cfg, args, console, CsvCandleSource(args.candles))
        return _with_store(cfg, args, console)
    except Exception as e:  # noqa: BLE001 - one clear line for the known failures
        from bot.backtest.runner import BacktestError
        from bot.history.sources import CandleSourceError
        from bot.training.job import TrainingSetupError
        from models.bundle.directory import BundleError
        from models.timeutil import TimeParseError
        from models.training.prepare import TrainError

        known = (BacktestError, BundleError, CandleSourceError, TrainError, TrainingSetupError, TimeParseError, FileNotFoundError)
        if isinstance(e, known):
            console.print(f"[red]backtest failed: {e}[/red]")
            return 1
        raise


def _with_store(cfg: Config, args: argparse.Namespace, console: Any) -> int:
    import asyncio

    from bot.history.sources import StoreCandleSource
    from bot.store.db import open_store

    async def main() -> int:
        async with open_store(cfg, log=lambda m: console.print(m)) as store:
            source = StoreCandleSource(store, asyncio.get_running_loop())
            return await asyncio.to_thread(_with_source, cfg, args, console, source)

    return asyncio.run(main())


def _find_bundle(cfg: Config, model: str) -> Any:
    from models.bundle.directory import load_bundle

    path = Path(model)
    if not path.exists() and (Path(cfg.paths.models_dir) / model).exists():
        path = Path(cfg.paths.models_dir) / model
    return load_bundle(path, threads=1)


def _with_source(cfg: Config, args: argparse.Namespace, console: Any, source: HistorySource) -> int:
    from bot.backtest.runner import BacktestError
    from bot.cli.commands import read_symbols
    from models.timeutil import MINUTE_MS, parse_time

    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end) if args.end else None
    if args.walk_forward:
        if start is None or end is None:
            raise BacktestError("--walk-forward needs --from and --to (the whole range: first training window .. last test)")
        return _walk_forward(cfg, args, console, source, start, end)
    bundle = _find_bundle(cfg, args.model)
    m = bundle.manifest
    trained = (int(m["data_from_ts"]), int(m["data_to_ts"]))
    horizon = int(m["label_config"]["horizon_bars"]) * MINUTE_MS
    if start is None:
        start = trained[1] + int(m.get("embargo_ms", horizon))
    if end is None:
        b = source.bounds(bundle.feature_config().reference_symbols[0])
        if b is None:
            raise BacktestError("no candles for the reference symbol; import or backfill first")
        end = b[1] + MINUTE_MS
    in_sample = start < trained[1] + horizon and end > trained[0]
    if in_sample and not args.allow_in_sample:
        from models.timeutil import fmt_span

        raise BacktestError(
            f"the window {fmt_span(start, end)} overlaps the bundle's training data {fmt_span(*trained)} (+ one label "
            f"horizon): its figures would be in-sample. Start at or after the training end + horizon, or pass --allow-in-sample"
        )
    symbols = read_symbols(args.symbols, tuple(m["symbols"]))
    res = _replay(cfg, args, console, source, bundle, symbols, start, end, cfg.paper.initial_equity)
    out = Path(args.out)
    metrics = _write(out, res, bundle, in_sample=in_sample)
    _print(console, res, metrics, out)
    return 0


def _replay(cfg: Config, args: argparse.Namespace, console: Any, source: HistorySource, bundle: Bundle, symbols: list[str], start: int,
            end: int, equity: float, label: str = "backtest") -> Any:  # fmt: skip
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bot.backtest.runner import run_backtest

    trading = _trading(cfg, args)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("minutes"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:  # fmt: skip
        task = bar.add_task(f"{label} {len(symbols)} symbols", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        res = run_backtest(source, bundle, symbols, start, end, trading=trading, risk=cfg.risk, costs=cfg.costs,
                           initial_equity=equity, block_minutes=args.block_minutes, progress=tick)  # fmt: skip
    if res.watch_reason:
        console.print(f"[yellow]{res.watch_reason}[/yellow]")
    return res


def _write(out: Path, res: Any, bundle: Bundle, *, in_sample: bool, title: str | None = None) -> dict[str, Any]:
    from models.timeutil import fmt_span

    m = bundle.manifest
    meta = {
        "title": title or f"Backtest of model {bundle.version}, {fmt_span(res.start, res.end)}",  # the report adds "(in-sample)"
        "in_sample": in_sample,
        "bundle_version": bundle.version,
        "trained_from_ts": int(m["data_from_ts"]),
        "trained_to_ts": int(m["data_to_ts"]),
        "from_ts": res.start,
        "to_ts": res.end,
        "symbols": res.symbols,
        "initial_equity": res.meta["initial_equity"],
        "fee_rate": res.meta["fee_rate"],
        "slippage_bps": res.meta["slippage_bps"],
    }  # fmt: skip
    return write_backtest_report(out, res, meta)


def write_backtest_report(out: Path, res: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """The report directory through `bot.backtest.report.write_report` (the report helper's module)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        from bot.backtest.report import write_report
    except ImportError:  # the report module (another branch) is not merged yet: the bare minimum
        return _minimal_report(out, res, meta)
    return write_report(out, trades=res.trades, equity=res.equity_points(), benchmark=res.benchmark,
                        skips=dict(res.skips), meta=meta)  # fmt: skip


def _pf(metrics: dict[str, Any]) -> float | None:
    """The overall profit factor from the report's metrics (bot.backtest.report's layout, or the minimal one)."""
    o = metrics.get("overall") or {}
    block = o.get("trades") if isinstance(o.get("trades"), dict) else o
    return block.get("profit_factor")


def _print(console: Any, res: Any, metrics: dict[str, Any], out: Path) -> None:
    pf = _pf(metrics)
    sys.stdout.write(
        f"\n{res.status_line}\n"
        f"{len(res.trades)} trades, PF {'-' if pf is None else f'{pf:.3f}'}, final equity {res.equity[-1]:,.2f} "
        f"(from {res.meta['initial_equity']:,.2f}); {res.minutes:,} minutes x {len(res.symbols)} symbols in "
        f"{res.seconds:.1f}s ({res.symbol_bars / max(res.seconds, 1e-9):,.0f} symbol-bars/s)\n"
        f"skips: {json.dumps(dict(res.skips.most_common()))}\nreport: {out}/report.html\n"
    )


def _walk_forward(cfg: Config, args: argparse.Namespace, console: Any, source: HistorySource, start: int, end: int) -> int:
    """Train on [t - train_days, t), test on [t + embargo, t + test_days), t advancing by test_days."""
    import tempfile

    from bot.backtest.runner import BacktestError
    from bot.cli.commands import read_symbols
    from bot.cli.progress_bars import RichProgress
    from bot.training.job import TrainJob, train_and_write
    from models.config import Settings
    from models.timeutil import DAY_MS, MINUTE_MS, fmt_span

    test_days = args.test_days or cfg.train.fold_days
    train_ms, test_ms = int(args.train_days * DAY_MS), int(test_days * DAY_MS)
    embargo = cfg.train.embargo_bars * MINUTE_MS
    folds = []
    t = start + train_ms
    while t + embargo < end:
        folds.append((t - train_ms, t, t + embargo, min(end, t + test_ms)))
        t += test_ms
    if not folds:
        raise BacktestError(f"{fmt_span(start, end)} is too short for a {args.train_days:g}-day training window and a test")
    symbols = read_symbols(args.symbols, cfg.symbols)
    out = Path(args.out)
    equity = cfg.paper.initial_equity
    all_trades: list[Any] = []
    fold_rows = []
    results = []
    settings = Settings(cfg.features, cfg.labels, cfg.costs, cfg.train).to_dict()
    for k, (a, b, c, d) in enumerate(folds):
        console.print(f"fold {k}: train {fmt_span(a, b)}, test {fmt_span(c, d)}")
        with tempfile.TemporaryDirectory(prefix="wf-") as work:
            job = TrainJob(settings=settings, symbols=symbols, models_dir=str(out / "models"), start_ms=a, end_ms=b,
                           record=False, work_root=work, code_version="walk-forward")  # fmt: skip
            with RichProgress(console) as progress:
                trained = train_and_write(job, source, progress)
        bundle = _find_bundle(cfg, str(trained.path))
        res = _replay(cfg, args, console, source, bundle, symbols, c, d, equity, label=f"fold {k}")
        metrics = _write(out / f"fold{k}", res, bundle, in_sample=False, title=f"Walk-forward fold {k}: model {bundle.version}, {fmt_span(c, d)}")
        equity = float(res.equity[-1])
        all_trades.extend(res.trades)
        results.append(res)
        fold_rows.append({"fold": k, "train": [a, b], "test": [c, d], "bundle": bundle.version, "trades": len(res.trades),
                          "profit_factor": _pf(metrics), "final_equity": equity, "watch_only": res.watch_reason})  # fmt: skip
    total = _combine(results)
    meta = {"title": f"Walk-forward backtest, {len(folds)} folds, {fmt_span(folds[0][2], folds[-1][3])}", "in_sample": False,
            "bundle_version": "walk-forward", "trained_from_ts": folds[0][0], "trained_to_ts": folds[-1][1],
            "from_ts": folds[0][2], "to_ts": folds[-1][3], "symbols": symbols, "initial_equity": cfg.paper.initial_equity,
            "fee_rate": cfg.costs.fee_rate, "slippage_bps": cfg.costs.slippage_bps}  # fmt: skip
    metrics = write_backtest_report(out, total, meta)
    (out / "folds.json").write_text(json.dumps({"folds": fold_rows, "total": {"trades": len(all_trades),
                                    "profit_factor": _pf(metrics),
                                    "final_equity": equity}}, indent=2, default=str) + "\n")  # fmt: skip
    for r in fold_rows:
        pf = r["profit_factor"]
        sys.stdout.write(f"fold {r['fold']}: {r['trades']} trades, PF {'-' if pf is None else f'{pf:.3f}'}, "
                         f"equity {r['final_equity']:,.2f}{' (watch only)' if r['watch_only'] else ''}\n")  # fmt: skip
    pf = _pf(metrics)
    sys.stdout.write(f"total: {len(all_trades)} trades, PF {'-' if pf is None else f'{pf:.3f}'}, final equity {equity:,.2f}\n"
                     f"report: {out}/report.html\n")  # fmt: skip
    return 0


def _combine(results: list[Any]) -> Any:
    """One result from consecutive folds (trades and equity curves concatenated)."""
    import dataclasses
    from collections import Counter

    import numpy as np

    skips: Counter = Counter()
    for r in results:
        skips.update(r.skips)
    first = results[0]
    return dataclasses.replace(
        first, trades=[t for r in results for t in r.trades], equity_ts=np.concatenate([r.equity_ts for r in results]),
        equity=np.concatenate([r.equity for r in results]), cash=np.concatenate([r.cash for r in results]),
        exposure=np.concatenate([r.exposure for r in results]),
        open_positions=np.concatenate([r.open_positions for r in results]), skips=skips, decisions=[],
        orders=sum(r.orders for r in results), minutes=sum(r.minutes for r in results), end=results[-1].end,
        seconds=sum(r.seconds for r in results), fees=sum(r.fees for r in results),
        benchmark=None if any(r.benchmark is None for r in results) else (
            np.concatenate([r.benchmark[0] for r in results]), np.concatenate([r.benchmark[1] for r in results])),
    )  # fmt: skip


def _minimal_report(out: Path, res: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """trades.csv and metrics.json only; used while `bot.backtest.report` is not available."""
    import csv
    import dataclasses

    import numpy as np

    from models.evaluation.trade_stats import trade_stats

    rets = np.array([t.ret for t in res.trades], dtype=np.float64)
    metrics = {"overall": trade_stats(rets), "skips": dict(res.skips), "meta": meta, "fees": res.fees,
               "final_equity": float(res.equity[-1]), "note": "bot.backtest.report not available: no equity.png / report.html"}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    with open(out / "trades.csv", "w", newline="") as f:
        fields = [fl.name for fl in dataclasses.fields(res.trades[0])] if res.trades else ["symbol"]
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for t in res.trades:
            w.writerow(dataclasses.asdict(t))
    return metrics
