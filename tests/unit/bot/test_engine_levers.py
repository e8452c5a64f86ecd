"""The research levers of the one entry rule (cadence, cross-section top-k, cost multiple) are
applied by the engine exactly as `models.trading.rules.EntryRule` defines them, so a lever chosen by the
research runner trades the same way in the daemon and the backtest."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bot.backtest.runner import load_window, run_backtest
from bot.engine import Engine, TradingConfig
from models.config import CostConfig
from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS
from models.trading.costs import Costs
from risk.config import RiskConfig
from tests.support.engine import SYMBOLS

pytestmark = pytest.mark.slow  # real bundle + real candles; part of make test

FLOOR_OFF = TradingConfig(min_validation_pf=0, min_validation_trades=0)
RISK = RiskConfig(cooldown_after_stop_minutes=0)


@pytest.fixture(scope="module")
def window(engine_source, engine_bundle):  # noqa: ANN001, ANN201
    start = engine_bundle.data_range[1] + HOUR_MS
    end = start + DAY_MS
    eng = Engine(SYMBOLS, engine_bundle)
    return start, end, load_window(engine_source, eng.symbols, start, end, eng.features.warmup)


def _run(engine_source, engine_bundle, window, **levers):  # noqa: ANN001, ANN003, ANN202
    start, end, data = window
    trading = FLOOR_OFF.model_copy(update=levers)
    return run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=trading, risk=RISK,
                        costs=CostConfig(), data=data)  # fmt: skip


def _candidates(res):  # noqa: ANN001, ANN202
    """Decision rows of candidates that passed the entry rule (entered or skipped), not exits."""
    return [d for d in res.decisions if d.action in ("enter", "skip")]


def test_cadence_and_top_k_are_applied_by_the_engine(engine_source, engine_bundle, window) -> None:  # noqa: ANN001
    base = _candidates(_run(engine_source, engine_bundle, window))
    assert len(base) >= 50
    per_minute = Counter(d.ts for d in base)
    assert max(per_minute.values()) > 1  # several candidates in one minute: top-k has work to do
    assert any((d.ts // MINUTE_MS + 1) % 15 for d in base)  # off-cadence candidates exist

    cad = _candidates(_run(engine_source, engine_bundle, window, entry_cadence_minutes=15))
    assert cad, "a 15-minute cadence still decides at quarter-hour closes"
    assert all((d.ts // MINUTE_MS + 1) % 15 == 0 for d in cad)
    # which rows pass the rule does not depend on positions: the cadence keeps exactly the
    # base run's candidates at quarter-hour closes
    on_cadence = {(d.ts, d.symbol) for d in base if (d.ts // MINUTE_MS + 1) % 15 == 0}
    assert {(d.ts, d.symbol) for d in cad} == on_cadence

    top1 = _candidates(_run(engine_source, engine_bundle, window, entry_top_k=1))
    assert top1
    assert max(Counter(d.ts for d in top1).values()) == 1
    # the survivor of a minute is that minute's highest er among the base candidates
    best = {}
    for d in base:
        if d.ts not in best or d.er > best[d.ts].er:
            best[d.ts] = d
    assert {(d.ts, d.symbol) for d in top1} <= {(t, d.symbol) for t, d in best.items()}


def test_cost_multiple_replaces_the_er_threshold(engine_source, engine_bundle, window) -> None:  # noqa: ANN001
    res = _run(engine_source, engine_bundle, window, entry_cost_multiple=0.5)
    floor = 0.5 * Costs.from_config(CostConfig()).round_trip
    cands = _candidates(res)
    assert cands and all(d.er > floor for d in cands)
    assert f"er > {floor:g}" in res.status_line


# the level-free rules (issue 20): the engine applies them exactly as the simulation does
TRAINER_PROFILE = FLOOR_OFF.model_copy(update={"sizing": "equal_slots", "entry_rule": "config"})
LEVEL_FREE = {
    "top_k": {"entry_top_k": 2, "entry_floor": True, "entry_cadence_minutes": 15},
    "quantile": {"entry_quantile": 0.8, "entry_quantile_days": 1.0, "entry_floor": True, "entry_cadence_minutes": 15},
}


@pytest.mark.parametrize("name", sorted(LEVEL_FREE))
def test_level_free_rules_trade_as_the_simulation(engine_source, engine_bundle, tmp_path, name) -> None:  # noqa: ANN001
    from models.evaluation.bundle_eval import evaluate_bundle
    from models.trading.rules import EntryLevers

    keys = LEVEL_FREE[name]
    levers = EntryLevers(**{k.removeprefix("entry_"): v for k, v in keys.items()})
    start = engine_bundle.data_range[1] + HOUR_MS
    end = start + 4 * DAY_MS
    rep = evaluate_bundle(engine_source, engine_bundle, start_ms=start, end_ms=end, work_dir=tmp_path / "e", with_trades=True,
                          levers=levers)  # fmt: skip
    res = run_backtest(engine_source, engine_bundle, SYMBOLS, start, end, trading=TRAINER_PROFILE.model_copy(update=keys),
                       risk=RiskConfig(min_probability=0.0))  # fmt: skip
    want = sorted((t["symbol"], t["decision_ts"], t["exit_ts"], np.float32(t["ret"])) for t in rep["trades"])
    got = sorted((t.symbol, t.decision_ts, t.exit_ts, np.float32(t.ret)) for t in res.trades)
    assert len(want) >= 40, len(want)
    assert got == want
    assert all((d // MINUTE_MS + 1) % 15 == 0 for _, d, _, _ in got)  # decisions on quarter-hour closes only
    if name == "quantile":  # nothing is entered before the trailing scores span a day
        assert min(d for _, d, _, _ in got) >= start + DAY_MS
    assert levers.label() in rep["entry_rule_levers"]


@pytest.fixture(scope="module")
def window3(engine_source, engine_bundle):  # noqa: ANN001, ANN201
    start = engine_bundle.data_range[1] + HOUR_MS
    end = start + 3 * DAY_MS
    eng = Engine(SYMBOLS, engine_bundle)
    return start, end, load_window(engine_source, eng.symbols, start, end, eng.features.warmup)


def test_the_quantile_rule_survives_a_restart(engine_bundle, window3) -> None:  # noqa: ANN001
    import json

    from bot.backtest.runner import minute_matrix
    from models.features.online import OnlineFeatureEngine

    start, end, data = window3
    trading = TRAINER_PROFILE.model_copy(update=LEVEL_FREE["quantile"] | {"entry_quantile_days": 1.0})
    kw = {"trading": trading, "risk": RISK, "costs": CostConfig()}
    a = Engine(SYMBOLS, engine_bundle, **kw)
    a.warm_up({s: c.between(None, start) for s, c in data.items()})
    minutes, bars = minute_matrix(data, a.symbols, start, end)
    cut = int(np.searchsorted(minutes, start + DAY_MS + 6 * HOUR_MS))
    for k in range(cut):
        a.step(int(minutes[k]), bars[k])
    assert len(a.trailing) > 100
    state = json.loads(json.dumps(a.state_dict()))
    def feats() -> OnlineFeatureEngine:  # the restarted daemon warms its features up to the last minute
        f = OnlineFeatureEngine(a.symbols, engine_bundle.feature_config(), regime=engine_bundle.regime_model())
        f.warm_up({s: c.between(None, start) for s, c in data.items()})
        for k in range(cut):
            f.update(int(minutes[k]), bars[k])
        return f

    b = Engine.from_state(state, SYMBOLS, engine_bundle, features=feats(), **kw)
    fresh = Engine.from_state({**state, "trailing_scores": None}, SYMBOLS, engine_bundle, features=feats(), **kw)
    assert b.trailing.threshold(int(minutes[cut])) == a.trailing.threshold(int(minutes[cut]))
    def cands(res):  # noqa: ANN001, ANN202 - candidates that passed the entry rule
        return [(d.ts, d.symbol, d.action, d.reason) for d in res.decisions if d.action in ("enter", "skip")]

    da, db, dn = [], [], []
    for k in range(cut, len(minutes)):
        da += cands(a.step(int(minutes[k]), bars[k]))
        db += cands(b.step(int(minutes[k]), bars[k]))
    for k in range(cut, min(len(minutes), cut + 600)):
        dn += cands(fresh.step(int(minutes[k]), bars[k]))
    assert len(da) >= 10 and db == da
    # without the saved scores the rule would have waited a day: the state is what carries it
    assert not dn and any(t < int(minutes[min(len(minutes) - 1, cut + 600)]) for t, *_ in da)
