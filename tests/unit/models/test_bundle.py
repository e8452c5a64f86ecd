"""Bundles: round trip, atomic write, and every kind of broken bundle refused with a reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from catboost import CatBoostRegressor

from models.bundle.directory import (
    CAT_FILE,
    MANIFEST,
    BundleError,
    load_bundle,
    read_manifest,
    write_bundle,
)
from models.bundle.predictor import META_EXTRA, TARGETS, Predictor, meta_feature_names, meta_matrix
from models.features.config import FeatureConfig
from models.features.spec import feature_names
from tests.support.shared_data import ROOT

FCFG = FeatureConfig()
NAMES = feature_names(FCFG)
SELECTED = NAMES[:12]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.standard_normal((n, len(SELECTED))).astype(np.float32)
    y = (0.002 * x[:, 0] - 0.001 * x[:, 3] + 0.003 * rng.standard_normal(n)).astype(np.float32)
    params = {"objective": "regression", "num_leaves": 15, "verbose": -1, "num_threads": 1, "seed": 1, "deterministic": True}
    boosters = {}
    for t, obj in zip(TARGETS, ({}, {"objective": "quantile", "alpha": 0.05}, {}, {}), strict=True):
        ds = lgb.Dataset(x, y, feature_name=SELECTED, params={"verbose": -1})
        boosters[t] = lgb.train({**params, **obj}, ds, 20)
    cat = CatBoostRegressor(iterations=20, depth=4, verbose=False, thread_count=1, random_seed=1, allow_writing_files=False)
    cat.fit(x, y)
    p = Predictor(SELECTED, boosters, cat, 0.6, None, 0.0, 0.5)
    sc = p.predict(x)
    xm = meta_matrix(x, sc)
    p.meta = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(xm, (y > 0).astype(float),
                       feature_name=meta_feature_names(SELECTED), params={"verbose": -1}), 10)  # fmt: skip
    return p


def manifest() -> dict:
    return {
        "feature_names": NAMES, "feature_config": FCFG.model_dump(mode="json"), "data_from_ts": 1, "data_to_ts": 2,
        "symbols": ["BTCUSDT"], "label_config": {}, "cost_config": {}, "train_config": {}, "embargo_ms": 3_600_000,
    }  # fmt: skip


def test_round_trip_scores_identically(tmp_path: Path, predictor: Predictor) -> None:
    path = write_bundle(tmp_path, "v1", predictor, manifest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]  # no temp dir left behind
    b = load_bundle(path)
    assert b.version == "v1" and b.selected == SELECTED and b.feature_names == NAMES
    rng = np.random.default_rng(5)
    full = rng.standard_normal((50, len(NAMES))).astype(np.float32)  # what the live engine emits
    got = b.score(full)
    want = predictor.predict(full[:, : len(SELECTED)])
    for k in (*META_EXTRA, "p"):
        np.testing.assert_array_equal(got[k], want[k])
    assert np.allclose(got["er"], 0.6 * got["er_lgb"] + 0.4 * got["er_cat"])
    assert ((got["p"] > 0) & (got["p"] < 1)).all()
    m = read_manifest(path)
    assert m["thresholds"] == {"er": 0.0, "meta": 0.5} and m["ensemble"]["w_lgb"] == 0.6


def test_versions_are_never_overwritten(tmp_path: Path, predictor: Predictor) -> None:
    write_bundle(tmp_path, "v1", predictor, manifest())
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(tmp_path, "v1", predictor, manifest())


def test_failed_write_leaves_nothing(tmp_path: Path, predictor: Predictor) -> None:
    bad = manifest()
    del bad["feature_config"]
    with pytest.raises(BundleError, match="feature_config"):
        write_bundle(tmp_path, "v2", predictor, bad)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "lgb_er.txt").write_text((p / "lgb_er.txt").read_text()[:500]), "sha256"),
        (lambda p: (p / CAT_FILE).unlink(), "missing"),
        (lambda p: (p / MANIFEST).write_text("{not json"), "corrupt manifest"),
        (lambda p: (p / MANIFEST).unlink(), "no manifest.json"),
        (lambda p: _edit(p, lambda m: m.update(format_version=99)), "format 99"),
        (lambda p: _edit(p, lambda m: m.update(feature_names=[*NAMES[:-1], "renamed"])), "feature engine"),
        (lambda p: _edit(p, lambda m: m.update(selected_features=["nope"])), "selected features"),
    ],
)
def test_broken_bundles_are_refused(tmp_path: Path, predictor: Predictor, damage, message: str) -> None:
    path = write_bundle(tmp_path, "v1", predictor, manifest())
    damage(path)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_a_booster_that_does_not_load_is_refused(tmp_path: Path, predictor: Predictor) -> None:
    path = write_bundle(tmp_path, "v1", predictor, manifest())
    (path / "lgb_q05.txt").write_text("garbage\n")
    _edit(path, lambda m: m["files"].update({"lgb_q05.txt": _sha(path / "lgb_q05.txt")}))  # hashes "fixed"
    with pytest.raises(BundleError, match="does not load"):
        load_bundle(path)


def _sha(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def _edit(path: Path, change) -> None:  # noqa: ANN001
    m = json.loads((path / MANIFEST).read_text())
    change(m)
    (path / MANIFEST).write_text(json.dumps(m))


def test_loading_and_scoring_stays_light(tmp_path: Path, predictor: Predictor) -> None:
    path = write_bundle(tmp_path, "v1", predictor, manifest())
    code = (
        "import sys, numpy as np\n"
        "from models.bundle.directory import load_bundle\n"
        f"b = load_bundle({str(path)!r})\n"
        "b.score(np.zeros((3, len(b.feature_names)), np.float32))\n"
        "heavy = [m for m in ('optuna', 'sqlalchemy', 'models.training.run', 'bot') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
