"""MarketRules from real ccxt market structures: ccxt's own Binance parser turns an exchangeInfo
symbol (the REST format) into a unified market, and we read the lot step and limits from it."""

from __future__ import annotations

import pytest

from risk.errors import RiskInputError
from risk.market import DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE, MarketRules, MarketRulesTable

# One symbol of Binance's GET /api/v3/exchangeInfo, in the exchange's format (strings).
ETHUSDT_INFO = {
    "symbol": "ETHUSDT", "status": "TRADING", "baseAsset": "ETH", "baseAssetPrecision": 8,
    "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
    "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
        {"filterType": "LOT_SIZE", "minQty": "0.00010000", "maxQty": "9000.00000000", "stepSize": "0.00010000"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "2000.50000000", "stepSize": "0.00000000"},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
    ],
    "permissions": [], "permissionSets": [["SPOT"]],
}  # fmt: skip


@pytest.fixture(scope="module")
def binance():
    import ccxt

    ex = ccxt.binance()
    # parse_market looks these up; load_markets would fetch them over the network
    ex.options["crossMarginPairsData"] = []
    ex.options["isolatedMarginPairsData"] = []
    return ex


def test_precision_mode_constants_match_ccxt():
    import ccxt

    assert (TICK_SIZE, DECIMAL_PLACES, SIGNIFICANT_DIGITS) == (ccxt.TICK_SIZE, ccxt.DECIMAL_PLACES, ccxt.SIGNIFICANT_DIGITS)


def test_from_a_binance_market_parsed_by_ccxt(binance):
    market = binance.parse_market(ETHUSDT_INFO)
    r = MarketRules.from_ccxt(market, binance.precisionMode)
    assert r.qty_step == 0.0001 and r.qty_decimals == 4
    assert r.min_qty == 0.0001  # LOT_SIZE minQty (MARKET_LOT_SIZE reports 0)
    assert r.max_qty == 2000.5  # the market-order limit is stricter than LOT_SIZE's 9000
    assert r.min_notional == 5.0
    assert r.max_notional == 9_000_000.0


def test_decimal_places_mode_and_missing_limits():
    market = {"symbol": "X/USDT", "precision": {"amount": 3}, "limits": {"amount": {"min": None}}}
    r = MarketRules.from_ccxt(market, DECIMAL_PLACES)
    assert r.qty_step == pytest.approx(0.001) and r.qty_decimals == 3
    assert (r.min_qty, r.min_notional, r.max_qty, r.max_notional) == (0.0, 0.0, None, None)


def test_unusable_markets_are_refused():
    with pytest.raises(RiskInputError, match="precision.amount is missing"):
        MarketRules.from_ccxt({"symbol": "X/USDT", "precision": {}}, TICK_SIZE)
    with pytest.raises(RiskInputError, match="not supported"):
        MarketRules.from_ccxt({"symbol": "X/USDT", "precision": {"amount": 4}}, SIGNIFICANT_DIGITS)
    with pytest.raises(RiskInputError, match="qty_step"):
        MarketRules(qty_step=0.0)


def test_table_aligns_with_the_universe():
    t = MarketRulesTable(("A", "B", "C"), {"C": MarketRules(1.0, 2.0, 10.0, 5.0), "A": MarketRules(0.5)})
    assert t.known.tolist() == [True, False, True]
    assert t.qty_step[2] == 1.0 and t.min_qty[2] == 2.0 and t.max_qty[2] == 5.0
    assert t.max_notional[0] == float("inf") and t.qty_decimals[0] == 1
