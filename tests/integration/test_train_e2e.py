"""End to end on real candles (3 symbols, 10 days): walk-forward, audit, bundle, evaluate.

The acceptance check in miniature: a bundle trained on [Apr 2, Apr 10) and evaluated on the
following days reports exactly the walk-forward fold of a run over [Apr 2, Apr 12) whose
training window is [Apr 2, Apr 10). And a feature that peeks at t+1 is caught by the audit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.bundle.directory import load_bundle, write_bundle
from models.candles import Candles, candle_files, read_candles_csv
from models.config import CatBoostParams, LightGBMParams, Settings, TrainConfig
from models.evaluation.bundle_eval import evaluate_bundle
from models.training.featureset import FeatureSet
from models.training.prepare import TrainError
from models.training.run import run_training
from tests.support.shared_data import shared_data_or_skip

pytestmark = pytest.mark.slow  # real LightGBM/CatBoost walk-forward runs: about a minute and a half

DAY = 86_400_000
APR2 = 1_617_321_600_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


class Source:
    """Real CSV candles, each file parsed once per test module."""

    def __init__(self, directory: Path):
        self.files = candle_files(directory, SYMBOLS)
        self.cache: dict[str, Candles] = {}

    def load(self, symbol: str, start: int | None, end: int | None) -> Candles:
        if symbol not in self.cache:
            self.cache[symbol] = read_candles_csv(self.files[symbol])
        return self.cache[symbol].between(start, end)


def small_settings(**train: object) -> Settings:
    # 10 days are too few for a model to clear a +0.1 % net-return gate often, so the test
    # gates at -1 % to exercise the simulation, the meta model and the audit on many trades
    base = Settings.default()
    kw: dict = dict(
        threads=1, folds=1, fold_days=2, regime_fit_days=3, row_stride=2, meta_min_samples=30,
        er_threshold=-0.01, seed_metric_threshold=-0.01,
        lightgbm=LightGBMParams(num_boost_round=60, min_data_in_leaf=50),
        catboost=CatBoostParams(iterations=30, max_rows=2000),
    )  # fmt: skip
    tcfg = TrainConfig(**(kw | train))
    return Settings(base.features, base.labels, base.costs, tcfg)


@pytest.fixture(scope="module")
def source() -> Source:
    return Source(shared_data_or_skip())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def wf_run(source: Source, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    work = tmp_path_factory.mktemp("wf") / "rows"
    return run_training(source, SYMBOLS, small_settings(), start_ms=APR2, end_ms=APR2 + 10 * DAY, work_dir=work,
                        cache_dir=cache_dir)  # fmt: skip


def test_walk_forward_report_and_clean_audit(wf_run) -> None:
    (fold,) = wf_run.walk_forward["folds"]
    assert fold["fold"]["train_end"] == APR2 + 8 * DAY
    assert fold["fold"]["valid_start"] == APR2 + 8 * DAY + 60 * 60_000
    o = fold["overall"]
    assert o["trades"] > 0 and set(fold["per_symbol"]) == set(SYMBOLS)
    assert sum(s["trades"] for s in fold["per_symbol"].values()) == o["trades"]
    assert fold["seed_metric"]["bars"] >= o["trades"]  # overlapping bars vs one-slot trades
    audit = wf_run.audit
    assert audit["lookahead"]["columns"] == [] and audit["lookahead"]["symbols"]["BTCUSDT"]["checked_rows"] > 0
    assert audit["permuted"]["top"]["trades"] > 0
    assert audit["passed"], audit.get("reasons")
    info = wf_run.fit_info
    assert 0.0 <= info["ensemble"]["w_lgb"] <= 1.0
    assert info["lightgbm"]["rows_fit"] > 1000 and info["catboost"]["rows"] <= 2000
    assert wf_run.stats["train_rows"] > 0 and wf_run.stats["stride"] == 2


def test_bundle_trained_on_the_fold_window_reproduces_the_fold(wf_run, source: Source, tmp_path: Path,
                                                               cache_dir: Path) -> None:  # fmt: skip
    fold = wf_run.walk_forward["folds"][0]
    settings = small_settings(folds=0, audit=False)
    run = run_training(source, SYMBOLS, settings, start_ms=APR2, end_ms=fold["fold"]["train_end"], work_dir=tmp_path / "w",
                       cache_dir=cache_dir)  # fmt: skip
    # same data range, features and settings as the fold: the feature selection comes from the cache
    assert fold["fit"]["selection"]["cache"] == "miss" and run.fit_info["selection"]["cache"] == "hit"
    assert run.predictor.features == [f for f in wf_run.feature_names if f in run.predictor.features]
    manifest = {
        "feature_names": run.feature_names, "feature_config": settings.features.model_dump(mode="json"),
        "label_config": settings.labels.model_dump(mode="json"), "cost_config": settings.costs.model_dump(mode="json"),
        "train_config": settings.train.model_dump(mode="json"), "data_from_ts": run.start, "data_to_ts": run.end,
        "embargo_ms": settings.train.embargo_bars * 60_000, "symbols": SYMBOLS, "regime": run.regime.to_dict(),
    }  # fmt: skip
    path = write_bundle(tmp_path / "models", "v1", run.predictor, manifest)
    bundle = load_bundle(path)
    rep = evaluate_bundle(source, bundle, end_ms=APR2 + 10 * DAY, load_from_ms=0, work_dir=tmp_path / "e")
    assert rep["window"]["start"] == fold["fold"]["valid_start"]
    assert rep["overall"] == fold["overall"]
    assert rep["per_symbol"] == fold["per_symbol"]
    assert rep["seed_metric"] == fold["seed_metric"]
    assert rep["primary_only"] == fold["primary_only"]
    assert rep["overall"]["trades"] > 0
    assert not rep["overlaps_training"]


class LeakyFeatures(FeatureSet):
    """The engine's features plus one that peeks at the next bar (a deliberate leak)."""

    def __init__(self, cfg) -> None:  # noqa: ANN001
        super().__init__(cfg)
        self.names = [*self.names, "leak_next_ret"]

    def compute(self, sym, refs, regime):  # noqa: ANN001, ANN201
        x = super().compute(sym, refs, regime)
        leak = np.full(len(sym), np.nan, dtype=np.float32)
        leak[:-1] = np.log(sym.close[1:] / sym.close[:-1])
        leak[np.isnan(x[:, self.atr_frac_col])] = np.nan
        return np.column_stack([x, leak]).astype(np.float32)


def test_injected_look_ahead_is_caught(source: Source, tmp_path: Path) -> None:
    settings = small_settings()
    run = run_training(source, SYMBOLS, settings, start_ms=APR2, end_ms=APR2 + 10 * DAY, work_dir=tmp_path / "w",
                       featureset=LeakyFeatures(settings.features))  # fmt: skip
    assert not run.audit["passed"]
    assert run.audit["lookahead"]["columns"] == ["leak_next_ret"]
    assert any("look-ahead" in r for r in run.audit["reasons"])
    assert "leak_next_ret" in run.predictor.features  # the model did pick the leak up


def test_embargo_shorter_than_the_label_horizon_is_refused(source: Source, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="embargo_bars"):
        run_training(source, SYMBOLS, small_settings(embargo_bars=10), start_ms=APR2, end_ms=APR2 + 10 * DAY,
                     work_dir=tmp_path / "w")  # fmt: skip


def test_optuna_tunes_er_once_and_the_other_targets_reuse_it(source: Source, tmp_path: Path) -> None:
    run = run_training(source, SYMBOLS, small_settings(folds=0, audit=False, optuna_trials=3), start_ms=APR2,
                       end_ms=APR2 + 10 * DAY, work_dir=tmp_path / "w")  # fmt: skip
    opt = run.fit_info["lightgbm"]["optuna"]
    assert opt["trials_total"] == 3 and opt["storage"] == "memory"
    used = run.fit_info["params"]
    assert {k: used[k] for k in opt["best_params"]} == opt["best_params"]
    # every target's booster was trained with the tuned tree shape
    for t, b in run.predictor.lgb.items():
        assert int(b.params["num_leaves"]) == opt["best_params"]["num_leaves"], t
