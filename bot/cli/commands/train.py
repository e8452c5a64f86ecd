"""`bot train`: train a bundle (walk-forward report, leakage audit, final fit) with progress bars.

    bot train                                   # from the store, last train.history_days
    bot train --candles ../shared/data/candles_1m --symbols @../shared/data/symbols30.txt
    bot train --candles DIR --from 2021-04-02 --to 2021-04-30 --folds 1

The bundle goes to paths.models_dir and is recorded in the store as a candidate (or as
rejected if the leakage audit fails); `bot models promote VERSION` makes it the champion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.commands import load_config_or_exit, read_symbols
from bot.cli.progress_bars import RichProgress

if TYPE_CHECKING:
    from bot.config import Config
    from bot.history.sources import HistorySource
    from bot.training.job import TrainJob


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model bundle (walk-forward report + leakage audit)")
    p.add_argument("--candles", metavar="DIR", help="read SYMBOL.csv.gz files from DIR instead of the database")
    p.add_argument("--from", dest="start", metavar="T0", help="training range start, UTC (YYYY-MM-DD[THH:MM] or epoch ms)")
    p.add_argument("--to", dest="end", metavar="T1", help="training range end (exclusive); default: after the last candle")
    p.add_argument("--symbols", help="comma-separated symbols or @FILE (one per line); default: config symbols")
    p.add_argument("--folds", type=int, help="walk-forward folds (default train.folds)")
    p.add_argument("--fold-days", type=float, help="validation block length in days (default train.fold_days)")
    p.add_argument("--trials", type=int, help="Optuna trials on er (default train.optuna_trials)")
    p.add_argument("--stride", type=int, help="train on 1 row in N (default train.row_stride)")
    p.add_argument("--no-audit", action="store_true", help="skip the leakage audit")
    p.add_argument("--models-dir", help="where bundles go (default paths.models_dir)")
    p.add_argument("--work-dir", help="scratch space for row files (default paths.data_dir/train-work)")
    p.add_argument("--no-record", action="store_true", help="do not record the bundle in the database")
    p.add_argument("--spawn", action="store_true", help="train in a spawned child process, as the scheduler does")
    p.add_argument("--json", metavar="FILE", help="also write the summary (report, audit) as JSON")
    p.add_argument("--promote", action="store_true",
                   help="train from the store as the daemon's retrain does (the last daemon.retrain_eval_days held "
                        "out), judge against the champion, promote if better (= `bot retrain --now --here`)")  # fmt: skip
    p.set_defaults(func=_run)


def _settings(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    from models.config import Settings

    upd: dict[str, Any] = {}
    for arg, key in (("folds", "folds"), ("fold_days", "fold_days"), ("trials", "optuna_trials"), ("stride", "row_stride")):
        if getattr(args, arg) is not None:
            upd[key] = getattr(args, arg)
    if args.no_audit:
        upd["audit"] = False
    train = cfg.train.model_validate({**cfg.train.model_dump(), **upd})
    return Settings(cfg.features, cfg.labels, cfg.costs, train).to_dict()


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    if args.promote:
        return _promote_run(cfg, args)
    from bot.cli.terminal import console as wide_console
    from bot.logs.setup import setup_from_config
    from bot.training.job import TrainingSetupError, code_version
    from models.timeutil import TimeParseError, parse_optional_time

    setup_from_config(cfg, console=False)
    console = wide_console(stderr=True)
    try:
        symbols = read_symbols(args.symbols, cfg.symbols)
        job = _job(cfg, args, symbols, parse_optional_time(args.start), parse_optional_time(args.end), code_version())
    except (TrainingSetupError, TimeParseError, OSError) as e:
        console.print(f"[red]{e}[/red]")
        return 2
    try:
        summary = asyncio.run(_main(cfg, args, job, console))
    except Exception as e:  # noqa: BLE001 - one clear line for known failures, traceback otherwise
        from bot.history.sources import CandleSourceError
        from models.bundle.directory import BundleError
        from models.training.prepare import TrainError

        if isinstance(e, (TrainError, TrainingSetupError, CandleSourceError, BundleError, FileNotFoundError)):
            console.print(f"[red]training failed: {e}[/red]")
            return 1
        raise
    _print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return _exit_code(summary)


def _exit_code(summary: dict[str, Any]) -> int:
    """0 for a usable bundle; 3 when it was recorded as rejected for a fault of the model (failed
    leakage audit, no validation trades, a one-round booster). A fit-only run (`--folds 0`) has
    no out-of-sample result by request: its bundle is recorded as rejected (it cannot be
    promoted, the summary says why) but the command did what it was asked."""
    if summary["status"] == "candidate":
        return 0
    fit_only = not (summary.get("walk_forward") or {}).get("folds")
    audit_failed = (summary.get("audit") or {}).get("passed") is False
    return 0 if fit_only and not audit_failed and "no walk-forward" in str(summary.get("reason") or "") else 3


def _promote_run(cfg: Config, args: argparse.Namespace) -> int:
    """`--promote`: the champion/challenger retrain of `bot.training.retrain`, from here."""
    bad = [o for o in ("candles", "start", "end", "models_dir", "work_dir") if getattr(args, o)] + (
        ["no_record"] if args.no_record else [])  # fmt: skip
    if bad:
        print(f"--promote trains from the store on the daemon's window; it does not take --{bad[0].replace('_', '-')}",
              file=sys.stderr)  # fmt: skip
        return 2
    from bot.cli.commands.retrain import retrain_here_or_ask
    from bot.logs.setup import setup_from_config

    setup_from_config(cfg, console=False)
    return asyncio.run(retrain_here_or_ask(cfg, ask_daemon=False))


def _job(cfg: Config, args: argparse.Namespace, symbols: list[str], start: int | None, end: int | None, code: str) -> Any:
    from bot.training.job import TrainJob

    data_dir = Path(cfg.paths.data_dir)
    return TrainJob(
        settings=_settings(cfg, args), symbols=symbols, models_dir=str(args.models_dir or cfg.paths.models_dir),
        start_ms=start, end_ms=end, candles_dir=args.candles, record=not args.no_record,
        cache_dir=str(data_dir / "cache"), work_root=str(args.work_dir or data_dir / "train-work"), code_version=code,
    )  # fmt: skip


async def _main(cfg: Config, args: argparse.Namespace, job: Any, console: Any) -> dict[str, Any]:
    from bot.history.sources import CsvCandleSource, StoreCandleSource
    from bot.store.db import open_store
    from bot.training.job import record_outcome, train_and_write, train_async

    need_store = not (args.candles and args.no_record)
    if not need_store:
        return await _train_here(job, CsvCandleSource(args.candles), console)
    async with open_store(cfg, log=lambda m: console.print(m)) as store:
        job.dsn = store.dsn
        if args.spawn:
            console.print("training in a spawned process (progress in the log)...")
            return await train_async(job)
        source = CsvCandleSource(args.candles) if args.candles else StoreCandleSource(store, asyncio.get_running_loop())
        with RichProgress(console) as progress:
            out = await asyncio.to_thread(train_and_write, job, source, progress)
        if job.record:
            await record_outcome(store.pool, out)
        return out.summary()


async def _train_here(job: TrainJob, source: HistorySource, console: Any) -> dict[str, Any]:
    from bot.training.job import train_and_write

    with RichProgress(console) as progress:
        out = await asyncio.to_thread(train_and_write, job, source, progress)
    return out.summary()


def _print_summary(summary: dict[str, Any]) -> None:
    from models.evaluation.tables import audit_lines, per_symbol_table, walk_forward_table

    wf = summary["walk_forward"]
    out = sys.stdout
    if wf.get("folds"):
        out.write("\nWalk-forward (simulated trading on each validation block; costs in):\n\n")
        out.write(walk_forward_table(wf) + "\n\n")
        out.write("Per symbol, all folds:\n\n" + per_symbol_table(wf["all"]) + "\n\n")
    out.write(audit_lines(summary["audit"]) + "\n\n")
    out.write(f"bundle {summary['version']} ({summary['status']}) -> {summary['path']}  [{summary['seconds']:.0f} s]\n")
