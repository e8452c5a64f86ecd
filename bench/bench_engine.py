"""Engine benchmarks on real data (symbols30, ../shared/data):

* `engine.decision_p99_ms`: one closed minute for 30 symbols, minute matrix in -> orders out
  (online features + one scoring call + entry rule + risk + paper broker), wall clock per
  `Engine.step`, over a day of minutes; baseline in the same run: features recomputed with the
  batch path over the trailing warm-up window and each symbol scored separately.
  `engine.decision_speedup` = baseline p50 / engine p50.
* `backtest.symbol_bars_per_s`: `bot.backtest.runner.run_backtest` over every minute of the data after
  the warm-up (about 37 days x 30 symbols), block scoring; baseline: the same replay scoring
  minute by minute.

The bundle is trained once with the default model settings on the first 4 weeks (1 walk-forward
fold of 7 days) and cached under var/bench/ (or pass BENCH_ENGINE_BUNDLE=path).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from bench.harness import ROOT, figure, record, require_shared_data, symbols30

DAY_MS = 86_400_000
MINUTE_MS = 60_000
APR2 = 1_617_321_600_000
TRAIN_END = APR2 + 28 * DAY_MS
BASELINE_MINUTES = 15


class Source:
    def __init__(self, directory: Path, symbols: list[str]):
        from models.candles import read_candles_csv

        self.data = {s: read_candles_csv(directory / f"{s}.csv.gz") for s in symbols}

    def load(self, symbol: str, start: int | None, end: int | None):  # noqa: ANN201
        return self.data[symbol].between(start, end)

    def bounds(self, symbol: str) -> tuple[int, int]:
        c = self.data[symbol]
        return int(c.ts[0]), int(c.ts[-1])


def bundle_path(source: Source, syms: list[str]) -> Path:
    env = os.environ.get("BENCH_ENGINE_BUNDLE")
    if env:
        return Path(env)
    from bot.training.job import bundle_manifest, new_version
    from models.bundle.directory import write_bundle
    from models.config import Settings, TrainConfig
    from models.training.run import run_training

    cache = ROOT / "var" / "bench" / "engine-bundle"
    found = sorted(p for p in cache.glob("*/manifest.json"))
    if found:
        return found[-1].parent
    base = Settings.default()
    settings = Settings(base.features, base.labels, base.costs, TrainConfig(folds=1, fold_days=7, audit=False))
    t = time.perf_counter()
    run = run_training(source, syms, settings, start_ms=APR2, end_ms=TRAIN_END, work_dir=cache / "work")
    manifest = bundle_manifest(run, created_ms=int(time.time() * 1000), code="bench")
    path = write_bundle(cache, new_version(int(time.time() * 1000), manifest), run.predictor, manifest)
    print(f"trained the bench bundle in {time.perf_counter() - t:.0f} s -> {path}")
    return path


def main() -> None:
    from bot.backtest.runner import load_window, minute_matrix, run_backtest
    from bot.engine import Engine, TradingConfig
    from models.bundle.directory import load_bundle
    from models.features.batch import compute_batch
    from models.trading.rules import EntryRule, entry_fractions
    from risk.inputs import Candidates, Portfolio

    data_dir = require_shared_data()
    syms = symbols30()
    source = Source(data_dir, syms)
    bundle = load_bundle(bundle_path(source, syms), threads=1)
    trading = TradingConfig(min_validation_pf=0.0, min_validation_trades=0)  # trade, so risk + broker run too
    data_desc = f"symbols30, real 1m Binance 2021; bundle {bundle.version} (default model settings, trained on the first 4 weeks)"

    # --- per-minute decision latency ---------------------------------------------------------
    t_live = TRAIN_END + 3_600_000
    eng = Engine(syms, bundle, trading=trading)
    w = eng.features.warmup
    data = load_window(source, eng.symbols, t_live, t_live + DAY_MS, w)
    eng.warm_up({s: c.between(None, t_live) for s, c in data.items()})
    minutes, bars = minute_matrix(data, eng.symbols, t_live, t_live + DAY_MS)
    lat = np.empty(len(minutes))
    cpu = np.empty(len(minutes))
    orders = 0
    for t in range(len(minutes)):
        c0 = time.thread_time_ns()
        a = time.perf_counter_ns()
        res = eng.step(int(minutes[t]), bars[t])
        lat[t] = (time.perf_counter_ns() - a) / 1e6
        cpu[t] = (time.thread_time_ns() - c0) / 1e6
        orders += len(res.orders)
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    c50, c99 = float(np.percentile(cpu, 50)), float(np.percentile(cpu, 99))
    load = os.getloadavg()[0]
    print(f"engine step: p50 {p50:.3f} ms  p99 {p99:.3f} ms  max {lat.max():.1f} ms over {len(lat)} minutes, {orders} orders; "
          f"thread CPU p50 {c50:.3f} ms p99 {c99:.3f} ms; load average {load:.1f}")  # fmt: skip

    # baseline: recompute every symbol's features over the trailing window (batch path), score
    # each symbol with its own call, then the same entry rule and risk decision
    fcfg = bundle.feature_config()
    regime = bundle.regime_model()
    cols = bundle.column_index(eng.features.names)
    rule = EntryRule.for_trading(bundle.predictor, min_probability=eng.risk_cfg.min_probability)
    names = eng.features.names
    ia, ip = names.index("m1_atr_frac"), names.index("m1_atr_pct")
    base = []
    base_risk = Engine(syms, bundle, trading=trading).risk  # its own kill-switch clock
    step = len(minutes) // BASELINE_MINUTES
    for k in range(BASELINE_MINUTES):
        ts = int(minutes[k * step])
        a = time.perf_counter_ns()
        window = {s: c.between(ts - (w - 1) * MINUTE_MS, ts + MINUTE_MS) for s, c in data.items()}
        refs = {r: window[r] for r in fcfg.reference_symbols}
        er, p, atr, pct, price = (np.full(len(syms), np.nan) for _ in range(5))
        for i, s in enumerate(syms):
            x = compute_batch(window[s], refs, fcfg, regime=regime)[-1:]
            sc = bundle.predictor.predict(np.ascontiguousarray(x[:, cols]))
            er[i], p[i], atr[i], pct[i], price[i] = sc["er"][0], sc["p"][0], x[0, ia], x[0, ip], window[s].close[-1]
        tp, sl, ok = entry_fractions(atr, pct, eng._b.labels)
        idx = np.flatnonzero(rule.mask(er, p) & ok)
        base_risk.decide(Candidates(idx, er[idx], p[idx], price[idx], tp[idx], sl[idx], atr[idx]), Portfolio(10_000.0, 10_000.0),
                        np.zeros((len(eng.symbols), 240)), ts)  # fmt: skip
        base.append((time.perf_counter_ns() - a) / 1e6)
    b50, b99 = float(np.percentile(base, 50)), float(np.percentile(base, 99))
    print(f"baseline recompute + per-symbol scoring: p50 {b50:.1f} ms  p99 {b99:.1f} ms over {len(base)} minutes")

    # --- backtest replay speed ---------------------------------------------------------------
    lo = min(int(c.ts[0]) for c in source.data.values())
    hi = max(int(c.ts[-1]) for c in source.data.values()) + MINUTE_MS
    start = lo + w * MINUTE_MS
    full = {s: source.load(s, None, None) for s in eng.symbols}
    runs = {}
    cpu_s = {}
    for block in (1440, 1):
        c0 = time.process_time()
        a = time.perf_counter()
        res = run_backtest(source, bundle, syms, start, hi, trading=trading, block_minutes=block, data=full,
                           keep_decisions=False)  # fmt: skip
        runs[block] = (time.perf_counter() - a, res)
        cpu_s[block] = time.process_time() - c0
        print(f"backtest block={block}: {res.minutes:,} minutes x {len(syms)} symbols in {runs[block][0]:.1f} s "
              f"= {res.symbol_bars / runs[block][0]:,.0f} symbol-bars/s (CPU {cpu_s[block]:.1f} s = "
              f"{res.symbol_bars / cpu_s[block]:,.0f} symbol-bars per CPU-second), {len(res.trades)} trades; "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    (sec, res), (sec1, res1) = runs[1440], runs[1]
    same = [(t.symbol, t.entry_ts, t.exit_ts, t.ret) for t in res.trades] == [(t.symbol, t.entry_ts, t.exit_ts, t.ret) for t in res1.trades]
    if not same:
        raise SystemExit("block scoring and per-minute scoring gave different trades")
    days = res.minutes / 1440
    record([
        figure("engine.decision_p99_ms", p99, "ms", data=data_desc, baseline=b99, higher_is_better=False,
               note=f"Engine.step for 30 symbols (features + 1 scoring call + entry rule + risk + paper broker), wall "
                    f"clock over {len(lat)} minutes, p50 {p50:.3f} ms, {orders} orders; thread CPU time p50 {c50:.3f} ms, "
                    f"p99 {c99:.3f} ms (the rest is preemption: load average {load:.1f} on this shared machine); "
                    f"baseline: batch features over the "
                    f"{w}-minute trailing window + one scoring call per symbol + risk ({BASELINE_MINUTES} minutes)"),
        figure("engine.decision_speedup", b50 / p50, "x", data=data_desc,
               note=f"median per-minute time: baseline {b50:.0f} ms / engine {p50:.3f} ms"),
        figure("backtest.symbol_bars_per_s", res.symbol_bars / sec, "symbol-bars/s", data=data_desc,
               baseline=res1.symbol_bars / sec1,
               note=f"run_backtest over {days:.1f} days x 30 symbols ({res.symbol_bars:,} symbol-bars, {len(res.trades)} "
                    f"trades, warm-up and replay included, CSV parsing not), block scoring of 1440 minutes, wall clock; "
                    f"process CPU {cpu_s[1440]:.0f} s = {res.symbol_bars / cpu_s[1440]:,.0f} symbol-bars per CPU-second "
                    f"(load average {os.getloadavg()[0]:.1f} on 2 cores); baseline: the same replay scoring minute by "
                    f"minute ({sec1:.0f} s, same trades)"),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
