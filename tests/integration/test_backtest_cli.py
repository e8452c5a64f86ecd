"""`bot backtest` from the command line: candles straight from a directory, the report, the
in-sample refusal and the watch-only message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bot.cli.main import main
from models.timeutil import fmt_ts
from tests.support.shared_data import shared_data_or_skip

pytestmark = pytest.mark.slow  # real bundle + real candles; part of make test


def _config(tmp_path: Path, **trading: object) -> str:
    cfg = {"paths": {"data_dir": str(tmp_path / "var"), "models_dir": str(tmp_path / "models"), "logs_dir": str(tmp_path / "logs")},
           "risk": {"cooldown_after_stop_minutes": 0}, "trading": trading}  # fmt: skip
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_backtest_cli_writes_the_report_and_refuses_in_sample(engine_bundle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    data = shared_data_or_skip()
    cfg = _config(tmp_path, min_validation_pf=0.0, min_validation_trades=0)
    trained_to = engine_bundle.data_range[1]
    t1 = fmt_ts(trained_to + 86_400_000 + 3_600_000).replace(" ", "T")
    out = tmp_path / "bt"
    rc = main(["--config", cfg, "backtest", "--model", str(engine_bundle.path), "--candles", str(data), "--to", t1, "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "trades, PF" in text and "symbol-bars/s" in text
    metrics = json.loads((out / "metrics.json").read_text())
    rows = (out / "trades.csv").read_text().splitlines()
    assert len(rows) >= 50 + 1
    assert metrics["overall"]["trades"]["trades"] == len(rows) - 1 and metrics["meta"]["in_sample"] is False
    assert (out / "equity.png").stat().st_size > 1000 and "<html" in (out / "report.html").read_text()

    # a window inside the training data is refused, and allowed (and labelled) on request
    t0 = fmt_ts(trained_to - 86_400_000).replace(" ", "T")
    t1 = fmt_ts(trained_to - 43_200_000).replace(" ", "T")
    args = ["--config", cfg, "backtest", "--model", str(engine_bundle.path), "--candles", str(data), "--from", t0, "--to", t1,
            "--out", str(tmp_path / "in")]  # fmt: skip
    assert main(args) == 1
    assert "overlaps the bundle's training data" in capsys.readouterr().err
    assert main([*args, "--allow-in-sample"]) == 0
    assert json.loads((tmp_path / "in" / "metrics.json").read_text())["meta"]["in_sample"] is True
    assert "(in-sample)" in (tmp_path / "in" / "report.html").read_text()


def test_backtest_cli_says_watch_only_with_the_default_floor(engine_bundle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    data = shared_data_or_skip()
    cfg = _config(tmp_path)
    t1 = fmt_ts(engine_bundle.data_range[1] + 6 * 3_600_000).replace(" ", "T")
    rc = main(["--config", cfg, "backtest", "--model", str(engine_bundle.path), "--candles", str(data), "--to", t1, "--out",
               str(tmp_path / "w")])  # fmt: skip
    assert rc == 0
    cap = capsys.readouterr()
    assert "has no validated edge: PF 0.97 < 1.05, watching only" in cap.err + cap.out
    assert "0 trades" in cap.out


def test_walk_forward_trains_each_window_and_tests_the_next(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = shared_data_or_skip()
    cfg = {
        "symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT"],
        "paths": {"data_dir": str(tmp_path / "var"), "models_dir": str(tmp_path / "models"), "logs_dir": str(tmp_path / "logs")},
        "costs": {"fee_rate": 0.0, "slippage_bps": 0.0},
        "risk": {"cooldown_after_stop_minutes": 0},
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0},
        "train": {"threads": 1, "folds": 1, "fold_days": 2, "regime_fit_days": 3, "row_stride": 3, "meta_min_samples": 30,
                  "er_threshold": -0.002, "meta_threshold": 0.45, "audit": False,
                  "lightgbm": {"num_boost_round": 30, "min_data_in_leaf": 50}, "catboost": {"iterations": 20, "max_rows": 2000}},
    }  # fmt: skip
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "wf"
    rc = main(["--config", str(p), "backtest", "--walk-forward", "--candles", str(data), "--from", "2021-04-02",
               "--to", "2021-04-16", "--train-days", "9", "--test-days", "2.5", "--out", str(out)])  # fmt: skip
    assert rc == 0
    folds = json.loads((out / "folds.json").read_text())
    assert [f["fold"] for f in folds["folds"]] == [0, 1]
    f0, f1 = folds["folds"]
    assert f0["bundle"] != f1["bundle"] and f1["train"][1] == f0["train"][1] + int(2.5 * 86_400_000)
    assert f0["test"][0] == f0["train"][1] + 3_600_000  # the embargo after each training window
    assert folds["total"]["trades"] == f0["trades"] + f1["trades"] >= 20
    assert folds["total"]["final_equity"] == f1["final_equity"]
    total = json.loads((out / "metrics.json").read_text())
    assert total["overall"]["trades"]["trades"] == folds["total"]["trades"]
    assert (out / "fold0" / "report.html").exists() and (out / "fold1" / "report.html").exists()
    assert "total:" in capsys.readouterr().out


def test_backtest_from_the_store_equals_the_csv_directory(engine_bundle, tmp_path: Path, db_dsn: str) -> None:  # noqa: ANN001
    data = shared_data_or_skip()
    cfg = {
        "database": {"dsn": db_dsn},
        "paths": {"data_dir": str(tmp_path / "var"), "models_dir": str(tmp_path / "models"), "logs_dir": str(tmp_path / "logs")},
        "logging": {"console": False},
        "risk": {"cooldown_after_stop_minutes": 0},
        "trading": {"min_validation_pf": 0.0, "min_validation_trades": 0},
    }  # fmt: skip
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    c = ["--config", str(p)]
    assert main([*c, "import-candles", str(data), "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT,ADAUSDT,XRPUSDT"]) == 0
    t1 = fmt_ts(engine_bundle.data_range[1] + 86_400_000).replace(" ", "T")
    common = ["backtest", "--model", str(engine_bundle.path), "--to", t1]
    assert main([*c, *common, "--out", str(tmp_path / "store")]) == 0
    assert main([*c, *common, "--candles", str(data), "--out", str(tmp_path / "csv")]) == 0
    a = (tmp_path / "store" / "trades.csv").read_text()
    b = (tmp_path / "csv" / "trades.csv").read_text()
    assert len(a.splitlines()) >= 50 + 1 and a == b
