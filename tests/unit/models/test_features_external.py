"""The optional external daily series: joined as of the previous UTC day's close, omitted when
absent, rejected with a clear message when malformed. The values are synthetic."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from models.candles import Candles
from models.features.batch import compute_batch
from models.features.config import FeatureConfig
from models.features.errors import ExternalDataError
from models.features.external import external_from_config, load_external_daily
from models.features.online import OnlineFeatureEngine
from models.features.spec import feature_names
from models.timeutil import DAY_MS, MINUTE_MS

D0 = int(dt.datetime(2021, 4, 10, tzinfo=dt.UTC).timestamp() * 1000)


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "date,fear_greed") -> Path:
    path.write_text(header + "\n" + "".join(f"{d},{v}\n" for d, v in rows))
    return path


def test_value_of_day_d_is_used_from_the_close_at_d_plus_1_midnight(tmp_path: Path) -> None:
    f = write_csv(tmp_path / "fng.csv", [("2021-04-11", "30"), ("2021-04-10", "20"), ("2021-04-12", "")])
    ext = load_external_daily(f, ("fear_greed",), max_age_days=2)
    assert ext.day_ms.tolist() == [D0, D0 + DAY_MS, D0 + 2 * DAY_MS]  # sorted
    closes = np.array([
        D0 + DAY_MS - MINUTE_MS,  # the 04-10 23:58 bar closes at 23:59: nothing known yet
        D0 + DAY_MS,  # the 04-10 23:59 bar closes at 04-11 00:00: day 04-10 is complete
        D0 + 2 * DAY_MS - 1,  # last instant of 04-11: still 04-10
        D0 + 2 * DAY_MS,  # 04-12 00:00: 04-11
        D0 + 3 * DAY_MS,  # 04-13 00:00: 04-12 is empty in the file -> NaN, not carried
        D0 + 3 * DAY_MS + DAY_MS,  # 2 days after 04-12 became known: too old -> NaN
    ])  # fmt: skip
    got = ext.asof(closes)[:, 0]
    np.testing.assert_array_equal(got, [np.nan, 20.0, 20.0, 30.0, np.nan, np.nan])
    out = np.empty(1)
    for c, g in zip(closes.tolist(), got.tolist(), strict=True):
        np.testing.assert_array_equal(ext.asof_one(c, out), [g])


def test_columns_are_omitted_without_a_series_and_appended_with_one(tmp_path: Path) -> None:
    cfg = FeatureConfig()
    n = 50
    ts = D0 + 86_400_000 * 2 + np.arange(n, dtype=np.int64) * MINUTE_MS
    p = np.linspace(100, 101, n)
    c = Candles(ts, p, p + 0.1, p - 0.1, p, np.ones(n))
    refs = {r: c for r in cfg.reference_symbols}
    assert compute_batch(c, refs, cfg).shape == (n, len(feature_names(cfg)))
    f = write_csv(tmp_path / "fng.csv", [("2021-04-11", "30")])
    cfg2 = FeatureConfig(external_daily_file=str(f))
    ext = external_from_config(cfg2)
    assert ext is not None
    x = compute_batch(c, refs, cfg2, external=ext)
    assert x.shape == (n, len(feature_names(cfg2, external=True)))
    assert feature_names(cfg2, external=True)[-1] == "ext_fear_greed"
    assert external_from_config(FeatureConfig()) is None


def test_bad_files_and_mismatched_columns_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ExternalDataError, match="does not exist"):
        load_external_daily(tmp_path / "nope.csv", ("fear_greed",))
    with pytest.raises(ExternalDataError, match="missing column"):
        load_external_daily(write_csv(tmp_path / "a.csv", [("2021-04-10", "1")], "date,fng"), ("fear_greed",))
    with pytest.raises(ExternalDataError, match="YYYY-MM-DD"):
        load_external_daily(write_csv(tmp_path / "b.csv", [("10/04/2021", "1")]), ("fear_greed",))
    with pytest.raises(ExternalDataError, match="not a number"):
        load_external_daily(write_csv(tmp_path / "c.csv", [("2021-04-10", "greedy")]), ("fear_greed",))
    with pytest.raises(ExternalDataError, match="twice"):
        load_external_daily(write_csv(tmp_path / "d.csv", [("2021-04-10", "1"), ("2021-04-10", "2")]), ("fear_greed",))
    ext = load_external_daily(write_csv(tmp_path / "e.csv", [("2021-04-10", "1")]), ("fear_greed",))
    cfg = FeatureConfig(external_columns=("funding",))
    with pytest.raises(ExternalDataError, match="external_columns"):
        OnlineFeatureEngine(["BTCUSDT", "ETHUSDT"], cfg, external=ext)
