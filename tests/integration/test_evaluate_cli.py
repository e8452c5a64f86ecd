"""`bot evaluate` on data that does not follow the bundle's training data, as a new user meets it:
missing symbols listed up front, the data's own window after warm-up, dates not epoch ms,
reference gaps warned, bases named, several directories pooled, reports under var/reports."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from bot.cli.main import main
from models.candles import candle_files, read_candles_csv
from models.timeutil import parse_time
from tests.support.shared_data import shared_data_or_skip

pytestmark = pytest.mark.slow  # real training runs

SYMS = ["BTCUSDT", "ETHUSDT", "ADAUSDT", "XRPUSDT"]


def _copy(dst: Path, syms: list[str], lo: str, hi: str, *, drop: tuple[str, str, str] | None = None) -> Path:
    """Real candles of `syms` in [lo, hi); `drop` = (symbol, from, to) removes a span of one symbol."""
    dst.mkdir(parents=True)
    files = candle_files(shared_data_or_skip(), syms)
    for sym, path in files.items():
        c = read_candles_csv(path).between(parse_time(lo), parse_time(hi))
        keep = np.ones(len(c), dtype=bool)
        if drop and drop[0] == sym:
            keep &= ~((c.ts >= parse_time(drop[1])) & (c.ts < parse_time(drop[2])))
        with gzip.open(dst / path.name, "wt") as fh:
            fh.write("ts,open,high,low,close,volume\n")
            cols = [a[keep].tolist() for a in (c.ts, c.open, c.high, c.low, c.close, c.volume)]
            for row in zip(*cols, strict=True):
                fh.write(",".join(map(repr, row)) + "\n")
    return dst


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("eval")
    cfg = {
        "symbols": SYMS,
        "paths": {"data_dir": str(tmp / "var"), "models_dir": str(tmp / "var/models"), "logs_dir": str(tmp / "var/logs")},
        "logging": {"console": False},
        "train": {"threads": 1, "folds": 0, "regime_fit_days": 3, "row_stride": 3, "meta_min_samples": 30,
                  "er_threshold": -0.01, "audit": False,
                  "lightgbm": {"num_boost_round": 20, "min_data_in_leaf": 50}, "catboost": {"iterations": 10, "max_rows": 2000}},
    }  # fmt: skip
    conf = tmp / "config.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    rc = main(["--config", str(conf), "train", "--candles", str(shared_data_or_skip()), "--symbols", ",".join(SYMS),
               "--from", "2021-04-02", "--to", "2021-04-14", "--no-record", "--json", str(tmp / "t.json")])  # fmt: skip
    assert rc == 0
    return conf, json.loads((tmp / "t.json").read_text())["version"]


def test_other_period_missing_symbol_gap_and_pooling(trained: tuple[Path, str], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    conf, version = trained
    a = _copy(tmp_path / "a", SYMS[:3], "2021-04-28", "2021-05-08", drop=("BTCUSDT", "2021-05-06T10:00", "2021-05-06T13:20"))
    b = _copy(tmp_path / "b", SYMS[:3], "2021-04-20", "2021-04-30")
    rc = main(["--config", str(conf), "evaluate", "--model", version, "--candles", str(a), "--candles", str(b)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    err = " ".join(cap.err.split())
    # the missing symbol is named up front, for each directory
    assert err.count("XRPUSDT") >= 2 and "evaluating the 3 present" in err
    # the window is the data's own range after the warm-up (the data does not follow 04-14), in dates
    assert "does not follow the bundle's training data" in err and "2021-04-28 00:00" in err
    out = cap.out
    assert not re.search(r"\b1[6-9]\d{11}\b", out)  # no epoch ms anywhere
    assert "reference BTCUSDT has no candles from 2021-05-06 10:00 to 2021-05-06 13:20 UTC (200 min)" in out
    assert "trades decided during a reference gap" in out
    assert "Basis: trades, win %, PF and expectancy are per trade" in out and "3 symbols:" in out
    assert "Pooled over 2 directories" in out and "bootstrap interval" in out
    reports = list((Path(yaml.safe_load(conf.read_text())["paths"]["data_dir"]) / "reports").glob(f"evaluate-{version}-*.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".md").exists()
    doc = json.loads(reports[0].read_text())
    assert len(doc["runs"]) == 2 and doc["pooled"]["per_trade"]["trades"] == sum(r["overall"]["trades"] for r in doc["runs"])
    warm_days = (doc["runs"][0]["window"]["start"] - parse_time("2021-04-28")) / 86_400_000
    assert 5 < warm_days < 6  # the features' warm-up


def test_named_missing_symbols_and_in_sample_warning(trained: tuple[Path, str], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    conf, version = trained
    data = str(shared_data_or_skip())
    rc = main(["--config", str(conf), "evaluate", "--model", version, "--candles", str(tmp_path / "nope")])
    assert rc == 1
    a = _copy(tmp_path / "a", SYMS[:2], "2021-04-02", "2021-04-20")
    rc = main(["--config", str(conf), "evaluate", "--model", version, "--candles", str(a), "--symbols", "ADAUSDT,XRPUSDT"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 1 and "2 symbol(s): ADAUSDT, XRPUSDT" in err
    rc = main(["--config", str(conf), "evaluate", "--model", version, "--candles", data, "--from", "2021-04-13",
               "--to", "2021-04-16", "--out", str(tmp_path / "m.json")])  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and "these figures are in-sample" in out and "looks 60 minutes ahead" in out
    assert json.loads((tmp_path / "m.json").read_text())["overlaps_training"] is True
