"""Helpers of the whole-daemon fault and kill -9 runs (tests/reliability/test_daemon.py): the
fault plan, the checks (candles store vs source, duplicate orders, books vs exchange), the
per-kind outcome table read from the daemon's own log, and the consistency check made after
each restart."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bot.exchange_sim.faults import (
    CANDLE_KINDS,
    CONNECTION_KINDS,
    FEED_KINDS,
    ORDER_KINDS,
    REST_KINDS,
    Fault,
    random_plan,
)
from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator
from models.timeutil import MINUTE_MS
from tests.support.shared_data import symbols30

FINAL = ("filled", "cancelled", "rejected", "expired")


def fault_plan(start: int, end: int, *, candle: int, conn: int, rest: int, order: int, seed: int) -> list[Fault]:
    """`candle` faults of every candle kind, `conn` of every connection kind (websocket drop,
    stall, malformed frame), `rest` of every REST kind and `order` of every order kind, spread
    over [start + 5 min, end - 25 min). Few connection faults: while the websocket is down or
    silent no candle fault can reach the daemon."""
    minutes = list(range(start + 5 * MINUTE_MS, end - 25 * MINUTE_MS, MINUTE_MS))
    counts = ({k: candle for k in CANDLE_KINDS} | {k: conn for k in CONNECTION_KINDS} | {k: rest for k in REST_KINDS}
              | {k: order for k in ORDER_KINDS})  # fmt: skip
    return random_plan({k: n for k, n in counts.items() if n}, symbols30(), minutes, seed=seed)


async def candles_lost(dsn: str, book: CandleBook, start: int, end: int) -> dict[str, int]:
    """Minute by minute, every symbol, [start, end): source minutes missing from the candles
    table (`missing`), rows there with other values (`altered`), minutes the source does not
    have (`invented`), and rows compared."""
    out = Counter(missing=0, altered=0, invented=0, rows=0)
    conn = await asyncpg.connect(dsn)
    try:
        for s in book.symbols:
            rows = await conn.fetch("SELECT ts, open, high, low, close, volume FROM candles WHERE symbol = $1 "
                                    "AND ts >= $2 AND ts < $3 ORDER BY ts", s, start, end)  # fmt: skip
            src = book.range(s, start, end - MINUTE_MS)
            got = {int(r["ts"]): tuple(float(r[k]) for k in ("open", "high", "low", "close", "volume")) for r in rows}
            want = {int(t): (float(o), float(h), float(lo), float(c), float(v))
                    for t, o, h, lo, c, v in zip(*src.columns(), strict=True)}  # fmt: skip
            out["missing"] += len(want.keys() - got.keys())
            out["invented"] += len(got.keys() - want.keys())
            out["altered"] += sum(1 for t in want.keys() & got.keys() if not np.allclose(got[t], want[t], rtol=1e-9, atol=0))
            out["rows"] += len(want)
    finally:
        await conn.close()
    return dict(out)


def tracebacks(home: Path) -> int:
    """'Traceback' blocks in the daemon's stderr and log files."""
    return len(traceback_excerpts(home))


def traceback_excerpts(home: Path) -> list[str]:
    """Each 'Traceback' block in the daemon's stderr and log files: the file and the block's
    last lines (the exception), so a failed run says what it was after its directory is gone."""
    out = []
    for p in [home / "stderr.txt", *sorted((home / "logs").glob("*"))]:
        if not p.is_file():
            continue
        text = p.read_text(errors="replace")
        for block in text.split("Traceback (most recent call last)")[1:]:
            lines = [ln for ln in block.splitlines() if ln.strip()]
            tail = next((i for i, ln in enumerate(lines) if not ln.startswith((" ", "\t", ":"))), len(lines))
            out.append(f"{p.name}: " + " | ".join(lines[max(0, tail - 2): tail + 1])[:600])
    return out


def _count(events: list[dict[str, Any]], name: str, **match: Any) -> int:
    return sum(1 for e in events if e.get("event") == name and all(str(e.get(k, "")).startswith(v) for k, v in match.items()))


def fault_table(sim: ExchangeSimulator, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every fault kind the simulator has: how many were applied, and the outcome as the
    daemon's own log shows it (what it detected, how it recovered)."""
    applied = sim.faults.applied_counts()
    issue = Counter((e.get("reason"), e.get("action")) for e in events if e.get("event") == "candle_issue")
    retry = Counter(e.get("error") for e in events if e.get("event") == "exchange_retry")
    oerr = Counter(str(e.get("reason")) for e in events if e.get("event") == "order_error")
    final = Counter((str(e.get("status")), str(e.get("reason"))) for e in events if e.get("event") == "order_final")
    sent = Counter(str(e.get("status")) for e in events if e.get("event") == "order_sent")
    n = lambda name: _count(events, name)  # noqa: E731
    outage = [str(e.get("reason", "")) for e in events if e.get("event") == "feed_outage"]
    stalls = sum(1 for r in outage if r.startswith("websocket silent"))
    drops = len(outage) - stalls
    ref = lambda reason: f"{issue[(reason, 'refetch')]} x candle_issue {reason}, refetched by REST"  # noqa: E731
    outcome = {
        "skip": f"minute missing from the stream, filled by REST ({n('feed_rest_fill')} feed_rest_fill lines, all faults)",
        "duplicate": f"{issue[('duplicate', 'dropped')]} x candle_issue duplicate, dropped",
        "out_of_order": f"{issue[('out_of_order', 'dropped')]} x candle_issue out_of_order, dropped (the minute came in order)",
        "nan": ref("nan"),
        "zero": ref("non_positive_price"),
        "high_low": ref("high_lt_low"),
        "neg_volume": ref("negative_volume"),
        "unaligned": ref("ts_unaligned"),
        "ws_drop": f"{drops} x feed_outage (connection error), REST meanwhile; {n('feed_recovered')} x feed_recovered "
                   "(all outages), reconnected",
        "ws_stall": f"{stalls} x feed_outage (websocket silent), reconnected, REST meanwhile",
        "ws_malformed": f"{n('ws_frame_malformed')} x ws_frame_malformed: frame dropped, connection kept reading",
        "rest_429": f"{retry['DDoSProtection']} x exchange_retry DDoSProtection (429 and 418), retried after Retry-After",
        "rest_418": "retried after Retry-After (counted with rest_429)",
        "rest_5xx": f"{retry['ExchangeNotAvailable']} x exchange_retry ExchangeNotAvailable, retried",
        "rest_timeout": f"client timeout: {n('exchange_unreachable')} x exchange_unreachable / {n('exchange_reachable')} x "
                        f"exchange_reachable lines (retries at debug level), retried",
        "rest_malformed": f"{retry['BadResponse']} x exchange_retry BadResponse, retried",
        "order_lost_response": f"{oerr['no_answer_requesttimeout']} x no answer (RequestTimeout): looked up by client id, "
                               "never sent twice",
        "order_partial": f"{sent['PARTIALLY_FILLED']} x answered PARTIALLY_FILLED, followed until final",
        "order_delayed": f"{sent['NEW']} x answered NEW, followed until filled",
        "order_reject_balance": f"{final[('rejected', 'rejected_insufficient_balance')]} x final rejected_insufficient_balance",
        "order_reject_filter": f"{final[('rejected', 'rejected_price_filter')]} x final rejected_price_filter",
        "order_429": f"{oerr['rate_limited']} x rate_limited (429 and 418): re-sent with the same decision id after Retry-After",
        "order_418": "re-sent after Retry-After (counted with order_429)",
        "order_5xx": f"{oerr['no_answer_exchangenotavailable']} x no answer (5xx): looked up; "
                     f"{final[('expired', 'order_not_placed')]} x final order_not_placed (the exchange never had it)",
    }  # fmt: skip
    kinds = FEED_KINDS + ORDER_KINDS
    return [{"kind": k, "applied": applied.get(k, 0), "outcome": outcome[k]} for k in kinds]


def print_fault_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    for r in rows:
        print(f"  {r['kind']:<21} {r['applied']:>4}  {r['outcome']}")
    print(f"  {'total':<21} {sum(r['applied'] for r in rows):>4}")


def exchange_duplicates(sim: ExchangeSimulator) -> int:
    """Decisions (engine id = client order id without its attempt suffix) placed more than once."""
    per = Counter(o.client_order_id.split(".", 1)[0] for o in sim.account.orders.values())
    return sum(n - 1 for n in per.values() if n > 1)


async def store_duplicates(dsn: str, mode: str) -> int:
    """Decisions (symbol, decision minute, leg) with more than one order row, and orders with
    more than one fill row for the same trade, in the store."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM orders WHERE mode = $1 GROUP BY symbol, decision_ts, leg HAVING count(*) > 1) x",
            mode))  # fmt: skip
    finally:
        await conn.close()


async def engine_row(dsn: str, mode: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(dsn)
    try:
        r = await conn.fetchrow("SELECT last_minute_ts, cash, state FROM engine_state WHERE mode = $1", mode)
    finally:
        await conn.close()
    if r is None:
        return None
    return {"last": int(r["last_minute_ts"]), "cash": float(r["cash"]), "state": json.loads(r["state"])}


async def last_decision_ts(dsn: str, mode: str) -> int | None:
    """The latest decision minute of any order in the store (a killed daemon may have sent
    orders for minutes it never persisted: its successor books them only once it has stepped
    those minutes again, or stepped past them and adopted the orphans)."""
    conn = await asyncpg.connect(dsn)
    try:
        v = await conn.fetchval("SELECT max(decision_ts) FROM orders WHERE mode = $1", mode)
    finally:
        await conn.close()
    return int(v) if v is not None else None


async def live_books_vs_exchange(dsn: str, sim: ExchangeSimulator) -> dict[str, Any]:
    """Store vs exchange in live mode, at a quiet moment (clock held): cash (the engine's, plus
    the fills of the orders it still waits for, booked at its next step) against the quote
    balance; our open orders on the exchange that the store does not follow; orders the store
    follows that the exchange has finished."""
    row = await engine_row(dsn, "live")
    assert row is not None
    waiting = [p["intent"]["client_order_id"] for p in row["state"]["pending"]]
    conn = await asyncpg.connect(dsn)
    try:
        fills = await conn.fetch(
            """SELECT o.side, f.qty, f.price, f.fee, f.fee_asset FROM orders o JOIN fills f ON f.order_id = o.id
               WHERE o.mode = 'live' AND split_part(o.client_order_id, '.', 1) = ANY($1::text[])""", waiting)
        open_store = {r["client_order_id"] for r in await conn.fetch(
            "SELECT client_order_id FROM orders WHERE mode = 'live' AND status <> ALL($1::text[])", list(FINAL))}
    finally:
        await conn.close()
    cash = row["cash"]
    for f in fills:
        cash += (-1.0 if f["side"] == "buy" else 1.0) * float(f["qty"]) * float(f["price"])
        cash -= float(f["fee"]) if f["fee_asset"] == "USDT" else 0.0
    usdt = float(sim.account.free.get("USDT", 0.0)) + float(sim.account.locked.get("USDT", 0.0))
    ex_open = {o.client_order_id for o in sim.account.orders.values() if o.status in ("NEW", "PARTIALLY_FILLED")}
    ex_final = {o.client_order_id for o in sim.account.orders.values() if o.status not in ("NEW", "PARTIALLY_FILLED")}
    return {"cash_store": round(cash, 4), "cash_exchange": round(usdt, 4), "cash_diff": abs(cash - usdt),
            "open_unfollowed": sorted(ex_open - open_store), "followed_but_final": sorted(open_store & ex_final)}  # fmt: skip


def risk_consistent(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The kill switch's day, start-of-day equity and trip survive a restart (a restart that
    lost them would reset the daily loss limit or un-trip the switch)."""
    problems = []
    kb, ka = before["state"]["risk"].get("kill_switch", {}), after["state"]["risk"].get("kill_switch", {})
    if kb.get("day") is not None and kb.get("day") == ka.get("day") and kb.get("day_start_equity") != ka.get("day_start_equity"):
        problems.append(f"day_start_equity {kb.get('day_start_equity')} -> {ka.get('day_start_equity')}")
    if kb.get("peak_equity") is not None and (ka.get("peak_equity") or 0.0) < kb["peak_equity"] - 1e-6:
        problems.append(f"peak_equity fell {kb['peak_equity']} -> {ka.get('peak_equity')}")
    if kb.get("tripped") and ka.get("tripped") != kb.get("tripped"):
        problems.append(f"kill switch un-tripped by the restart ({kb.get('tripped')})")
    return problems


