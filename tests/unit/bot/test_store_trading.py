"""The trading tables on a real Postgres: one step written atomically and idempotently, and the
restart reads (open positions, cash, state, last minute, used order ids)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.engine.records import ClosedTrade, DecisionRow, EquityPoint, Fill, OrderIntent, Position
from bot.store.trading import StepRecords, TradingStore

T0 = 1_618_000_000_000 - 1_618_000_000_000 % 60_000
M = 60_000


def order(sym: str, ts: int, leg: str = "entry", side: str = "buy", qty: float = 1.5) -> OrderIntent:
    return OrderIntent(f"v1-{sym}-{ts}-{leg}", sym, side, leg, qty, ts, 100.0, "signal" if leg == "entry" else "tp",
                       model_version="v1")  # fmt: skip


def position(sym: str, ts: int, qty: float = 1.5) -> Position:
    return Position(sym, qty, 100.1, ts + M, 0.15, 101.0, 99.0, ts + 60 * M, ts, f"v1-{sym}-{ts}-entry", "v1",
                    er=0.002, p=float("nan"))  # fmt: skip


def step_one() -> StepRecords:
    """Minute T0: BTC entry decided; ETH skipped."""
    return StepRecords(
        ts=T0,
        orders=[order("BTCUSDT", T0)],
        decisions=[DecisionRow(T0, "BTCUSDT", "enter", "ok", 0.002, 0.7, 0.05, "v1"),
                   DecisionRow(T0, "ETHUSDT", "skip", "corr", 0.001, 0.6, None, "v1", {"rho": 0.91}),
                   DecisionRow(T0, "SOLUSDT", "skip", "filled_minute", float("nan"), None, None, "v1")],
        equity=EquityPoint(T0, 10_000.0, 10_000.0, 0.0, 0),
        state={"cash": 10_000.0, "pending": [f"v1-BTCUSDT-{T0}-entry"], "risk": {"losses": [1.0, float("nan")]}},
        model_version="v1",
    )  # fmt: skip


def step_two() -> StepRecords:
    """Minute T0+1: the BTC entry fills at the open and the position opens."""
    coid = f"v1-BTCUSDT-{T0}-entry"
    return StepRecords(
        ts=T0 + M,
        fills=[Fill(coid, "p1", "BTCUSDT", "buy", 1.5, 100.1, 0.15, T0 + M)],
        opened=[position("BTCUSDT", T0)],
        equity=EquityPoint(T0 + M, 9_999.0, 9_849.7, 150.15, 1),
        state={"cash": 9_849.7},
        model_version="v1",
    )


async def table_dump(pool: asyncpg.Pool) -> dict[str, list]:
    out = {}
    for t, key in (("orders", "client_order_id"), ("fills", "trade_id"), ("positions", "id"), ("decisions", "id"),
                   ("equity_snapshots", "ts"), ("engine_state", "mode")):  # fmt: skip
        rows = await pool.fetch(f"SELECT * FROM {t} ORDER BY {key}")
        out[t] = [{k: v for k, v in dict(r).items() if k not in ("updated_ts",)} for r in rows]
    return out


async def test_steps_persist_and_rewriting_them_changes_nothing(store) -> None:
    ts = TradingStore(store.pool, "paper")
    await ts.write_step(step_one(), now_ms=1)
    await ts.write_step(step_two(), now_ms=2)
    first = await table_dump(store.pool)
    assert len(first["orders"]) == 1 and first["orders"][0]["status"] == "filled"
    assert first["orders"][0]["avg_price"] == 100.1 and first["orders"][0]["filled_qty"] == 1.5
    assert len(first["fills"]) == 1 and len(first["decisions"]) == 3 and len(first["equity_snapshots"]) == 2
    assert [p["status"] for p in first["positions"]] == ["open"]
    # Replaying both minutes (a restart that re-runs already persisted minutes) writes nothing new,
    # and an older minute cannot move the engine state backwards.
    await ts.write_step(step_one(), now_ms=3)
    await ts.write_step(step_two(), now_ms=4)
    again = await table_dump(store.pool)
    assert again == first
    r = await ts.resume()
    assert r.last_minute_ts == T0 + M and r.cash == 9_849.7 and r.state == {"cash": 9_849.7}


async def test_resume_reads_open_positions_cash_state_and_used_ids(store) -> None:
    ts = TradingStore(store.pool, "paper")
    fresh = await ts.resume()
    assert fresh.last_minute_ts is None and fresh.open_positions == [] and fresh.used_order_ids == set()
    await ts.write_step(step_one(), now_ms=1)
    r1 = await ts.resume()
    losses = r1.state["risk"]["losses"]
    assert losses[0] == 1.0 and losses[1] != losses[1]  # the engine state keeps NaN exactly
    await ts.write_step(step_two(), now_ms=2)
    r = await ts.resume()
    assert r.used_order_ids == {f"v1-BTCUSDT-{T0}-entry"}
    assert len(r.open_positions) == 1
    p = r.open_positions[0]
    want = position("BTCUSDT", T0)
    assert (p.symbol, p.qty, p.entry_price, p.tp_price, p.sl_price, p.expires_ts, p.client_order_id, p.er) == (
        want.symbol, want.qty, want.entry_price, want.tp_price, want.sl_price, want.expires_ts,
        want.client_order_id, want.er)  # fmt: skip
    assert p.p != p.p  # NaN restored as NaN
    # Other modes are separate books.
    assert (await TradingStore(store.pool, "backtest").resume()).open_positions == []


async def test_close_and_reopen_same_symbol_in_one_step(store) -> None:
    ts = TradingStore(store.pool, "paper")
    await ts.write_step(step_one(), now_ms=1)
    await ts.write_step(step_two(), now_ms=2)
    t = T0 + 5 * M
    exit_coid = f"v1-BTCUSDT-{t}-exit"
    new_coid = f"v1-BTCUSDT-{t - M}-entry"
    closed = ClosedTrade("BTCUSDT", T0, T0 + M, t, 1.5, 100.1, 101.0, 0.3, 1.05, 0.007, "tp", model_version="v1")
    rec = StepRecords(
        ts=t,
        orders=[order("BTCUSDT", t, "exit", "sell"), order("BTCUSDT", t - M)],
        fills=[Fill(exit_coid, "p2", "BTCUSDT", "sell", 1.5, 101.0, 0.15, t),
               Fill(new_coid, "p3", "BTCUSDT", "buy", 1.0, 100.5, 0.1, t)],
        opened=[position("BTCUSDT", t - M, qty=1.0)],
        closed=[closed],
        equity=EquityPoint(t, 10_001.0, 9_900.0, 100.5, 1),
        state={"cash": 9_900.0},
        model_version="v1",
    )  # fmt: skip
    for _ in range(2):
        await ts.write_step(rec, now_ms=5)
    rows = await store.pool.fetch("SELECT symbol, status, qty, exit_reason, pnl FROM positions ORDER BY entry_ts")
    assert [(r["status"], r["qty"], r["exit_reason"], r["pnl"]) for r in rows] == [
        ("closed", 1.5, "tp", 1.05), ("open", 1.0, None, None)]  # fmt: skip
    assert (await ts.counts())["fills"] == 3


async def test_fill_for_an_unknown_order_is_refused_and_the_step_left_unwritten(store) -> None:
    ts = TradingStore(store.pool, "paper")
    bad = StepRecords(ts=T0, fills=[Fill("nope", "x", "BTCUSDT", "buy", 1.0, 1.0, 0.0, T0)],
                      equity=EquityPoint(T0, 1.0, 1.0, 0.0, 0), state={"cash": 1.0})  # fmt: skip
    with pytest.raises(ValueError, match="unknown orders"):
        await ts.write_step(bad, now_ms=1)
    assert (await ts.resume()).last_minute_ts is None
    assert (await ts.counts())["equity_snapshots"] == 0


async def test_one_round_trip_per_table_for_a_30_symbol_minute(store) -> None:
    """30 decisions, 10 orders: the statements sent are a fixed handful, not one per row."""
    ts = TradingStore(store.pool, "paper")
    syms = [f"S{i:02d}USDT" for i in range(30)]
    rec = StepRecords(ts=T0, orders=[order(s, T0) for s in syms[:10]],
                      decisions=[DecisionRow(T0, s, "skip", "low_p", 0.0, 0.1) for s in syms],
                      equity=EquityPoint(T0, 1.0, 1.0, 0.0, 0), state={"cash": 1.0})  # fmt: skip
    sent: list[str] = []
    async with store.pool.acquire() as conn:
        def logger(q: asyncpg.connection.LoggedQuery) -> None:
            sent.append(q.query)

        conn.add_query_logger(logger)
        ts.pool = _OneConn(conn)
        await ts.write_step(rec, now_ms=1)
        conn.remove_query_logger(logger)
    tables = ("orders", "fills", "positions", "decisions", "equity_snapshots", "engine_state")
    body = [q for q in sent if "pg_" not in q and "current_setting" not in q and any(t in q for t in tables)]
    assert len(body) == 4, body  # orders, decisions, equity, state: one statement each, none per row
    assert (await TradingStore(store.pool, "paper").counts())["decisions"] == 30


class _OneConn:
    """A pool stand-in handing out one given connection (to watch the statements it runs)."""

    def __init__(self, conn: asyncpg.Connection):
        self.conn = conn

    def acquire(self, timeout: float | None = None) -> _OneConn:  # (the daemon bounds it: bot.store.outage)
        return self

    async def __aenter__(self) -> asyncpg.Connection:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)
