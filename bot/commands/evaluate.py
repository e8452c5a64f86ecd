"""`bot evaluate --model BUNDLE --candles DIR [--from T0 --to T1] [--symbols ...]`.

Runs the walk-forward's simulated trading for an existing bundle on any directory of
`SYMBOL.csv.gz` candles, so a bundle can be judged on data it has never seen. Features warm up
on the data before T0 (by default all of it in the directory). T0 defaults to the end of the
bundle's training range plus the embargo, T1 to the end of the data. Writes metrics.json and
prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bot.commands import load_config_or_exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="simulated trading of a bundle on a candle directory")
    p.add_argument("--model", required=True, metavar="BUNDLE", help="bundle directory (or a version under paths.models_dir)")
    p.add_argument("--candles", required=True, metavar="DIR", help="directory of SYMBOL.csv.gz files")
    p.add_argument("--from", dest="start", metavar="T0", help="first decision minute (default: training end + embargo)")
    p.add_argument("--to", dest="end", metavar="T1", help="end, exclusive (default: after the last candle)")
    p.add_argument("--symbols", help="comma-separated or @FILE (default: the bundle's symbols)")
    p.add_argument("--warmup-days", type=float, help="feature warm-up data before T0 (default: all data in DIR)")
    p.add_argument("--out", default="metrics.json", metavar="FILE", help="where to write the report (default metrics.json)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.candle_sources import CandleSourceError, CsvCandleSource
    from bot.commands import read_symbols
    from bot.logs import setup_from_config
    from bot.progress_bars import RichProgress
    from bot.terminal import console as wide_console
    from bot.training import TrainingSetupError
    from models.bundle import BundleError, load_bundle
    from models.prepare import TrainError
    from models.reporting import evaluation_table, per_symbol_table
    from models.timeutil import DAY_MS, MINUTE_MS, TimeParseError, fmt_ts, parse_optional_time

    setup_from_config(cfg, console=False)
    console = wide_console(stderr=True)
    path = Path(args.model)
    if not path.exists() and (Path(cfg.paths.models_dir) / args.model).exists():
        path = Path(cfg.paths.models_dir) / args.model
    try:
        bundle = load_bundle(path, threads=cfg.train.n_threads)
        source = CsvCandleSource(args.candles)
        anchor = bundle.feature_config().reference_symbols[0]
        bounds = source.bounds(anchor)
        if bounds is None:
            raise TrainingSetupError(f"no candles for {anchor} in {args.candles}")
        start = parse_optional_time(args.start)
        end = parse_optional_time(args.end) or bounds[1] + MINUTE_MS
        symbols = read_symbols(args.symbols, tuple(bundle.manifest["symbols"]))
        eff_start = start if start is not None else int(bundle.manifest["data_to_ts"]) + int(bundle.manifest["embargo_ms"])
        load_from = 0 if args.warmup_days is None else int(eff_start - args.warmup_days * DAY_MS)
        from models.evaluate import evaluate_bundle

        with tempfile.TemporaryDirectory(prefix="evaluate-") as work, RichProgress(console) as progress:
            rep = evaluate_bundle(source, bundle, start_ms=start, end_ms=end, symbols=symbols, load_from_ms=load_from,
                                  work_dir=Path(work) / "rows", progress=progress)  # fmt: skip
    except (BundleError, TrainError, TrainingSetupError, CandleSourceError, TimeParseError, FileNotFoundError) as e:
        console.print(f"[red]evaluate failed: {e}[/red]")
        return 1
    Path(args.out).write_text(json.dumps(rep, indent=2, default=str) + "\n")
    w = rep["window"]
    sys.stdout.write(f"\nBundle {bundle.version} on {fmt_ts(w['start'])} .. {fmt_ts(w['end'])} UTC ({len(symbols)} symbols):\n\n")
    sys.stdout.write(evaluation_table(rep) + "\n\n" + per_symbol_table(rep) + "\n\n")
    if rep.get("overlaps_training"):
        sys.stdout.write("warning: the window overlaps the bundle's training range; these figures are in-sample\n")
    sys.stdout.write(f"report written to {args.out}\n")
    return 0
