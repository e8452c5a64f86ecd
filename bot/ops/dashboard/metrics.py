"""The figures an operator graphs, as a Prometheus registry the daemon updates (`/metrics`).

One `DaemonMetrics` per daemon. It owns its own `CollectorRegistry` (not prometheus_client's
global one), so tests and a second instance never collide. Every update is a few lock-guarded
float operations (~1 us): cheap enough to call once per minute step from the event loop.

Update API (the daemon calls these; all optional, each figure simply stays at its last value):

    m = DaemonMetrics()
    m.step_done(symbol_bars=30, latency_s=0.0021)     # after each minute step of the engine
    m.account(equity=10_050.0, cash=8_000.0, gross_exposure=2_050.0, open_positions=3)
    m.model_in_use("20210430T000000Z-ab12cd34", watch_only=False)
    m.order_sent("buy"); m.trade_closed("tp"); m.skipped({"low_probability": 12})
    m.loop_lag(0.003)                                 # fed by `LoopLagMonitor` (started with the dashboard)
    m.observe(view)                                   # the operator read model, on each scrape (server.py)

`observe` sets the figures the page and `bot status` show from the same `OperatorView`
(`bot.ops.read_model`), so /metrics cannot disagree with them: equity, cash, exposure and open
positions (also set by each step, for when the store is away), today's P&L, realised and closed
trades, unrealised P&L, feed age per symbol and the last minute (exchange clock), the engine's
step age (wall clock), the kill switch, the active protections; `bot_read_model_up` is 0 when the last read failed.

Exposed names: bot_bars_processed_total, bot_steps_total, bot_decision_latency_seconds
(histogram), bot_last_decision_latency_seconds, bot_feed_lag_seconds{symbol}, bot_equity_quote,
bot_cash_quote, bot_gross_exposure_quote, bot_open_positions, bot_today_pnl_quote,
bot_today_realised_quote, bot_today_trades_closed, bot_unrealised_pnl_quote,
bot_last_minute_timestamp_seconds, bot_engine_step_age_seconds, bot_kill_switch_tripped,
bot_protections_active{protection},
bot_read_model_up, bot_event_loop_lag_seconds (histogram), bot_event_loop_lag_last_seconds,
bot_watch_only, bot_model_info{version}, bot_orders_total{side}, bot_trades_closed_total{reason},
bot_entry_skips_total{reason}, bot_asyncio_tasks and bot_threads (counted when scraped),
bot_start_time_seconds, and the standard process_* figures (process_resident_memory_bytes is the
RSS, process_open_fds the open file descriptors).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

if TYPE_CHECKING:
    from bot.ops.read_model import OperatorView

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class DaemonMetrics:
    """The daemon's Prometheus figures (see the module docstring for the update API)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, process: bool = True) -> None:
        self.lag_fed = False  # True when the daemon's loop-lag sampler feeds `loop_lag` (bot.runtime.looplag)
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._bars = Counter("bot_bars_processed", "Symbol-minutes (bars) the engine processed", registry=r)
        self._steps = Counter("bot_steps", "Minute steps the engine ran", registry=r)
        self._latency = Histogram("bot_decision_latency_seconds", "One minute step: minute matrix in, orders out",
                                  buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self._latency_last = Gauge("bot_last_decision_latency_seconds", "Latency of the last minute step", registry=r)
        self._feed_lag = Gauge("bot_feed_lag_seconds", "How far the symbol's last candle is behind the last processed minute "
                               "(exchange clock), seconds", ["symbol"], registry=r)  # fmt: skip
        self._equity = Gauge("bot_equity_quote", "Account equity marked to market, quote currency", registry=r)
        self._cash = Gauge("bot_cash_quote", "Free cash, quote currency", registry=r)
        self._gross = Gauge("bot_gross_exposure_quote", "Market value of open positions, quote currency", registry=r)
        self._open = Gauge("bot_open_positions", "Open positions", registry=r)
        self._today_pnl = Gauge("bot_today_pnl_quote", "Equity change since 00:00 UTC of the last minute's day", registry=r)
        self._today_real = Gauge("bot_today_realised_quote", "Realised P&L of today's exits", registry=r)
        self._today_n = Gauge("bot_today_trades_closed", "Trades closed today (exchange clock)", registry=r)
        self._unreal = Gauge("bot_unrealised_pnl_quote", "Unrealised P&L of the open positions at the last candle", registry=r)
        self._last_minute = Gauge("bot_last_minute_timestamp_seconds", "Open of the last processed minute, unix seconds",
                                  registry=r)  # fmt: skip
        self._step_age = Gauge("bot_engine_step_age_seconds", "Wall-clock seconds since the engine wrote its last minute",
                               registry=r)  # fmt: skip
        self._kill = Gauge("bot_kill_switch_tripped", "1 while the kill switch blocks new entries", registry=r)
        self._protect = Gauge("bot_protections_active", "Blocks of this protection on entries now (risk/protections.py)",
                              ["protection"], registry=r)  # fmt: skip
        self._read_up = Gauge("bot_read_model_up", "1 when the last read of the operator read model succeeded", registry=r)
        self._loop_lag = Histogram("bot_event_loop_lag_seconds", "How late the event loop woke a timer",
                                   buckets=LOOP_LAG_BUCKETS, registry=r)  # fmt: skip
        self._loop_lag_last = Gauge("bot_event_loop_lag_last_seconds", "Event loop lag, last sample", registry=r)
        self._watch = Gauge("bot_watch_only", "1 when the engine only watches (no validated edge, or by config)", registry=r)
        self._model = Info("bot_model", "Model bundle in use", registry=r)
        self._orders = Counter("bot_orders", "Orders sent, by side", ["side"], registry=r)
        self._closed = Counter("bot_trades_closed", "Round trips closed, by exit reason", ["reason"], registry=r)
        self._skips = Counter("bot_entry_skips", "Entry candidates skipped, by reason", ["reason"], registry=r)
        # read when scraped (the /metrics handler runs on the daemon's loop), never stale
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        Gauge("bot_asyncio_tasks", "asyncio tasks alive on the daemon's event loop", registry=r).set_function(self._task_count)
        Gauge("bot_threads", "Threads of the daemon process", registry=r).set_function(threading.active_count)
        Gauge("bot_start_time_seconds", "When this daemon started, unix seconds", registry=r).set(time.time())
        if process:
            ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu, open fds (Linux /proc)
        # plain copies for the page (reading a prometheus metric back is not part of its API)
        self.last: dict[str, Any] = {"bars": 0, "steps": 0, "latency_s": None, "loop_lag_s": None,
                                     "model_version": None, "watch_only": None, "feed_lag_s": {}}  # fmt: skip

    # -- updates -------------------------------------------------------------------------

    def step_done(self, symbol_bars: int, latency_s: float) -> None:
        """One minute step finished: `symbol_bars` bars went through it in `latency_s` seconds."""
        self._bars.inc(symbol_bars)
        self._steps.inc()
        self._latency.observe(latency_s)
        self._latency_last.set(latency_s)
        self.last["bars"] += int(symbol_bars)
        self.last["steps"] += 1
        self.last["latency_s"] = float(latency_s)

    def account(self, *, equity: float, cash: float, gross_exposure: float, open_positions: int) -> None:
        self._equity.set(equity)
        self._cash.set(cash)
        self._gross.set(gross_exposure)
        self._open.set(open_positions)

    def observe(self, view: OperatorView | None) -> None:
        """The read model's figures (see the module docstring); None: the read failed."""
        self._read_up.set(0 if view is None else 1)
        if view is None:
            return
        a, t = view.account, view.today
        if a is not None:
            self.account(equity=a.equity, cash=a.cash, gross_exposure=a.exposure, open_positions=len(view.positions))
        else:
            self._open.set(len(view.positions))
        _set(self._today_pnl, None if t is None else t.pnl)
        _set(self._today_real, None if t is None else t.realised)
        _set(self._today_n, None if t is None else t.trades_closed)
        _set(self._unreal, view.unrealised or 0.0)
        _set(self._last_minute, None if view.clock.last_minute_ts is None else view.clock.last_minute_ts / 1000)
        _set(self._step_age, view.daemon.last_step_age_s)
        self._kill.set(1 if view.kill_switch.tripped else 0)
        from risk.reasons import PROTECTION_LABELS

        for name in PROTECTION_LABELS:
            self._protect.labels(protection=name).set(sum(p.protection == name for p in view.protections))
        for s, f in view.feed.items():
            _set(self._feed_lag.labels(symbol=s), f.age_s)
            self.last["feed_lag_s"][s] = f.age_s

    def model_in_use(self, version: str | None, *, watch_only: bool) -> None:
        self._model.info({"version": version or "none"})
        self._watch.set(1 if watch_only else 0)
        self.last["model_version"] = version
        self.last["watch_only"] = bool(watch_only)

    def order_sent(self, side: str) -> None:
        self._orders.labels(side=side).inc()

    def trade_closed(self, reason: str) -> None:
        self._closed.labels(reason=reason).inc()

    def skipped(self, counts: Mapping[str, int]) -> None:
        for reason, n in counts.items():
            if n:
                self._skips.labels(reason=reason).inc(n)

    def _task_count(self) -> float:
        """Tasks of the loop this registry was made on: flat in a healthy daemon, a rising line
        when tasks leak. NaN when there is no loop (a registry made outside one)."""
        return float(len(asyncio.all_tasks(self._loop))) if self._loop is not None else float("nan")

    def loop_lag(self, seconds: float) -> None:
        self._loop_lag.observe(seconds)
        self._loop_lag_last.set(seconds)
        self.last["loop_lag_s"] = float(seconds)

    # -- output --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every figure."""
        return generate_latest(self.registry)


def _set(g: Any, v: float | None) -> None:
    """A gauge set to `v`, NaN when the figure is unknown (Prometheus' "no value")."""
    g.set(float("nan") if v is None else float(v))


class LoopLagMonitor:
    """Feeds `metrics.loop_lag` from the one sampler (`bot.runtime.looplag.LoopLag`) when nothing else
    does: the daemon hands its own sampler's samples to the metrics (and sets
    `metrics.lag_fed = True`), so this only runs for a dashboard served on its own.
    A blocked loop (a CPU-heavy call on it) shows as lag; it is the figure that says the
    daemon is keeping up with its minutes.
    """

    def __init__(self, metrics: DaemonMetrics, interval_s: float = 1.0) -> None:
        from bot.runtime.looplag import LoopLag

        self.metrics = metrics
        self.sampler = LoopLag(sink=metrics.loop_lag, period_s=interval_s)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and not self.metrics.lag_fed:
            self._task = asyncio.get_running_loop().create_task(self.sampler.run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
