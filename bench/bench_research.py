"""Year-scale training and research on a low-spec PC: memory, time, and what the choices buy.

    python -m bench research                 # records research.* (about 45 minutes on 2 idle cores)
    python -m bench.bench_research --quick   # 30 x 60 days synthetic, nothing recorded

Budget (issue 20): `bot train` and `bot research` on 30 symbols x 365 days, peak RSS of the
whole process tree <= 1,536 MB on 2 cores, one research variant in <= 15 minutes. Every run is a
child process (`bench.harness.run_measured`: the RSS of its whole tree -- and of the database
server's, when it reads the store -- sampled every 0.5 s; its own ru_maxrss too; the peak is the
larger). Threads: the config default (all cores but one: 1 here). Figures:

1. labels: the triple barrier of 30 synthetic symbols x 365 days at a 24 h horizon and 20 ATRs,
   against the horizon-loop labeller it replaced (`bench.baselines`; same labels, checked);
2. `bot train` with the default settings (walk-forward 2 x 14 days, leakage audit, final fit) on
   30 synthetic symbols x 365 days (`bench/synthetic.py`); baseline: the same on today's default
   window (`train.history_days` 42), so the ratio is what a year costs over six weeks;
3. one research variant of `docs/grids/default.yaml` (its heaviest labels: 24 h, 20 ATRs,
   cross-sectional) with the grid's layout (2 inner folds of 61 days, 6 entry rules on 1h
   closes) on the same synthetic year; baseline: the same variant scoring every minute (the
   grid's rules on every-minute decisions, which is what research did before: rows were never
   kept on a decision cadence);
4. all real data here from the store (an embedded Postgres holding ../shared/data's 30 symbols,
   2021-04-02 .. 05-14, and the 16 of them in the October 2023 month): `bot train` (default
   settings, 2021) and one research variant with the chosen configuration's fit and leakage
   audit on the 2023 outer block, as `bot research --grid default --outer ...` runs it; the
   baseline of the variant is again every-minute scoring.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, figure, record, require_shared_data, run_measured, symbols30

BUDGET_MB = 1536
BUDGET_VARIANT_S = 15 * 60
CAP_MB = 6000
TIMEOUT_S = 75 * 60
HEAVY = {"labels.horizon_bars": 1440, "labels.base_k_tp": 20.0, "labels.target": "cross_sectional"}
SHARED = ROOT.parent / "shared" / "data"
REAL_INNER = (1_617_321_600_000, 1_621_023_960_000)  # 2021-04-02 00:00 .. 2021-05-14 20:26 (exclusive end)
REAL_OUTER = (1_696_085_640_000, 1_698_677_100_000)  # 2023-09-30 14:54 .. 2023-10-30 14:45 (exclusive end)


class SyntheticSpec:
    """A research candle source spec (picklable) for the synthetic market."""

    def __init__(self, symbols: list[str], days: float):
        self.symbols, self.days = list(symbols), float(days)

    def open(self) -> Any:
        from bench.synthetic import SyntheticMarket

        return SyntheticMarket(self.symbols, self.days)


# --- children ------------------------------------------------------------------------------


def _source(kind: str, days: float, dsn: str | None) -> tuple[Any, Any, int, int]:
    """(spec, open source, start, end) of the synthetic market or the store."""
    if kind == "store":
        from bot.cli.commands.research import StoreSpec

        spec: Any = StoreSpec(dsn or "")
        return spec, spec.open(), REAL_INNER[0], REAL_INNER[1]
    spec = SyntheticSpec(symbols30(), days)
    src = spec.open()
    return spec, src, src.start_ms, src.end_ms


def child_train(source: str, days: float, dsn: str | None, work: Path) -> dict[str, Any]:
    from models.config import Settings
    from models.training.run import run_training

    _, src, start, end = _source(source, days, dsn)
    syms = symbols30()
    settings = Settings.default()
    run = run_training(src, syms, settings, start_ms=start, end_ms=end, work_dir=work / "rows")
    o = run.walk_forward["all"]["overall"]
    return {"rows_train": run.stats["train_rows"], "rows_valid": run.stats["valid_rows"], "stride": run.stats["stride"],
            "days": (end - start) / 86_400_000, "wf_trades": o["trades"], "audit_passed": run.audit.get("passed"),
            "threads": settings.train.n_threads}  # fmt: skip


def _grid(every_minute: bool) -> Any:
    import dataclasses

    from models.research.grid import TrainVariant, load_grid

    g = load_grid(ROOT / "docs" / "grids" / "default.yaml")
    v = next(t for t in g.train if t.overrides == HEAVY)
    rules = [r.model_copy(update={"cadence_minutes": 1}) for r in g.rules] if every_minute else g.rules
    return dataclasses.replace(g, train=[TrainVariant(v.overrides, None)], rules=rules)


def child_variant(source: str, days: float, dsn: str | None, work: Path, every_minute: bool) -> dict[str, Any]:
    from models.config import Settings
    from models.research.runner import Setup, choose, configurations, run_outer, run_variant

    spec, src, start, end = _source(source, days, dsn)
    if hasattr(src, "close"):
        src.close()
    grid = _grid(every_minute)
    real = source == "store"
    scale = min(1.0, days / 365)  # --quick: the grid's layout shrunk to the synthetic span
    setup = Setup(universes={"default": symbols30()}, base_settings=Settings.default().to_dict(), data_start=start,
                  data_end=end, cache_dir=str(work / "cache"), work_root=str(work / "research-work"),
                  outer_days=grid.layout.outer_days * scale, inner_folds=3 if real else grid.layout.inner_folds,
                  fold_days=7.0 if real else (grid.layout.fold_days or 61.0) * scale, source=spec,
                  outer_window=REAL_OUTER if real else None, data_id=f"bench-{source}")  # fmt: skip
    t0 = time.monotonic()
    res = run_variant(setup, grid, grid.train[0])
    out: dict[str, Any] = {"variant_s": round(time.monotonic() - t0, 1), "rules": len(res["rules"]),
                           "decision_cadence": res["decision_cadence"],
                           "scored_rows": sum(d.get("rows", 0) for d in res["diagnostics"]),
                           "inner_trades": max(r["inner"]["trades"] for r in res["rules"])}  # fmt: skip
    if real:  # the chosen configuration's fit and audit on the outer block, as `bot research` ends
        rows = configurations([res])
        pick = choose(rows, grid) or max(rows, key=lambda r: r["inner"]["trades"])
        t1 = time.monotonic()
        o = run_outer(setup, grid, pick, [r["inner"].get("sharpe_trade") for r in rows], audit=True)
        out.update({"outer_s": round(time.monotonic() - t1, 1), "outer_trades": o["figures"]["trades"],
                    "outer_symbols": len(o["symbols"])})  # fmt: skip
    return out


# --- parent --------------------------------------------------------------------------------


def measure(kind: str, *, source: str = "synth", days: float = 365, every_minute: bool = False, dsn: str | None = None,
            also: list | None = None) -> dict[str, Any]:  # noqa: ANN001  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f"bench-research-{kind}-", dir=os.environ.get("BENCH_TMP")) as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.bench_research", "--child", kind, "--source", source, "--days", str(days),
               "--out", str(out), "--work", tmp] + (["--every-minute"] if every_minute else [])  # fmt: skip
        env_dsn = {"BENCH_DSN": dsn} if dsn else {}
        os.environ.update(env_dsn)
        run = run_measured(cmd, cap_mb=CAP_MB, timeout_s=TIMEOUT_S, also=also, every_s=0.5)
        res: dict[str, Any] = {"kind": kind, "source": source, "days": days, "every_minute": every_minute, **run, "ok": False}
        if not run["reason"] and run["returncode"] == 0 and out.exists():
            child = json.loads(out.read_text())
            res.update(child, ok=True)
            res["peak_rss_mb"] = max(res["peak_rss_mb"], child.get("self_maxrss_mb", 0.0))
        elif not run["reason"]:
            res["reason"] = f"exit code {run['returncode']}"
        print(json.dumps(res), flush=True)
        return res


def bench_labels(days: float) -> list[Any]:
    import numpy as np

    from bench.baselines import triple_barrier_loop
    from bench.synthetic import SyntheticMarket
    from models.config import LabelConfig, Settings
    from models.labels.triple_barrier import triple_barrier
    from models.trading.costs import Costs
    from models.training.featureset import FeatureSet

    syms = symbols30()
    m = SyntheticMarket(syms, days)
    s = Settings.default()
    fs = FeatureSet(s.features)
    refs = {r: m.load(r, None, None) for r in fs.references}
    regime = fs.fit_regime({k: v.between(None, m.start_ms + 14 * 86_400_000) for k, v in refs.items()}, seed=0)
    cfg = LabelConfig(horizon_bars=1440, base_k_tp=20.0)
    costs = Costs.from_config(s.costs)
    new = old = 0.0
    rows = 0
    for sym in syms:
        c = m.load(sym, None, None)
        x = fs.compute(c, refs, regime)
        atr, pct = x[:, fs.atr_frac_col], x[:, fs.atr_pct_col]
        t0 = time.perf_counter()
        a = triple_barrier(c, atr, pct, cfg, costs)
        new += time.perf_counter() - t0
        t0 = time.perf_counter()
        b = triple_barrier_loop(c, atr, pct, cfg, costs)
        old += time.perf_counter() - t0
        for f in a.__slots__:
            if not np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True):
                sys.exit(f"labels differ from the baseline on {sym}: {f}")
        rows += len(c)
    data = f"synthetic 1m candles, 30 symbols x {days:g} days ({rows:,} rows), bench/synthetic.py"
    return [figure("research.labels_s_30x365_h1440", new, "s", data=data, baseline=old, higher_is_better=False,
                   note="triple barrier at horizon 1440 min, base_k_tp 20 (wall, labels only, 30 symbols); baseline: "
                        "the horizon-loop labeller it replaced (bench.baselines), same run, identical labels")]  # fmt: skip


async def _store(home: Path) -> tuple[Any, str, int]:
    from bot.store.db import Store
    from bot.store.embedded import EmbeddedPostgres
    from bot.store.migrate import migrate
    from models.candles import CsvDirs

    pg = EmbeddedPostgres(home / "pgdata", dbname="bot")
    pg.start()
    store = await Store.connect(pg.dsn(), pool_min=1, pool_max=2)
    async with store.pool.acquire() as conn:
        await migrate(conn)
    src = CsvDirs([SHARED / "candles_1m", SHARED / "candles_1m_2023_10"])
    n = 0
    for s in symbols30():
        c = src.load(s, None, None)
        await store.write_candles(s, c)
        n += len(c)
    await store.close()
    return pg, pg.dsn(), n


def _pg_tree(home: Path) -> list:  # noqa: ANN202
    import psutil

    pid = int((home / "pgdata" / "postmaster.pid").read_text().split()[0])
    return [psutil.Process(pid)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["train", "variant"])
    ap.add_argument("--source", default="synth")
    ap.add_argument("--days", type=float, default=365)
    ap.add_argument("--every-minute", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--work")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.child:
        # Linux keeps ru_maxrss across fork + exec: at the start it is the parent's RSS, not ours
        inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        dsn = os.environ.get("BENCH_DSN")
        work = Path(a.work)
        t0 = time.monotonic()
        if a.child == "train":
            res = child_train(a.source, a.days, dsn, work)
        else:
            res = child_variant(a.source, a.days, dsn, work, a.every_minute)
        res["child_wall_s"] = round(time.monotonic() - t0, 1)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        res["self_maxrss_mb"] = ru.ru_maxrss / 1024 if ru.ru_maxrss > inherited else 0.0  # 0: not above the parent's
        res["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)  # what the wall time would be on an idle core
        Path(a.out).write_text(json.dumps(res))
        return
    if a.quick:
        measure("variant", days=60)
        return
    require_shared_data()
    load0 = os.getloadavg()[0]
    synth = "synthetic 1m candles, 30 symbols (symbols30.txt names) x 365 days, bench/synthetic.py"
    figs = bench_labels(365)
    tr = measure("train")
    tr42 = measure("train", days=42)
    va = measure("variant")
    va1 = measure("variant", every_minute=True)
    for r in (tr, va):
        if not r["ok"]:
            sys.exit(f"{r['kind']} failed on the synthetic year: {r['reason']}")
    base = (lambda r, k: r[k] if r["ok"] else None)  # noqa: E731
    figs += [
        figure("research.train_peak_rss_mb_30x365", tr["peak_rss_mb"], "MB", data=synth, baseline=base(tr42, "peak_rss_mb"),
               higher_is_better=False, note=f"bot train defaults (walk-forward 2 x 14 days + leakage audit + final fit), "
               f"stride {tr['stride']}, {tr['rows_train']:,} training rows, {tr['threads']} thread, CPU {tr['cpu_s']:.0f} s "
               f"(baseline {tr42.get('cpu_s', 0):.0f} s); target <= {BUDGET_MB} MB; "
               f"baseline: the same on today's default 42-day window, same run"),
        figure("research.train_wall_s_30x365", tr["wall_s"], "s", data=synth, baseline=base(tr42, "wall_s"),
               higher_is_better=False, note=f"CPU {tr['cpu_s']:.0f} s (baseline {tr42.get('cpu_s', 0):.0f} s); baseline: the "
               "same on the default 42-day window, same run"),
        figure("research.variant_peak_rss_mb_30x365", va["peak_rss_mb"], "MB", data=synth, baseline=base(va1, "peak_rss_mb"),
               higher_is_better=False, note=f"one variant of docs/grids/default.yaml (24 h, 20 ATR, cross-sectional; "
               f"2 inner folds of 61 days; {va['rules']} entry rules on 1h closes, {va['scored_rows']:,} scored rows); "
               f"target <= {BUDGET_MB} MB; baseline: the same variant scoring every minute"
               + ("" if va1["ok"] else f" ({va1['reason']} at {va1['peak_rss_mb']:,.0f} MB after {va1['wall_s']:.0f} s)")),
        figure("research.variant_wall_s_30x365", va["wall_s"], "s", data=synth, baseline=base(va1, "wall_s"),
               higher_is_better=False, note=f"CPU {va['cpu_s']:.0f} s (baseline {va1.get('cpu_s', 0):.0f} s); target <= "
               f"{BUDGET_VARIANT_S} s; baseline: the same variant scoring every minute"
               + ("" if va1["ok"] else f" ({va1['reason']})")),
    ]  # fmt: skip
    # all the real data, from the store
    home = Path(tempfile.mkdtemp(prefix="bench-research-store-", dir="/tmp"))
    os.chmod(home, 0o755)
    t0 = time.monotonic()
    pg, dsn, n = asyncio.run(_store(home))
    print(f"imported {n:,} real candles into the store in {time.monotonic() - t0:.0f} s", flush=True)
    try:
        also = _pg_tree(home)
        rt = measure("train", source="store", dsn=dsn, also=also)
        rv = measure("variant", source="store", dsn=dsn, also=also)
        rv1 = measure("variant", source="store", dsn=dsn, also=also, every_minute=True)
    finally:
        pg.stop()
        shutil.rmtree(home, ignore_errors=True)
    real = (f"real 1m Binance candles from an embedded Postgres ({n:,} candles: ../shared/data symbols30 2021-04-02 .. "
            f"05-14 and the 16 of them in 2023-09-30 .. 10-30); tree = the child + the Postgres server")  # fmt: skip
    for r in (rt, rv):
        if not r["ok"]:
            sys.exit(f"{r['kind']} failed on the real data: {r['reason']}")
    figs += [
        figure("research.train_store_peak_rss_mb_real", rt["peak_rss_mb"], "MB", data=real, higher_is_better=False,
               note=f"bot train defaults on 2021 ({rt['days']:.1f} days, {rt['rows_train']:,} training rows); wall "
               f"{rt['wall_s']:.0f} s; no baseline: this is today's default training"),
        figure("research.variant_store_peak_rss_mb_real", rv["peak_rss_mb"], "MB", data=real, baseline=base(rv1, "peak_rss_mb"),
               higher_is_better=False, note=f"one default-grid variant (24 h, 20 ATR, cross-sectional; 3 inner folds of 7 "
               f"days in 2021) + the chosen rule's fit and leakage audit on the 2023 outer block ({rv['outer_symbols']} "
               f"symbols, {rv['outer_trades']} trades); baseline: the same scoring every minute"),
        figure("research.variant_store_wall_s_real", rv["wall_s"], "s", data=real, baseline=base(rv1, "wall_s"),
               higher_is_better=False, note=f"variant {rv['variant_s']:.0f} s + outer block {rv['outer_s']:.0f} s, CPU "
               f"{rv['cpu_s']:.0f} s (baseline {rv1.get('cpu_s', 0):.0f} s); "
               "baseline: the same scoring every minute"),
    ]  # fmt: skip
    load = f"; load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (a shared 2-core machine)"
    for f in figs:
        f.note += load
    record(figs)


if __name__ == "__main__":
    main()
