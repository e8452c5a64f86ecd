"""The live loop's human-line events (`bot.logs.event_lines` registry names) from the engine's output.

`bot.live.trader.LiveTrader` hands each minute's `StepResult` and records here; this logs one event
per opened position (`trade_open`) and closed trade (`trade_close`), one hourly `risk_skips`
summary (`bot.live.skip_summary`), and a `kill_switch` / `kill_switch_reset` line when the risk
manager's kill switch changes state. Trade lines carry the bar time (`ts`), so a fast replay
shows market times. Kept out of `bot.live.trader` so that the loop stays about I/O and ordering.

The no-edge notice: a bundle whose out-of-sample PF is under the *default* no-edge floor can
still trade when a config lowers `trading.min_validation_pf` (the demo does, to show trades with
a quick model). The start line says so; with `BOT_DEMO=1` (set by `scripts/demo.py`) it is the
demo's wording, which the dashboard shows as its notice too; every other line of the demo
carries the short `[demo]` tag (`logging.line_tag`, set by the demo's config: `bot.logs.setup`).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import structlog

from bot.live.skip_summary import SkipSummary
from models.timeutil import MINUTE_MS

if TYPE_CHECKING:
    from bot.config import Config
    from bot.engine.engine import Engine, StepResult

log = structlog.get_logger("bot.live.trader")

DEMO_NOTICE = "demo: trading a model without a validated edge, paper only"


def is_demo() -> bool:
    return os.environ.get("BOT_DEMO") == "1"


def no_edge_notice(eng: Engine) -> str | None:
    """A line when the engine trades a bundle that would not clear the default floor."""
    from bot.engine.config import TradingConfig

    if eng is None or eng.watch_reason is not None:
        return None
    d = TradingConfig()
    pf = eng.edge.profit_factor
    if (pf is not None and pf >= d.min_validation_pf) and eng.edge.trades >= d.min_validation_trades:
        return None
    if is_demo():
        return DEMO_NOTICE
    shown = "none" if pf is None else f"{pf:.2f}"
    return f"trading a model without a validated edge (PF {shown}, {eng.edge.trades} trades; the floor is lowered in the config)"


def _f(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class LiveEvents:
    def __init__(self, mode: str, logger: Any = None):
        self.mode = mode
        self.log = logger or log
        self.skips = SkipSummary(logger=self.log)
        self.kill: str | None = None
        self.blocks: dict[tuple[str, str], dict[str, Any]] = {}  # active protections, said once each
        self.notice: str | None = None

    def started(self, eng: Engine, version: str | None, n_symbols: int, cfg: Config | None = None) -> None:
        """The START line once the engine is warm: mode, model (and its validated PF), trading or watching."""
        self.kill = eng.risk.kill_switch.tripped
        self.blocks = self._active(eng, eng.last_ts) if eng.last_ts is not None else {}  # restored, not new
        self.notice = no_edge_notice(eng)
        self.log.info("daemon_start", mode=self.mode, model_version=version, symbols=n_symbols,
                      watch_reason=eng.watch_reason, pf=_f(eng.edge.profit_factor), notice=self.notice,
                      demo=is_demo() and self.notice == DEMO_NOTICE)  # fmt: skip

    def step(self, eng: Engine, ts: int, res: StepResult, rec: Any) -> None:
        equity = rec.equity.equity if rec.equity is not None else None
        for p in rec.opened:
            size = p.qty * p.entry_price / equity if equity else None
            self.log.info("trade_open", symbol=p.symbol, qty=p.qty, price=p.entry_price, ts=p.entry_ts, er=_f(p.er),
                          p=_f(p.p), size_fraction=size, mode=self.mode, model_version=p.model_version)  # fmt: skip
        for t in rec.closed:
            self.log.info("trade_close", symbol=t.symbol, qty=t.qty, price=t.exit_price, ts=t.exit_ts, pnl=t.pnl,
                          ret=t.ret, reason=t.exit_reason, entry_price=t.entry_price,
                          held_min=(t.exit_ts - t.entry_ts) / 60_000, mode=self.mode)  # fmt: skip
        self.skips.tick(ts)
        for why, n in (getattr(res, "skips", None) or {}).items():
            self.skips.counts[str(why)] += int(n)
        self.skips.n_entered += len(rec.opened)
        self._kill_switch(eng, ts, equity)
        self._protections(eng, ts)

    def _protections(self, eng: Engine, ts: int) -> None:
        """One `protection` line when a block starts (or is extended), one `protection_cleared`
        when it ends: what blocks the next minute's decision (`risk.active_protections`)."""
        if not eng.risk.protections.on and not self.blocks:
            return
        now = self._active(eng, ts)
        for key, b in now.items():
            old = self.blocks.get(key)
            if old is None or b["until_ms"] > old["until_ms"]:
                self.log.warning("protection", event_ts=ts, **b)
        for key in self.blocks.keys() - now.keys():
            self.log.info("protection_cleared", protection=key[0], scope=key[1], event_ts=ts)
        self.blocks = now

    @staticmethod
    def _active(eng: Engine, ts: int) -> dict[tuple[str, str], dict[str, Any]]:
        from risk.protections import active_protections

        blocks = active_protections({"protections": eng.risk.protections.to_dict()}, ts + MINUTE_MS)
        return {(b["protection"], b["scope"]): b for b in blocks}

    def _kill_switch(self, eng: Engine, ts: int, equity: float | None) -> None:
        ks = eng.risk.kill_switch
        now = ks.tripped
        if now == self.kill:
            return
        if now is not None:
            base = ks.day_start_equity if now == "daily_loss" else ks.peak_equity
            limit = ks.daily_loss_limit if now == "daily_loss" else ks.max_drawdown
            value = (equity / base - 1) if equity and base else None
            self.log.warning("kill_switch", reason=now, value=value, limit=-limit if limit else None, event_ts=ts)
        else:
            self.log.info("kill_switch_reset", reason=f"was {self.kill}", event_ts=ts)
        self.kill = now

    def flush(self) -> None:
        self.skips.flush()
