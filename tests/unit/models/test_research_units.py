"""Research runner pieces on small synthetic inputs: grid, entry levers, IC, deflated Sharpe, xs target."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from models.evaluation.scores import FoldScores
from models.labels.cross_section import relative_to_cross_section
from models.research.deflated import deflated_sharpe, expected_max_sharpe
from models.research.diagnostics import signal_diagnostics
from models.research.entry import EntryRule, signal_mask, simulate, top_k_mask
from models.research.grid import GridError, apply_overrides, parse_grid
from models.research.nested import nested_split
from models.trading.costs import Costs
from models.training.splits import DAY_MS, Window
from tests.support.scores import synthetic_scores

T0 = 1_617_321_600_000  # 2021-04-02 00:00 UTC


def _scores(n_sym: int = 6, minutes: int = 3 * 1440, seed: int = 0, skill: float = 0.0) -> FoldScores:
    return synthetic_scores(n_sym, minutes, seed, skill)


def test_grid_product_extras_and_errors() -> None:
    g = parse_grid({"name": "g", "train": {"labels.horizon_bars": [60, 240], "labels.base_k_tp": [1.5, 3.0]},
                    "extra_train": [{"labels.horizon_bars": 60, "universe": "all86"},
                                    {"labels.horizon_bars": 60, "labels.base_k_tp": 1.5}],  # duplicate of a product point
                    "rule": {"cadence_minutes": [1, 15, 60], "top_k": [None, 3]}})  # fmt: skip
    assert len(g.train) == 5 and len(g.rules) == 6 and g.n_configurations == 30
    assert len({v.id for v in g.train}) == 5
    with pytest.raises(GridError, match="horizon"):
        parse_grid({"train": {"horizon_bars": [60]}})
    with pytest.raises(GridError, match="cadence"):
        parse_grid({"rule": {"cadence": [1]}})
    with pytest.raises(GridError, match="non-empty list"):
        parse_grid({"train": {"labels.horizon_bars": []}})
    with pytest.raises(GridError, match="unknown field 'nope'"):
        apply_overrides({"labels": {"horizon_bars": 60}}, {"labels.nope": 1})
    d = apply_overrides({"labels": {"horizon_bars": 60}, "train": {"lightgbm": {"num_leaves": 31}}},
                        {"labels.horizon_bars": 240, "train.lightgbm.num_leaves": 7})  # fmt: skip
    assert d == {"labels": {"horizon_bars": 240}, "train": {"lightgbm": {"num_leaves": 7}}}


def test_nested_split_keeps_outer_block_out_of_every_inner_fold() -> None:
    data = Window(T0, T0 + 42 * DAY_MS + 1226 * 60_000)
    sp = nested_split(data, outer_days=14, inner_folds=2, embargo_ms=720 * 60_000, min_train_days=14)
    outer = sp.outer(720 * 60_000)
    assert sp.inner.end == T0 + 28 * DAY_MS and outer.start == sp.inner.end + 720 * 60_000 and outer.end == data.end
    for f in sp.folds:
        assert f.train.end <= f.valid.start - 720 * 60_000 + 1 and f.valid.end <= sp.inner.end
    assert [f.valid.end for f in sp.folds] == [T0 + 21 * DAY_MS, T0 + 28 * DAY_MS]


def test_entry_levers() -> None:
    fs = _scores()
    kw = {"er_threshold": 0.001, "meta_threshold": 0.55, "round_trip": 0.0024}
    base = signal_mask(fs, EntryRule(), **kw)
    assert base.sum() == (fs.ok & (fs.er > 0.001)).sum()
    cad = signal_mask(fs, EntryRule(cadence_minutes=15), **kw)
    assert cad.sum() > 0 and np.all(((fs.ts[cad] // 60_000) + 1) % 15 == 0) and not (cad & ~base).any()
    cost = signal_mask(fs, EntryRule(cost_multiple=2.0), **kw)
    assert np.all(fs.er[cost] > 0.0048) and cost.sum() < base.sum()
    top = top_k_mask(fs, 2)
    per_minute = np.bincount(((fs.ts[top] - T0) // 60_000).astype(np.int64))
    assert per_minute.max() == 2
    # the chosen two are the two highest er of their minute
    m = (fs.ts == T0 + 100 * 60_000) & fs.ok
    best = np.sort(fs.er[m])[-2:]
    assert sorted(fs.er[m & top].tolist()) == best.tolist()
    reg = signal_mask(fs, EntryRule(regime_states=[0]), **kw)
    assert np.all(fs.regime[reg] == 0) and reg.sum() > 0
    rep = simulate(fs, EntryRule(cadence_minutes=15, top_k=1), **kw)
    assert rep["overall"]["trades"] == len(rep["trade_returns"]) > 0
    assert rep["signal_rate"] == pytest.approx(signal_mask(fs, EntryRule(cadence_minutes=15, top_k=1), **kw).sum() / fs.ok.sum())


def test_ic_sees_skill_and_not_noise() -> None:
    costs = Costs()
    good = signal_diagnostics(_scores(skill=1.0), costs)
    noise = signal_diagnostics(_scores(skill=0.0), costs)
    assert good["ic_pooled"] > 0.2 and good["ic_pooled_daily"]["t"] > 5 and good["ic_cross_sectional_daily"]["mean"] > 0.2
    assert abs(noise["ic_pooled"]) < 0.03 and abs(noise["ic_cross_sectional"]) < 0.03
    dec = good["deciles"]
    assert len(dec) == 10 and dec[-1]["gross_mean"] > dec[0]["gross_mean"]
    assert dec[-1]["gross_mean"] == pytest.approx(dec[-1]["net_mean"] + costs.round_trip, abs=2e-5)


def test_deflated_sharpe_penalises_many_trials() -> None:
    rng = np.random.default_rng(1)
    ret = rng.standard_normal(500) * 0.01 + 0.001  # per-trade Sharpe about 0.1
    trials = rng.standard_normal(200) * 0.05
    one = deflated_sharpe(ret, n_trials=1, trial_sharpes=trials)
    many = deflated_sharpe(ret, n_trials=1000, trial_sharpes=trials)
    assert one["sr0"] == 0 and one["dsr"] == pytest.approx(one["psr0"])
    assert many["sr0"] > 0.1 and many["dsr"] < one["dsr"]
    # SR0 grows with N (expected maximum of more unskilled trials)
    assert expected_max_sharpe(10, 0.01) < expected_max_sharpe(1000, 0.01)
    assert expected_max_sharpe(1000, 0.01) == pytest.approx(0.1 * 3.25, rel=0.03)


def test_cross_sectional_target_removes_the_minute_mean() -> None:
    ts = np.array([0, 60_000, 120_000], dtype=np.int64)
    train = {"A": SimpleNamespace(ts=ts, ret=np.array([0.01, 0.02, 0.0], np.float32)),
             "B": SimpleNamespace(ts=ts[:2], ret=np.array([0.03, -0.02], np.float32))}  # fmt: skip
    relative_to_cross_section(train)
    assert np.allclose(train["A"].ret, [-0.01, 0.02, 0.0]) and np.allclose(train["B"].ret, [0.01, -0.02])


def test_fold_scores_subset_and_roundtrip(tmp_path) -> None:  # noqa: ANN001
    fs = _scores(n_sym=4, minutes=200)
    sub = fs.subset(["S3USDT", "S1USDT", "NOPE"])
    assert sub.symbols == ["S3USDT", "S1USDT"] and len(sub.ts) == 400
    assert np.array_equal(sub.er[:200], fs.er[600:800]) and sub.bounds() == [(0, 200), (200, 400)]
    fs.save(tmp_path / "x.npz")
    back = FoldScores.load(tmp_path / "x.npz")
    assert back.symbols == fs.symbols and back.window == fs.window and np.array_equal(back.er, fs.er, equal_nan=True)


def test_maker_entry_costs_reprice_consistently() -> None:
    taker = Costs()
    maker = taker.maker_entry()
    assert maker.round_trip == pytest.approx(taker.round_trip - 0.0002, abs=1e-5)  # the entry's 2 bp slippage saved
    net = np.array([-0.01, 0.0, 0.02])
    again = taker.reprice(net, maker)
    assert np.allclose(again, maker.net_return(1.0, 1.0 + taker.gross_return(net)))
    assert np.all(again > net)
    # pnl and net_return agree for the asymmetric model too
    assert maker.pnl(2.0, 100.0, 103.0) / (2.0 * maker.buy_fill(100.0) * 1.001) == pytest.approx(maker.net_return(100.0, 103.0))


def test_the_one_entry_rule_carries_the_levers() -> None:
    from models.trading.rules import EntryRule as Rule
    from models.trading.rules import on_cadence

    base = Rule(0.001, 0.55)
    assert base.cadence_minutes == 1 and base.top_k is None and base.regime_states is None  # today's rule
    er = np.array([0.002, 0.002, 0.0005, 0.003])
    p = np.array([0.6, 0.6, 0.9, 0.5])
    ts = T0 + np.array([14, 15, 29, 59]) * 60_000
    assert base.mask(er, p).tolist() == [True, True, False, False]
    lev = base.with_levers(cadence_minutes=15, regime_states=(0, 1))
    with pytest.raises(ValueError, match="cadence"):
        lev.mask(er, p)
    assert lev.mask(er, p, ts=ts, regime=np.array([0, 0, 0, 0])).tolist() == [True, False, False, False]
    assert lev.mask(er, p, ts=ts, regime=np.array([2, 0, 0, 0])).tolist() == [False, False, False, False]
    assert on_cadence(ts, 60).tolist() == [False, False, False, True]
    k = base.with_cost_multiple(2.0, 0.0024)
    assert k.er_threshold == pytest.approx(0.0048) and k.p_threshold == 0.55
    assert "on 15m closes" in lev.describe() and "regime in [0, 1]" in lev.describe()
    # the research levers build exactly this rule
    r = EntryRule(cadence_minutes=15, cost_multiple=2.0, use_meta=False).to_rule(
        er_threshold=0.001, meta_threshold=0.55, round_trip=0.0024, has_meta=True)
    assert r == Rule(0.0048, None, None, 15, None, None)
    # the floor of the level-free rules: er > 0 replaces the fixed threshold
    f = EntryRule(top_k=3, floor=True).to_rule(er_threshold=0.001, meta_threshold=0.55, round_trip=0.0024, has_meta=False)
    assert f.er_threshold == 0.0 and f.top_k == 3 and f.p_threshold is None


def test_grid_extra_rules_layout_and_the_decision_cadence() -> None:
    from models.research.runner import decision_cadence

    g = parse_grid({"name": "g", "extra_rule": [{"cadence_minutes": 60, "top_k": 1, "floor": True},
                                                 {"cadence_minutes": 60, "quantile": 0.9, "floor": True},
                                                 {"cadence_minutes": 60, "top_k": 1, "floor": True}],  # a duplicate
                    "layout": {"outer_days": 61, "inner_folds": 2, "fold_days": 61}, "promote": True})  # fmt: skip
    assert len(g.rules) == 2 and g.layout.fold_days == 61 and g.promote and g.selection.rank == "stable"
    assert decision_cadence(g.rules) == 60  # only 1h closes are kept and scored
    assert decision_cadence([EntryRule(cadence_minutes=15), EntryRule(cadence_minutes=60)]) == 15
    assert decision_cadence([EntryRule(cadence_minutes=15), EntryRule()]) == 1
    with pytest.raises(GridError, match="quantile"):
        parse_grid({"extra_rule": [{"quantile": 1.5}]})


def test_the_stable_choice_prefers_every_month_profitable_over_the_best_pooled_figure() -> None:
    from models.research.runner import choose

    def row(name: str, sharpe: float, share: float, worst: float) -> dict:
        return {"variant_id": name, "rule_label": name, "eligible": True, "folds": [{"trades": 100}],
                "inner": {"trades": 300, "sharpe_trade": sharpe},
                "stability": {"months": 2, "share_pf_above_1": share, "worst_pf": worst}}  # fmt: skip

    rows = [row("best", 0.3, 0.5, 0.6), row("steady", 0.1, 1.0, 1.1), row("steadier", 0.05, 1.0, 1.3)]
    stable = parse_grid({"selection": {"min_trades": 10}})
    best = parse_grid({"selection": {"min_trades": 10, "rank": "best"}})
    assert choose(rows, stable)["variant_id"] == "steadier"  # all months profitable, the better worst month
    assert choose(rows, best)["variant_id"] == "best"


def test_nested_split_with_a_named_outer_block_in_another_year() -> None:
    data = Window(T0, T0 + 42 * DAY_MS + 1226 * 60_000)
    outer = Window(T0 + 910 * DAY_MS, T0 + 940 * DAY_MS)
    sp = nested_split(data, outer_days=14, inner_folds=3, embargo_ms=1440 * 60_000, min_train_days=14, fold_days=7,
                      outer=outer)  # fmt: skip
    assert sp.inner == data and sp.outer(1440 * 60_000) == outer  # all of the data chooses; the named block judges
    assert [f.valid.end for f in sp.folds][-1] == data.end and len(sp.folds) == 3
    assert sp.folds[0].train.end == T0 + 21 * DAY_MS


def test_csv_dirs_join_periods_and_refuse_disagreeing_overlaps(tmp_path) -> None:  # noqa: ANN001
    import gzip
    import pickle

    from models.candles import CsvDirs

    def write(d, rows) -> None:  # noqa: ANN001
        d.mkdir()
        with gzip.open(d / "BTCUSDT.csv.gz", "wt") as f:
            f.write("ts,open,high,low,close,volume\n" + "".join(f"{t},1,2,0.5,{c},3\n" for t, c in rows))

    write(tmp_path / "a", [(T0, 1.0), (T0 + 60_000, 1.5)])
    write(tmp_path / "b", [(T0 + 60_000, 1.5), (T0 + 10 * DAY_MS, 2.0)])
    src = pickle.loads(pickle.dumps(CsvDirs([tmp_path / "a", tmp_path / "b"])))
    c = src.load("BTCUSDT", None, None)
    assert c.ts.tolist() == [T0, T0 + 60_000, T0 + 10 * DAY_MS] and c.close.tolist() == [1.0, 1.5, 2.0]
    assert len(src.load("BTCUSDT", T0 + DAY_MS, T0 + 2 * DAY_MS)) == 0 and src.symbols() == ["BTCUSDT"]
    write(tmp_path / "c", [(T0 + 60_000, 9.0)])
    with pytest.raises(ValueError, match="differ at ts"):
        CsvDirs([tmp_path / "a", tmp_path / "c"]).load("BTCUSDT", None, None)
    with pytest.raises(FileNotFoundError, match="ETHUSDT"):
        src.load("ETHUSDT", None, None)
