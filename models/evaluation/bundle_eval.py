"""Judge an existing bundle on any candles: the same simulated trading as the walk-forward.

`evaluate_bundle` rebuilds everything the bundle was trained with from its manifest (feature
config, regime model, label and cost configs, thresholds), prepares the window's rows with the
trainer's own `prepare` (features warmed up on the data before the window), and runs the
trainer's own `evaluate_window`. There is no second implementation to drift: a bundle trained
on [t0, t1) and evaluated on [t1 + embargo, t2) reports exactly the figures the walk-forward
fold with that training window reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.bundle.directory import Bundle
from models.candles import CandleSource
from models.config import CostConfig, LabelConfig, Settings, TrainConfig
from models.evaluation.window import evaluate_window
from models.progress import Progress
from models.timeutil import MINUTE_MS
from models.trading.costs import Costs
from models.trading.rules import EntryLevers
from models.training.featureset import FeatureSet
from models.training.prepare import TrainError, prepare
from models.training.splits import Window


def bundle_settings(bundle: Bundle) -> Settings:
    m = bundle.manifest
    return Settings(
        bundle.feature_config(),
        LabelConfig.model_validate(m["label_config"]),
        CostConfig.model_validate(m["cost_config"]),
        TrainConfig.from_bundle(m["train_config"]),
    )


def evaluate_bundle(
    source: CandleSource,
    bundle: Bundle,
    *,
    end_ms: int,
    start_ms: int | None = None,
    symbols: Sequence[str] | None = None,
    load_from_ms: int | None = None,
    work_dir: Path,
    progress: Progress | None = None,
    with_trades: bool = False,
    costs: CostConfig | None = None,
    levers: EntryLevers | None = None,
) -> dict[str, Any]:
    """Simulated trading of `bundle` on [start_ms, end_ms).

    start_ms defaults to the end of the bundle's training range plus the embargo (the first
    minute it may be judged on). load_from_ms: where feature warm-up data starts (None = just
    the warm-up the features need before start_ms). costs: judge with these costs instead of
    the bundle's own (champion/challenger compares two bundles under the same costs). levers:
    the entry rule (default: the one the bundle records, as the engine trades it, else the
    bundle's thresholds); only decision minutes of its cadence are prepared and scored.
    """
    settings = bundle_settings(bundle)
    if costs is not None:
        settings = dataclasses.replace(settings, costs=costs)
    m = bundle.manifest
    if start_ms is None:
        start_ms = int(m["data_to_ts"]) + int(m.get("embargo_ms", settings.train.embargo_bars * MINUTE_MS))
    if end_ms <= start_ms:
        from models.timeutil import fmt_ts

        raise TrainError(f"empty evaluation window: start {fmt_ts(start_ms)} >= end {fmt_ts(end_ms)} (UTC)")
    trained = (int(m["data_from_ts"]), int(m["data_to_ts"]))
    syms = list(symbols) if symbols else list(m["symbols"])
    featureset = FeatureSet(settings.features)
    if featureset.names != bundle.feature_names:
        raise TrainError("the feature engine's columns differ from the bundle's; retrain the bundle")
    levers = levers or EntryLevers.from_manifest(m) or EntryLevers()
    pred = bundle.predictor
    costs_ = Costs.from_config(settings.costs)
    rule = levers.to_rule(er_threshold=float(pred.er_threshold), meta_threshold=float(pred.meta_threshold),
                          round_trip=costs_.round_trip, has_meta=pred.meta is not None)  # fmt: skip
    prep = prepare(
        source, syms, settings, featureset, Path(work_dir), start_ms=start_ms, end_ms=end_ms, valid_from_ms=start_ms,
        want_train=False, regime=bundle.regime_model(), load_from_ms=load_from_ms, progress=progress,
        valid_cadence=rule.cadence_minutes,
    )  # fmt: skip
    res = evaluate_window(prep, pred, Window(start_ms, end_ms), settings, rule=rule, progress=progress)
    rep = res.report
    rep["entry_rule_levers"] = levers.label()
    if with_trades:  # the decision is the bar before the entry
        rep["trades"] = [
            {"symbol": r.symbol, "decision_ts": e - 60_000, "entry_ts": e, "exit_ts": x, "ret": ret}
            for r in res.results
            for e, x, ret in zip(r.trades.entry_ts.tolist(), r.trades.exit_ts.tolist(), r.trades.ret.tolist(), strict=True)
        ]
    rep["bundle"] = {"version": bundle.version, "trained_from_ts": trained[0], "trained_to_ts": trained[1]}
    rep["overlaps_training"] = start_ms < trained[1] + settings.labels.horizon_bars * MINUTE_MS and end_ms > trained[0]
    return rep
