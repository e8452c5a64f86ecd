"""Optuna, once, on the main target (`er`); the best parameters are reused for the other targets.

The seed tuned 50 trials x 4 targets (its "100 hours"); tuning only `er` and sharing the result
is the fix it proposed. Trials reuse the already-binned LightGBM Datasets (the fit part and the
calibration part of the training window), so a trial costs one boosting run, not a data pass.

The study lives wherever `storage` points: an SQLAlchemy URL (the bot passes one derived from
its Postgres DSN, `postgresql+psycopg://...`) lets several machines join the same study by
name; None keeps it in memory. `models/` never opens a database itself: optuna does, from the
URL it is handed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

TUNED = ("num_leaves", "learning_rate", "min_data_in_leaf", "feature_fraction", "bagging_fraction", "lambda_l2")


def study_name(key: dict[str, Any]) -> str:
    """A stable study name for one tuning problem (same data range + features + labels)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"er-{digest}"


def tune_er(
    train_set: Any,
    valid_set: Any,
    base_params: dict[str, Any],
    *,
    n_trials: int,
    storage: str | None,
    name: str,
    seed: int,
    num_boost_round: int,
    early_stopping_rounds: int,
    on_trial: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `n_trials` trials (joining any earlier ones of the same study); return (params, info).

    `params` is `base_params` updated with the best trial's values (which may come from another
    machine's trial); `info` records the study name, trial counts and the best validation l2.
    """
    import lightgbm as lgb
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    if storage:
        store: Any = optuna.storages.RDBStorage(storage, engine_kwargs={"pool_pre_ping": True})
    else:
        store = None
    study = optuna.create_study(study_name=name, storage=store, direction="minimize", sampler=sampler, load_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        p = dict(base_params)
        p.update(
            num_leaves=trial.suggest_int("num_leaves", 15, 255, log=True),
            learning_rate=trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            min_data_in_leaf=trial.suggest_int("min_data_in_leaf", 50, 3000, log=True),
            feature_fraction=trial.suggest_float("feature_fraction", 0.5, 1.0),
            bagging_fraction=trial.suggest_float("bagging_fraction", 0.5, 1.0),
            lambda_l2=trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        )
        evals: dict[str, Any] = {}
        booster = lgb.train(
            p, train_set, num_boost_round=num_boost_round, valid_sets=[valid_set], valid_names=["calib"],
            callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False), lgb.record_evaluation(evals)],
        )  # fmt: skip
        best = float(booster.best_score["calib"]["l2"])
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        if on_trial is not None:
            on_trial()
        return best

    if n_trials > 0:
        study.optimize(objective, n_trials=n_trials, gc_after_trial=True)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    params = dict(base_params)
    info: dict[str, Any] = {"study": name, "storage": "rdb" if storage else "memory", "trials_here": n_trials,
                            "trials_total": len(done)}  # fmt: skip
    if done:
        params.update({k: v for k, v in study.best_params.items() if k in TUNED})
        info["best_l2"] = float(study.best_value)
        info["best_params"] = {k: study.best_params[k] for k in study.best_params if k in TUNED}
    return params, info
