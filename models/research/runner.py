"""The research runner: train each grid variant on the inner folds, judge every entry rule on
its cached scores, choose on the inner figures only, then fit the choice on the whole inner
range and report it once on the outer block.

Cooperation across processes and machines is Optuna's: the training variants are the points
of a `GridSampler` study in an RDB storage (the project's Postgres), each worker process runs
`study.optimize`, and a trial's result (the inner figures of every entry rule) is stored as a
trial user attribute, so any machine with the DSN can build the table. A trial whose grid point
is already taken by an earlier trial that is running or finished is pruned without training
(the sampler only hands out a taken point when two workers start at the same moment).

Cache (per machine, `cache_dir/research/`): a variant's fold scores are keyed by its complete
settings, its symbols, the data range, the fold layout and `data_id`; a re-run (or a new study
over the same variants) loads them and trains nothing. The outer block's result is cached the
same way under the full data range.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from models.evaluation.scores import FoldScores, fold_scores
from models.evaluation.trade_stats import (
    by_month,
    expectancy_inference,
    months_between,
    sharpe_stats,
    stability,
    trade_stats,
)
from models.progress import Progress
from models.research.deflated import deflated_sharpe
from models.research.diagnostics import monthly_ic, signal_diagnostics
from models.research.entry import EntryRule, simulate
from models.research.grid import Grid, TrainVariant, apply_overrides
from models.research.nested import NestedSplit, nested_split
from models.trading.costs import Costs
from models.training.featureset import FeatureSet
from models.training.splits import Fold, Window

log = structlog.get_logger(__name__)

CACHE_VERSION = 2  # bump when what a cached result means changes


@dataclass
class Setup:
    """What every worker needs (picklable: crosses the spawn boundary).

    `source`: a candle source spec with `open() -> CandleSource` (picklable: a worker opens its
    own), e.g. `models.candles.CsvDirs` or the bot's store spec; `candles_dir` is a shortcut for
    `CsvDirs([candles_dir])`. `outer_window`: an explicit outer block (default: the last
    `outer_days` of the data); `fold_days`: the inner validation blocks' length."""

    universes: dict[str, list[str]]  # name -> symbols; "default" is used when a variant names none
    base_settings: dict[str, Any]  # models.training.run.Settings.to_dict()
    data_start: int
    data_end: int
    cache_dir: str
    work_root: str
    outer_days: float = 14.0
    inner_folds: int = 2
    data_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    candles_dir: str | None = None
    source: Any = None
    fold_days: float | None = None
    outer_window: tuple[int, int] | None = None

    def source_spec(self) -> Any:
        if self.source is not None:
            return self.source
        if self.candles_dir is None:
            raise ValueError("research setup: no candle source (source or candles_dir)")
        from models.candles import CsvDirs

        return CsvDirs([self.candles_dir])

    def open_source(self, end_limit: int | None) -> Any:
        """A candle source; with `end_limit`, one that refuses ranges past it (the inner end)."""
        return LimitedSource(self.source_spec().open(), end_limit)

    def symbols(self, v: TrainVariant) -> list[str]:
        name = v.universe or "default"
        if name not in self.universes:
            raise KeyError(f"grid names universe {name!r}; known: {', '.join(sorted(self.universes))}")
        return self.universes[name]


def _settings(setup: Setup, grid_base: dict[str, Any], v: TrainVariant) -> Any:
    from models.config import CostConfig, LabelConfig, TrainConfig
    from models.features.config import FeatureConfig
    from models.training.run import Settings

    d = apply_overrides(setup.base_settings, grid_base, v.overrides)
    h = int(d["labels"]["horizon_bars"])
    d["train"]["embargo_bars"] = max(int(d["train"]["embargo_bars"]), h)
    return Settings(FeatureConfig.model_validate(d["features"]), LabelConfig.model_validate(d["labels"]),
                    CostConfig.model_validate(d["costs"]), TrainConfig.model_validate(d["train"]))  # fmt: skip


def _split(setup: Setup, settings: Any) -> NestedSplit:
    outer = None if setup.outer_window is None else Window(*setup.outer_window)
    return nested_split(Window(setup.data_start, setup.data_end), outer_days=setup.outer_days, inner_folds=setup.inner_folds,
                        embargo_ms=settings.train.embargo_bars * 60_000, min_train_days=settings.train.regime_fit_days,
                        fold_days=setup.fold_days, outer=outer)  # fmt: skip


def decision_cadence(rules: list[EntryRule]) -> int:
    """The rows a variant's folds keep and score: the minutes every rule of the grid may decide
    on (the gcd of their cadences; 60 when all decide on 1h closes, 1 if any decides every minute)."""
    return math.gcd(*[int(r.cadence_minutes) for r in rules]) if rules else 1


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def variant_key(setup: Setup, settings: Any, symbols: list[str], split: NestedSplit, cadence: int = 1) -> str:
    """Cache key of a variant's inner fold scores: settings, symbols, data range, folds, data id,
    decision cadence of the scored rows."""
    return _digest({"v": CACHE_VERSION, "settings": settings.to_dict(), "symbols": symbols, "inner": split.to_dict(),
                    "data_id": setup.data_id, "cadence": cadence})  # fmt: skip


# --- one variant on the inner folds -----------------------------------------------------------


def _train_inner(setup: Setup, settings: Any, symbols: list[str], split: NestedSplit, source: Any,
                 progress: Progress | None = None, cadence: int = 1) -> list[FoldScores]:  # fmt: skip
    from models.training.run import check_settings, fit_window, prepare

    check_settings(settings)
    Path(setup.work_root).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="research-", dir=setup.work_root))
    try:
        fs = FeatureSet(settings.features)
        prep = prepare(source, symbols, settings, fs, work / "rows", start_ms=split.inner.start, end_ms=split.inner.end,
                       valid_from_ms=split.folds[0].valid.start, want_train=True, progress=progress,
                       valid_cadence=cadence)  # fmt: skip
        out = []
        for f in split.folds:
            pred, _info = fit_window(prep, f.train, settings, work, progress=progress,
                                     cache_dir=Path(setup.cache_dir), key=f"fold{f.index}")  # fmt: skip
            out.append(fold_scores(prep, pred, f.valid))
            del pred
            gc.collect()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rule_figures(rep: dict[str, Any]) -> dict[str, Any]:
    o = rep["overall"]
    keep = ("trades", "win_rate", "profit_factor", "expectancy", "sharpe_daily", "max_drawdown", "exposure", "portfolio_return")
    out = {k: o.get(k) for k in keep}
    out["signal_rate"] = rep["signal_rate"]
    out["sharpe_trade"] = sharpe_stats(rep["trade_returns"])["sharpe"]
    return out


def judge_rules(folds: list[FoldScores], rules: list[EntryRule], settings: Any) -> list[dict[str, Any]]:
    """Every entry rule on every fold, the inner folds pooled (trades concatenated), and the
    pooled trades per calendar month (with each month's rank IC) and their stability."""
    costs = Costs.from_config(settings.costs)
    kw = {"er_threshold": settings.train.er_threshold, "meta_threshold": settings.train.meta_threshold,
          "round_trip": costs.round_trip}  # fmt: skip
    months = sorted({m for fs in folds for m in months_between(fs.window.start, fs.window.end)})
    ic = monthly_ic(folds) if folds else {}
    out = []
    for rule in rules:
        per_fold, rets, entries = [], [], []
        for fs in folds:
            rep = simulate(fs, rule, **kw)
            per_fold.append(rule_figures(rep))
            rets.append(rep["trade_returns"])
            entries.append(rep["trade_entry_ts"])
        pooled_ret = np.concatenate(rets) if rets else np.empty(0)
        inner = {k: v for k, v in trade_stats(pooled_ret).items() if k not in ("avg_win", "avg_loss")}
        inner["sharpe_trade"] = sharpe_stats(pooled_ret)["sharpe"]
        inner["signal_rate"] = float(np.mean([f["signal_rate"] for f in per_fold])) if per_fold else 0.0
        inner["folds_positive"] = int(sum(1 for f in per_fold if (f["expectancy"] or 0) > 0))
        per_month = by_month((np.concatenate(entries) if entries else np.empty(0, np.int64)) - 60_000, pooled_ret, months)
        for k, v in ic.items():
            if k in per_month:
                per_month[k].update(v)
        out.append({"rule": rule.model_dump(), "rule_label": rule.label(), "folds": per_fold, "inner": inner,
                    "months": per_month, "stability": stability(per_month)})  # fmt: skip
    return out


def run_variant(setup: Setup, grid: Grid, v: TrainVariant, *, progress: Progress | None = None,
                source: Any = None) -> dict[str, Any]:  # fmt: skip
    """One training variant: cached fold scores (or train them), diagnostics, every entry rule."""
    settings = _settings(setup, grid.base, v)
    symbols = setup.symbols(v)
    split = _split(setup, settings)
    cadence = decision_cadence(grid.rules)
    key = variant_key(setup, settings, symbols, split, cadence)
    cdir = Path(setup.cache_dir) / "research" / key
    paths = [cdir / f"fold{f.index}.npz" for f in split.folds]
    t0 = time.monotonic()
    trained = not all(p.exists() for p in paths)
    if trained:
        src = source or setup.open_source(end_limit=split.inner.end)
        try:
            folds = _train_inner(setup, settings, symbols, split, src, progress, cadence)
        finally:
            if source is None:
                src.close()
        for p, fs in zip(paths, folds, strict=True):
            fs.save(p)
        with open(Path(setup.cache_dir) / "research" / "trained.log", "a") as fh:  # one line per training, for audits/tests
            fh.write(f"{key} {v.id} {os.getpid()} {time.time():.0f}\n")
        (cdir / "variant.json").write_text(json.dumps({"variant": v.key, "settings": settings.to_dict(), "symbols": symbols,
                                                       "split": split.to_dict()}, default=str))  # fmt: skip
    else:
        folds = [FoldScores.load(p) for p in paths]
    trade = setup.universes["default"]
    if symbols != trade:
        folds = [fs.subset(trade) for fs in folds]
    costs = Costs.from_config(settings.costs)
    diag = [signal_diagnostics(fs, costs) for fs in folds]
    rules = judge_rules(folds, grid.rules, settings)
    return {"variant_id": v.id, "variant": v.label(), "overrides": v.overrides, "universe": v.universe or "default",
            "symbols": len(symbols), "cache_key": key, "trained": trained, "seconds": round(time.monotonic() - t0, 1),
            "split": split.to_dict(), "decision_cadence": cadence, "diagnostics": diag, "rules": rules}  # fmt: skip


class LimitedSource:
    """A CSV candle source that refuses any range reaching past `end_limit` (the inner end):
    the guard that the choice cannot see the outer block."""

    def __init__(self, inner: Any, end_limit: int | None):
        self.inner, self.end_limit = inner, end_limit

    def load(self, symbol: str, start_ms: int | None, end_ms: int | None) -> Any:
        if self.end_limit is not None and (end_ms is None or end_ms > self.end_limit):
            raise RuntimeError(f"research: {symbol} requested up to {end_ms}, past the inner end {self.end_limit}")
        return self.inner.load(symbol, start_ms, end_ms)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


# --- the study --------------------------------------------------------------------------------


def _objective_value(res: dict[str, Any], grid: Grid) -> float:
    vals = [r["inner"].get(grid.selection.metric) for r in res["rules"] if r["inner"]["trades"] >= grid.selection.min_trades
            and all(f["trades"] >= grid.selection.min_fold_trades for f in r["folds"])]  # fmt: skip
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return max(vals) if vals else -1.0


def open_study(storage: str | None, name: str, grid: Grid, *, create: bool = True) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"variant": [v.id for v in grid.train]}
    sampler = optuna.samplers.GridSampler(space, seed=0)
    store: Any = None
    if storage:
        import warnings

        with warnings.catch_warnings():
            # heartbeats (a crashed worker's trial is marked failed and retried) are "experimental" in optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            store = optuna.storages.RDBStorage(
                storage, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=60, grace_period=180,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )  # fmt: skip
    if create:
        return optuna.create_study(study_name=name, storage=store, sampler=sampler, direction="maximize", load_if_exists=True)
    return optuna.load_study(study_name=name, storage=store, sampler=sampler)


def _objective(setup: Setup, grid: Grid, study: Any, progress: Progress | None) -> Callable[[Any], float]:
    import optuna

    by_id = {v.id: v for v in grid.train}

    def objective(trial: Any) -> float:
        vid = trial.suggest_categorical("variant", list(by_id))
        mine = trial.number
        live = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE))
        my_grid = next((t.system_attrs.get("grid_id") for t in live if t.number == mine), None)
        for t in live:
            # the grid point is in the trial's system attrs before its objective runs; params come later
            same = t.params.get("variant") == vid or (my_grid is not None and t.system_attrs.get("grid_id") == my_grid)
            if t.number < mine and same:
                raise optuna.TrialPruned(f"variant {vid} already taken by trial {t.number}")
        res = run_variant(setup, grid, by_id[vid], progress=progress)
        trial.set_user_attr("result", json.loads(json.dumps(res, default=_json_default)))
        log.info("research_variant_done", variant=res["variant"], trained=res["trained"], seconds=res["seconds"])
        if progress is not None:
            progress.message(f"variant {res['variant']}: {'trained' if res['trained'] else 'from cache'} in {res['seconds']:.0f} s")
        return _objective_value(res, grid)

    return objective


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def worker(setup: Setup, grid: Grid, storage: str | None, name: str, progress: Progress | None = None) -> int:
    """Run trials until every grid point is taken; returns the number of trials this worker ran."""
    study = open_study(storage, name, grid)
    before = len(study.get_trials(deepcopy=False))
    study.optimize(_objective(setup, grid, study, progress), n_trials=len(grid.train), gc_after_trial=True)
    return len(study.get_trials(deepcopy=False)) - before


def _worker_entry(setup: Setup, grid: Grid, storage: str | None, name: str) -> int:
    from models.progress import LogProgress

    return worker(setup, grid, storage, name, LogProgress())


def run_workers(setup: Setup, grid: Grid, storage: str | None, name: str, n: int, progress: Progress | None = None) -> None:
    """n == 1: in this process; otherwise n spawned processes (spawn: LightGBM/OpenMP and fork do not mix)."""
    if n <= 1:
        worker(setup, grid, storage, name, progress)
        return
    if storage is None:
        raise ValueError("several workers need a shared study storage (a database URL)")
    open_study(storage, name, grid)  # create it once, before the workers race to
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_entry, args=(setup, grid, storage, name), name=f"research-worker-{i}") for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"{len(bad)} research worker(s) failed (exit codes {bad}); re-run to resume")


def collect(storage: str | None, name: str, grid: Grid, study: Any = None) -> list[dict[str, Any]]:
    """The stored result of every variant of the grid (one per variant: the first complete trial)."""
    import optuna

    if study is None:
        try:
            study = open_study(storage, name, grid, create=False)
        except KeyError:
            raise ValueError(f"no research study named {name!r} in the database (start it with --workers 1 or more)") from None
    seen: dict[str, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        res = t.user_attrs.get("result")
        if res and res["variant_id"] not in seen:
            seen[res["variant_id"]] = res
    ids = [v.id for v in grid.train]
    return [seen[i] for i in ids if i in seen]


# --- choosing and the outer block -------------------------------------------------------------


def configurations(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (variant, rule): the flat list of configurations tried."""
    rows = []
    for res in results:
        for r in res["rules"]:
            rows.append({"variant_id": res["variant_id"], "variant": res["variant"], "rule": r["rule"],
                         "rule_label": r["rule_label"], "inner": r["inner"], "folds": r["folds"],
                         "months": r.get("months") or {}, "stability": r.get("stability") or {}})  # fmt: skip
    return rows


def eligible(r: dict[str, Any], grid: Grid) -> bool:
    """Enough inner trades, overall and in every fold, to be chosen."""
    return r["inner"]["trades"] >= grid.selection.min_trades and all(f["trades"] >= grid.selection.min_fold_trades for f in r["folds"])


def eligible_sharpes(rows: list[dict[str, Any]], grid: Grid) -> list[float | None]:
    """Per-trade Sharpe ratios of the configurations that could have been chosen: the spread the
    deflated Sharpe needs (a Sharpe over 3 trades is noise and would inflate it); N stays the
    number of all configurations tried."""
    return [r["inner"].get("sharpe_trade") for r in rows if eligible(r, grid)]


def choose(rows: list[dict[str, Any]], grid: Grid) -> dict[str, Any] | None:
    """The chosen configuration among those with enough inner trades (only inner figures are
    read here). `selection.rank: stable` (the default): the highest share of inner months with
    PF > 1, then the highest worst-month PF, then the best `metric`, then more trades -- a
    configuration that made money in every month beats one with a better pooled figure and a
    losing month. `best`: the best `metric` alone (ties: more trades)."""
    metric = grid.selection.metric
    ok = [r for r in rows if eligible(r, grid) and r["inner"].get(metric) is not None]
    if not ok:
        return None
    if grid.selection.rank == "best":
        return max(ok, key=lambda r: (r["inner"][metric], r["inner"]["trades"]))
    return max(ok, key=stable_key(metric))


def stable_key(metric: str) -> Callable[[dict[str, Any]], tuple[float, float, float, int]]:
    def key(r: dict[str, Any]) -> tuple[float, float, float, int]:
        st = r.get("stability") or {}
        return (st.get("share_pf_above_1") or 0.0, st.get("worst_pf") if st.get("worst_pf") is not None else 0.0,
                r["inner"][metric], r["inner"]["trades"])  # fmt: skip

    return key


def run_outer(setup: Setup, grid: Grid, chosen: dict[str, Any], trial_sharpes: list[float | None], *,
              progress: Progress | None = None, audit: bool = True, n_trials: int | None = None,
              write_bundle: Callable[[Any, dict[str, Any]], str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Fit the chosen variant on the whole inner range; judge its rule once on the outer block.
    `write_bundle(run, extra)`: called with the fitted model (a `models.training.run.TrainRun`
    whose walk-forward is the outer block) when it is fitted, returns the bundle's path, which
    is cached with the outer result (a re-run finds it)."""
    v = next(t for t in grid.train if t.id == chosen["variant_id"])
    rule = EntryRule.model_validate(chosen["rule"])
    settings = _settings(setup, grid.base, v)
    symbols = setup.symbols(v)
    split = _split(setup, settings)
    outer = split.outer(settings.train.embargo_bars * 60_000)
    key = _digest({"v": CACHE_VERSION, "outer": True, "settings": settings.to_dict(), "symbols": symbols,
                   "split": split.to_dict(), "data_id": setup.data_id, "audit": audit, "rule": rule.model_dump(),
                   "trade": setup.universes["default"]})  # fmt: skip
    cdir = Path(setup.cache_dir) / "research" / "outer" / key
    spath, apath, bpath = cdir / "scores.npz", cdir / "audit.json", cdir / "bundle.json"
    trained = not spath.exists()
    audit_res: dict[str, Any] = {}
    costs = Costs.from_config(settings.costs)
    kw = {"er_threshold": settings.train.er_threshold, "meta_threshold": settings.train.meta_threshold,
          "round_trip": costs.round_trip}  # fmt: skip
    if trained:
        fs, audit_res, fitted = _fit_outer(setup, settings, symbols, split, outer, rule, progress=progress, audit=audit)
        fs.save(spath)
        apath.write_text(json.dumps(audit_res, default=_json_default))
        if write_bundle is not None:
            rep = simulate(fs, rule, **kw)
            fitted.walk_forward = {"folds": [], "all": _json_safe({k: rep[k] for k in ("window", "symbols", "overall",
                                   "per_symbol", "seed_metric", "signal_rate")}), "outer_block": True}  # fmt: skip
            fitted.audit = {"enabled": audit, **audit_res}
            path = write_bundle(fitted, {"entry_rule": rule.model_dump(exclude_defaults=True),
                                         "research": {"variant": chosen["variant"], "rule": chosen["rule_label"],
                                                      "outer_window": [outer.start, outer.end]}})  # fmt: skip
            bpath.write_text(json.dumps({"path": path}))
        del fitted
    else:
        fs = FoldScores.load(spath)
        audit_res = json.loads(apath.read_text()) if apath.exists() else {}
    bundle_path = json.loads(bpath.read_text())["path"] if bpath.exists() else None
    rep = simulate(fs, rule, **kw)
    fig = rule_figures(rep)
    maker_fs = fs.replace(ret=np.asarray(costs.reprice(fs.ret, costs.maker_entry()), dtype=np.float32))
    maker = rule_figures(simulate(maker_fs, rule, **kw))
    dsr = deflated_sharpe(rep["trade_returns"], n_trials=n_trials or grid.n_configurations, trial_sharpes=np.array(
        [s for s in trial_sharpes if s is not None], dtype=np.float64))  # fmt: skip
    return {"variant": chosen["variant"], "rule": chosen["rule_label"], "window": [outer.start, outer.end],
            "symbols": list(fs.symbols), "figures": fig, "maker_entry": maker, "per_symbol": rep["per_symbol"],
            "diagnostics": signal_diagnostics(fs, costs), "deflated_sharpe": dsr, "audit": audit_res, "trained": trained,
            "expectancy_t": expectancy_inference(rep["trade_returns"])["expectancy_t"],
            "months": month_figures(rep, fs), "score_quantiles": _score_quantiles(fs), "bundle_path": bundle_path}  # fmt: skip


def month_figures(rep: dict[str, Any], fs: FoldScores | list[FoldScores]) -> dict[str, Any]:
    """Out-of-sample figures per UTC calendar month of the trades' decision minutes (every month
    the blocks touch, with or without trades), the rank IC of each month, and the stability."""
    blocks = fs if isinstance(fs, list) else [fs]
    months: list[str] = []
    for b in blocks:
        months += months_between(b.window.start, b.window.end)
    per = by_month(rep["trade_entry_ts"] - 60_000, rep["trade_returns"], months)
    for k, v in monthly_ic(blocks).items():
        per.setdefault(k, {"trades": 0, "profit_factor": None, "expectancy": None, "win_rate": None,
                           "total_return": 0.0}).update(v)  # fmt: skip
    return {"months": per, "stability": stability(per)}


def _json_safe(x: Any) -> Any:
    return json.loads(json.dumps(x, default=_json_default))


def _score_quantiles(fs: FoldScores) -> dict[str, float | None]:
    """Where the block's predicted er lies (does the threshold ever bite?)."""
    er = fs.er[fs.ok & np.isfinite(fs.er)].astype(np.float64)
    if not len(er):
        return {"q50": None, "q99": None, "max": None}
    return {"q50": float(np.quantile(er, 0.5)), "q99": float(np.quantile(er, 0.99)), "max": float(er.max())}


def _fit_outer(setup: Setup, settings: Any, symbols: list[str], split: NestedSplit, outer: Window, rule: EntryRule, *,
               progress: Progress | None, audit: bool) -> tuple[FoldScores, dict[str, Any], Any]:  # fmt: skip
    """Fit on the inner range (its own prepared rows), then prepare and score the outer block's
    traded symbols that have candles there, with their own feature warm-up before it (so an
    outer block in another year never computes features across the gap)."""
    from models.training.run import TrainRun, fit_window, prepare

    Path(setup.work_root).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="research-outer-", dir=setup.work_root))
    src = setup.open_source(end_limit=None)
    try:
        fset = FeatureSet(settings.features)
        prep = prepare(src, symbols, settings, fset, work / "rows", start_ms=split.inner.start, end_ms=split.inner.end,
                       valid_from_ms=None, want_train=True, audit_lookahead=audit, progress=progress)  # fmt: skip
        pred, info = fit_window(prep, split.inner, settings, work, progress=progress, cache_dir=Path(setup.cache_dir), key="outer")
        trade = [s for s in setup.universes["default"] if len(src.load(s, outer.start, outer.end))]
        if not trade:
            raise ValueError(f"no traded symbol has candles in the outer block {outer.start} .. {outer.end}")
        to_rule = rule.to_rule(er_threshold=settings.train.er_threshold, meta_threshold=settings.train.meta_threshold,
                               round_trip=Costs.from_config(settings.costs).round_trip, has_meta=pred.meta is not None)  # fmt: skip
        vprep = prepare(src, trade, settings, fset, work / "outer", start_ms=outer.start, end_ms=outer.end,
                        valid_from_ms=outer.start, want_train=False, regime=prep.regime, progress=progress,
                        valid_cadence=to_rule.cadence_minutes)  # fmt: skip
        fs = fold_scores(vprep, pred, outer)
        res: dict[str, Any] = {"enabled": audit}
        if audit:
            from models.evaluation.leakage_audit import permuted_label_check

            rep = simulate(fs, rule, er_threshold=settings.train.er_threshold, meta_threshold=settings.train.meta_threshold,
                           round_trip=Costs.from_config(settings.costs).round_trip)  # fmt: skip
            cols = sorted({c for v in prep.lookahead.values() for c in v["columns"]})
            perm = permuted_label_check(prep, Fold(0, split.inner, outer), pred, rep["signal_rate"], settings, work,
                                        progress=progress, valid_prep=vprep)  # fmt: skip
            reasons = [f"features change when later bars are removed (look-ahead): {cols}"] if cols else []
            if perm.get("flagged"):
                reasons.append(perm["reason"])
            res.update({"lookahead_columns": cols, "permuted": perm, "passed": not reasons, "reasons": reasons})
        stats = {**prep.stats, "outer_symbols": trade}
        fitted = TrainRun(pred, info, prep.regime, {}, {}, symbols, split.inner.start, split.inner.end, settings, prep.names,
                          stats)  # fmt: skip
        return fs, res, fitted
    finally:
        src.close()
        shutil.rmtree(work, ignore_errors=True)


# --- the whole run ------------------------------------------------------------------------------


def study_name(grid: Grid, setup: Setup) -> str:
    """Default study name: the grid's name + a digest of everything that defines its results."""
    d = _digest({"v": CACHE_VERSION, "train": [v.key for v in grid.train], "rules": [r.model_dump() for r in grid.rules],
                 "selection": grid.selection.model_dump(), "base": grid.base, "universes": setup.universes,
                 "data": [setup.data_start, setup.data_end], "outer_days": setup.outer_days, "folds": setup.inner_folds,
                 "settings": setup.base_settings, "data_id": setup.data_id, "fold_days": setup.fold_days,
                 "outer_window": setup.outer_window})  # fmt: skip
    return f"research-{grid.name}-{d[:10]}"


def research(setup: Setup, grid: Grid, *, storage: str | None, name: str, workers: int = 1, outer: bool = True,
             audit: bool = True, reference: bool = True, allow_partial: bool = False,
             progress: Progress | None = None, write_bundle: Callable[[Any, dict[str, Any]], str] | None = None,
             ) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) the study, choose on the inner folds, judge the choice on the outer block."""
    progress = progress or Progress()
    t0 = time.monotonic()
    progress.message(f"study {name}: {len(grid.train)} trained variants x {len(grid.rules)} entry rules = "
                     f"{grid.n_configurations} configurations")  # fmt: skip
    if storage is None:
        # in-memory: one study object shared by the (single) worker and the collection below
        study = open_study(None, name, grid)
        study.optimize(_objective(setup, grid, study, progress), n_trials=len(grid.train), gc_after_trial=True)
        results = collect(None, name, grid, study=study)
    else:
        if workers > 0:  # 0: only collect what the study holds (other workers may still be running)
            run_workers(setup, grid, storage, name, workers, progress)
        results = collect(storage, name, grid)
    missing = len(grid.train) - len(results)
    rows = configurations(results)
    if missing:
        progress.message(f"{missing} of {len(grid.train)} trained variants are not finished in study {name}"
                         + ("; choosing among the finished ones" if allow_partial else "; not choosing (re-run to resume)"))  # fmt: skip
    chosen = choose(rows, grid) if (not missing or allow_partial) else None
    out_res = None
    if chosen is not None and outer:
        progress.message(f"chosen on the inner folds: {chosen['variant']} / {chosen['rule_label']}; fitting it for the outer block")
        out_res = run_outer(setup, grid, chosen, eligible_sharpes(rows, grid), progress=progress, audit=audit,
                            n_trials=len(rows), write_bundle=write_bundle)  # fmt: skip
    ref_res = None
    if outer and reference and chosen is not None:
        ref = reference_row(rows, grid, setup)
        if ref is not None and (chosen is None or ref is not chosen):
            progress.message(f"today's configuration for reference: {ref['variant']} / {ref['rule_label']}")
            ref_res = run_outer(setup, grid, ref, eligible_sharpes(rows, grid), progress=progress, audit=False,
                                n_trials=len(rows))  # fmt: skip
    first = results[0]["split"] if results else None
    meta = {"grid": grid.name, "study": name, "variants": len(grid.train), "rules": len(grid.rules),
            "configurations": len(rows), "configurations_in_grid": grid.n_configurations, "completed_variants": len(results), "missing_variants": missing,
            "metric": grid.selection.metric, "rank": grid.selection.rank, "min_trades": grid.selection.min_trades,
            "min_fold_trades": grid.selection.min_fold_trades, "outer_days": setup.outer_days,
            "outer_window": list(setup.outer_window) if setup.outer_window else None, "fold_days": setup.fold_days,
            "data": [setup.data_start, setup.data_end], "inner": first["inner"] if first else [setup.data_start, setup.data_start],
            "universes": {k: len(v) for k, v in setup.universes.items()}, "seconds": round(time.monotonic() - t0, 1),
            "trained_here": sum(1 for r in results if r.get("trained"))}  # fmt: skip
    for r in rows:
        r["eligible"] = eligible(r, grid)
    meta["eligible_configurations"] = sum(1 for r in rows if r["eligible"])
    return {"meta": meta, "results": results, "rows": rows, "chosen": chosen, "outer": out_res, "reference": ref_res}


def reference_row(rows: list[dict[str, Any]], grid: Grid, setup: Setup) -> dict[str, Any] | None:
    """Today's configuration if the grid has it: the variant with the base settings, the default rule."""
    default_rule = EntryRule().model_dump()
    for v in grid.train:
        if _settings(setup, grid.base, v).to_dict() == _settings(setup, grid.base, TrainVariant({}, None)).to_dict() and v.universe is None:
            for r in rows:
                if r["variant_id"] == v.id and r["rule"] == default_rule:
                    return r
    return None
