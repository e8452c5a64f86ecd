"""Optuna on er with the study in the project's Postgres: a second worker joins the same study."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import optuna
import pytest

from bot.training.job import optuna_url
from models.training.tuning import TUNED, study_name, tune_er


def _datasets() -> tuple[lgb.Dataset, lgb.Dataset]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 5)).astype(np.float32)
    y = (x[:, 0] * 0.3 + np.sin(x[:, 1]) * 0.2 + rng.standard_normal(4000) * 0.5).astype(np.float32)
    params = {"max_bin": 63, "feature_pre_filter": False, "verbose": -1}
    tr = lgb.Dataset(x[:3000], y[:3000], params=params)
    va = lgb.Dataset(x[3000:], y[3000:], reference=tr, params=params)
    return tr, va


BASE = {"objective": "regression", "metric": "l2", "num_threads": 1, "verbose": -1, "seed": 0, "bagging_freq": 1,
        "num_leaves": 31, "learning_rate": 0.05}  # fmt: skip


@pytest.mark.slow
def test_study_in_postgres_is_shared_between_workers(db_dsn: str) -> None:
    url = optuna_url(db_dsn)
    assert url.startswith("postgresql+psycopg://")
    name = study_name({"window": [1, 2], "features": ["a", "b"]})
    assert name == study_name({"features": ["a", "b"], "window": [1, 2]})  # key order does not matter
    tr, va = _datasets()
    params1, info1 = tune_er(tr, va, BASE, n_trials=2, storage=url, name=name, seed=1, num_boost_round=50,
                             early_stopping_rounds=10)  # fmt: skip
    assert info1["trials_total"] == 2 and info1["storage"] == "rdb"
    # a second machine: same URL and name, its own trials land in the same study
    params2, info2 = tune_er(tr, va, BASE, n_trials=2, storage=url, name=name, seed=2, num_boost_round=50,
                             early_stopping_rounds=10)  # fmt: skip
    assert info2["trials_total"] == 4
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 4
    assert info2["best_l2"] == min(t.value for t in study.trials)
    assert set(info2["best_params"]) == set(TUNED)
    assert {k: params2[k] for k in TUNED} == info2["best_params"]
    assert params2["objective"] == "regression"  # base params kept


def test_zero_trials_keeps_the_config_params() -> None:
    tr, va = _datasets()
    params, info = tune_er(tr, va, BASE, n_trials=0, storage=None, name="x", seed=0, num_boost_round=10,
                           early_stopping_rounds=5)  # fmt: skip
    assert params == BASE and info["trials_total"] == 0
