"""Feature selection for one window: a quick LightGBM `er` model on a subsample of the fit
part keeps the features covering `importance_cum` (99.9 %) of the gain. Cached on disk by a
hash of the data range, the feature list, the label/cost settings and the parameters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.config import Settings
from models.training.boosters import dataset_params, lgb_base_params
from models.training.prepare import Prepared
from models.training.window_rows import Selection, read_rows, row_labels, subsample

SELECTION_MAX_ROWS = 200_000
SELECTION_ROUNDS = 100


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def select_features(
    prep: Prepared,
    sel: Selection,
    settings: Settings,
    *,
    cache_dir: Path | None,
) -> tuple[list[str], dict[str, Any]]:
    """Keep the features covering `importance_cum` of the total gain of a quick `er` model."""
    import lightgbm as lgb

    tcfg = settings.train
    params = {**lgb_base_params(tcfg), "learning_rate": 0.1, "num_leaves": 31}
    key = {
        "symbols": prep.symbols, "fit_window": [sel.fit_window.start, sel.fit_window.end], "names": prep.names,
        "stride": prep.stride, "labels": settings.labels.model_dump(), "costs": settings.costs.model_dump(),
        "params": params, "rounds": SELECTION_ROUNDS, "max_rows": SELECTION_MAX_ROWS, "cum": tcfg.importance_cum,
        "features": settings.features.model_dump(mode="json"),
    }  # fmt: skip
    digest = _hash(key)
    path = None if cache_dir is None else Path(cache_dir) / "feature_selection" / f"{digest}.json"
    if path is not None and path.exists():
        cached = json.loads(path.read_text())
        if cached.get("names") == prep.names:
            return list(cached["selected"]), {"cache": "hit", "key": digest, "kept": len(cached["selected"])}
    rows = subsample(sel.fit, SELECTION_MAX_ROWS)
    x = read_rows(prep, rows, None)
    y = row_labels(prep, rows, "ret")
    ds = lgb.Dataset(x, y, params=dataset_params(tcfg), feature_name=prep.names, free_raw_data=True)
    booster = lgb.train(params, ds, num_boost_round=SELECTION_ROUNDS)
    gain = booster.feature_importance("gain").astype(np.float64)
    del ds, x, booster
    total = gain.sum()
    if total <= 0:
        keep = np.arange(len(prep.names))
    else:
        order = np.argsort(-gain, kind="stable")
        cum = np.cumsum(gain[order]) / total
        n = int(np.searchsorted(cum, tcfg.importance_cum, side="left")) + 1
        keep = np.sort(order[: max(1, min(n, int((gain > 0).sum())))])
    selected = [prep.names[i] for i in keep]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"names": prep.names, "selected": selected, "key": key}, default=str))
        tmp.replace(path)
    return selected, {"cache": "miss", "key": digest, "kept": len(selected), "of": len(prep.names)}
