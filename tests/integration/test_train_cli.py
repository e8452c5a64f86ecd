"""The CLI over a real Postgres: import -> `bot train` (spawned, from the store) -> models list /
show / promote -> `bot evaluate`; and the store and CSV sources give the same walk-forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bot.cli.main import main
from tests.support.shared_data import shared_data_or_skip

pytestmark = pytest.mark.slow  # one spawned training run over the store: ~2 min

SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"


@pytest.fixture
def config_file(tmp_path: Path, db_dsn: str) -> Path:
    cfg = {
        "symbols": SYMBOLS.split(","),
        "database": {"dsn": db_dsn},
        "paths": {"data_dir": str(tmp_path / "var"), "models_dir": str(tmp_path / "var/models"),
                  "logs_dir": str(tmp_path / "var/logs")},
        "logging": {"console": False},
        "train": {
            "threads": 1, "folds": 1, "fold_days": 2, "regime_fit_days": 3, "row_stride": 2, "meta_min_samples": 30,
            "er_threshold": -0.01, "seed_metric_threshold": -0.01,
            "lightgbm": {"num_boost_round": 40, "min_data_in_leaf": 50}, "catboost": {"iterations": 20, "max_rows": 2000},
        },
    }  # fmt: skip
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_train_from_the_store_then_promote_and_evaluate(config_file: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    data = shared_data_or_skip()
    c = ["--config", str(config_file)]
    assert main([*c, "import-candles", str(data), "--symbols", SYMBOLS]) == 0
    out_json = tmp_path / "summary.json"
    rc = main([*c, "train", "--from", "2021-04-02", "--to", "2021-04-12", "--spawn", "--json", str(out_json)])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(out_json.read_text())
    version = summary["version"]
    assert summary["status"] == "candidate" and Path(summary["path"]).is_dir()
    printed = capsys.readouterr().out
    assert "| fold 1:" in printed and "leakage audit: PASSED" in printed and version in printed

    # the same run straight from the CSV files gives the same walk-forward figures
    csv_json = tmp_path / "csv.json"
    assert main([*c, "train", "--candles", str(data), "--from", "2021-04-02", "--to", "2021-04-12", "--no-record",
                 "--json", str(csv_json)]) == 0  # fmt: skip
    csv = json.loads(csv_json.read_text())
    assert csv["walk_forward"]["folds"][0]["overall"] == summary["walk_forward"]["folds"][0]["overall"]
    assert csv["walk_forward"]["folds"][0]["per_symbol"] == summary["walk_forward"]["folds"][0]["per_symbol"]
    capsys.readouterr()

    assert main([*c, "models", "list"]) == 0
    listing = capsys.readouterr().out
    assert version in listing and "candidate" in listing
    assert main([*c, "models", "show", version]) == 0
    assert "selected" in capsys.readouterr().out
    assert main([*c, "models", "promote", version]) == 0
    assert "now the champion" in capsys.readouterr().out
    assert main([*c, "models", "list"]) == 0
    assert "champion" in capsys.readouterr().out
    assert main([*c, "models", "promote", "no-such-version"]) == 1

    metrics = tmp_path / "metrics.json"
    rc = main([*c, "evaluate", "--model", version, "--candles", str(data), "--to", "2021-04-13", "--out", str(metrics)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(metrics.read_text())
    assert rep["bundle"]["version"] == version
    assert rep["window"]["start"] == summary["end"] + 3_600_000  # training end + embargo
    assert rep["overall"]["trades"] == sum(s["trades"] for s in rep["per_symbol"].values())
    assert "| symbol |" in capsys.readouterr().out


def test_broken_bundle_is_not_promoted(config_file: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    import asyncio

    from bot.store.db import Store
    from bot.store.model_versions import record_model_version

    broken = tmp_path / "var/models/broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{")
    dsn = yaml.safe_load(config_file.read_text())["database"]["dsn"]

    async def rec() -> None:
        s = await Store.connect(dsn)
        try:
            await record_model_version(s.pool, version="broken", path=str(broken), created_ts=1)
        finally:
            await s.close()

    asyncio.run(rec())
    assert main(["--config", str(config_file), "models", "promote", "broken"]) == 1
    assert "refusing to promote" in capsys.readouterr().err
