"""The research levers of the one entry rule (cadence, cross-section top-k, cost multiple) are
applied by the engine exactly as `models.trading.rules.EntryRule` defines them, so a lever chosen by the
research runner trades the same way in the daemon and the backtest."""

from __future__ import annotations

from collections import Counter

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
