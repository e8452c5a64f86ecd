"""The research runner on real candles (4 symbols, ~3 weeks, tiny boosters).

- a small grid runs end to end (inner folds, choice, outer block, audit, table);
- a re-run trains nothing (fold scores and the outer fit come from the cache);
- the choice cannot see the outer block: perturbing every candle at or after the inner end
  leaves every inner figure and the choice unchanged (while the outer figures do change);
- the default entry rule on cached scores reproduces the trainer's `evaluate_window`;
- two worker processes on one study in a real Postgres train no variant twice.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest

from bot.training.job import optuna_url
from models.candles import candle_files, read_candles_csv
from models.research.entry import EntryRule, simulate
from models.research.grid import parse_grid
from models.research.runner import LimitedSource, Setup, research, run_workers
from models.research.table import markdown
from models.timeutil import parse_time
from models.training.run import Settings

pytestmark = pytest.mark.slow  # real training runs

SYMS = ["BTCUSDT", "ETHUSDT", "ADAUSDT", "XRPUSDT"]
START, END = parse_time("2021-04-02"), parse_time("2021-04-26")
INNER_END = parse_time("2021-04-22")
TINY = {"train.lightgbm.num_boost_round": 20, "train.catboost.iterations": 20, "train.threads": 1}


def _grid(horizons: list[int] = [60, 240], name: str = "t") -> object:  # noqa: B006
    return parse_grid({"name": name, "train": {"labels.horizon_bars": horizons},
                       "rule": {"cadence_minutes": [1, 15], "top_k": [None, 1]}, "base": TINY,
                       "selection": {"min_trades": 5}})  # fmt: skip


def _setup(candles: Path, tmp: Path, tag: str = "a") -> Setup:
    return Setup(candles_dir=str(candles), universes={"default": SYMS}, base_settings=Settings.default().to_dict(),
                 data_start=START, data_end=END, cache_dir=str(tmp / f"cache-{tag}"), work_root=str(tmp / f"work-{tag}"),
                 outer_days=4, inner_folds=2)  # fmt: skip


def _trained_log(setup: Setup) -> list[str]:
    p = Path(setup.cache_dir) / "research" / "trained.log"
    return p.read_text().split("\n")[:-1] if p.exists() else []


def test_small_grid_end_to_end_and_cached_rerun(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = _setup(data_dir, tmp_path)
    grid = _grid()
    rep = research(setup, grid, storage=None, name="s1")
    m = rep["meta"]
    assert m["configurations"] == 8 and m["completed_variants"] == 2 and m["trained_here"] == 2
    assert len(rep["rows"]) == 8 and len(_trained_log(setup)) == 2
    assert m["inner"] == [START, INNER_END]
    for res in rep["results"]:
        assert len(res["diagnostics"]) == 2 and all(d["rows"] > 1000 for d in res["diagnostics"])
        assert all(len(r["folds"]) == 2 for r in res["rules"])
    out = rep["outer"]
    assert rep["chosen"] is not None and out is not None and out["trained"]
    assert out["window"][0] >= INNER_END and out["window"][1] == END
    assert out["deflated_sharpe"]["n_trials"] == 8 and out["audit"]["enabled"] and "passed" in out["audit"]
    assert out["maker_entry"]["trades"] == out["figures"]["trades"]
    if out["figures"]["trades"]:
        assert out["maker_entry"]["expectancy"] > out["figures"]["expectancy"]  # 2 bp less entry cost, same trades
    ref = rep["reference"]  # today's configuration (horizon 60, default rule) on the same outer block
    assert ref is not None or rep["chosen"]["rule_label"] == "default rule"
    text = markdown(rep)
    assert "configurations tried: 8" in text and "(chosen)" in text

    # a re-run (new study, same cache) must not train: make any training fail loudly
    import models.training.run

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("training during a cached re-run")

    monkeypatch.setattr(models.training.run, "fit_window", boom)
    monkeypatch.setattr(models.training.run, "prepare", boom)
    again = research(setup, grid, storage=None, name="s2")
    assert again["meta"]["trained_here"] == 0 and not again["outer"]["trained"]
    assert len(_trained_log(setup)) == 2
    assert [r["inner"] for r in again["rows"]] == [r["inner"] for r in rep["rows"]]
    assert again["outer"]["figures"] == out["figures"]


def _perturbed_copy(src: Path, dst: Path, after_ms: int) -> None:
    """The 4 symbols' files with every candle at or after `after_ms` scaled by random factors."""
    dst.mkdir()
    files = candle_files(src, SYMS)
    rng = np.random.default_rng(7)
    for path in files.values():
        c = read_candles_csv(path)
        k = c.ts >= after_ms
        f = np.ones(len(c))
        f[k] = np.exp(np.cumsum(rng.standard_normal(k.sum()) * 0.003))
        o, h, lo, cl = c.open * f, c.high * f, c.low * f, c.close * f
        h, lo = np.maximum.reduce([h, o, cl]), np.minimum.reduce([lo, o, cl])
        with gzip.open(dst / path.name, "wt") as fh:
            fh.write("ts,open,high,low,close,volume\n")
            for row in zip(c.ts.tolist(), o.tolist(), h.tolist(), lo.tolist(), cl.tolist(), c.volume.tolist(), strict=True):
                fh.write(",".join(map(repr, row)) + "\n")


def test_choice_cannot_see_the_outer_block(data_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "perturbed"
    _perturbed_copy(data_dir, other, INNER_END)
    grid = _grid([60], name="sep")
    a = research(_setup(data_dir, tmp_path, "a"), grid, storage=None, name="a", audit=False, reference=False)
    b = research(_setup(other, tmp_path, "b"), grid, storage=None, name="b", audit=False, reference=False)
    assert [r["inner"] for r in a["rows"]] == [r["inner"] for r in b["rows"]]
    assert [d["ic_pooled"] for d in a["results"][0]["diagnostics"]] == [d["ic_pooled"] for d in b["results"][0]["diagnostics"]]
    assert a["chosen"]["rule_label"] == b["chosen"]["rule_label"] and a["chosen"]["variant"] == b["chosen"]["variant"]
    # the perturbation is real: the outer block's figures differ
    assert a["outer"]["figures"] != b["outer"]["figures"]
    # and the guard: while choosing, a source refuses any range past the inner end
    with pytest.raises(RuntimeError, match="past the inner end"):
        LimitedSource(object(), INNER_END).load("BTCUSDT", START, INNER_END + 60_000)


def test_default_rule_reproduces_the_trainer_simulation(data_dir: Path, tmp_path: Path) -> None:
    from bot.history.sources import CsvCandleSource
    from models.config import TrainConfig
    from models.evaluation.scores import fold_scores
    from models.training.featureset import FeatureSet
    from models.training.run import evaluate_window, fit_window, prepare
    from models.training.splits import Window

    base = Settings.default()
    train = TrainConfig.model_validate({**base.train.model_dump(), "threads": 1, "catboost": {"iterations": 20},
                                        "lightgbm": {"num_boost_round": 20}})  # fmt: skip
    st = Settings(base.features, base.labels, base.costs, train)
    valid = Window(parse_time("2021-04-16T01:00"), INNER_END)
    prep = prepare(CsvCandleSource(data_dir), SYMS, st, FeatureSet(st.features), tmp_path / "rows", start_ms=START,
                   end_ms=INNER_END, valid_from_ms=valid.start, want_train=True)  # fmt: skip
    pred, _ = fit_window(prep, Window(START, parse_time("2021-04-16")), st, tmp_path)
    pred.er_threshold = 0.0  # enough trades to compare
    ref = evaluate_window(prep, pred, valid, st).report
    fs = fold_scores(prep, pred, valid)
    mine = simulate(fs, EntryRule(), er_threshold=0.0, meta_threshold=st.train.meta_threshold, round_trip=0.0024)
    assert ref["overall"]["trades"] > 20
    assert mine["overall"] == ref["overall"] and mine["signal_rate"] == ref["signal_rate"]


def test_two_workers_share_one_study_and_train_nothing_twice(data_dir: Path, tmp_path: Path, db_dsn: str) -> None:
    setup = _setup(data_dir, tmp_path)
    grid = _grid([60, 120, 240], name="workers")
    url = optuna_url(db_dsn)
    run_workers(setup, grid, url, "w", 2)
    log = _trained_log(setup)
    assert len(log) == 3 and len({line.split()[1] for line in log}) == 3  # each variant trained exactly once
    study = optuna.load_study(study_name="w", storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["variant"] for t in done) == sorted(v.id for v in grid.train)
    # a third worker joining later finds the grid done and trains nothing
    run_workers(setup, grid, url, "w", 1)
    assert len(_trained_log(setup)) == 3
    shutil.rmtree(tmp_path / "work-a", ignore_errors=True)
