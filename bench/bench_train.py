"""Training benchmark: our memory-bounded trainer vs the seed's pandas-concat float64 pipeline.

    python -m bench train                 # everything (about an hour on 2 cores)
    python -m bench.bench_train --quick   # 30 x 14 days only, no figures recorded

Each pipeline runs in its own subprocess on synthetic candles (bench/synthetic.py: fat tails,
volatility clustering, cross-symbol correlation) for the 30 symbols of symbols30.txt. The
parent samples the RSS of the child's whole process tree every 0.2 s and also takes the
child's own ru_maxrss; the peak is the larger. Wall time is the child's, start to exit.

- ours: `models.training.run.run_training` with no walk-forward folds and no audit (the benchmark
  measures one full training: features + labels + 4 LightGBM targets + CatBoost + meta, no
  Optuna), then the bundle is written. Threads: the config default (all cores but one).
- naive: what the seed did -- per symbol a float64 DataFrame of the same features and labels,
  `pd.concat` of all symbols, a time split 80/20, LightGBM Datasets from the DataFrame for the
  same 4 targets with the same parameters and early stopping, CatBoost on the whole training
  DataFrame, the same meta model. Every 1m row, no stride. It runs under a memory cap (the
  parent kills it above `NAIVE_CAP_MB`; an address-space limit backs that up) and a time cap,
  on growing sizes until it fails; the largest size it survives is compared with ours at the
  same size, in the same run -- twice: ours as configured (1 row in 5) and ours on every row
  (row_stride 1, the naive pipeline's row count), to separate what the float32 streaming buys
  from what the row subsampling buys.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import figure, record, run_measured, symbols30

NAIVE_CAP_MB = 8_000
NAIVE_TIME_S = 30 * 60
OURS_TIME_S = 60 * 60
NAIVE_DAYS = (14, 30, 90)


# --- children ------------------------------------------------------------------------------


def _settings(stride: int | None = None):  # noqa: ANN202
    from models.config import Settings, TrainConfig

    d = Settings.default()
    t = TrainConfig(folds=0, audit=False, optuna_trials=0, **({"row_stride": stride} if stride else {}))
    return Settings(d.features, d.labels, d.costs, t)


def child_ours(days: float, work: Path, stride: int | None = None) -> dict:
    from bench.synthetic import SyntheticMarket
    from models.bundle.directory import write_bundle
    from models.training.run import run_training

    syms = symbols30()
    market = SyntheticMarket(syms, days)
    settings = _settings(stride)
    run = run_training(market, syms, settings, start_ms=market.start_ms, end_ms=market.end_ms, work_dir=work / "rows")
    manifest = {"feature_names": run.feature_names, "feature_config": settings.features.model_dump(mode="json"),
                "data_from_ts": run.start, "data_to_ts": run.end, "symbols": syms}  # fmt: skip
    write_bundle(work / "models", "bench", run.predictor, manifest)
    info = run.fit_info
    return {
        "rows_train": info["lightgbm"]["rows_fit"] + info["lightgbm"]["rows_calib"],
        "rows_catboost": info["catboost"]["rows"], "stride": run.stats["stride"], "features": len(run.predictor.features),
        "rounds": {t: info["lightgbm"][t]["rounds"] for t in ("er", "q05", "e_mae", "e_hold")},
        "meta": info["meta"].get("trained"), "threads": settings.train.n_threads,
    }  # fmt: skip


def child_naive(days: float) -> dict:
    import lightgbm as lgb
    import numpy as np
    import pandas as pd
    from catboost import CatBoostRegressor

    from bench.synthetic import SyntheticMarket
    from models.bundle.predictor import meta_matrix
    from models.labels.triple_barrier import triple_barrier
    from models.timeutil import DAY_MS
    from models.trading.costs import Costs
    from models.training.boosters import lgb_base_params
    from models.training.featureset import FeatureSet

    syms = symbols30()
    market = SyntheticMarket(syms, days)
    s = _settings()
    fs = FeatureSet(s.features)
    refs = {r: market.load(r, None, None) for r in fs.references}
    regime = fs.fit_regime({k: v.between(None, market.start_ms + 14 * DAY_MS) for k, v in refs.items()}, seed=0)
    costs = Costs.from_config(s.costs)
    all_dfs = []
    for sym in syms:  # the seed's loop: every symbol's float64 frame kept, then concatenated
        c = market.load(sym, None, None)
        x = fs.compute(c, refs, regime)
        lab = triple_barrier(c, x[:, fs.atr_frac_col], x[:, fs.atr_pct_col], s.labels, costs)
        df = pd.DataFrame(x.astype(np.float64), columns=fs.names)
        df["ts"] = c.ts
        df["ret_net"] = lab.ret_net.astype(np.float64)
        df["mae"] = lab.mae.astype(np.float64)
        df["hold"] = lab.hold.astype(np.float64)
        df["resolved"] = lab.resolved_ts
        all_dfs.append(df)
    data = pd.concat(all_dfs, ignore_index=True)
    data = data.dropna(subset=["ret_net", fs.names[fs.atr_frac_col]]).sort_values("ts", kind="stable")
    rows = len(data)
    cut = int(data["ts"].quantile(0.8))
    train = data[data["resolved"] < cut]
    valid = data[data["ts"] >= cut + s.labels.horizon_bars * 60_000]
    params = lgb_base_params(s.train)
    lp = s.train.lightgbm
    preds = {}
    for target, col, obj in (("er", "ret_net", {}), ("q05", "ret_net", {"objective": "quantile", "alpha": 0.05, "metric": "quantile"}),
                             ("e_mae", "mae", {}), ("e_hold", "hold", {})):  # fmt: skip
        dtr = lgb.Dataset(train[fs.names], label=train[col], params={"max_bin": lp.max_bin, "verbose": -1})
        dva = lgb.Dataset(valid[fs.names], label=valid[col], reference=dtr)
        b = lgb.train({**params, **obj}, dtr, lp.num_boost_round, valid_sets=[dva],
                      callbacks=[lgb.early_stopping(lp.early_stopping_rounds, verbose=False)])  # fmt: skip
        preds[target] = b.predict(valid[fs.names])
    cp = s.train.catboost
    cat = CatBoostRegressor(iterations=cp.iterations, depth=cp.depth, learning_rate=cp.learning_rate,
                            border_count=cp.border_count, thread_count=s.train.n_threads, verbose=False,
                            allow_writing_files=False)  # fmt: skip
    cat.fit(train[fs.names], train["ret_net"])
    preds["er_cat"] = cat.predict(valid[fs.names])
    preds["er_lgb"] = preds["er"]
    preds["er"] = 0.5 * preds["er_lgb"] + 0.5 * preds["er_cat"]
    cand = preds["er"] > s.train.er_threshold
    if cand.sum() >= 50:
        xv = valid[fs.names].to_numpy(np.float32)
        xm = meta_matrix(xv[cand], {k: v[cand] for k, v in preds.items()})
        lgb.train({"objective": "binary", "verbose": -1, "num_threads": s.train.n_threads},
                  lgb.Dataset(xm, (valid["ret_net"].to_numpy()[cand] > 0).astype(float)), 150)  # fmt: skip
    return {"rows": rows, "rows_train": len(train), "features": len(fs.names)}


# --- parent --------------------------------------------------------------------------------


def measure(kind: str, days: float, *, cap_mb: float | None, timeout_s: float, stride: int | None = None) -> dict:
    """Run one child; return its result plus peak tree RSS (MB), wall (s), ok/reason."""
    with tempfile.TemporaryDirectory(prefix=f"bench-train-{kind}-", dir=os.environ.get("BENCH_TMP")) as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.bench_train", "--child", kind, "--days", str(days), "--out", str(out),
               "--work", tmp]  # fmt: skip
        if cap_mb:
            cmd += ["--as-limit-mb", str(int(cap_mb + 6000))]
        if stride:
            cmd += ["--stride", str(stride)]
        run = run_measured(cmd, cap_mb=cap_mb, timeout_s=timeout_s)
        peak, reason, wall = run["peak_rss_mb"], run["reason"], run["wall_s"]
        res = {"kind": kind, "days": days, "wall_s": round(wall, 1), "ok": False, "reason": reason}
        if not reason and run["returncode"] == 0 and out.exists():
            child = json.loads(out.read_text())
            res.update(child, ok=True)
            peak = max(peak, child.get("self_maxrss_mb", 0.0))
        elif not reason:
            res["reason"] = f"exit code {run['returncode']}"
        res["peak_rss_mb"] = round(peak, 1)
        print(json.dumps(res), flush=True)
        return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["ours", "naive"])
    ap.add_argument("--days", type=float)
    ap.add_argument("--out")
    ap.add_argument("--work")
    ap.add_argument("--as-limit-mb", type=int)
    ap.add_argument("--stride", type=int)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.child:
        if a.as_limit_mb:
            lim = a.as_limit_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        t0 = time.monotonic()
        res = child_ours(a.days, Path(a.work), a.stride) if a.child == "ours" else child_naive(a.days)
        res["child_wall_s"] = round(time.monotonic() - t0, 1)
        res["self_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        Path(a.out).write_text(json.dumps(res))
        return
    if a.quick:
        measure("ours", 14, cap_mb=None, timeout_s=OURS_TIME_S)
        measure("naive", 14, cap_mb=NAIVE_CAP_MB, timeout_s=NAIVE_TIME_S)
        return

    data = "synthetic 1m candles, 30 symbols (symbols30.txt names), bench/synthetic.py"
    ours = {d: measure("ours", d, cap_mb=None, timeout_s=OURS_TIME_S) for d in (90, 365)}
    naive_best = naive_fail = None
    for d in NAIVE_DAYS:
        r = measure("naive", d, cap_mb=NAIVE_CAP_MB, timeout_s=NAIVE_TIME_S)
        if not r["ok"]:
            naive_fail = r
            break
        naive_best = r
    figs = []
    for d, key in ((90, "30x90"), (365, "30x365")):
        r = ours[d]
        if not r["ok"]:
            sys.exit(f"our pipeline failed at 30 x {d} days: {r['reason']}")
        note = f"stride {r['stride']}, {r['rows_train']:,} training rows, CatBoost {r['rows_catboost']:,}, {r['threads']} thread(s)"
        figs.append(figure(f"train.peak_rss_mb_{key}", r["peak_rss_mb"], "MB", data=f"{data}, {d} days",
                           higher_is_better=False, note=note + "; target <= 2,500 MB at 30x365" if d == 365 else note))  # fmt: skip
        figs.append(figure(f"train.wall_s_{key}", r["wall_s"], "s", data=f"{data}, {d} days", higher_is_better=False,
                           note="target <= 1,800 s at 30x365" if d == 365 else ""))  # fmt: skip
    if naive_best is not None:
        d = naive_best["days"]
        ours_same = ours.get(d) or measure("ours", d, cap_mb=None, timeout_s=OURS_TIME_S)
        note = f"largest size the naive pipeline survived: 30 x {d:g} days" + (
            f" (30 x {naive_fail['days']:g} days: {naive_fail['reason']}, at {naive_fail['peak_rss_mb']:,.0f} MB "
            f"after {naive_fail['wall_s']:.0f} s)" if naive_fail else "")  # fmt: skip
        figs.append(figure("train.naive_peak_rss_mb", naive_best["peak_rss_mb"], "MB", data=f"{data}, {d:g} days",
                           note=note))  # fmt: skip
        figs.append(figure("train.naive_rows", naive_best["rows"], "rows", data=f"{data}, {d:g} days", note=note))
        figs.append(figure("train.naive_wall_s", naive_best["wall_s"], "s", data=f"{data}, {d:g} days",
                           higher_is_better=False, note=note))  # fmt: skip
        figs.append(figure(f"train.ours_peak_rss_mb_30x{d:g}_vs_naive", ours_same["peak_rss_mb"], "MB",
                           data=f"{data}, {d:g} days", baseline=naive_best["peak_rss_mb"], higher_is_better=False,
                           note="baseline = naive pandas-concat float64 pipeline, same size, same run"))  # fmt: skip
        figs.append(figure(f"train.ours_wall_s_30x{d:g}_vs_naive", ours_same["wall_s"], "s", data=f"{data}, {d:g} days",
                           baseline=naive_best["wall_s"], higher_is_better=False,
                           note="baseline = naive pipeline, same size, same run"))  # fmt: skip
        # the same comparison with every row (stride 1, as the naive one): what streaming float32
        # rows alone buys, without the row subsampling
        full = measure("ours", d, cap_mb=None, timeout_s=OURS_TIME_S, stride=1)
        if full["ok"]:
            n1 = f"ours with row_stride 1 ({full['rows_train']:,} training rows); baseline = naive, same size, same run"
            figs.append(figure(f"train.ours_stride1_peak_rss_mb_30x{d:g}_vs_naive", full["peak_rss_mb"], "MB",
                               data=f"{data}, {d:g} days", baseline=naive_best["peak_rss_mb"], higher_is_better=False,
                               note=n1))  # fmt: skip
            figs.append(figure(f"train.ours_stride1_wall_s_30x{d:g}_vs_naive", full["wall_s"], "s",
                               data=f"{data}, {d:g} days", baseline=naive_best["wall_s"], higher_is_better=False,
                               note=n1))  # fmt: skip
    record(figs)


if __name__ == "__main__":
    main()
