"""`bot evaluate --model BUNDLE --candles DIR [--candles DIR2 ...] [--from T0 --to T1] [--symbols ...]`.

Runs the walk-forward's simulated trading for an existing bundle on any directory of
`SYMBOL.csv.gz` candles, so a bundle can be judged on data it has never seen. What a user meets
on other data is handled up front:
- the bundle's symbols missing from a directory are all listed at once; by default the run
  goes on with the ones present (a notice says so); `--symbols` naming a missing one is an error;
- the default window follows the bundle's training data (training end + embargo) only when the
  directory's data covers that minute; otherwise it is the data's own range after the features'
  warm-up (a notice says which); dates are printed, not epoch ms;
- gaps in a reference symbol (BTC, ETH: their features are filled flat across a gap) are
  listed with their extent, and trades decided during one are reported apart;
- every figure names its basis (per trade, per symbol slot, portfolio of equal slots), and the
  expectancy comes with a t-statistic and a bootstrap interval; with several `--candles`, a
  pooled figure over all of them follows.
Reports go to var/reports/evaluate-<bundle>-<from>-<to>.json/.md unless --out names a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bot.cli.commands import load_config_or_exit

REF_GAP_MINUTES = 5  # reference gaps longer than this are reported


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="simulated trading of a bundle on candle directories")
    p.add_argument("--model", required=True, metavar="BUNDLE", help="bundle directory (or a version under paths.models_dir)")
    p.add_argument("--candles", required=True, action="append", metavar="DIR",
                   help="directory of SYMBOL.csv.gz files; repeat for a pooled figure over several")  # fmt: skip
    p.add_argument("--from", dest="start", metavar="T0",
                   help="first decision minute (default: training end + embargo if the data covers it, else the data's start after warm-up)")  # fmt: skip
    p.add_argument("--to", dest="end", metavar="T1", help="end, exclusive (default: after the last candle)")
    p.add_argument("--symbols", help="comma-separated or @FILE (default: the bundle's symbols present in DIR)")
    p.add_argument("--warmup-days", type=float, help="feature warm-up data before T0 (default: all data in DIR)")
    p.add_argument("--out", metavar="FILE", help="JSON report path (default var/reports/evaluate-<bundle>-<window>.json)")
    p.set_defaults(func=_run)


def reference_gaps(source: Any, refs: list[str], start: int, end: int, min_minutes: int = REF_GAP_MINUTES) -> list[dict[str, Any]]:
    """Gaps longer than `min_minutes` in each reference symbol's candles inside [start, end)."""
    out = []
    for r in refs:
        ts = source.load(r, start, end).ts
        if len(ts) < 2:
            continue
        d = np.diff(ts) // 60_000 - 1
        for i in np.flatnonzero(d > min_minutes):
            out.append({"symbol": r, "from": int(ts[i] + 60_000), "to": int(ts[i + 1]), "minutes": int(d[i])})
    return out


def choose_symbols(arg: str | None, bundle_symbols: list[str], present: set[str], directory: str) -> tuple[list[str], list[str]]:
    """(symbols to evaluate, notices). Every missing symbol is named at once."""
    from bot.cli.commands import read_symbols
    from bot.training.job import TrainingSetupError

    if arg:
        wanted = read_symbols(arg, ())
        missing = [s for s in wanted if s not in present]
        if missing:
            raise TrainingSetupError(f"no candle file in {directory} for {len(missing)} symbol(s): {', '.join(missing)}")
        return wanted, []
    have = [s for s in bundle_symbols if s in present]
    missing = [s for s in bundle_symbols if s not in present]
    if not have:
        raise TrainingSetupError(f"none of the bundle's {len(bundle_symbols)} symbols has a candle file in {directory}")
    notes = []
    if missing:
        notes.append(f"{len(missing)} of the bundle's {len(bundle_symbols)} symbols have no file in {directory}: "
                     f"{', '.join(missing)}; evaluating the {len(have)} present (--symbols to choose)")  # fmt: skip
    return have, notes


def default_window(bounds: tuple[int, int], train_end: int, embargo_ms: int, warmup_ms: int) -> tuple[int, str | None]:
    """Default first decision minute: right after the training data when the directory covers
    that minute, else the data's own start after the features' warm-up (with a notice)."""
    from models.timeutil import fmt_ts

    lo, hi = bounds
    follow = train_end + embargo_ms
    if lo <= follow <= hi:
        return follow, None
    start = lo + warmup_ms
    return start, (f"the data ({fmt_ts(lo)} .. {fmt_ts(hi)}) does not follow the bundle's training data (which ends "
                   f"{fmt_ts(train_end)}): evaluating from {fmt_ts(start)}, the data's start after "
                   f"{warmup_ms / 86_400_000:.1f} days of feature warm-up")  # fmt: skip


BASIS = (
    "Basis: trades, win %, PF and expectancy are per trade (net of fees both sides and slippage), all symbols pooled; "
    "Sharpe (d) and max DD are of the portfolio (each symbol trades its own equal 1/N slot of the capital, daily P&L); "
    "exposure = share of symbol-minutes holding a position; the per-symbol table is each symbol's own slot "
    "(its max DD is that slot's); 'primary-only' = without the meta gate; 'seed metric' = every bar over the threshold, "
    "overlapping, no slot limit (not tradeable, shown for comparison)."
)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.cli.progress_bars import RichProgress
    from bot.cli.terminal import console as wide_console
    from bot.history.sources import CandleSourceError, CsvCandleSource
    from bot.logs.setup import setup_from_config
    from bot.training.job import TrainingSetupError
    from models.bundle.directory import BundleError, load_bundle
    from models.evaluation.bundle_eval import evaluate_bundle
    from models.evaluation.trade_stats import expectancy_inference, trade_stats
    from models.timeutil import TimeParseError, fmt_date, fmt_ts, parse_time
    from models.training.featureset import FeatureSet
    from models.training.prepare import TrainError

    setup_from_config(cfg, console=False)
    console = wide_console(stderr=True)
    path = Path(args.model)
    if not path.exists() and (Path(cfg.paths.models_dir) / args.model).exists():
        path = Path(cfg.paths.models_dir) / args.model
    runs: list[dict[str, Any]] = []
    try:
        bundle = load_bundle(path, threads=cfg.train.n_threads)
        m = bundle.manifest
        train_from, train_end, embargo = int(m["data_from_ts"]), int(m["data_to_ts"]), int(m["embargo_ms"])
        horizon = int(m["label_config"]["horizon_bars"])
        fcfg = bundle.feature_config()
        refs = list(fcfg.reference_symbols)
        warmup_ms = FeatureSet(fcfg).warmup_bars * 60_000
        start_arg = parse_time(args.start) if args.start else None
        end_arg = parse_time(args.end) if args.end else None
        plans = []
        for d in args.candles:  # check every directory before any work
            source = CsvCandleSource(d)
            present = set(source.symbols())
            miss_refs = [r for r in refs if r not in present]
            if miss_refs:
                raise TrainingSetupError(f"the bundle's reference symbol(s) {', '.join(miss_refs)} have no candle file in {d}")
            symbols, notes = choose_symbols(args.symbols, list(m["symbols"]), present, d)
            bounds = source.bounds(refs[0])
            if bounds is None:
                raise TrainingSetupError(f"no candles for {refs[0]} in {d}")
            start, note = (start_arg, None) if start_arg is not None else default_window(bounds, train_end, embargo, warmup_ms)
            if note:
                notes.append(note)
            end = end_arg if end_arg is not None else bounds[1] + 60_000
            if end <= start:
                raise TrainingSetupError(f"{d}: empty evaluation window {fmt_ts(start)} .. {fmt_ts(end)} UTC (data "
                                         f"{fmt_ts(bounds[0])} .. {fmt_ts(bounds[1])})")  # fmt: skip
            plans.append((d, source, symbols, start, end, notes))
        for d, source, symbols, start, end, notes in plans:
            for n in notes:
                console.print(f"[yellow]notice: {n}[/yellow]")
            load_from = 0 if args.warmup_days is None else int(start - args.warmup_days * 86_400_000)
            with tempfile.TemporaryDirectory(prefix="evaluate-") as work, RichProgress(console) as progress:
                rep = evaluate_bundle(source, bundle, start_ms=start, end_ms=end, symbols=symbols, load_from_ms=load_from,
                                      work_dir=Path(work) / "rows", progress=progress, with_trades=True)  # fmt: skip
            gaps = reference_gaps(source, refs, start - warmup_ms, end)
            rep.update({"candles": str(d), "notices": notes, "reference_gaps": gaps,
                        "label_horizon_minutes": horizon})  # fmt: skip
            _split_by_gaps(rep, gaps, trade_stats)
            rep["expectancy_interval"] = expectancy_inference(np.array([t["ret"] for t in rep["trades"]]))
            runs.append(rep)
    except (BundleError, TrainError, TrainingSetupError, CandleSourceError, TimeParseError, FileNotFoundError) as e:
        console.print(f"[red]evaluate failed: {e}[/red]")
        return 1
    pooled = _pooled(runs, trade_stats) if len(runs) > 1 else None
    out = _write(cfg, args, bundle.version, runs, pooled)
    text = _text(bundle.version, runs, pooled, train_from, train_end, embargo, horizon, fmt_ts, fmt_date)
    sys.stdout.write(text)
    out.with_suffix(".md").write_text(text)
    sys.stdout.write(f"report written to {out} (and {out.with_suffix('.md').name})\n")
    return 0


def _split_by_gaps(rep: dict[str, Any], gaps: list[dict[str, Any]], trade_stats: Any) -> None:
    """Trades decided while a reference was missing (features filled flat) vs the others."""
    dts = np.array([t["decision_ts"] for t in rep["trades"]], dtype=np.int64)
    ret = np.array([t["ret"] for t in rep["trades"]], dtype=np.float64)
    inside = np.zeros(len(dts), dtype=bool)
    for g in gaps:
        inside |= (dts >= g["from"]) & (dts < g["to"])
    rep["trades_during_reference_gaps"] = trade_stats(ret[inside])
    rep["trades_outside_reference_gaps"] = trade_stats(ret[~inside])


def _pooled(runs: list[dict[str, Any]], trade_stats: Any) -> dict[str, Any]:
    from models.evaluation.trade_stats import expectancy_inference

    ret = np.concatenate([np.array([t["ret"] for t in r["trades"]], dtype=np.float64) for r in runs])
    return {"directories": [r["candles"] for r in runs], "per_trade": trade_stats(ret), "expectancy_interval": expectancy_inference(ret)}


def _write(cfg: Any, args: argparse.Namespace, version: str, runs: list[dict[str, Any]], pooled: dict[str, Any] | None) -> Path:
    from models.timeutil import to_datetime

    if args.out:
        out = Path(args.out)
    else:
        lo = min(r["window"]["start"] for r in runs)
        hi = max(r["window"]["end"] for r in runs)
        name = f"evaluate-{version}-{to_datetime(lo).strftime('%Y%m%d')}-{to_datetime(hi).strftime('%Y%m%d')}.json"
        out = Path(cfg.paths.data_dir) / "reports" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = runs[0] if len(runs) == 1 else {"runs": runs, "pooled": pooled}
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return out


def _ci(e: dict[str, Any]) -> str:
    t = "-" if e.get("expectancy_t") is None else f"{e['expectancy_t']:.2f}"
    ci = e.get("expectancy_ci95")
    c = "-" if not ci else f"[{ci[0] * 100:+.3f}%, {ci[1] * 100:+.3f}%]"
    return f"t = {t}, 95 % bootstrap interval of the expectancy {c} over {e['trades']} trades"


def _text(version: str, runs: list[dict[str, Any]], pooled: dict[str, Any] | None, train_from: int, train_end: int,
          embargo: int, horizon: int, fmt_ts: Any, fmt_date: Any) -> str:  # fmt: skip
    from models.evaluation.tables import evaluation_table, per_symbol_table

    out = []
    for rep in runs:
        w = rep["window"]
        n = rep["symbols"]
        o = rep["overall"]
        out.append(f"\nBundle {version} on {rep['candles']}: {fmt_ts(w['start'])} .. {fmt_ts(w['end'])} UTC, "
                   f"{n} symbol{'s' if n != 1 else ''}:\n\n")  # fmt: skip
        out.append(evaluation_table(rep) + "\n\n" + BASIS + "\n")
        out.append(f"Sum of trade returns {o['total_return'] * 100:+.2f}% (per trade, summed) = portfolio return "
                   f"{o['portfolio_return'] * 100:+.2f}% x {n} slots.\n")  # fmt: skip
        out.append(f"Expectancy: {_ci(rep['expectancy_interval'])}.\n\n")
        out.append(per_symbol_table(rep) + "\n\n")
        for g in rep["reference_gaps"]:
            out.append(f"warning: reference {g['symbol']} has no candles from {fmt_ts(g['from'])} to {fmt_ts(g['to'])} UTC "
                       f"({g['minutes']} min): features reading it were filled flat there\n")  # fmt: skip
        if rep["reference_gaps"]:
            a, b = rep["trades_during_reference_gaps"], rep["trades_outside_reference_gaps"]
            ea = "-" if a["expectancy"] is None else f"{a['expectancy'] * 100:+.3f}%"
            eb = "-" if b["expectancy"] is None else f"{b['expectancy'] * 100:+.3f}%"
            out.append(f"trades decided during a reference gap: {a['trades']} (expectancy {ea}); outside: {b['trades']} "
                       f"(expectancy {eb})\n")  # fmt: skip
        if rep.get("overlaps_training"):
            out.append(
                f"warning: the window overlaps the bundle's training data ({fmt_ts(train_from)} .. {fmt_ts(train_end)} UTC): "
                f"each training row's label looks {horizon} minutes ahead and the embargo is {embargo // 60_000} minutes, so "
                f"decisions before {fmt_ts(train_end + embargo)} were seen (in part) in training; these figures are in-sample\n"
            )
    if pooled:
        p = pooled["per_trade"]
        pf = "-" if p["profit_factor"] is None else f"{p['profit_factor']:.2f}"
        ex = "-" if p["expectancy"] is None else f"{p['expectancy'] * 100:+.3f}%"
        out.append(f"\nPooled over {len(pooled['directories'])} directories (per trade): {p['trades']} trades, PF {pf}, "
                   f"expectancy {ex}; {_ci(pooled['expectancy_interval'])}.\n")  # fmt: skip
    return "".join(out)
