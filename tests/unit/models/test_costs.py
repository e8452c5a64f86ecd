"""The one place fees and slippage are applied: the fill helpers the paper broker prices orders
with, worked by hand, and checked against `net_return`, the closed form the labels and the
validation simulator use. If a helper dropped the slippage or the fee, a paper trade would be
priced differently from what the model was trained and judged on."""

from __future__ import annotations

import numpy as np
import pytest

from models.config import CostConfig
from models.trading.costs import Costs

C = Costs(fee_rate=0.001, slippage=0.0002)


def test_fills_and_fees_by_hand() -> None:
    assert C.buy_fill(100.0) == pytest.approx(100.02, rel=1e-12)  # pays 2 bps more
    assert C.sell_fill(100.0) == pytest.approx(99.98, rel=1e-12)  # receives 2 bps less
    assert C.fee(1000.0) == pytest.approx(1.0, rel=1e-12)  # 0.1 % of the notional
    np.testing.assert_allclose(C.buy_fill(np.array([50.0, 200.0])), [50.01, 200.04], rtol=1e-12)
    np.testing.assert_allclose(C.sell_fill(np.array([50.0, 200.0])), [49.99, 199.96], rtol=1e-12)
    # 2 units from 100 to 110: pay 2 x 100.02 = 200.04 + 0.20004 fee; receive 2 x 109.978 =
    # 219.956 - 0.219956 fee
    assert C.pnl(2.0, 100.0, 110.0) == pytest.approx((219.956 - 0.219956) - (200.04 + 0.20004), rel=1e-12)
    # a flat trade loses both fees and both slippages: 1 - 0.9998 x 0.999 / (1.0002 x 1.001)
    assert C.round_trip == pytest.approx(1 - 0.9998 * 0.999 / (1.0002 * 1.001), rel=1e-12)
    assert 0.0023 < C.round_trip < 0.0025


@pytest.mark.parametrize("costs", [C, Costs(0.00075, 0.0005), Costs(0.0, 0.001), Costs(0.002, 0.0)])
@pytest.mark.parametrize("entry,exit_", [(100.0, 100.0), (100.0, 103.7), (0.0421, 0.0398), (61_234.5, 60_000.0)])
def test_a_round_trip_through_the_fill_helpers_equals_net_return(costs: Costs, entry: float, exit_: float) -> None:
    qty = 3.0
    paid = qty * costs.buy_fill(entry)
    paid += costs.fee(paid)
    got = qty * costs.sell_fill(exit_)
    got -= costs.fee(got)
    assert got / paid - 1 == pytest.approx(costs.net_return(entry, exit_), rel=1e-12, abs=1e-15)
    assert costs.pnl(qty, entry, exit_) == pytest.approx(got - paid, rel=1e-12, abs=1e-12)
    # and both against the formula written out: sell x (1 - s)(1 - f) / (buy x (1 + s)(1 + f)) - 1
    s, f = costs.slippage, costs.fee_rate
    by_hand = exit_ * (1 - s) * (1 - f) / (entry * (1 + s) * (1 + f)) - 1
    assert costs.net_return(entry, exit_) == pytest.approx(by_hand, rel=1e-12, abs=1e-15)


def test_net_return_is_vectorised_like_the_scalar_form() -> None:
    entry = np.array([100.0, 100.0, 2.5])
    exit_ = np.array([101.0, 99.0, 2.5])
    np.testing.assert_allclose(C.net_return(entry, exit_), [C.net_return(a, b) for a, b in zip(entry, exit_, strict=True)])


def test_from_config_reads_slippage_in_basis_points() -> None:
    c = Costs.from_config(CostConfig(fee_rate=0.00075, slippage_bps=5))
    assert c.fee_rate == 0.00075 and c.slippage == pytest.approx(0.0005)
    assert c.buy_fill(1000.0) == pytest.approx(1000.5)


def test_implausible_costs_are_refused() -> None:
    with pytest.raises(ValueError, match="implausible"):
        Costs(fee_rate=0.1)
    with pytest.raises(ValueError, match="implausible"):
        Costs(slippage=-0.0001)
