"""Hot-swap of a bundle whose feature config is unchanged but whose regime model was refitted
(every retrain fits one): the online feature buffers are kept and only the regime filter is
re-run under the new model, over the observations the feature engine kept. Real candles of
../shared/data, the small real bundle of tests/support/engine.py.

The reference for "correct": a feature engine built with the new regime model from the
start and fed the same minutes. After the swap, the kept engine must hold exactly its regime
probabilities and produce exactly its feature rows, minute after minute."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.backtest.runner import load_window, minute_matrix
from models.features.online import OnlineFeatureEngine
from models.features.regime import RegimeModel
from models.timeutil import DAY_MS, HOUR_MS
from tests.support.engine import SYMBOLS

pytestmark = pytest.mark.slow  # real bundle + real candles


def refitted(old: RegimeModel) -> RegimeModel:
    """Another regime model for the same observation (what a retrain's refit gives): other
    state means, variances and transitions, the same meta (window, step, symbol)."""
    t = old.transmat * np.array([0.9, 1.0, 1.1][: old.n_states])
    return RegimeModel(means=old.means + 0.35, variances=old.variances * 1.6, transmat=t / t.sum(axis=1, keepdims=True),
                       startprob=old.startprob[::-1].copy(), meta=dict(old.meta))  # fmt: skip


@pytest.fixture(scope="module")
def minutes_bars(engine_source: Any, engine_bundle: Any) -> tuple[np.ndarray, np.ndarray]:
    """From a warm-up before the day after the bundle's training data to the end of that day."""
    probe = OnlineFeatureEngine(SYMBOLS, engine_bundle.feature_config(), regime=engine_bundle.regime_model())
    start = engine_bundle.data_range[1] + HOUR_MS
    data = load_window(engine_source, SYMBOLS, start, start + DAY_MS, probe.warmup)
    return minute_matrix(data, SYMBOLS, start - probe.warmup * 60_000, start + DAY_MS)


def test_a_refitted_regime_is_refiltered_over_the_kept_observations_exactly(engine_bundle: Any, minutes_bars: Any) -> None:
    cfg, old = engine_bundle.feature_config(), engine_bundle.regime_model()
    new = refitted(old)
    minutes, bars = minutes_bars
    kept = OnlineFeatureEngine(SYMBOLS, cfg, regime=old)
    ref = OnlineFeatureEngine(SYMBOLS, cfg, regime=new)  # had the new model all along
    cut = kept.warmup + 6 * 60  # warm, then six hours of trading with the old model
    assert cut < len(minutes) - 600
    for k in range(cut):
        kept.update(int(minutes[k]), bars[k])
        ref.update(int(minutes[k]), bars[k])
    assert kept.warm.all()
    assert not np.allclose(kept.regime_probs, ref.regime_probs, atol=1e-3)  # the two models disagree now
    cols = kept.layout.regime
    probs = kept.regime_probs_under(new)
    assert np.array_equal(kept.regime_probs, kept.regime_probs_under(old))  # nothing changed by asking
    kept.set_regime(new, probs)
    assert np.array_equal(kept.regime_probs, ref.regime_probs)
    for k in range(cut, len(minutes)):
        a = kept.update(int(minutes[k]), bars[k])
        b = ref.update(int(minutes[k]), bars[k])
        assert np.array_equal(a, b, equal_nan=True), k
    assert np.isfinite(a[:, cols]).all()


def test_engine_and_daemon_swap_keep_the_feature_engine_when_only_the_regime_changed(engine_bundle: Any, minutes_bars: Any,
                                                                                     tmp_path: Path) -> None:  # fmt: skip
    import asyncio

    from bot.engine import Engine, TradingConfig
    from bot.live.hotswap import ChampionFollower
    from models.bundle.directory import load_bundle

    minutes, bars = minutes_bars
    p = shutil.copytree(engine_bundle.path, tmp_path / "refit")
    m = json.loads((p / "manifest.json").read_text())
    m["version"] += "-refit"
    m["regime"] = refitted(engine_bundle.regime_model()).to_dict()
    (p / "manifest.json").write_text(json.dumps(m))
    bundle = load_bundle(p)
    assert bundle.feature_config() == engine_bundle.feature_config()

    floor_off = TradingConfig(min_validation_pf=0, min_validation_trades=0)
    eng = Engine(SYMBOLS, engine_bundle, trading=floor_off)
    ref = Engine(SYMBOLS, bundle, trading=floor_off)  # had the refitted regime all along
    cut = eng.features.warmup + 120
    for k in range(cut):
        eng.features.update(int(minutes[k]), bars[k])
        ref.features.update(int(minutes[k]), bars[k])
    eng._sync_from_features()
    ref._sync_from_features()

    class Trader:  # what the follower reads of bot.live.trader.LiveTrader
        engine = eng

    assert asyncio.run(ChampionFollower(Trader())._features_for(bundle)) is None  # no rebuild from the store
    feats = eng.features
    eng.swap_bundle(bundle)
    assert eng.features is feats and eng.model_version == bundle.version
    assert np.array_equal(eng.features.regime_probs, ref.features.regime_probs)
    seen = 0
    for k in range(cut, cut + 240):  # the same decisions as an engine that had the new bundle from the start
        ra, rb = eng.step(int(minutes[k]), bars[k]), ref.step(int(minutes[k]), bars[k])
        da = [(d.symbol, d.action, d.reason, d.er, d.probability) for d in ra.decisions]
        assert da == [(d.symbol, d.action, d.reason, d.er, d.probability) for d in rb.decisions], k
        seen += len(da)
    assert seen >= 10
    # a different feature config still needs a rebuilt, warmed-up feature engine
    other = shutil.copytree(engine_bundle.path, tmp_path / "other")
    m = json.loads((other / "manifest.json").read_text())
    m["feature_config"]["regime_minutes"] = 5
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(Exception, match="feature config differs|regime|fitted on a different observation"):
        eng.swap_bundle(load_bundle(other))
    assert eng.features is feats and eng.model_version == bundle.version
