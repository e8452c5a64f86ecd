"""The one controller in the daemon that every operator interface goes through.

Why one: `bot ctl` (through the store's `commands` table), Telegram (the owner's chat) and the
dashboard (behind its token) must do the same thing for the same command, write the same row
and give the same answer; freqtrade's RPC fan-in is the model. The interfaces only check who
is asking (a stranger is refused and recorded, `refuse`) and render the answer.

Every command is a `commands` row with the interface and identity of who asked (CLI
`user@host`, `telegram owner chat`, `dashboard 127.0.0.1`; the owner's chat id is a secret and
is not written), answered with what was done: `done`, `confirm` (a code to confirm with),
`refused` (the daemon cannot do it now, and says why: the store away, no engine yet, a retrain
already running, a bad config file, a symbol not held...) or `failed` (an error; the daemon goes
on). Commands run one at a time.

What each does (see `bot.ops.control.commands` for the words):
- pause / resume: persisted in `control_state` before the answer; the engine reads it before
  each step (no entry while paused: reason `paused` in the decision log; exits still run), and
  a restart reads it back;
- flatten [SYMBOL] / force_exit SYMBOL: `Engine.close_out` in the engine's worker thread between
  two minutes (`LiveTrader.engine_op`: never during a step), its records persisted like a
  minute's; exits go through the mode's broker (paper fills at the last close; live: market
  orders through the live broker). flatten asks for a confirmation code first; in live mode
  flatten and force_exit ask once more (a second code);
- retrain: `Retrainer.run_now` (refused while one runs);
- reload: the daemon's own config file through the one loader (`bot.config.load_config`); a
  file with any problem changes nothing and the answer lists the problems; a valid one replaces
  the `risk:` section (`Engine.set_risk_config`: the kill switch, cooldowns, protections and
  order count carry over); a change is named by its dotted key (`risk.stop_loss_guard.stop_losses`); other sections that differ are named (they need a restart);
- daily / weekly / performance: read-only P&L from the operator read model.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bot.logs.error_lines import log_survived
from bot.ops.control.commands import SPECS, Parsed, help_text, norm_symbol, parse
from bot.store import control as store_control
from bot.store.outage import describe, is_unavailable
from models.timeutil import fmt_short

if TYPE_CHECKING:
    from bot.config import Config

log = structlog.get_logger("bot.ops.control")

CONFIRM_S = 60.0  # a confirmation code is good for this long
POLL_S = 0.5  # how often the daemon looks for `bot ctl` rows
MAX_AGE_MS = 30_000  # a pending row older than this is expired, never executed
REFUSALS_PER_10_MIN = 30  # strangers' attempts recorded at most this often (the rest are counted)


@dataclass(frozen=True)
class Answer:
    status: str  # done | confirm | refused | failed
    text: str
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Asker:
    interface: str  # cli | telegram | dashboard
    identity: str

    def __str__(self) -> str:
        return f"{self.interface} {self.identity}"


@dataclass
class _Waiting:
    """A command waiting for its confirmation code."""

    asker: Asker
    name: str
    args: list[str]
    left: int  # confirmations still to give
    expires: float  # time.monotonic()


class NotReady(Exception):
    """The engine cannot take an operation now (the reason is the message)."""


class Controller:
    def __init__(self, cfg: Config, store: Any, trader: Any, *, config_path: Path | None = None):
        self.cfg = cfg
        self.store = store
        self.trader = trader
        self.config_path = config_path
        self.mode = cfg.mode
        self.paused = False
        self.changed_ts: int | None = None
        self.changed_by: str | None = None
        self._lock = asyncio.Lock()
        self._waiting: dict[str, _Waiting] = {}
        self._refusals: deque[float] = deque()
        self.refused_unrecorded = 0
        self._cid: int | None = None  # the command row being run
        self._serve_errors = 0

    # --- state ---------------------------------------------------------------------------------

    async def load(self) -> None:
        """At start: the pause a previous run left (so it survives a restart, kill -9 included)."""
        async with self.store.pool.acquire() as conn:
            st = await store_control.read_control_state(conn, self.mode)
        self.paused, self.changed_ts, self.changed_by = st.paused, st.changed_ts, st.changed_by
        if st.paused:
            log.warning("control_paused_at_start", by=st.changed_by, since_ts=st.changed_ts,
                        text=f"PAUSED entries (since {fmt_short(st.changed_ts)} by {st.changed_by}): no new positions "
                             "until `resume`; exits go on")  # fmt: skip

    def details(self) -> dict[str, Any]:
        """For the daemon_status row and the dashboard."""
        return {"paused": self.paused, "paused_since_ts": self.changed_ts if self.paused else None,
                "paused_by": self.changed_by if self.paused else None}  # fmt: skip

    # --- entry points --------------------------------------------------------------------------

    async def submit(self, interface: str, identity: str, name: str, args: list[str] | tuple[str, ...] = ()) -> Answer:
        """A command from an interface inside the daemon (Telegram, the dashboard): recorded,
        run, answered. With the store away it cannot be recorded, so nothing is done."""
        p = parse(name, list(args))
        try:
            async with self.store.pool.acquire(timeout=self.cfg.database.write_timeout_s) as conn:
                row = await store_control.insert_command(conn, interface, identity, p.name, p.args, status="running")
        except Exception as e:
            if not is_unavailable(e):
                raise
            return Answer("refused", f"not done: the store is unavailable ({describe(e)}), so the command cannot be "
                                     "recorded; try again when it answers")  # fmt: skip
        return await self._run(row.id, Asker(interface, identity), p)

    async def refuse(self, interface: str, identity: str, name: str, args: list[str], why: str) -> None:
        """Someone who may not command the daemon (another chat, a wrong dashboard token): recorded
        (at most REFUSALS_PER_10_MIN rows per 10 minutes; more are counted) and logged; nothing is done."""
        now = time.monotonic()
        while self._refusals and now - self._refusals[0] > 600:
            self._refusals.popleft()
        log.warning("control_refused", interface=interface, identity=identity, command=name[:40], reason=why,
                    text=f"CONTROL refused {name[:40]!r} from {interface} {identity}: {why}")  # fmt: skip
        if len(self._refusals) >= REFUSALS_PER_10_MIN:
            self.refused_unrecorded += 1
            return
        self._refusals.append(now)
        try:
            async with self.store.pool.acquire(timeout=self.cfg.database.write_timeout_s) as conn:
                await store_control.insert_refused(conn, interface, identity, name[:64], [str(a)[:64] for a in args[:4]],
                                                   f"refused: {why}")  # fmt: skip
        except Exception as e:  # noqa: BLE001 - the log line above has it
            log.debug("control_refusal_not_recorded", error=type(e).__name__)

    async def serve(self) -> None:
        """The `bot ctl` side: claim pending rows and answer them, until cancelled."""
        while True:
            try:
                async with self.store.pool.acquire(timeout=self.cfg.database.write_timeout_s) as conn:
                    rows, expired = await store_control.claim_pending(conn, MAX_AGE_MS)
                self._serve_errors = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the store away: the outage is said elsewhere
                self._serve_errors += 1
                if not is_unavailable(e) and self._serve_errors == 1:
                    log_survived(log, "control commands", e, what="control_poll_failed")
                await asyncio.sleep(min(10.0, POLL_S * 2**self._serve_errors))
                continue
            if expired:
                log.warning("control_expired", commands=expired,
                            text=f"CONTROL {expired} command(s) waited longer than {MAX_AGE_MS // 1000} s: not done")  # fmt: skip
            for row in rows:
                await self._run(row.id, Asker(row.interface, row.identity), parse(row.command, row.args))
            await asyncio.sleep(POLL_S)

    async def _run(self, command_id: int, asker: Asker, p: Parsed) -> Answer:
        async with self._lock:
            self._cid = command_id
            try:
                ans = Answer("refused", p.error) if p.error else await getattr(self, f"_do_{p.name}")(asker, p.args)
            except NotReady as e:
                ans = Answer("refused", f"not done: {e}")
            except Exception as e:  # noqa: BLE001 - a command never ends the daemon
                log_survived(log, f"control {p.name}", e, what="control_command_failed", exc_info=True)
                ans = Answer("failed", f"{p.name} failed: {type(e).__name__}: {str(e)[:200]}")
            finally:
                self._cid = None
            try:
                async with self.store.pool.acquire(timeout=self.cfg.database.write_timeout_s) as conn:
                    await store_control.answer_command(conn, command_id, ans.status, ans.text, ans.result or None)
            except Exception as e:  # noqa: BLE001 - the answer still goes back to an in-process asker
                log.warning("control_answer_not_recorded", command_id=command_id, error=type(e).__name__)
        level = "info" if ans.status in ("done", "confirm") else "warning"
        getattr(log, level)("control_command", interface=asker.interface, identity=asker.identity, command=p.name,
                            args=p.args, status=ans.status, command_id=command_id,
                            text=f"CONTROL {' '.join([p.name, *p.args])} by {asker}: {ans.status}: {ans.text.splitlines()[0]}")  # fmt: skip
        return ans

    # --- commands ------------------------------------------------------------------------------

    async def _do_help(self, asker: Asker, args: list[str]) -> Answer:
        return Answer("done", help_text("/" if asker.interface == "telegram" else ""))

    async def _do_pause(self, asker: Asker, args: list[str], *, pause: bool = True) -> Answer:
        word = "paused" if pause else "allowed"
        if self.paused == pause:
            since = f" since {fmt_short(self.changed_ts)} UTC by {self.changed_by}" if self.changed_ts else ""
            return Answer("done", f"entries already {word}{since}: nothing changed", self.details())
        async with self.store.pool.acquire(timeout=self.cfg.database.write_timeout_s) as conn:
            st = await store_control.write_paused(conn, self.mode, pause, str(asker), self._cid)
        # the engine reads it before its next step (`LiveTrader._step_sync`): between two minutes
        self.paused, self.changed_ts, self.changed_by = st.paused, st.changed_ts, st.changed_by
        eng = self.trader.engine
        held = len(eng.positions) if eng is not None else 0
        if pause:
            text = (f"entries PAUSED from the next minute ({held} open position(s) keep their exits); "
                    "this survives a restart; `resume` allows entries again")  # fmt: skip
        else:
            text = "entries RESUMED from the next minute"
        return Answer("done", text, {**self.details(), "last_minute_ts": self.trader.last_minute})

    async def _do_resume(self, asker: Asker, args: list[str]) -> Answer:
        return await self._do_pause(asker, args, pause=False)

    async def _do_flatten(self, asker: Asker, args: list[str]) -> Answer:
        eng = self._engine_for_orders()
        sym = self._symbol(args[0]) if args else None
        held = sorted(s for s in eng.positions if sym is None or s == sym)
        waiting = sorted({it.symbol for it in eng.broker.pending() if it.leg == "entry" and (sym is None or it.symbol == sym)})
        if not held and not waiting:
            return Answer("done", f"no open position{' in ' + sym if sym else ''}: nothing to flatten")
        what = f"flatten {len(held)} position(s)" + (f" ({', '.join(held)})" if held else "")
        if waiting:
            what += f" and drop {len(waiting)} entry order(s) not yet filled ({', '.join(waiting)})"
        return self._ask(asker, "flatten", args, 2 if self.mode == "live" else 1, what)

    async def _do_force_exit(self, asker: Asker, args: list[str]) -> Answer:
        eng = self._engine_for_orders()
        sym = self._symbol(args[0])
        if sym not in eng.positions:
            held = ", ".join(sorted(eng.positions)) or "none"
            return Answer("refused", f"no open position in {sym} (open: {held}): nothing done")
        if self.mode == "live":
            return self._ask(asker, "force_exit", args, 1, f"force-exit {sym} ({eng.positions[sym].qty:g})")
        return await self._close(asker, "force_exit", [sym])

    async def _do_confirm(self, asker: Asker, args: list[str]) -> Answer:
        now = time.monotonic()
        for code, w in list(self._waiting.items()):
            if w.expires < now:
                del self._waiting[code]
        w = self._waiting.get(args[0])
        if w is None or w.asker != asker:
            return Answer("refused", f"no command waits for confirmation {args[0]} from {asker} (codes last "
                                     f"{CONFIRM_S:.0f} s): nothing done")  # fmt: skip
        del self._waiting[args[0]]
        if w.left > 1:
            return self._ask(asker, w.name, w.args, w.left - 1,
                             f"LIVE mode: {w.name.replace('_', '-')} sends real market orders to {self.cfg.exchange.id}",
                             again=True)  # fmt: skip
        return await self._close(asker, w.name, [self._symbol(w.args[0])] if w.args else None)

    async def _do_retrain(self, asker: Asker, args: list[str]) -> Answer:
        r = self.trader.retrainer
        if r is None:
            raise NotReady("no retrain schedule runs now (the daemon is starting, or collects candles with --no-train)")
        if r.running:
            pid = f" (training process pid {r.child_pid})" if r.child_pid else ""
            return Answer("refused", f"not done: a retrain is already running{pid}; its RETRAIN line tells the outcome")
        if not r.run_now():
            return Answer("refused", "not done: a retrain is already running")
        last = self.trader.last_minute
        upto = f" on the candles up to {fmt_short(last)} UTC" if last else ""
        return Answer("done", f"retrain started{upto} in a separate process; its RETRAIN line (bot tail) tells the "
                              "outcome; a better model is swapped in between two minutes")  # fmt: skip

    async def _do_reload(self, asker: Asker, args: list[str]) -> Answer:
        from bot.config import ConfigError, load_config

        path = self.config_path
        if path is None:
            return Answer("refused", "not done: the daemon runs on the embedded defaults (no config file): nothing to reload")
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as e:
            return Answer("refused", f"{path} not reloaded, nothing changed: " + "; ".join(e.problems),
                          {"problems": e.problems})  # fmt: skip
        tr = self.trader
        old = tr.cfg
        was, now = _dotted(old.risk.model_dump()), _dotted(new.risk.model_dump())
        changes = [f"risk.{k} {v!r} -> {now[k]!r}" for k, v in was.items() if now[k] != v]
        others = [k for k in type(old).model_fields if k not in ("risk", "secrets") and getattr(old, k) != getattr(new, k)]
        note = f"; not applied, they need a restart: {', '.join(others)}" if others else ""
        if not changes:
            return Answer("done", f"the risk section of {path} is unchanged{note}", {"changes": [], "restart_needed": others})
        if tr.engine is not None:
            if tr.feed is None:
                raise NotReady("the engine is warming up; try again in a minute")
            await tr.engine_op(lambda eng: eng.set_risk_config(new.risk))
        tr.cfg = old.model_copy(update={"risk": new.risk})
        if tr.live is not None:
            tr.live.cfg = tr.cfg
        self.cfg = tr.cfg
        return Answer("done", f"risk reloaded from {path}: {', '.join(changes)} (the kill switch, cooldowns, "
                              f"protections and order count carry over){note}", {"changes": changes, "restart_needed": others})  # fmt: skip

    async def _do_daily(self, asker: Asker, args: list[str]) -> Answer:
        return await self._report("daily", args)

    async def _do_weekly(self, asker: Asker, args: list[str]) -> Answer:
        return await self._report("weekly", args)

    async def _do_performance(self, asker: Asker, args: list[str]) -> Answer:
        return await self._report("performance", args)

    async def _report(self, kind: str, args: list[str]) -> Answer:
        from bot.ops.control.reports import report

        try:
            text, data = await report(self.store.pool, self.mode, self.cfg.symbols, kind, args,
                                      now_ts=self.trader.last_minute, quote=self.cfg.exchange.quote)  # fmt: skip
        except ValueError as e:
            return Answer("refused", str(e))
        return Answer("done", text, data)

    # --- helpers -------------------------------------------------------------------------------

    def _symbol(self, s: str) -> str:
        sym = norm_symbol(s)
        if sym not in self.cfg.symbols:
            raise NotReady(f"{sym} is not a traded symbol")
        return sym

    def _engine_for_orders(self) -> Any:
        """The running engine, if an order-placing command can run now (else NotReady, saying why)."""
        tr = self.trader
        if tr.stop.is_set():
            raise NotReady("the daemon is stopping")
        if tr.engine is None or tr.feed is None:
            raise NotReady("the engine is not trading (starting, warming up, or collecting candles without a model)")
        if not tr.health.up:
            raise NotReady("the store is unavailable: the orders could not be recorded; try again when it answers")
        if self.mode == "live" and not self.cfg.secrets.complete:
            raise NotReady("live mode without API keys: no order can be sent")
        return tr.engine

    def _ask(self, asker: Asker, name: str, args: list[str], left: int, what: str, *, again: bool = False) -> Answer:
        code = f"{secrets.randbelow(9000) + 1000}"
        while code in self._waiting:
            code = f"{secrets.randbelow(9000) + 1000}"
        self._waiting[code] = _Waiting(asker, name, list(args), left, time.monotonic() + CONFIRM_S)
        prefix = "/" if asker.interface == "telegram" else ""
        step = "confirm again" if again else "confirm"
        return Answer("confirm", f"{what}? {step} within {CONFIRM_S:.0f} s: {prefix}confirm {code}",
                      {"code": code, "expires_s": CONFIRM_S, "command": name, "args": list(args), "left": left})  # fmt: skip

    async def _close(self, asker: Asker, name: str, symbols: list[str] | None) -> Answer:
        """flatten / force_exit, confirmed: `Engine.close_out` between two minutes."""
        self._engine_for_orders()  # again: things may have changed while the confirmation waited
        reason = "force_exit" if name == "force_exit" else "flatten"
        res = await self.trader.engine_op(lambda eng: eng.close_out(eng.last_ts, reason, symbols))
        eng = self.trader.engine
        still = sorted(s for s in eng.positions if symbols is None or s in symbols)
        quote = self.cfg.exchange.quote
        closed = [f"{t.symbol} {t.pnl:+,.2f}" for t in res.closed]
        total = sum(t.pnl for t in res.closed)
        text = f"closed {len(res.closed)} position(s)" + (f": {', '.join(closed)} {quote} (realised {total:+,.2f} {quote})"
                                                           if closed else "")  # fmt: skip
        if res.cancelled:
            text += f"; {len(res.cancelled)} entry order(s) not yet filled dropped"
        if still:
            text += f"; still open: {', '.join(still)} (orders not answered yet: they are followed; try again)"
        return Answer("done", text, {"closed": [t.symbol for t in res.closed], "pnl": total, "still_open": still,
                                     "cancelled": [c for c, _ in res.cancelled]})  # fmt: skip


__all__ = ["SPECS", "Answer", "Asker", "Controller", "NotReady"]


def _dotted(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config section as dotted keys (`stop_loss_guard.stop_losses`), so a reload names what changed."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
