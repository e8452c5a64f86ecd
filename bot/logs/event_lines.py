"""The short human line for each event that matters: one registry of event name -> formatter.

Code logs structured events (`log.info("trade_open", symbol=..., qty=..., ...)`); the JSON log
keeps every field, and `bot.logs.setup.HumanRenderer` turns the same event into one short line for
`bot.log`, the console, `bot tail` and Telegram by calling `render_body(event)` here. The line
is `MM-DD HH:MM <body>` in UTC (`models.timeutil.fmt_short`; `bot tail` says "UTC" once; the
log time, or the event's own time when it carries one: `event_ts`, or `ts` for trades), with
`WARN`/`ERROR` after the time for those levels. Times inside a body are never epoch ms.

An event not in the registry keeps the old behaviour: its `text` key if it has one, otherwise
`event key=value ...`. A formatter that fails (a missing or odd field) never breaks logging: the
line falls back to key=value.

Events and their fields (required first; `?` marks optional ones). Times are UTC epoch ms,
returns and fractions are fractions (0.0021 = 0.21%), money is in the quote currency.

Daemon life cycle
  daemon_start   mode, model_version?, pf? (validated), symbols? (count), watch_reason?, notice?, demo? (bool)
                 -> `START paper  model 20261130-2100-ab12  PF 1.23  30 symbols  trading`
  daemon_ready   mode, warmup_s?                   -> `READY paper  warm-up 12.3s`
  daemon_stop    mode, reason?, uptime_s?          -> `STOP paper  (SIGTERM)  up 3h12m`
Trading
  trade_open     symbol, qty, price, er?, p?, size_fraction?, mode?, ts? (fill time: the line's time)
                 -> `BUY SOLUSDT 1.20 @ 98.31  er +0.21%  p 0.64  size 2.1%  [paper]`
  trade_close    symbol, qty, price (exit), pnl, ret, reason (tp|sl|timeout|gap_timeout|
                 flatten|end_of_data|reconciled|force_exit), entry_price?, held_min?, mode?, ts? (exit time: the line's time)
                 -> `SELL SOLUSDT 1.20 @ 99.10  +0.95 USDT (+0.80%)  TP  held 42m  [paper]`
  risk_skips     counts (dict reason -> n), window_min? (60), entered?
                 -> `SKIPS 1h: 412  max_positions 300, no_edge 90, cooldown 22  (3 entered)`
  kill_switch    reason, value?, limit?            -> `KILL SWITCH daily_loss -3.10% (limit -3.00%): no new entries`
  kill_switch_reset  reason?                       -> `KILL SWITCH reset (new UTC day)`
  protection     protection, scope, until_ms, + what tripped it (`risk.protections` block)
                 -> `PROTECTION stop-loss guard: every symbol paused until 04-11 21:51 UTC (2 stop-losses within 60 min)`
  protection_cleared  protection, scope              -> `PROTECTION cleared: stop-loss guard, every symbol`
Models
  train_start    symbols, start, end (ISO text or ms), source?
                 -> `TRAIN start 30 symbols 2026-05-01..2026-11-30 (store)`
  train_done     version, status, pf?, trades?, expectancy?, seconds?
                 -> `TRAIN done 20261130-2100-ab12  PF 1.23  412 trades  exp +0.05%  candidate  312s`
  retrain_done   version, status (champion|rejected|candidate), window_start?, window_end?,
                 pf?, expectancy?, trades?, seconds?, reason?, champion_version?, champion_pf?,
                 champion_expectancy? (both bundles judged on the same recent window)
                 -> `RETRAIN 20261130-2100-ab12  2026-05-01..2026-11-30  PF 1.23  exp +0.050%  412 trades  vs champion PF 1.10 exp +0.020%  -> champion (...)`
  retrain_failed error, detail?                    -> `RETRAIN failed: MemoryError ...`
Market data
  feed_outage    reason?, symbols? (count or list: names up to 3), since_ts? (the websocket feed)
                 -> `FEED down 30 symbols (websocket silent 5s) since 11-30 12:31: REST meanwhile`
  exchange_unreachable reason, url?, down_s? (a reminder while it lasts), error?
                 -> `WARN EXCHANGE unreachable (connection refused 127.0.0.1:9): retrying with backoff, nothing traded meanwhile`
  exchange_reachable down_s                        -> `EXCHANGE reachable again after 3m12s`
  feed_recovered down_s?, filled? (candles REST filled meanwhile), symbols?, since_ts?
                 -> `FEED back after 3m12s, 42 candles filled`
  backfill_symbol  symbol, start, end, written, fetched?, pages?, invalid?, resumed?,
                 exchange_gap_minutes?
                 -> `BACKFILL ETHUSDT 2021-05-14..2026-11-30  +2,801,440 rows  (resumed)`
  backfill_progress  done, total, symbol?, rows?   -> `BACKFILL 12/30 symbols  ETHUSDT`
  import_symbol  symbol, written, rows_read?, duplicates_skipped?, rejected?, gaps?, missing_minutes?,
                 files?, sources? (formats and time units of its files)
                 -> `IMPORT BTCUSDT  +525,600 rows  3 gaps (12 min)  from 12 binance zip (10 ms, 2 us)`
  import_refused file, reason, symbol? (set: that symbol was not imported)
                 -> `WARN REFUSED BTCUSDT-1m-2024-01.zip: not a complete zip archive (...); BTCUSDT not imported`
Store (bot.store.outage)
  store_outage   what, reason, error?              (the first failure of an outage: entries pause)
                 -> `STORE unavailable (server not running): trading records held in memory, entries paused`
  store_recovered down_s, held_steps?, held_candles?, dropped_candles?, refetched_candles?
                 -> `STORE back after 3m12s: 42 minutes of trading records and 1,260 candles written late, 300 dropped and re-fetched`
Errors
  error          where, error, detail?, what? (the kind, e.g. feed_persist_failed)
                 an error the daemon survives (network, store, broker): always one line, the
                 JSON log keeps the traceback (`bot.logs.error_lines`)  -> `ERROR store: OSError: boom`
Emitted today by the feed, the minute assembler, the exchange client and the trainer
  feed_rest_fill symbol, start, end, filled, gap_minutes?  -> `FILL SOLUSDT 11-30 12:00..11-30 12:04  5 candles by REST`
  minute_timeout ts, missing_symbols               -> `MINUTE 11-30 12:31 closed without 2 symbols: ICPUSDT, FILUSDT`
  minute_late_candle symbol, ts, emitted_through?  -> `LATE SOLUSDT 11-30 12:30 candle after its minute closed`
  exchange_retry what, error, attempt, delay_s?    -> `RETRY fetch_ohlcv (NetworkError) attempt 3 in 2.0s`
  train_stage_begin stage, label?, total?          -> `TRAIN features  (30)`
  train_prepared symbols, train_rows, valid_rows   -> `TRAIN data 30 symbols  1,234,567 train rows  456,789 valid rows`

Any other event falls back to `event key=value ...`, with epoch-ms integers shown as
`MM-DD_HH:MM` there too.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from models.textfmt import MISSING, duration, money, num, pct, things
from models.timeutil import fmt_date, fmt_short

__all__ = ["EVENTS", "EventSpec", "duration", "event", "iso_to_ms", "kv_line", "line_time", "money", "num", "pct",
           "render_body"]  # fmt: skip

Formatter = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class EventSpec:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    fmt: Formatter
    time_field: str | None = None  # a field holding the event's own time (epoch ms) for the line


EVENTS: dict[str, EventSpec] = {}


def event(
    name: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = (), *, time_field: str | None = None
) -> Callable[[Formatter], Formatter]:
    """Register `fmt` as the short line of event `name` (fields documented for emitters)."""

    def deco(fmt: Formatter) -> Formatter:
        EVENTS[name] = EventSpec(name, required, optional, fmt, time_field)
        return fmt

    return deco


def render_body(ev: Mapping[str, Any]) -> str:
    """The line's text after the time: the registered formatter, else `text`, else key=value."""
    spec = EVENTS.get(str(ev.get("event", "")))
    if spec is not None and all(k in ev for k in spec.required):
        try:
            return spec.fmt(ev)
        except Exception:  # a log line must never raise: fall back to the raw fields
            pass
    if ev.get("text"):
        return str(ev["text"])
    return kv_line(ev)


_META = {"timestamp", "level", "logger", "event", "text", "exception", "_record", "_from_structlog", "event_ts",
         "line_tag"}


def kv_line(ev: Mapping[str, Any]) -> str:
    kv = " ".join(f"{k}={_kv(v)}" for k, v in ev.items() if k not in _META)
    return f"{ev.get('event', '')} {kv}".rstrip()


_EPOCH_MS = (946_684_800_000, 4_102_444_800_000)  # 2000-01-01 .. 2100-01-01


def _kv(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and _EPOCH_MS[0] <= v < _EPOCH_MS[1]:
        return fmt_short(v).replace(" ", "_")  # an epoch-ms time: never shown raw to people
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return s if " " not in s else repr(s)


def line_time(ev: Mapping[str, Any]) -> str:
    """`MM-DD HH:MM` (UTC): the event's own time if it has one (`event_ts`, or the field its
    spec names, e.g. a trade's `ts`: the bar time, which matters in a fast replay), else its
    log time. (`ts` is not taken in general: some events use it for another time, e.g. the
    candle a late-candle warning is about.)"""
    ts = ev.get("event_ts")
    spec = EVENTS.get(str(ev.get("event", "")))
    if ts is None and spec is not None and spec.time_field:
        ts = ev.get(spec.time_field)
    if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > 1e11:
        return fmt_short(int(ts))
    return fmt_short(iso_to_ms(ev.get("timestamp")))


def iso_to_ms(stamp: Any) -> int | None:
    if not stamp:
        return None
    try:
        t = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


# --- number helpers (the numbers themselves: models.textfmt) ------------------------------


def day(v: Any) -> str:
    """A date from epoch ms or ISO text: '2026-05-01'."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return fmt_date(int(v))
    return str(v)[:10]


def _present(ev: Mapping[str, Any], key: str) -> bool:
    v = ev.get(key)
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _mode_tag(ev: Mapping[str, Any]) -> str:
    return f"  [{ev['mode']}]" if ev.get("mode") else ""


# --- the formats -------------------------------------------------------------------------


@event("daemon_start", ("mode",), ("model_version", "symbols", "demo", "pf", "watch_reason", "notice"))
def _daemon_start(ev: Mapping[str, Any]) -> str:
    parts = [f"START {ev['mode']}"]
    parts.append(f"model {ev['model_version']}" if ev.get("model_version") else "no model (watch only)")
    if _present(ev, "pf"):
        parts.append(f"PF {float(ev['pf']):.2f}")
    if _present(ev, "symbols"):
        parts.append(things(int(ev["symbols"]), "symbol"))
    if ev.get("watch_reason"):
        parts.append(f"WATCH ONLY: {ev['watch_reason']}")
    elif ev.get("model_version"):
        parts.append("trading")
    if ev.get("demo"):
        parts.append("demo: trading a model without a validated edge, paper only")
    elif ev.get("notice"):
        parts.append(str(ev["notice"]))
    return "  ".join(parts)


@event("daemon_ready", ("mode",), ("warmup_s",))
def _daemon_ready(ev: Mapping[str, Any]) -> str:
    w = f"  warm-up {float(ev['warmup_s']):.1f}s" if _present(ev, "warmup_s") else ""
    return f"READY {ev['mode']}{w}"


@event("daemon_stop", ("mode",), ("reason", "uptime_s"))
def _daemon_stop(ev: Mapping[str, Any]) -> str:
    parts = [f"STOP {ev['mode']}"]
    if ev.get("reason"):
        parts.append(f"({ev['reason']})")
    if _present(ev, "uptime_s"):
        parts.append(f"up {duration(ev['uptime_s'])}")
    return "  ".join(parts)


@event("trade_open", ("symbol", "qty", "price"), ("er", "p", "size_fraction", "mode", "ts"), time_field="ts")
def _trade_open(ev: Mapping[str, Any]) -> str:
    parts = [f"BUY {ev['symbol']} {num(ev['qty'])} @ {num(ev['price'])}"]
    if _present(ev, "er"):
        parts.append(f"er {pct(ev['er'])}")
    if _present(ev, "p"):
        parts.append(f"p {float(ev['p']):.2f}")
    if _present(ev, "size_fraction"):
        parts.append(f"size {pct(ev['size_fraction'], sign=False, digits=1)}")
    return "  ".join(parts) + _mode_tag(ev)


_EXIT_WORDS = {"tp": "TP", "sl": "SL", "timeout": "timeout", "gap_timeout": "gap timeout",
               "flatten": "flatten", "end_of_data": "end of data",
               "reconciled": "reconciled (the exchange holds less)", "force_exit": "force exit"}  # fmt: skip


@event("trade_close", ("symbol", "qty", "price", "pnl", "ret", "reason"), ("entry_price", "held_min", "mode", "ts"), time_field="ts")
def _trade_close(ev: Mapping[str, Any]) -> str:
    quote = ev.get("quote") or "USDT"
    parts = [
        f"SELL {ev['symbol']} {num(ev['qty'])} @ {num(ev['price'])}",
        f"{money(ev['pnl'])} {quote} ({pct(ev['ret'])})",
        _EXIT_WORDS.get(str(ev["reason"]), str(ev["reason"])),
    ]
    if _present(ev, "held_min"):
        parts.append(f"held {duration(float(ev['held_min']) * 60)}")
    return "  ".join(parts) + _mode_tag(ev)


@event("risk_skips", ("counts",), ("window_min", "entered"))
def _risk_skips(ev: Mapping[str, Any]) -> str:
    counts: Mapping[str, Any] = ev["counts"] or {}
    total = sum(int(v) for v in counts.values())
    window = int(ev.get("window_min") or 60)
    span = f"{window // 60}h" if window % 60 == 0 else f"{window}m"
    top = sorted(counts.items(), key=lambda kv: (-int(kv[1]), kv[0]))
    shown = ", ".join(f"{k} {int(v)}" for k, v in top[:5])
    more = f", +{len(top) - 5} more" if len(top) > 5 else ""
    entered = f"  ({int(ev['entered'])} entered)" if _present(ev, "entered") else ""
    return f"SKIPS {span}: {total}  {shown}{more}{entered}".rstrip()


@event("kill_switch", ("reason",), ("value", "limit"))
def _kill_switch(ev: Mapping[str, Any]) -> str:
    what = str(ev["reason"])
    if _present(ev, "value"):
        what += f" {pct(ev['value'])}"
        if _present(ev, "limit"):
            what += f" (limit {pct(ev['limit'])})"
    return f"KILL SWITCH {what}: no new entries"


_PROTECTION_NAMES = {"stop_loss_guard": "stop-loss guard", "low_profit_lock": "low-profit lock",
                     "drawdown_lookback": "drawdown lookback"}


def protection_text(b: Mapping[str, Any]) -> str:
    """One active protection block (`risk.protections.active_protections`) for people:
    `stop-loss guard: every symbol paused until 04-11 21:45 UTC (3 stop-losses within 60 min)`
    (`bot status`, the dashboard and the `protection` line say it the same way)."""
    until = f"until {fmt_short(b['until_ms'])} UTC"
    who = "every symbol" if b["scope"] == "*" else b["scope"]
    if b["protection"] == "stop_loss_guard":
        return f"stop-loss guard: {who} paused {until} ({b.get('stop_losses')} stop-losses within {b.get('window_minutes')} min)"
    if b["protection"] == "low_profit_lock":
        return f"low-profit lock: {who} locked {until} (its last {b.get('trades')} trades {pct(b.get('net_return'))})"
    if b["protection"] == "drawdown_lookback":
        return (f"drawdown lookback: {who} paused {until} (equity {pct(-float(b.get('drawdown') or 0.0))} "
                f"from its {b.get('hours')} h peak)")  # fmt: skip
    return f"{b['protection']}: {who} blocked {until}"


@event("protection", ("protection", "scope", "until_ms"), ())
def _protection(ev: Mapping[str, Any]) -> str:
    return f"PROTECTION {protection_text(ev)}"


@event("protection_cleared", ("protection", "scope"), ())
def _protection_cleared(ev: Mapping[str, Any]) -> str:
    who = "every symbol" if ev["scope"] == "*" else ev["scope"]
    return f"PROTECTION cleared: {_PROTECTION_NAMES.get(str(ev['protection']), ev['protection'])}, {who}"


@event("kill_switch_reset", (), ("reason",))
def _kill_switch_reset(ev: Mapping[str, Any]) -> str:
    return "KILL SWITCH reset" + (f" ({ev['reason']})" if ev.get("reason") else "")


def _model_stats(ev: Mapping[str, Any]) -> list[str]:
    parts = []
    if _present(ev, "pf"):
        parts.append(f"PF {float(ev['pf']):.2f}")
    if _present(ev, "expectancy"):
        parts.append(f"exp {pct(ev['expectancy'], digits=3)}")
    if _present(ev, "trades"):
        parts.append(f"{int(ev['trades']):,} trades")
    return parts


@event("train_start", ("symbols", "start", "end"), ("source",))
def _train_start(ev: Mapping[str, Any]) -> str:
    src = f" ({ev['source']})" if ev.get("source") else ""
    return f"TRAIN start {things(int(ev['symbols']), 'symbol')} {day(ev['start'])}..{day(ev['end'])}{src}"


@event("train_done", ("version", "status"), ("pf", "trades", "expectancy", "seconds"))
def _train_done(ev: Mapping[str, Any]) -> str:
    parts = [f"TRAIN done {ev['version']}", *_model_stats(ev), str(ev["status"])]
    if _present(ev, "seconds"):
        parts.append(duration(ev["seconds"]))
    return "  ".join(parts)


@event("retrain_done", ("version", "status"),
       ("window_start", "window_end", "pf", "expectancy", "trades", "seconds", "reason",
        "champion_version", "champion_pf", "champion_expectancy"))  # fmt: skip
def _retrain_done(ev: Mapping[str, Any]) -> str:
    parts = [f"RETRAIN {ev['version']}"]
    if _present(ev, "window_start") and _present(ev, "window_end"):
        parts.append(f"{day(ev['window_start'])}..{day(ev['window_end'])}")
    parts.extend(_model_stats(ev))
    if ev.get("champion_version") or _present(ev, "champion_pf"):
        champ = _model_stats({"pf": ev.get("champion_pf"), "expectancy": ev.get("champion_expectancy")})
        parts.append("vs champion " + (" ".join(champ) if champ else MISSING))
    verdict = f"-> {ev['status']}"
    if ev.get("reason"):
        verdict += f" ({ev['reason']})"
    parts.append(verdict)
    return "  ".join(parts)


@event("retrain_failed", ("error",), ("detail",))
def _retrain_failed(ev: Mapping[str, Any]) -> str:
    detail = f" {str(ev['detail'])[:120]}" if ev.get("detail") else ""
    return f"RETRAIN failed: {ev['error']}{detail}"


@event("feed_outage", (), ("reason", "symbols", "since_ts"))
def _feed_outage(ev: Mapping[str, Any]) -> str:
    reason = f" ({ev['reason']})" if ev.get("reason") else ""
    syms = ev.get("symbols")
    who = ""
    if isinstance(syms, list | tuple):
        who = f" {', '.join(map(str, syms))}" if len(syms) <= 3 else f" {len(syms)} symbols"
    elif syms:
        who = f" {syms} symbols"
    since = f" since {fmt_short(int(ev['since_ts']))}" if _present(ev, "since_ts") else ""
    return f"FEED down{who}{reason}{since}: REST meanwhile"


@event("store_outage", ("what", "reason"), ("error",))
def _store_outage(ev: Mapping[str, Any]) -> str:
    return f"STORE unavailable ({ev['reason']}): trading records held in memory, entries paused"


@event("store_recovered", ("down_s",), ("held_steps", "held_candles", "dropped_candles", "refetched_candles"))
def _store_recovered(ev: Mapping[str, Any]) -> str:
    late = []
    if int(ev.get("held_steps") or 0):
        late.append(f"{int(ev['held_steps']):,} minutes of trading records")
    if int(ev.get("held_candles") or 0):
        late.append(f"{int(ev['held_candles']):,} candles")
    out = f"STORE back after {duration(ev['down_s'])}"
    if late:
        out += f": {' and '.join(late)} written late"
    if int(ev.get("dropped_candles") or 0):
        out += f"{',' if late else ':'} {int(ev['dropped_candles']):,} dropped and re-fetched"
    return out


@event("exchange_unreachable", ("reason",), ("url", "down_s", "error"))
def _exchange_unreachable(ev: Mapping[str, Any]) -> str:
    since = f" for {int(ev['down_s'])}s" if _present(ev, "down_s") else ""
    return f"EXCHANGE unreachable{since} ({ev['reason']}): retrying with backoff, nothing traded meanwhile"


@event("exchange_reachable", ("down_s",))
def _exchange_reachable(ev: Mapping[str, Any]) -> str:
    return f"EXCHANGE reachable again after {duration(ev['down_s'])}"


@event("feed_recovered", (), ("down_s", "filled"))
def _feed_recovered(ev: Mapping[str, Any]) -> str:
    after = f" after {duration(ev['down_s'])}" if _present(ev, "down_s") else ""
    filled = f", {int(ev['filled']):,} candles filled" if _present(ev, "filled") else ""
    return f"FEED back{after}{filled}"


@event("backfill_symbol", ("symbol", "start", "end", "written"),
       ("fetched", "pages", "invalid", "resumed", "exchange_gap_minutes"))  # fmt: skip
def _backfill_symbol(ev: Mapping[str, Any]) -> str:
    parts = [f"BACKFILL {ev['symbol']} {day(ev['start'])}..{day(ev['end'])}", f"+{int(ev['written']):,} rows"]
    if ev.get("invalid"):
        parts.append(f"{int(ev['invalid']):,} invalid")
    if ev.get("exchange_gap_minutes"):
        parts.append(f"{int(ev['exchange_gap_minutes']):,} min missing at exchange")
    if ev.get("resumed"):
        parts.append("(resumed)")
    return "  ".join(parts)


@event("backfill_progress", ("done", "total"), ("symbol", "rows"))
def _backfill_progress(ev: Mapping[str, Any]) -> str:
    s = f"BACKFILL {ev['done']}/{ev['total']} symbols"
    if ev.get("symbol"):
        s += f"  {ev['symbol']}"
    if _present(ev, "rows"):
        s += f"  {int(ev['rows']):,} rows"
    return s


@event("import_symbol", ("symbol", "written"), ("rows_read", "duplicates_skipped", "rejected", "gaps", "missing_minutes",
                                                "files", "sources"))
def _import_symbol(ev: Mapping[str, Any]) -> str:
    parts = [f"IMPORT {ev['symbol']}", f"+{int(ev['written']):,} rows"]
    if ev.get("duplicates_skipped"):
        parts.append(f"{int(ev['duplicates_skipped']):,} duplicates")
    if ev.get("rejected"):
        parts.append(f"{int(ev['rejected']):,} rejected")
    if ev.get("gaps"):
        parts.append(f"{int(ev['gaps']):,} gaps ({int(ev.get('missing_minutes') or 0):,} min)")
    if ev.get("sources"):
        parts.append(f"from {ev['sources']}")
    return "  ".join(parts)


@event("import_refused", ("file", "reason"), ("symbol",))
def _import_refused(ev: Mapping[str, Any]) -> str:
    tail = f"; {ev['symbol']} not imported" if ev.get("symbol") else ""
    return f"REFUSED {ev['file']}: {ev['reason']}{tail}"


@event("error", ("where", "error"), ("detail",))
def _error(ev: Mapping[str, Any]) -> str:
    detail = f": {str(ev['detail'])[:200]}" if ev.get("detail") else ""
    return f"{ev['where']}: {ev['error']}{detail}"


@event("feed_rest_fill", ("symbol", "start", "end", "filled"), ("gap_minutes",))
def _feed_rest_fill(ev: Mapping[str, Any]) -> str:
    gaps = f"  {int(ev['gap_minutes'])} min missing at exchange" if ev.get("gap_minutes") else ""
    return f"FILL {ev['symbol']} {fmt_short(int(ev['start']))}..{fmt_short(int(ev['end']))}  {int(ev['filled'])} candles by REST{gaps}"


@event("minute_timeout", ("ts", "missing_symbols"))
def _minute_timeout(ev: Mapping[str, Any]) -> str:
    miss = ev["missing_symbols"]
    names = list(miss) if isinstance(miss, list | tuple) else [str(miss)]
    shown = ", ".join(map(str, names[:4])) + (f" +{len(names) - 4}" if len(names) > 4 else "")
    return f"MINUTE {fmt_short(int(ev['ts']))} closed without {len(names)} symbols: {shown}"


@event("minute_late_candle", ("symbol", "ts"), ("emitted_through",))
def _minute_late(ev: Mapping[str, Any]) -> str:
    return f"LATE {ev['symbol']} {fmt_short(int(ev['ts']))} candle after its minute closed"


@event("exchange_retry", ("what", "error", "attempt"), ("delay_s",))
def _exchange_retry(ev: Mapping[str, Any]) -> str:
    delay = f" in {float(ev['delay_s']):.1f}s" if _present(ev, "delay_s") else ""
    return f"RETRY {ev['what']} ({ev['error']}) attempt {ev['attempt']}{delay}"


@event("train_stage_begin", ("stage",), ("label", "total"))
def _train_stage_begin(ev: Mapping[str, Any]) -> str:
    total = f"  ({ev['total']})" if ev.get("total") else ""
    return f"TRAIN {ev.get('label') or ev['stage']}{total}"


@event("train_prepared", ("symbols", "train_rows", "valid_rows"), ("stride",))
def _train_prepared(ev: Mapping[str, Any]) -> str:
    return f"TRAIN data {ev['symbols']} symbols  {int(ev['train_rows']):,} train rows  {int(ev['valid_rows']):,} valid rows"
