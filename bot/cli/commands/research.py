"""`bot research [GRID.yaml | --grid NAME]`: a grid of trainer configurations by nested walk-forward.

    bot research --grid default                                   # docs/grids/default.yaml on the store's candles
    bot research --grid default --candles ../shared/data/candles_1m --candles ../shared/data/candles_1m_2023_10 \\
        --symbols @../shared/data/symbols30.txt --to 2021-05-14T20:26 --outer 2023-09-30..2023-10-30T14:45
    bot research grids/levers.yaml --candles DIR --universe all86=all --workers 2
    bot research grids/levers.yaml --candles DIR --study NAME      # join / resume a study (any machine with the DSN)

Configurations are compared on inner folds inside the data's first part; the chosen one is fitted
on them and judged once on the outer block (the last `--outer-days`, or `--outer FROM..TO`
anywhere after the inner range). Candles come from the store (the configured DSN or the embedded
cluster), or from `--candles` directories (several are joined in time, e.g. two periods). The
study lives in the project's Postgres through Optuna, so workers on other machines sharing the
DSN join it by name. Writes var/reports/research-<study>.md/.json. A grid with `promote: true`
ends by writing the chosen bundle and making it the champion only if its outer block clears
`trading.min_validation_pf` / `min_validation_trades` (and its leakage audit); otherwise it says
so in one line, records the bundle as rejected, and the bot keeps watching.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.commands import load_config_or_exit

GRIDS_DIR = Path(__file__).resolve().parents[3] / "docs" / "grids"


@dataclass
class StoreSpec:
    """The store as a research candle source: picklable, each worker opens its own connection."""

    dsn: str = field(repr=False)

    def open(self) -> Any:
        from bot.history.sources import StoreCandleSource

        return StoreCandleSource.connect(self.dsn)


if TYPE_CHECKING:
    from bot.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("research", help="nested walk-forward research over a grid of configurations")
    p.add_argument("grid", metavar="GRID.yaml", nargs="?", help="the grid spec (see models.research.grid)")
    p.add_argument("--grid", dest="grid_name", metavar="NAME", help=f"a ready grid by name: {GRIDS_DIR}/NAME.yaml (e.g. default)")
    p.add_argument("--candles", action="append", default=[], metavar="DIR",
                   help="read SYMBOL.csv.gz files from DIR instead of the store; repeat to join periods in time")  # fmt: skip
    p.add_argument("--symbols", help="the default universe: comma-separated or @FILE (default: config symbols)")
    p.add_argument("--universe", action="append", default=[], metavar="NAME=SYMBOLS",
                   help="a named universe for the grid's `universe` key: comma list, @FILE or 'all' (every symbol of the source)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine (default 1; 0 = run no trials, only report what the study holds)")  # fmt: skip
    p.add_argument("--allow-partial", action="store_true",
                   help="choose among the finished variants even if some are not (the count of configurations tried says so)")  # fmt: skip
    p.add_argument("--study", help="Optuna study name (default: grid name + digest of the data and settings)")
    p.add_argument("--dsn", help="Postgres DSN of the study (default: the store's; 'memory' = no database, one worker)")
    p.add_argument("--from", dest="start", metavar="T0", help="data start (default: first UTC midnight of the data)")
    p.add_argument("--to", dest="end", metavar="T1",
                   help="data end, exclusive (default: after the last candle; with --outer, the last candle before it)")  # fmt: skip
    p.add_argument("--outer-days", type=float, help="length of the final outer block (default: the grid's, else 14)")
    p.add_argument("--outer", metavar="FROM..TO", help="an explicit outer block (UTC), e.g. a month no research has looked at")
    p.add_argument("--inner-folds", type=int, help="inner walk-forward folds (default: the grid's, else 2)")
    p.add_argument("--fold-days", type=float, help="length of each inner validation block (default: the grid's, else shared equally)")
    p.add_argument("--no-outer", action="store_true", help="stop after the inner folds (do not fit the choice)")
    p.add_argument("--no-audit", action="store_true", help="skip the leakage audit of the chosen configuration")
    p.add_argument("--no-promote", action="store_true", help="never write or promote a bundle, whatever the grid says")
    p.add_argument("--out", metavar="BASE", help="report path without suffix (default var/reports/research-<study>)")
    p.set_defaults(func=_run)


def _universe(text: str, source_symbols: list[str]) -> list[str]:
    from bot.cli.commands import read_symbols

    if text == "all":
        return list(source_symbols)
    return read_symbols(text, ())


def grid_path(args: argparse.Namespace) -> Path:
    from models.research.grid import GridError

    if args.grid and args.grid_name:
        raise GridError("give a grid file or --grid NAME, not both")
    if args.grid_name:
        p = GRIDS_DIR / f"{args.grid_name}.yaml"
        if not p.exists():
            names = ", ".join(sorted(x.stem for x in GRIDS_DIR.glob("*.yaml")))
            raise GridError(f"no ready grid named {args.grid_name!r} (ready grids: {names})")
        return p
    if not args.grid:
        raise GridError("name a grid: GRID.yaml or --grid NAME (e.g. --grid default)")
    return Path(args.grid)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from bot.logs.setup import setup_from_config
    from models.research.grid import GridError, load_grid
    from models.timeutil import TimeParseError

    setup_from_config(cfg, console=False)
    try:
        grid = load_grid(grid_path(args))
    except (GridError, TimeParseError, OSError) as e:
        print(f"research: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        if args.dsn:  # the study's database is given: no store of ours is opened
            if args.candles:
                from models.candles import CsvDirs

                spec: Any = CsvDirs([str(Path(d).resolve()) for d in args.candles])
                here: Any = spec
            elif args.dsn == "memory":
                print("research: --dsn memory needs --candles (there is no store to read from)", file=sys.stderr)
                return 2
            else:
                from bot.history.sources import StoreCandleSource

                spec = StoreSpec(args.dsn)
                here = StoreCandleSource.connect(args.dsn)
            try:
                rc, rep, name = _plan_and_run(cfg, args, grid, spec, here, None if args.dsn == "memory" else args.dsn)
            finally:
                here.close()
        else:
            rc, rep, name = asyncio.run(_from_store(cfg, args, grid))
    except (ValueError, RuntimeError) as e:
        print(f"research failed: {e}", file=sys.stderr)
        return 1
    if rep is None:
        return rc
    rep["meta"]["wall_seconds"] = round(time.monotonic() - t0, 1)
    rep["meta"]["peak_rss_mb_self"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    rep["meta"]["peak_rss_mb_children"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    _write(rep, args, name, Path(cfg.paths.data_dir))
    return rc


async def _from_store(cfg: Config, args: argparse.Namespace, grid: Any) -> tuple[int, dict[str, Any] | None, str]:
    from bot.history.sources import StoreCandleSource
    from bot.store.db import open_store

    async with open_store(cfg, log=lambda m: print(m, file=sys.stderr)) as store:
        if args.candles:
            from models.candles import CsvDirs

            spec: Any = CsvDirs([str(Path(d).resolve()) for d in args.candles])
            here: Any = spec
        else:
            here = StoreCandleSource(store, asyncio.get_running_loop())
            spec = StoreSpec(store.dsn)
        rc, rep, name = await asyncio.to_thread(_plan_and_run, cfg, args, grid, spec, here, store.dsn)
        if rep is not None and rep.get("promotion", {}).get("bundle"):
            rep["promotion"] = await _record_and_promote(store.pool, rep["promotion"])
            print(rep["promotion"]["line"], file=sys.stderr)
        return rc, rep, name


def _plan_and_run(cfg: Config, args: argparse.Namespace, grid: Any, spec: Any, source: Any,
                  store_dsn: str | None) -> tuple[int, dict[str, Any] | None, str]:  # fmt: skip
    """Universes, data range and outer block from the source; then the research itself."""
    from bot.training.job import TrainingSetupError, optuna_url
    from models.research.grid import GridError
    from models.research.runner import Setup, study_name
    from models.timeutil import MINUTE_MS, TimeParseError, fmt_ts, parse_time
    from models.training.run import Settings
    from models.training.splits import DAY_MS, floor_day

    try:
        present = source.symbols()
        where = ", ".join(args.candles) if args.candles else "the store"
        universes = {"default": _universe(args.symbols, present) if args.symbols else list(cfg.symbols)}
        for text in args.universe:
            uname, _, val = text.partition("=")
            if not uname or not val:
                raise GridError(f"--universe {text!r}: expected NAME=SYMBOLS")
            universes[uname] = _universe(val, present)
        for uname, syms in universes.items():
            miss = [s for s in syms if s not in present]
            if miss:
                hint = ("; fill the store first: `bot import-candles DIR` (Binance's archives) or `bot backfill --days 365`"
                        if where == "the store" else "")
                raise TrainingSetupError(f"universe {uname}: no candles in {where} for {', '.join(miss)}{hint}")
        anchor = cfg.features.reference_symbols[0]
        b = source.bounds(anchor)
        if b is None:
            raise TrainingSetupError(f"no candles for {anchor} in {where}")
        outer = _outer_window(args.outer, parse_time)
        start = parse_time(args.start) if args.start else floor_day(b[0] + DAY_MS - 1)
        if args.end:
            end = parse_time(args.end)
        elif outer is not None:  # the inner data: up to the last candle before the outer block
            before = source.load(anchor, None, outer[0])
            if not len(before):
                raise TrainingSetupError(f"no candles of {anchor} before the outer block {fmt_ts(outer[0])}")
            end = int(before.ts[-1]) + MINUTE_MS
        else:
            end = b[1] + MINUTE_MS
        lay = grid.layout
        outer_days = args.outer_days if args.outer_days is not None else lay.outer_days
        inner_folds = args.inner_folds if args.inner_folds is not None else lay.inner_folds
        fold_days = args.fold_days if args.fold_days is not None else lay.fold_days
    except (GridError, TrainingSetupError, TimeParseError, OSError, ValueError) as e:
        print(f"research: {e}", file=sys.stderr)
        return 2, None, ""
    data_dir = Path(cfg.paths.data_dir)
    setup = Setup(
        universes=universes, base_settings=Settings(cfg.features, cfg.labels, cfg.costs, cfg.train).to_dict(),
        data_start=start, data_end=end, cache_dir=str(data_dir / "cache"), work_root=str(data_dir / "research-work"),
        outer_days=outer_days, inner_folds=inner_folds, fold_days=fold_days, outer_window=outer, source=spec,
        data_id=_data_id(args, spec),
    )  # fmt: skip
    name = args.study or study_name(grid, setup)
    o = f"outer block {fmt_ts(outer[0])} .. {fmt_ts(outer[1])}" if outer else f"outer block = the last {outer_days:g} days"
    print(f"research {grid.name}: data {fmt_ts(start)} .. {fmt_ts(end)} UTC, {o}, {grid.n_configurations} configurations "
          f"({len(grid.train)} trained variants x {len(grid.rules)} entry rules), study {name}", file=sys.stderr)  # fmt: skip
    if args.dsn == "memory":
        storage = None
    else:
        dsn = args.dsn or store_dsn
        if dsn is None:
            raise ValueError("a study needs a database: run from the store, or pass --dsn URL or --dsn memory")
        storage = optuna_url(dsn)
    promote = grid.promote and not args.no_promote and not args.no_outer
    writer = _bundle_writer(cfg) if promote else None
    from models.research.runner import research

    rep = research(setup, grid, storage=storage, name=name, workers=args.workers, outer=not args.no_outer,
                   audit=not args.no_audit, allow_partial=args.allow_partial, progress=_Messages(),
                   write_bundle=writer)  # type: ignore[arg-type]  # fmt: skip
    if promote:
        rep["promotion"] = promotion_plan(rep, cfg)
        if not rep["promotion"].get("bundle"):
            print(rep["promotion"]["line"], file=sys.stderr)
    return 0, rep, name


def _data_id(args: argparse.Namespace, spec: Any) -> str:
    """What the cache keys know of the source: the directories, or which database (a digest of
    its DSN: a DSN may hold a password and never goes into a report)."""
    import hashlib

    if args.candles:
        return "csv:" + "|".join(str(Path(d).resolve()) for d in args.candles)
    return "store:" + hashlib.sha256(spec.dsn.encode()).hexdigest()[:12]


def _outer_window(text: str | None, parse_time: Any) -> tuple[int, int] | None:
    if not text:
        return None
    a, sep, b = text.partition("..")
    if not sep or not a or not b:
        raise ValueError(f"--outer {text!r}: expected FROM..TO (UTC), e.g. 2023-09-30..2023-10-30T14:45")
    lo, hi = parse_time(a), parse_time(b)
    if hi <= lo:
        raise ValueError(f"--outer {text!r}: the block ends before it starts")
    return lo, hi


def _bundle_writer(cfg: Any) -> Any:
    """Write the chosen configuration's bundle (fitted on the inner range; its walk-forward figure
    is the outer block) under paths.models_dir, with the entry rule it was chosen with."""
    from bot.training.job import bundle_manifest, code_version, new_version
    from models.bundle.directory import write_bundle

    code = code_version()

    def write(run: Any, extra: dict[str, Any]) -> str:
        created = int(time.time() * 1000)
        manifest = bundle_manifest(run, created_ms=created, code=code) | extra
        version = new_version(created, manifest)
        return str(write_bundle(cfg.paths.models_dir, version, run.predictor, manifest))

    return write


def promotion_plan(rep: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Does the chosen bundle's outer block clear the engine's no-edge floor? One line either way."""
    from bot.engine import validated_edge
    from models.bundle.directory import read_manifest

    out = rep.get("outer")
    if out is None:
        return {"promote": False, "line": "research: nothing was chosen, so nothing is promoted; the bot keeps watching"}
    if not out.get("bundle_path"):
        return {"promote": False, "line": "research: the chosen configuration's bundle was not written (cached from a run "
                "without promotion); re-run with a new --study to write it"}  # fmt: skip
    manifest = read_manifest(out["bundle_path"])
    edge = validated_edge(manifest, cfg.trading)
    f = out["figures"]
    pf = "-" if f["profit_factor"] is None else f"{f['profit_factor']:.2f}"
    audit = out.get("audit") or {}
    reasons = [] if edge.ok else [f"outer block PF {pf} over {f['trades']} trades does not clear the floor "
                                  f"(trading.min_validation_pf {cfg.trading.min_validation_pf:g}, "
                                  f"min_validation_trades {cfg.trading.min_validation_trades})"]  # fmt: skip
    if audit.get("enabled") and not audit.get("passed"):
        reasons.append("leakage audit failed: " + "; ".join(audit.get("reasons", [])))
    version = manifest["version"]
    if reasons:
        line = f"research: not promoted: {reasons[0]}; bundle {version} recorded as rejected, the bot keeps watching"
    else:
        line = f"research: promoting {version}: outer block PF {pf} over {f['trades']} trades clears the floor"
    return {"promote": not reasons, "bundle": out["bundle_path"], "version": version, "reasons": reasons, "line": line,
            "manifest_range": [manifest["data_from_ts"], manifest["data_to_ts"]], "figures": f}  # fmt: skip


async def _record_and_promote(pool: Any, plan: dict[str, Any]) -> dict[str, Any]:
    from bot.store.model_versions import (
        ModelVersionError,
        get_model_version,
        promote,
        record_model_version,
    )

    status = "candidate" if plan["promote"] else "rejected"
    f = plan["figures"]
    metrics = {"walk_forward": {k: f.get(k) for k in ("trades", "profit_factor", "expectancy", "win_rate", "sharpe_daily",
                                                      "max_drawdown", "exposure")}, "research_outer_block": True}  # fmt: skip
    if plan["reasons"]:
        metrics["reason"] = plan["reasons"][0]
    if await get_model_version(pool, plan["version"]) is None:
        await record_model_version(pool, version=plan["version"], path=str(Path(plan["bundle"]).resolve()),
                                   created_ts=int(time.time() * 1000), status=status, data_from_ts=plan["manifest_range"][0],
                                   data_to_ts=plan["manifest_range"][1], metrics=metrics)  # fmt: skip
    if plan["promote"]:
        try:
            prev = await promote(pool, plan["version"], int(time.time() * 1000))
        except ModelVersionError as e:
            return {**plan, "promote": False, "line": f"research: not promoted: {e}"}
        plan = {**plan, "line": plan["line"] + f" (previous champion: {prev.version if prev else 'none'})"}
    return plan


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
    if rep.get("promotion"):
        sys.stdout.write(rep["promotion"]["line"] + "\n")
