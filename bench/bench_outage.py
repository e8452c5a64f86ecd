"""What a Postgres outage costs in memory (symbols30, ../shared/data):

* `outage.held_mb_per_day`: the trading records the daemon holds while the store is away
  (`bot.store.outage.StepBuffer`, default `database.outage_buffer_minutes` = 1440), measured
  with tracemalloc: one day of 30-symbol paper steps (decision rows, orders, fills, positions,
  equity, engine state) built exactly as the live loop builds them (`StepRecords.from_step`)
  and written into a StepBuffer whose store is down. Baseline in the same run: the same
  records with every minute's engine state kept (the buffer keeps only the newest one).

The bundle is bench_engine's (trained once on the first 4 weeks, cached under var/bench/).
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc

from bench.bench_engine import DAY_MS, TRAIN_END, Source, bundle_path
from bench.harness import figure, record, require_shared_data, symbols30


class _Down:
    """A store that is away: every write fails as a refused connection does."""

    async def one(self, rec: object) -> None:
        raise ConnectionRefusedError("store down (benchmark)")

    async def many(self, recs: list[object]) -> None:
        raise ConnectionRefusedError("store down (benchmark)")


def held_day(keep_every_state: bool, every_symbol_a_candidate: bool = False) -> tuple[float, int, int, int, str, str]:
    """One day of steps on a fresh engine; the records held as in an outage (the StepBuffer)
    or, for the baseline, a plain list that keeps every minute's state. Returns the MB they
    take: what is freed when they are dropped (so the engine's own growth is not counted).
    `every_symbol_a_candidate`: the worst case, each minute carries a decision row for each of
    the 30 symbols (copies of a real row of the day with their own minute and symbol)."""
    import dataclasses
    import gc

    from bot.backtest.runner import load_window, minute_matrix
    from bot.engine import Engine, TradingConfig
    from bot.store.outage import StepBuffer, StoreHealth
    from bot.store.trading import StepRecords
    from models.bundle.directory import load_bundle

    syms = symbols30()
    source = Source(require_shared_data(), syms)
    bundle = load_bundle(bundle_path(source, syms), threads=1)
    trading = TradingConfig(min_validation_pf=0.0, min_validation_trades=0)  # trade: orders, fills, positions too
    eng = Engine(syms, bundle, trading=trading)
    t0 = TRAIN_END + 3_600_000
    data = load_window(source, eng.symbols, t0, t0 + DAY_MS, eng.features.warmup)
    eng.warm_up({s: c.between(None, t0) for s, c in data.items()})
    minutes, bars = minute_matrix(data, eng.symbols, t0, t0 + DAY_MS)
    del data, source
    down = _Down()
    buf = StepBuffer(down.one, down.many, StoreHealth(), max_minutes=len(minutes), timeout_s=1.0, retry_s=3600.0)
    kept: list[StepRecords] = []
    n_dec = n_orders = 0
    template = None
    loop = asyncio.new_event_loop()
    gc.collect()
    tracemalloc.start()
    for t in range(len(minutes)):
        ts = int(minutes[t])
        res = eng.step(ts, bars[t])
        rec = StepRecords.from_step(ts, res, state=eng.state_dict(), model_version=bundle.version)
        if every_symbol_a_candidate:
            template = template or (rec.decisions[0] if rec.decisions else None)
            if template is not None:
                rec.decisions = tuple(dataclasses.replace(template, ts=ts, symbol=s, details=dict(template.details))
                                      for s in eng.symbols)  # fmt: skip
        n_dec += len(rec.decisions)
        n_orders += len(rec.orders)
        if keep_every_state:
            kept.append(rec)
        else:
            loop.run_until_complete(buf.write(rec))
    n = len(kept) if keep_every_state else len(buf.held)
    assert n == len(minutes), (n, len(minutes))
    gc.collect()
    full, _ = tracemalloc.get_traced_memory()
    kept.clear()
    buf.held.clear()
    gc.collect()
    empty, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    loop.close()
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0 / 1000))
    return (full - empty) / 2**20, n, n_dec, n_orders, bundle.version, when


def main() -> None:
    a = time.perf_counter()
    held_mb, n, n_dec, n_orders, version, when = held_day(keep_every_state=False)
    base_mb, *_ = held_day(keep_every_state=True)
    worst_mb, _, worst_dec, *_ = held_day(keep_every_state=False, every_symbol_a_candidate=True)
    print(f"held {n} minutes x 30 symbols while the store is down: {held_mb:.1f} MB ({n_dec:,} decision rows, "
          f"{n_orders} orders); keeping every minute's state: {base_mb:.1f} MB; every symbol a candidate every minute "
          f"({worst_dec:,} decision rows): {worst_mb:.1f} MB; {time.perf_counter() - a:.0f} s")  # fmt: skip
    record([
        figure("outage.held_mb_per_day", held_mb, "MB", baseline=base_mb, higher_is_better=False,
               data=f"symbols30, real 1m Binance 2021 (1 day from {when} UTC); bundle {version}",
               note=f"tracemalloc: memory freed when a StepBuffer holding {n} minutes of paper trading records for 30 "
                    f"symbols (the store down; {n_dec:,} decision rows, {n_orders} orders; only the newest engine "
                    f"state kept) is dropped, i.e. the bound of the default database.outage_buffer_minutes=1440; "
                    f"baseline: the same records with every minute's engine state kept"),
        figure("outage.held_mb_per_day_worst", worst_mb, "MB",
               data=f"symbols30, real 1m Binance 2021 (1 day from {when} UTC); bundle {version}",
               note=f"as outage.held_mb_per_day, but every minute carries a decision row for each of the 30 symbols "
                    f"({worst_dec:,} rows, copies of a real row of the day): the most 1440 held minutes can take"),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
