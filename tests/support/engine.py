"""Shared by the engine/backtest tests: a small real bundle trained on real candles, cached.

The bundle is trained once per session (and cached across sessions in pytest's cache dir,
keyed by the settings and the source of `models/`), on a few symbols of `../shared/data`
with a low er gate so that it trades often: the tests compare trades, and parity over few
trades proves nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.candles import Candles, candle_files, read_candles_csv
from models.config import CatBoostParams, CostConfig, LightGBMParams, Settings, TrainConfig
from models.training.run import run_training
from tests.support.shared_data import ROOT

DAY = 86_400_000
APR2 = 1_617_321_600_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT", "XRPUSDT"]
TRAIN_END = APR2 + 9 * DAY
COSTS = CostConfig(fee_rate=0.0, slippage_bps=0.0)


class CsvSource:
    """Real CSV candles, each file parsed once."""

    def __init__(self, directory: Path, symbols: list[str] | None = None):
        self.directory = Path(directory)
        self.files = candle_files(self.directory, symbols)
        self.cache: dict[str, Candles] = {}

    def load(self, symbol: str, start: int | None, end: int | None) -> Candles:
        if symbol not in self.cache:
            self.cache[symbol] = read_candles_csv(self.files[symbol])
        return self.cache[symbol].between(start, end)


def small_settings(**train: object) -> Settings:
    base = Settings.default()
    kw: dict = dict(
        threads=1, folds=1, fold_days=2, regime_fit_days=3, row_stride=3, meta_min_samples=30,
        er_threshold=-0.002, seed_metric_threshold=-0.002, audit=False, meta_threshold=0.45,
        lightgbm=LightGBMParams(num_boost_round=40, min_data_in_leaf=50),
        catboost=CatBoostParams(iterations=25, max_rows=2000),
    )  # fmt: skip
    # low costs (a maker-fee account) so that the model's er is often positive and the risk
    # manager (which wants er > 0 and a positive Kelly fraction) takes trades in the tests
    return Settings(base.features, base.labels, COSTS, TrainConfig(**(kw | train)))


def _code_digest() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "models").rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def train_bundle(source: CsvSource, models_dir: Path, *, symbols: list[str] = SYMBOLS, start: int = APR2,
                 end: int = TRAIN_END, cache_root: Path | None = None, **train: object) -> Path:  # fmt: skip
    """Train and write a bundle (or reuse the cached one with the same key); returns its path."""
    settings = small_settings(**train)
    key = hashlib.sha256(json.dumps({"s": symbols, "a": start, "b": end, "set": settings.to_dict(), "code": _code_digest()},
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]  # fmt: skip
    if cache_root is None:
        return _train_and_write(source, symbols, settings, start, end, models_dir, key, None)
    with cache_lock(Path(cache_root)):
        cached = Path(cache_root) / key
        if (cached / "manifest.json").exists():
            return cached
        return _train_and_write(source, symbols, settings, start, end, models_dir, key, Path(cache_root))


@contextlib.contextmanager
def cache_lock(cache_root: Path) -> Iterator[None]:
    """Held while a cached bundle is looked up or trained: parallel test workers (pytest-xdist)
    share the cache, so the second one waits for the first one's bundle instead of training it again
    into the same directory."""
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _train_and_write(source: CsvSource, symbols: list[str], settings: Any, start: int, end: int, models_dir: Path,
                     key: str, cache_root: Path | None) -> Path:  # fmt: skip
    from bot.training.job import bundle_manifest, new_version
    from models.bundle.directory import write_bundle

    work = Path(models_dir) / f"work-{key}"
    run = run_training(source, symbols, settings, start_ms=start, end_ms=end, work_dir=work)
    created = 1_700_000_000_000
    manifest = bundle_manifest(run, created_ms=created, code="test")
    version = new_version(created, manifest)
    path = write_bundle(models_dir, version, run.predictor, manifest)
    if cache_root is not None:
        dest = Path(cache_root) / key
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(path, dest)
        return dest
    return path


def restarted_engine(state: dict[str, Any], bundle: Any, data: dict[str, Candles], start: int, minutes: Any, bars: Any,
                     t: int, **kwargs: Any) -> Any:  # fmt: skip
    """What a restarted daemon builds: features warmed from the candles up to the last minute it
    processed (the first `t` of `minutes`), then `Engine.from_state` on the saved `state`."""
    from bot.engine import Engine
    from models.features.online import OnlineFeatureEngine

    syms = [*SYMBOLS, *(r for r in bundle.feature_config().reference_symbols if r not in SYMBOLS)]
    feats = OnlineFeatureEngine(syms, bundle.feature_config(), regime=bundle.regime_model())
    feats.warm_up({s: c.between(None, start) for s, c in data.items()})
    for k in range(t):
        feats.update(int(minutes[k]), bars[k])
    return Engine.from_state(state, SYMBOLS, bundle, features=feats, **kwargs)
