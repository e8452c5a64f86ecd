"""The bot side of training: the job the scheduler runs, and bundle bookkeeping.

`models.training.run` does no daemon I/O (no database, no clock); this module gives it what it needs:
- a candle source from `bot.history.sources` (a CSV directory or the store);
- `run_train_job(job)`: the whole training in the current process (prepare, walk-forward,
  audit, final fit), the bundle written atomically under `paths.models_dir` and recorded in
  `model_versions` (status `candidate`, or `rejected` if the leakage audit failed);
- `train_in_subprocess(job)` / `train_async(job)`: the same in a fresh process started with
  multiprocessing's **spawn** context. The scheduler uses this so the event loop never stalls
  and the training's memory goes back to the OS when the process ends. Spawn, not fork:
  LightGBM's OpenMP runtime hangs in a forked child once OpenMP has run in the parent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bot.history.sources import CsvCandleSource, StoreCandleSource
from models.timeutil import DAY_MS, MINUTE_MS, fmt_ts, to_datetime
from models.training.splits import floor_day

if TYPE_CHECKING:
    from bot.history.sources import HistorySource

log = structlog.get_logger(__name__)
REPO = Path(__file__).resolve().parents[1]


class TrainingSetupError(Exception):
    """The training job cannot start (no data, bad range, unknown symbols)."""


# --- helpers -------------------------------------------------------------------------------


def code_version() -> str:
    """`git describe` of the checkout if there is one, else the installed package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cryptobot")
    except PackageNotFoundError:
        return "unknown"


def optuna_url(dsn: str) -> str:
    """SQLAlchemy URL (psycopg 3 driver) for the same database as an asyncpg/libpq DSN."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    raise TrainingSetupError("the optuna study needs a postgresql:// DSN")


def default_range(source: HistorySource, anchor: str, start_ms: int | None, end_ms: int | None, history_days: int) -> tuple[int, int]:
    """Fill in a missing end (after the last candle of `anchor`) and start (UTC midnight,
    `history_days` before the end, not before the data)."""
    b = source.bounds(anchor)
    if b is None:
        raise TrainingSetupError(f"no candles for {anchor}; import data first (`bot import-candles DIR`)")
    lo, hi = b
    end = end_ms if end_ms is not None else hi + MINUTE_MS
    start = start_ms if start_ms is not None else max(floor_day(lo + DAY_MS - 1), floor_day(end - history_days * DAY_MS))
    if end <= start:
        raise TrainingSetupError(f"empty range: from {fmt_ts(start)} to {fmt_ts(end)}")
    return start, end


# --- the job -------------------------------------------------------------------------------


@dataclass
class TrainJob:
    """Everything a training process needs; picklable (it crosses the spawn boundary)."""

    settings: dict[str, Any]  # models.config.Settings.to_dict()
    symbols: list[str]
    models_dir: str
    start_ms: int | None = None
    end_ms: int | None = None
    candles_dir: str | None = None  # CSV source; else the store at `dsn`
    dsn: str | None = field(default=None, repr=False)  # never logged
    record: bool = True
    optuna: bool = True  # store the Optuna study in the database (when trials > 0 and a DSN is set)
    cache_dir: str | None = None
    work_root: str | None = None
    code_version: str | None = None


def settings_from(d: dict[str, Any]) -> Any:
    from models.config import CostConfig, LabelConfig, Settings, TrainConfig
    from models.features.config import FeatureConfig

    return Settings(
        FeatureConfig.model_validate(d["features"]),
        LabelConfig.model_validate(d["labels"]),
        CostConfig.model_validate(d["costs"]),
        TrainConfig.model_validate(d["train"]),
    )


def bundle_manifest(run: Any, *, created_ms: int, code: str) -> dict[str, Any]:
    """The descriptive part of a bundle's manifest (models.bundle.directory adds the rest)."""
    return {
        "created_ts": created_ms,
        "created": fmt_ts(created_ms),
        "code_version": code,
        "symbols": run.symbols,
        "data_from_ts": run.start,
        "data_to_ts": run.end,
        "data_range": [fmt_ts(run.start), fmt_ts(run.end)],
        "feature_names": run.feature_names,
        "feature_config": run.settings.features.model_dump(mode="json"),
        "external_features": False,
        "label_config": run.settings.labels.model_dump(mode="json"),
        "cost_config": run.settings.costs.model_dump(mode="json"),
        "train_config": run.settings.train.model_dump(mode="json"),
        "embargo_ms": run.settings.train.embargo_bars * MINUTE_MS,
        "regime": None if run.regime is None else run.regime.to_dict(),
        "params": run.fit_info.get("params"),
        "fit": run.fit_info,
        "payoff": run.fit_info.get("payoff_calib"),
        "walk_forward": run.walk_forward,
        "audit": run.audit,
        "stats": run.stats,
    }


def new_version(created_ms: int, manifest: dict[str, Any]) -> str:
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return to_datetime(created_ms).strftime("%Y%m%dT%H%M%SZ") + "-" + digest


def summary_metrics(run: Any) -> dict[str, Any]:
    """What goes into model_versions.metrics: the headline figures, not the whole report."""
    wf = run.walk_forward.get("all") or {}
    o = wf.get("overall") or {}
    return {
        "walk_forward": {k: o.get(k) for k in ("trades", "profit_factor", "expectancy", "win_rate", "sharpe_daily",
                                               "max_drawdown", "exposure")},  # fmt: skip
        "seed_metric": wf.get("seed_metric"),
        "folds": len(run.walk_forward.get("folds", [])),
        "audit_passed": run.audit.get("passed"),
    }


@dataclass
class TrainOutcome:
    """A written bundle and what to record about it."""

    run: Any  # models.training.run.TrainRun
    version: str
    path: Path
    status: str  # candidate | rejected (leakage audit failed)
    created_ms: int
    code: str
    metrics: dict[str, Any]
    start: int
    end: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"version": self.version, "path": str(self.path), "status": self.status, "metrics": self.metrics,
                "reason": self.metrics.get("reason"),
                "walk_forward": self.run.walk_forward, "audit": self.run.audit, "start": self.start, "end": self.end,
                "seconds": self.seconds}  # fmt: skip


def train_and_write(job: TrainJob, source: HistorySource, progress: Any = None) -> TrainOutcome:
    """Train from `source` and write the bundle (no database access here)."""
    from models.bundle.directory import write_bundle
    from models.training.run import run_training

    settings = settings_from(job.settings)
    anchor = settings.features.reference_symbols[0]
    start, end = default_range(source, anchor, job.start_ms, job.end_ms, settings.train.history_days)
    storage = optuna_url(job.dsn) if (job.optuna and job.dsn and settings.train.optuna_trials > 0) else None
    work_root = Path(job.work_root) if job.work_root else None
    if work_root is not None:
        work_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="train-", dir=work_root))
    t0 = time.monotonic()
    log.info("train_start", symbols=len(job.symbols), start=fmt_ts(start), end=fmt_ts(end), source="csv" if job.candles_dir else "store")
    try:
        run = run_training(
            source, job.symbols, settings, start_ms=start, end_ms=end, work_dir=scratch / "rows", progress=progress,
            optuna_storage=storage, cache_dir=Path(job.cache_dir) if job.cache_dir else None,
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    created = int(time.time() * 1000)
    code = job.code_version or code_version()
    manifest = bundle_manifest(run, created_ms=created, code=code)
    version = new_version(created, manifest)
    path = write_bundle(job.models_dir, version, run.predictor, manifest)
    from models.bundle.champion import audit_reason, degenerate_reason

    # a degenerate bundle (no validation trades, a one-round booster) or one that failed the
    # leakage audit is recorded as rejected, with the reason, and cannot be promoted
    reason = degenerate_reason({**manifest, "version": version}) or audit_reason(manifest)
    status = "rejected" if reason else "candidate"
    metrics = summary_metrics(run) | ({"reason": reason} if reason else {})
    out = TrainOutcome(run, version, path, status, created, code, metrics, start, end,
                       round(time.monotonic() - t0, 1))  # fmt: skip
    wf = out.metrics.get("walk_forward") or {}
    log.info("train_done", version=version, path=str(path), status=status, seconds=out.seconds,
             pf=wf.get("profit_factor"), trades=wf.get("trades"), expectancy=wf.get("expectancy"))  # fmt: skip
    return out


async def record_outcome(pool: Any, out: TrainOutcome) -> None:
    """Insert the bundle into model_versions."""
    from bot.store.model_versions import record_model_version

    await record_model_version(
        pool, version=out.version, path=str(out.path.resolve()), created_ts=out.created_ms, status=out.status,
        data_from_ts=out.start, data_to_ts=out.end, code_version=out.code, metrics=out.metrics,
    )  # fmt: skip


def run_train_job(job: TrainJob, progress: Any = None) -> dict[str, Any]:
    """The whole job in this process: open the source, train, write, record; return a summary."""
    if job.candles_dir:
        source: HistorySource = CsvCandleSource(job.candles_dir)
    elif job.dsn:
        source = StoreCandleSource.connect(job.dsn)
    else:
        raise TrainingSetupError("no candle source: pass a candle directory or a database DSN")
    try:
        out = train_and_write(job, source, progress)
    finally:
        source.close()
    if job.record and job.dsn:
        asyncio.run(_record(job.dsn, out))
    return out.summary()


async def _record(dsn: str, out: TrainOutcome) -> None:
    from bot.store.db import Store

    store = await Store.connect(dsn, pool_min=1, pool_max=1)
    try:
        await record_outcome(store.pool, out)
    finally:
        await store.close()


def _job_entry(job: TrainJob) -> dict[str, Any]:
    """Entry point inside the spawned process: log lines as progress."""
    from models.progress import LogProgress

    return run_train_job(job, LogProgress())


def train_in_subprocess(job: TrainJob, timeout: float | None = None) -> dict[str, Any]:
    """Run the job in a fresh spawned process and wait for its summary."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        return ex.submit(_job_entry, job).result(timeout=timeout)


async def train_async(job: TrainJob) -> dict[str, Any]:
    """`train_in_subprocess` for the event loop: awaits without blocking it."""
    ex = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return await asyncio.get_running_loop().run_in_executor(ex, _job_entry, job)
    finally:
        ex.shutdown(wait=False)
