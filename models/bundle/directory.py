"""Model bundles: one versioned directory per trained model, written atomically, validated on load.

Layout of `<models_dir>/<version>/`:
- `manifest.json`: format version, version, creation time, code version, symbols, training data
  range, the feature config and the engine's full feature list, the selected features (the
  boosters' columns, in order), the label and cost configs, params, thresholds, ensemble
  weight, the regime model, the walk-forward report, the leakage audit, and the sha256 of every
  other file;
- `lgb_er.txt`, `lgb_q05.txt`, `lgb_e_mae.txt`, `lgb_e_hold.txt`, `meta.txt`: LightGBM boosters
  (native text format); `cat_er.cbm`: the CatBoost `er` model (native binary format).

Written into a hidden temp directory next to the target, fsynced, then renamed: a reader sees a
complete bundle or none. Loading checks the files' hashes, that every booster loads and reads
the columns the manifest says, and that the feature list is what the current feature engine
produces for the stored feature config -- a bundle the engine cannot feed is refused with a
`BundleError` saying why, never half-used.

Light on purpose: numpy, json, lightgbm, catboost. No pandas/optuna/SQLAlchemy of our own here,
so the daemon can load and score a bundle cheaply.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle.predictor import META_EXTRA, TARGETS, Predictor

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LGB_FILES = {t: f"lgb_{t}.txt" for t in TARGETS}
CAT_FILE = "cat_er.cbm"
META_FILE = "meta.txt"
#: What every manifest `write_bundle` writes holds (it refuses to write one without them).
REQUIRED_KEYS = ("version", "files", "selected_features", "feature_names", "feature_config", "data_from_ts", "data_to_ts")


class BundleError(Exception):
    """A bundle that cannot be written or used; the message says what is wrong and what to do."""


@dataclass
class Bundle:
    """A loaded, validated bundle."""

    path: Path
    manifest: dict[str, Any]
    predictor: Predictor

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def feature_names(self) -> list[str]:
        """The engine's full column list the bundle was trained against."""
        return list(self.manifest["feature_names"])

    @property
    def selected(self) -> list[str]:
        return list(self.predictor.features)

    @property
    def data_range(self) -> tuple[int, int]:
        return int(self.manifest["data_from_ts"]), int(self.manifest["data_to_ts"])

    def feature_config(self) -> Any:
        from models.features.config import FeatureConfig

        return FeatureConfig.model_validate(self.manifest["feature_config"])

    def regime_model(self) -> Any | None:
        if not self.manifest.get("regime"):
            return None
        from models.features.regime import RegimeModel

        return RegimeModel.from_dict(self.manifest["regime"])

    def column_index(self, names: list[str] | None = None) -> np.ndarray:
        """Positions of the selected features in a matrix with columns `names` (default: the
        bundle's own full feature list, i.e. the engine's output)."""
        names = self.feature_names if names is None else list(names)
        pos = {n: i for i, n in enumerate(names)}
        missing = [f for f in self.selected if f not in pos]
        if missing:
            raise BundleError(f"bundle {self.version} needs features the matrix lacks: {missing[:5]}")
        return np.array([pos[f] for f in self.selected], dtype=np.int64)

    def score(self, matrix: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Score rows of a full feature matrix (e.g. the online engine's symbols x features)."""
        return self.predictor.predict(np.ascontiguousarray(matrix[:, self.column_index(names)], dtype=np.float32))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_bundle(models_dir: str | Path, version: str, predictor: Predictor, manifest: dict[str, Any]) -> Path:
    """Write `predictor` + `manifest` as `<models_dir>/<version>/`, atomically; return the path.

    `manifest` carries the descriptive fields (see the module docstring); this function adds the
    format version, the selected features, thresholds, the ensemble weight and the file hashes.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / version
    if final.exists():
        raise BundleError(f"bundle {final} already exists; versions are never overwritten")
    tmp = models_dir / f".{version}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        files: dict[str, str] = {}
        for t in TARGETS:
            p = tmp / LGB_FILES[t]
            predictor.lgb[t].save_model(str(p))
            files[LGB_FILES[t]] = ""
        if predictor.cat is not None:
            predictor.cat.save_model(str(tmp / CAT_FILE))
            files[CAT_FILE] = ""
        if predictor.meta is not None:
            predictor.meta.save_model(str(tmp / META_FILE))
            files[META_FILE] = ""
        for name in files:
            _fsync(tmp / name)
            files[name] = _sha256(tmp / name)
        full = {
            **manifest,
            "format_version": FORMAT_VERSION,
            "version": version,
            "selected_features": list(predictor.features),
            "thresholds": {"er": predictor.er_threshold, "meta": predictor.meta_threshold},
            "ensemble": {"w_lgb": predictor.w_lgb, "w_cat": 1.0 - predictor.w_lgb if predictor.cat is not None else 0.0},
            "files": files,
        }
        for key in ("feature_names", "feature_config", "data_from_ts", "data_to_ts"):
            if key not in full:
                raise BundleError(f"manifest lacks {key!r}")
        mpath = tmp / MANIFEST
        mpath.write_text(json.dumps(full, indent=2, default=_json_default, allow_nan=False) + "\n")
        _fsync(mpath)
        _fsync(tmp)
        os.rename(tmp, final)
        _fsync(models_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a bundle directory (no booster loading), or BundleError."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path} is not a bundle directory")
    try:
        m = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: no {MANIFEST}; not a bundle or an interrupted write") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{mpath}: corrupt manifest ({e.msg} at line {e.lineno})") from None
    if not isinstance(m, dict) or m.get("format_version") != FORMAT_VERSION:
        got = m.get("format_version") if isinstance(m, dict) else None
        raise BundleError(f"{path}: bundle format {got!r}, this code reads format {FORMAT_VERSION}; retrain")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise BundleError(f"{mpath}: manifest lacks {', '.join(map(repr, missing))}; not a complete bundle, retrain")
    return m


def load_bundle(path: str | Path, *, threads: int = 1, check_engine: bool = True) -> Bundle:
    """Load and validate a bundle (see the module docstring); raise BundleError if it is unusable."""
    import lightgbm as lgb

    path = Path(path)
    m = read_manifest(path)
    files = m.get("files") or {}
    for t in TARGETS:
        if LGB_FILES[t] not in files:
            raise BundleError(f"{path}: manifest lists no {LGB_FILES[t]}")
    for name, digest in files.items():
        p = path / name
        if not p.is_file():
            raise BundleError(f"{path}: {name} is missing")
        if _sha256(p) != digest:
            raise BundleError(f"{path}: {name} does not match its recorded sha256 (corrupt or edited); retrain or restore it")

    selected = list(m.get("selected_features") or [])
    names = list(m.get("feature_names") or [])
    if not selected or not set(selected) <= set(names):
        raise BundleError(f"{path}: selected features are empty or not part of the feature list")
    if check_engine:
        _check_engine_features(path, m, names)

    def booster(name: str, n_features: int) -> Any:
        text = (path / name).read_text(errors="replace")
        # LightGBM's C++ parser aborts the whole process on some truncated model texts (no
        # exception to catch): a complete file has its trees' end marker and the trailer.
        if "\nend of trees" not in text or "\npandas_categorical:" not in text:
            raise BundleError(f"{path}: {name} does not load: the model text is truncated (no end-of-trees marker or trailer)")
        try:
            b = lgb.Booster(model_str=text)
        except Exception as e:  # noqa: BLE001 - LightGBMError, or the trailer's JSON
            raise BundleError(f"{path}: {name} does not load: {str(e).strip()[:200]}") from None
        if b.num_feature() != n_features:
            raise BundleError(f"{path}: {name} reads {b.num_feature()} features, the manifest says {n_features}")
        return b

    boosters = {t: booster(LGB_FILES[t], len(selected)) for t in TARGETS}
    if boosters["er"].feature_name() != selected:
        raise BundleError(f"{path}: the er booster's columns differ from the manifest's selected features")
    meta = booster(META_FILE, len(selected) + len(META_EXTRA)) if META_FILE in files else None
    cat = None
    if CAT_FILE in files:
        from catboost import CatBoostError, CatBoostRegressor

        try:
            cat = CatBoostRegressor().load_model(str(path / CAT_FILE))
        except CatBoostError as e:
            raise BundleError(f"{path}: {CAT_FILE} does not load: {str(e).strip()[:200]}") from None
        if len(cat.feature_names_) != len(selected):
            raise BundleError(f"{path}: {CAT_FILE} reads {len(cat.feature_names_)} features, expected {len(selected)}")
    th = m.get("thresholds") or {}
    ens = m.get("ensemble") or {}
    pred = Predictor(
        features=selected,
        lgb=boosters,
        cat=cat,
        w_lgb=float(ens.get("w_lgb", 1.0)),
        meta=meta,
        er_threshold=float(th.get("er", 0.001)),
        meta_threshold=float(th.get("meta", 0.5)),
        threads=threads,
    )
    return Bundle(path, m, pred)


def _check_engine_features(path: Path, m: dict[str, Any], names: list[str]) -> None:
    from models.features.config import FeatureConfig
    from models.features.spec import feature_names

    try:
        fcfg = FeatureConfig.model_validate(m["feature_config"])
    except Exception as e:  # noqa: BLE001 - pydantic's error text is the useful part
        raise BundleError(f"{path}: stored feature config is not valid for this code: {e}") from None
    engine = feature_names(fcfg, external=bool(m.get("external_features", False)))
    if engine != names:
        missing = [n for n in names if n not in engine]
        extra = [n for n in engine if n not in names]
        raise BundleError(
            f"{path}: the feature engine's columns differ from the bundle's "
            f"(missing {missing[:5]}, new {extra[:5]}); retrain the model with this code"
        )
