"""`bot research` end to end over a real Postgres, on both real periods: choose on 2021, judge
once on a named October-2023 outer block, report per month, and promote only past the floor."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from bot.cli.main import main
from tests.support.shared_data import DATA_DIR_2023, shared_data_or_skip

pytestmark = pytest.mark.slow  # two small research runs (1 variant x 2 rules, 2 inner folds + the outer fit)

SYMBOLS = "BTCUSDT,ETHUSDT,ADAUSDT,DOGEUSDT"  # all four are in both periods
GRID = {
    "name": "tiny", "promote": True,
    "layout": {"inner_folds": 2, "fold_days": 4},
    "extra_rule": [{"cadence_minutes": 15, "top_k": 1, "floor": True}, {"cadence_minutes": 15, "er_threshold": -1.0}],
    "base": {"train.lightgbm.num_boost_round": 20, "train.catboost.iterations": 20, "train.threads": 1,
             "train.meta_min_samples": 30, "train.regime_fit_days": 5},
    "selection": {"min_trades": 5, "min_fold_trades": 1},
}  # fmt: skip


def _config(tmp: Path, db_dsn: str, name: str, **trading: object) -> Path:
    cfg = {"symbols": SYMBOLS.split(","), "database": {"dsn": db_dsn}, "logging": {"console": False},
           "paths": {"data_dir": str(tmp / name / "var"), "models_dir": str(tmp / "models"), "logs_dir": str(tmp / name / "logs")},
           "trading": trading}  # fmt: skip
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _research(cfg: Path, grid: Path, out: Path) -> list[str]:
    data = shared_data_or_skip()
    shared_data_or_skip(DATA_DIR_2023)
    return ["--config", str(cfg), "research", str(grid), "--candles", str(data), "--candles", str(DATA_DIR_2023),
            "--symbols", SYMBOLS, "--from", "2021-04-02", "--to", "2021-04-20", "--outer", "2023-09-30T15:00..2023-10-12",
            "--out", str(out)]  # fmt: skip


def test_research_judges_a_named_outer_block_per_month_and_promotes_only_past_the_floor(
    tmp_path: Path, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "tiny.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    # 1. the shipped floor (PF 1.05 over 300 trades): a 12-day block of 4 symbols cannot clear it
    rc = main(_research(_config(tmp_path, db_dsn, "a"), grid, tmp_path / "a-report"))
    assert rc == 0, capsys.readouterr().err
    cap = capsys.readouterr()
    rep = json.loads((tmp_path / "a-report.json").read_text())
    out = rep["outer"]
    assert out["window"][0] >= 1_696_086_000_000 and out["window"][1] == 1_697_068_800_000  # the named block
    assert sorted(out["symbols"]) == sorted(SYMBOLS.split(","))
    months = out["months"]["months"]
    assert list(months) == ["2023-09", "2023-10"] and months["2023-09"]["trades"] == 0  # features still warming up
    assert sum(m["trades"] for m in months.values()) == out["figures"]["trades"]
    for r in rep["rows"]:  # every configuration's inner figures per month add up to its pooled figure
        assert list(r["months"]) == ["2021-04"] and r["months"]["2021-04"]["trades"] == r["inner"]["trades"]
        assert r["stability"]["months"] == 1
    plan = rep["promotion"]
    assert not plan["promote"] and "does not clear the floor" in plan["line"] and "keeps watching" in plan["line"]
    assert plan["line"] in cap.out and plan["line"] in cap.err
    md = (tmp_path / "a-report.md").read_text()
    assert "## Per calendar month" in md and "Stability on the outer block" in md

    # 2. a floor the block clears: the bundle is promoted and records the rule it was chosen with
    rc = main(_research(_config(tmp_path, db_dsn, "b", min_validation_pf=0.0, min_validation_trades=1), grid,
                        tmp_path / "b-report"))  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    rep_b = json.loads((tmp_path / "b-report.json").read_text())
    assert rep_b["outer"]["figures"]["trades"] >= 1, rep_b["outer"]["figures"]
    plan_b = rep_b["promotion"]
    assert plan_b["promote"] and "promoting" in plan_b["line"]
    from bot.store.db import Store
    from bot.store.model_versions import champion, get_model_version

    async def versions() -> tuple:
        store = await Store.connect(db_dsn, pool_min=1, pool_max=1)
        try:
            return await champion(store.pool), await get_model_version(store.pool, plan["version"])
        finally:
            await store.close()

    champ, rejected = asyncio.run(versions())
    assert champ is not None and champ.version == plan_b["version"]
    assert rejected is not None and rejected.status == "rejected" and "floor" in rejected.metrics["reason"]
    from bot.engine import Engine, TradingConfig
    from models.bundle.directory import load_bundle

    bundle = load_bundle(champ.path)
    from models.trading.rules import EntryLevers

    assert EntryLevers.from_manifest(bundle.manifest) == EntryLevers.model_validate(rep_b["chosen"]["rule"])
    eng = Engine(SYMBOLS.split(","), bundle, trading=TradingConfig(min_validation_pf=0, min_validation_trades=1))
    assert eng.rule_source != "config" and "on 15m closes" in eng.rule.describe()
    assert not eng.watch_only  # its recorded walk-forward is the outer block, which cleared this floor
