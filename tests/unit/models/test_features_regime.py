"""The volatility-regime HMM: EM recovers a known model, the filter is causal and the same
vectorised or step by step, states are ordered by volatility, parameters round-trip as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.candles import read_candles_csv
from models.features.batch import fit_regime, regime_observations
from models.features.config import FeatureConfig
from models.features.errors import RegimeModelError
from models.features.regime import RegimeModel, stationary
from tests.support.shared_data import shared_data_or_skip

TRUE_MEANS = np.array([-7.5, -6.8, -5.9])
TRUE_SD = np.array([0.15, 0.2, 0.3])
TRUE_A = np.array([[0.97, 0.025, 0.005], [0.03, 0.95, 0.02], [0.01, 0.04, 0.95]])


def sample_hmm(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    states = np.empty(n, dtype=int)
    s = 0
    for t in range(n):
        states[t] = s
        s = rng.choice(3, p=TRUE_A[s])
    return TRUE_MEANS[states] + TRUE_SD[states] * rng.normal(size=n), states


def test_em_recovers_a_known_three_state_model() -> None:
    x, states = sample_hmm(4000, seed=7)
    m = RegimeModel.fit(x, n_states=3, seed=0)
    np.testing.assert_allclose(m.means, TRUE_MEANS, atol=0.05)
    np.testing.assert_allclose(np.sqrt(m.variances), TRUE_SD, rtol=0.15)
    np.testing.assert_allclose(np.diag(m.transmat), np.diag(TRUE_A), atol=0.03)
    np.testing.assert_allclose(m.startprob, stationary(m.transmat))
    np.testing.assert_allclose(m.startprob @ m.transmat, m.startprob, atol=1e-12)
    # filtered most-likely state matches the hidden state most of the time
    acc = (m.filter(x).argmax(axis=1) == states).mean()
    assert acc > 0.9
    assert m.n_obs == 4000 and np.isfinite(m.loglik)


def test_states_are_sorted_by_volatility_whatever_the_start() -> None:
    x, _ = sample_hmm(2000, seed=3)
    for seed in (0, 1, 2, 3):
        m = RegimeModel.fit(x[::-1].copy(), n_states=3, seed=seed, n_init=2)
        assert np.all(np.diff(m.means) > 0), m.means
        assert m.means[0] == pytest.approx(TRUE_MEANS[0], abs=0.1)


def test_missing_observations_only_propagate_the_transition() -> None:
    x, _ = sample_hmm(1500, seed=11)
    x_missing = x.copy()
    x_missing[::7] = np.nan
    m = RegimeModel.fit(x_missing, n_states=3)
    assert np.all(np.isfinite(m.means)) and m.n_obs == int(np.isfinite(x_missing).sum())
    p = np.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(m.step(p, float("nan")), p @ m.transmat)
    np.testing.assert_allclose(m.step(p, float("inf")), p @ m.transmat)


@settings(max_examples=25, deadline=None)
@given(t=st.integers(0, 598), seed=st.integers(0, 1000))
def test_filter_is_causal_and_equals_stepping(t: int, seed: int) -> None:
    if not _FITTED:
        x0, _ = sample_hmm(600, seed=5)
        m0 = RegimeModel.fit(x0, n_states=3)
        _FITTED.update(x=x0, m=m0, probs=m0.filter(x0))
    x, m, probs = _FITTED["x"], _FITTED["m"], _FITTED["probs"]
    changed = x.copy()
    changed[t + 1 :] += np.random.default_rng(seed).normal(0, 1.0, size=len(x) - t - 1)
    np.testing.assert_array_equal(m.filter(changed)[: t + 1], probs[: t + 1])
    # one step at a time from the initial state gives exactly the vectorised rows
    p = m.initial()
    for i in range(t + 1):
        p = m.step(p, float(x[i]))
    np.testing.assert_array_equal(p, probs[t])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


_FITTED: dict[str, object] = {}


def test_to_dict_is_json_and_round_trips_exactly() -> None:
    x, _ = sample_hmm(800, seed=2)
    m = RegimeModel.fit(x, n_states=2, meta={"symbol": "BTCUSDT"})
    d = json.loads(json.dumps(m.to_dict()))
    m2 = RegimeModel.from_dict(d)
    assert m2.n_states == 2 and m2.meta == {"symbol": "BTCUSDT"}
    for a in ("means", "variances", "transmat", "startprob"):
        np.testing.assert_array_equal(getattr(m2, a), getattr(m, a))
    np.testing.assert_array_equal(m2.filter(x), m.filter(x))


def test_from_dict_rejects_malformed_models() -> None:
    x, _ = sample_hmm(400, seed=1)
    good = RegimeModel.fit(x, n_states=3).to_dict()
    with pytest.raises(RegimeModelError, match="kind"):
        RegimeModel.from_dict({**good, "kind": "other"})
    with pytest.raises(RegimeModelError, match="means"):
        RegimeModel.from_dict({k: v for k, v in good.items() if k != "means"})
    with pytest.raises(RegimeModelError, match="sum"):
        RegimeModel.from_dict({**good, "transmat": [[0.5, 0.2, 0.2]] * 3})
    with pytest.raises(RegimeModelError, match="variances"):
        RegimeModel.from_dict({**good, "variances": [1.0, -1.0, 1.0]})
    with pytest.raises(RegimeModelError, match="2 or 3"):
        RegimeModel.from_dict({**good, "means": [1.0], "variances": [1.0], "transmat": [[1.0]], "startprob": [1.0]})
    with pytest.raises(RegimeModelError, match="observations"):
        RegimeModel.fit(np.full(10, 1.0))
    with pytest.raises(RegimeModelError, match="constant"):
        RegimeModel.fit(np.full(500, 1.0))


def test_fit_on_real_btc_volatility_orders_calm_first() -> None:
    data = shared_data_or_skip()
    cfg = FeatureConfig()
    btc = read_candles_csv(data / "BTCUSDT.csv.gz").between(None, 1617321600000 + 14 * 86_400_000)
    ts, x = regime_observations(btc, cfg)
    assert np.all(np.diff(ts) == cfg.regime_minutes * 60_000)
    assert np.isfinite(x).mean() > 0.95
    m = fit_regime(btc, cfg)
    assert m.n_states == 3 and np.all(np.diff(m.means) > 0)
    assert m.meta["symbol"] == "BTCUSDT" and m.meta["minutes"] == cfg.regime_minutes
    probs = m.filter(x)
    calm = probs[:, 0] > 0.5
    wild = probs[:, 2] > 0.5
    assert calm.any() and wild.any()
    # the calm state really is where realised volatility is lowest
    assert np.nanmean(x[calm]) < np.nanmean(x[wild])
