"""The backtest report: figures checked against numbers worked out by hand on a small constructed
account, the edge cases (no trades, one symbol, no losses), and the page rendered in headless
Chromium (DOM values and pixels of the picture)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bot.backtest.report import write_report
from bot.backtest.report.chart import BENCH, STRATEGY, envelope
from bot.backtest.report.metrics import compute_metrics
from bot.engine.records import ClosedTrade, EquityPoint
from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, parse_time
from tests.support.headless_chromium import color_share, dump_dom, probe_box, screenshot, with_probe

T0 = parse_time("2021-05-03")  # a Monday: ISO week 2021-W18
T1 = parse_time("2021-05-13")  # ten days later, a Thursday of 2021-W19
INITIAL = 1000.0


def trade(sym: str, day: int, hour: int, minutes: int, qty: float, px_in: float, px_out: float, fees: float,
          pnl: float, ret: float, reason: str = "tp") -> ClosedTrade:  # fmt: skip
    entry = T0 + day * DAY_MS + hour * HOUR_MS
    return ClosedTrade(sym, entry - MINUTE_MS, entry, entry + minutes * MINUTE_MS, qty, px_in, px_out, fees, pnl, ret,
                       reason, 0.003, 0.62, "v-test")  # fmt: skip


# Five round trips, two symbols, two ISO weeks. Per-trade returns 2 %, -1 %, 3 %, -2 %, 1 %.
TRADES = [
    trade("BTCUSDT", 0, 10, 120, 0.01, 50000, 51000, 1.01, 8.99, 0.02),
    trade("ETHUSDT", 1, 5, 60, 0.1, 3000, 2970, 0.60, -5.0, -0.01, "sl"),
    trade("BTCUSDT", 3, 8, 60, 0.01, 50000, 51500, 1.00, 15.0, 0.03),
    trade("ETHUSDT", 7, 1, 60, 0.1, 3000, 2940, 0.50, -10.0, -0.02, "sl"),
    trade("BTCUSDT", 8, 2, 60, 0.01, 40000, 40400, 0.40, 4.0, 0.01, "timeout"),
]
# Marked-to-market equity, one snapshot at 23:59 of each of the ten days.
EQ = [1010.0, 1000.0, 1020.0, 1020.0, 969.0, 1000.0, 1030.0, 1030.0, 1020.0, 1040.0]
GROSS = [0.0, 500.0, 0.0, 0.0, 96.9, 0.0, 0.0, 0.0, 0.0, 0.0]
EQUITY = [EquityPoint(T0 + (d + 1) * DAY_MS - MINUTE_MS, e, e - g, g, int(g > 0)) for d, (e, g) in enumerate(zip(EQ, GROSS, strict=True))]
META = dict(title="Backtest test", in_sample=False, bundle_version="v-test", trained_from_ts=parse_time("2021-04-02"),
            trained_to_ts=parse_time("2021-04-30"), from_ts=T0, to_ts=T1, symbols=["BTCUSDT", "ETHUSDT"],
            initial_equity=INITIAL, fee_rate=0.001, slippage_bps=2.0)  # fmt: skip
SKIPS = {"correlation": 2, "low_probability": 7, "symbol_filled": 1}
# BTC closes: one before the window (must be ignored), then five inside it.
BENCH_TS = np.array([T0 - DAY_MS] + [T0 + i * 2 * DAY_MS for i in range(5)], dtype=np.int64)
BENCH_CLOSE = np.array([1.0, 100.0, 110.0, 88.0, 99.0, 120.0])


def _metrics(**kw) -> dict:
    args = dict(trades=TRADES, equity=EQUITY, benchmark=(BENCH_TS, BENCH_CLOSE), skips=SKIPS, meta=META)
    args.update(kw)
    return compute_metrics(args["trades"], args["equity"], args["benchmark"], args["skips"], args["meta"])


def test_trade_figures_by_hand() -> None:
    m = _metrics()["overall"]["trades"]
    assert "per-trade" in m["basis"]
    assert m["trades"] == 5
    assert m["win_rate"] == pytest.approx(0.6)
    assert m["profit_factor"] == pytest.approx((0.02 + 0.03 + 0.01) / (0.01 + 0.02))  # 2.0
    assert m["expectancy"] == pytest.approx(0.006)
    assert m["fees_paid"] == pytest.approx(1.01 + 0.60 + 1.00 + 0.50 + 0.40)
    assert m["net_pnl"] == pytest.approx(12.99)
    assert m["profit_factor_pnl"] == pytest.approx((8.99 + 15.0 + 4.0) / 15.0)
    assert m["avg_hold_minutes"] == pytest.approx((120 + 60 + 60 + 60 + 60) / 5)
    # t of the mean: sample variance of the returns is 0.00172 / 4
    assert m["expectancy_t"] == pytest.approx(0.006 / math.sqrt(0.00172 / 4 / 5))
    from scipy import stats

    ref = stats.ttest_1samp([0.02, -0.01, 0.03, -0.02, 0.01], 0.0)
    assert m["expectancy_p_value"] == pytest.approx(ref.pvalue)
    lo, hi = m["expectancy_ci95"]
    assert -0.02 < lo < 0.006 < hi < 0.03
    assert _metrics()["overall"]["trades"]["expectancy_ci95"] == [lo, hi]  # fixed seed: reproducible


def test_portfolio_figures_by_hand() -> None:
    p = _metrics()["overall"]["portfolio"]
    assert "equity curve" in p["basis"]
    assert p["initial_equity"] == INITIAL and p["final_equity"] == 1040.0
    assert p["total_return"] == pytest.approx(0.04)
    assert p["days"] == pytest.approx(10.0)
    assert p["annualised_return"] == pytest.approx(1.04 ** 36.5 - 1.0)
    # peak 1020 (day 2) -> trough 969 (day 4)
    assert p["max_drawdown"] == pytest.approx(51.0 / 1020.0)
    assert p["max_drawdown_quote"] == pytest.approx(51.0)
    assert p["max_drawdown_peak_ts"] == EQUITY[2].ts and p["max_drawdown_trough_ts"] == EQUITY[4].ts
    curve = [INITIAL, *EQ]
    daily = np.array([curve[i + 1] / curve[i] - 1.0 for i in range(10)])
    assert p["sharpe_daily"] == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(365))
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in daily) / 10)
    assert p["sortino_daily"] == pytest.approx(daily.mean() / downside * math.sqrt(365))
    assert p["exposure"] == pytest.approx((500 / 1000 + 96.9 / 969) / 10)
    assert p["time_in_market"] == pytest.approx(0.2)
    notional = 0.01 * 101000 + 0.1 * 5970 + 0.01 * 101500 + 0.1 * 5940 + 0.01 * 80400
    assert p["turnover"] == pytest.approx(notional / (sum(curve) / len(curve)))
    assert p["fees_paid"] == pytest.approx(3.51)


def test_per_symbol_per_week_benchmark_skips() -> None:
    m = _metrics()
    btc, eth = m["per_symbol"]["BTCUSDT"], m["per_symbol"]["ETHUSDT"]
    assert btc["trades"] == 3 and btc["win_rate"] == 1.0
    assert btc["profit_factor"] is None  # no loss: undefined, not infinity in JSON
    assert btc["fees_paid"] == pytest.approx(2.41) and btc["net_pnl"] == pytest.approx(27.99)
    assert btc["max_drawdown"] == pytest.approx(0.0)
    assert btc["exposure"] == pytest.approx(240 / (10 * 1440))
    assert eth["profit_factor"] == pytest.approx(0.0)
    assert eth["max_drawdown"] == pytest.approx(0.015)  # realised: 1 -> 0.995 -> 0.985
    assert "realised" in eth["drawdown_basis"]

    w = m["per_week"]
    assert list(w) == ["2021-W18", "2021-W19"]
    w18, w19 = w["2021-W18"], w["2021-W19"]
    assert (w18["trades"], w19["trades"]) == (3, 2)
    assert w18["profit_factor"] == pytest.approx(5.0) and w19["profit_factor"] == pytest.approx(0.5)
    assert w18["net_pnl"] == pytest.approx(18.99) and w19["net_pnl"] == pytest.approx(-6.0)
    assert w18["fees_paid"] == pytest.approx(2.61) and w19["fees_paid"] == pytest.approx(0.9)
    assert w18["return"] == pytest.approx(0.03) and w19["return"] == pytest.approx(1040 / 1030 - 1)
    assert w18["max_drawdown"] == pytest.approx(51 / 1020) and w19["max_drawdown"] == pytest.approx(10 / 1030)
    assert (w18["from_ts"], w18["to_ts"], w19["to_ts"]) == (T0, T0 + 7 * DAY_MS, T1)

    b = m["benchmark"]
    assert b["total_return"] == pytest.approx(0.2)
    assert b["max_drawdown"] == pytest.approx(22 / 110)
    assert b["final_equity"] == pytest.approx(1200.0)
    assert set(m["bases"]) == {"overall.trades", "overall.portfolio", "per_symbol", "per_week", "benchmark"}
    assert m["skips"] == {"counts": {"low_probability": 7, "correlation": 2, "symbol_filled": 1}, "total": 10, "protections": 0}


def test_write_report_files(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    m = write_report(out, trades=TRADES, equity=EQUITY, benchmark=(BENCH_TS, BENCH_CLOSE), skips=SKIPS, meta=META)
    assert sorted(p.name for p in out.iterdir()) == ["equity.png", "metrics.json", "report.html", "trades.csv"]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == m
    assert on_disk["meta"]["from"] == "2021-05-03 00:00" and on_disk["meta"]["trained_to"] == "2021-04-30 00:00"

    rows = list(csv.DictReader((out / "trades.csv").open()))
    assert len(rows) == 5
    assert [r["exit_ts"] for r in rows] == sorted(r["exit_ts"] for r in rows)
    first = rows[0]
    assert first["symbol"] == "BTCUSDT" and first["entry_time"] == "2021-05-03T10:00:00Z"
    assert int(first["entry_ts"]) == parse_time(first["entry_time"])
    assert first["exit_time"] == "2021-05-03T12:00:00Z" and first["hold_minutes"] == "120"
    assert float(first["pnl"]) == 8.99 and first["exit_reason"] == "tp"

    import matplotlib.image as mpimg

    png = mpimg.imread(out / "equity.png")
    assert png.shape[0] > 400 and png.shape[1] > 800
    assert color_share(png[..., :3], STRATEGY) > 0.0005  # the equity line is drawn
    assert color_share(png[..., :3], BENCH) > 0.0005  # and the buy-and-hold line

    page = (out / "report.html").read_text()
    assert "src=\"http" not in page and "href=\"http" not in page and "<link" not in page and "<script" not in page
    assert "data:image/png;base64," in page
    assert "1620036000000" not in page  # times as dates, never epoch ms
    assert "2021-05-03 10:00" in page


def test_zero_trades(tmp_path: Path) -> None:
    flat = [EquityPoint(T0 + i * HOUR_MS, INITIAL, INITIAL, 0.0, 0) for i in range(48)]
    m = write_report(tmp_path, trades=[], equity=flat, benchmark=None, skips={"low_probability": 12}, meta=META)
    t = m["overall"]["trades"]
    assert t["trades"] == 0
    for k in ("win_rate", "profit_factor", "expectancy", "expectancy_t", "expectancy_ci95", "avg_hold_minutes"):
        assert t[k] is None, k
    p = m["overall"]["portfolio"]
    assert p["total_return"] == 0.0 and p["max_drawdown"] == 0.0
    assert p["sharpe_daily"] is None and p["sortino_daily"] is None  # flat curve: undefined
    assert m["benchmark"] is None
    assert all(b["trades"] == 0 for b in m["per_symbol"].values())
    page = (tmp_path / "report.html").read_text()
    assert "No trades in this window" in page
    assert (tmp_path / "trades.csv").read_text().count("\n") == 1  # the header only
    # and nothing at all: no equity either
    m2 = write_report(tmp_path / "empty", trades=[], equity=[], benchmark=None, skips={}, meta={})
    assert m2["overall"]["trades"]["trades"] == 0 and m2["window"] is None
    assert (tmp_path / "empty" / "report.html").is_file() and (tmp_path / "empty" / "equity.png").is_file()


def test_one_symbol_without_losses(tmp_path: Path) -> None:
    wins = [t for t in TRADES if t.symbol == "BTCUSDT"]
    meta = {**META, "symbols": ["BTCUSDT"], "in_sample": True}
    m = write_report(tmp_path, trades=wins, equity=EQUITY, benchmark=None, skips={}, meta=meta)
    t = m["overall"]["trades"]
    assert t["trades"] == 3 and t["win_rate"] == 1.0 and t["avg_loss"] is None
    assert t["profit_factor"] is None and t["profit_factor_pnl"] is None
    assert list(m["per_symbol"]) == ["BTCUSDT"]
    page = (tmp_path / "report.html").read_text()
    assert "<title>Backtest test (in-sample)</title>" in page
    assert 'data-metric="profit_factor"><div class="label">Profit factor</div><div class="value pos">∞' in page \
        or 'data-metric="profit_factor"><div class="label">Profit factor</div><div class="value ">∞' in page


def test_envelope_keeps_extremes() -> None:
    ts = np.arange(60_000, dtype=np.int64)
    y = np.sin(ts / 900.0)
    y[31_337] = -5.0
    x2, y2 = envelope(ts, y, 4000)
    assert len(y2) <= 4100 and y2.min() == -5.0 and y2.max() == y.max() and x2[0] == 0 and x2[-1] == ts[-1]


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    meta = {**META, "in_sample": True}
    m = write_report(out, trades=TRADES, equity=EQUITY, benchmark=(BENCH_TS, BENCH_CLOSE), skips=SKIPS, meta=meta)
    probed = with_probe(out / "report.html", "equity-chart", tmp_path / "probed.html")
    height = 1500
    dom = dump_dom(probed.as_uri(), height)
    # the summary: title and the values of the cards, as the browser parsed them
    assert "<title>Backtest test (in-sample)</title>" in dom
    assert 'class="badge insample">in-sample' in dom
    pf = f"{m['overall']['trades']['profit_factor']:.2f}"
    for key, text in [("profit_factor", pf), ("trades", "5"), ("total_return", "+4.00%"),
                      ("max_drawdown", "5.00%"), ("fees_paid", "3.51"), ("benchmark_return", "+20.00%")]:  # fmt: skip
        assert f'data-metric="{key}"><div class="label">' in dom, key
        card = dom.split(f'data-metric="{key}">', 1)[1].split("</div></div>", 1)[0]
        assert f">{text}<" in card, (key, card)
    assert "BTCUSDT" in dom and "low probability" in dom and "v-test" in dom
    assert "2021-04-02 00:00 .. 2021-04-30 00:00 UTC" in dom  # the training window, as dates

    left, top, w, h, natural = probe_box(dom, "equity-chart")
    assert natural > 800, "the embedded PNG did not decode"
    assert w > 900 and h > 400 and top + h <= height, (left, top, w, h)
    px = screenshot(probed.as_uri(), tmp_path / "shot.png", height)
    assert px.shape[:2] == (height, 1280)
    chart = px[top : top + h, left : left + w]
    assert chart.std() > 0.05, "the picture's region is blank"
    assert color_share(chart, STRATEGY) > 0.0005 and color_share(chart, BENCH) > 0.0005
    above = px[: max(1, top - 60)]
    assert color_share(above, STRATEGY) < color_share(chart, STRATEGY)  # the lines are inside the box
