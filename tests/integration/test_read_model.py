"""The one operator read model against a store in the middle of a replayed 2021 day (real
Postgres, the daemon's advisory lock really held): `bot status` (a subprocess, text and --json),
Telegram's answers, the dashboard (its state, /api/state and /metrics over a real socket, the
page in headless Chromium) show the same today's P&L, last minute, open positions, "held" and
candle ages, all on the exchange clock, and the equity chart draws the run's snapshots.

Each of these was wrong before the read model (the dashboard and Telegram took "today" from the
wall clock, the dashboard's last minute from the lagging heartbeat row, ages and "held" from the
wall clock: "2065d", the chart's window was the wall clock's last 72 h: empty in a replay)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.ops.dashboard.state import read_state
from models.textfmt import duration, money
from models.timeutil import DAY_MS, MINUTE_MS, fmt_short, fmt_ts
from tests.support.headless_chromium import dump_dom
from tests.support.replayed_day import (
    DAY0,
    LAST_MINUTE,
    RUN_START,
    SYMBOLS,
    Replay,
    replayed,
)


@pytest.fixture
async def replay(db_dsn: str, tmp_path: Path) -> AsyncIterator[Replay]:
    async with replayed(db_dsn, tmp_path) as r:
        yield r


async def test_today_pnl_is_the_same_in_every_renderer(replay: Replay) -> None:
    d = replay.day
    want = money(d.today_pnl)  # equity now against the last snapshot before 2021-04-11 00:00 UTC
    assert abs(d.today_pnl) > 1 and d.today_realised != 0  # the figures below can tell right from wrong
    state = await read_state(replay.dash)
    a = state["account"]
    assert a["today_pnl"] == pytest.approx(d.today_pnl) and a["today_pnl_text"] == want
    assert a["today_realised"] == pytest.approx(d.today_realised) and a["today_trades_closed"] == len(d.closed_today)
    assert a["equity"] == pytest.approx(d.equity) and a["open_positions"] == len(d.open_positions)

    status = await replay.telegram()("/status", [])
    assert f"P&L {want} USDT" in status and f"realised {money(d.today_realised)} USDT over {len(d.closed_today)} closed" in status
    pnl = (await replay.telegram()("/pnl", [])).splitlines()
    assert pnl[0] == f"today: {money(d.today_realised)} USDT  {len(d.closed_today)} trades  2 won"  # 2021-04-11's exits
    everything = d.closed_today + d.closed_before
    assert pnl[2] == f"all time: {money(sum(everything))} USDT  {len(everything)} trades  3 won"

    st = await replay.status_json()
    assert st["today"]["pnl"] == pytest.approx(d.today_pnl) and st["today"]["start_ts"] == DAY0
    assert st["today"]["realised"] == pytest.approx(d.today_realised) and st["today"]["trades_closed"] == len(d.closed_today)
    rc, text = await replay.bot_status()
    assert rc == 0 and f"today (04-11): P&L {want} " in text, text

    api = json.loads(await replay.fetch("/api/state"))
    assert api["account"]["today_pnl_text"] == want


async def test_held_and_ages_are_on_the_exchange_clock(replay: Replay) -> None:
    d = replay.day
    state = await read_state(replay.dash)
    pos = {p["symbol"]: p for p in state["positions"]}
    assert set(pos) == set(d.open_positions)
    for s in d.open_positions:  # BTC entered 40 minutes before the last minute: held 41m at its close
        assert pos[s]["held_text"] == duration(d.held_s(s)), pos[s]
        assert pos[s]["upnl"] == pytest.approx(d.unrealised(s))
    assert pos["BTCUSDT"]["held_text"] == "41m" and pos["ETHUSDT"]["held_text"] == "1h31m"
    feed = {f["symbol"]: f for f in state["feed"]}
    # BTC is a minute ahead of the engine (not late), ETH at its minute, SOL five minutes behind, XRP none
    assert [feed[s]["age_text"] for s in SYMBOLS] == ["0s", "0s", "5m", "-"]
    assert [feed[s]["health"] for s in SYMBOLS] == ["ok", "ok", "late", "none"]
    assert [t["held_text"] for t in state["trades"]] == ["30m"] * 4

    text = await replay.telegram()("/positions", [])
    assert "BTCUSDT 0.03000 @ 60000.00 since 04-11 20:36  held 41m" in text and "ETHUSDT" in text and "held 1h31m" in text

    st = await replay.status_json()
    assert {p["symbol"]: p["held_s"] for p in st["positions"]} == {s: d.held_s(s) for s in d.open_positions}
    assert {s: f["age_s"] for s, f in st["feed"].items()} == {"BTCUSDT": 0, "ETHUSDT": 0, "SOLUSDT": 300, "XRPUSDT": None}
    rc, text = await replay.bot_status()
    assert "held 41m" in text and "age 5m  late" in text and "no candles: XRPUSDT" in text, text
    assert "d0" not in text and "2065d" not in text


async def test_last_minute_is_the_engines_everywhere(replay: Replay) -> None:
    """The heartbeat row's minute lags the engine's (written every few seconds); the engine's
    minute, written with the equity in one transaction, is the one every renderer shows."""
    state = await read_state(replay.dash)
    assert state["status"]["last_minute_text"] == fmt_ts(LAST_MINUTE)
    assert state["status"]["last_minute_hhmm"] == "21:16" and state["account"]["equity_note"] == "USDT · 21:16 UTC"
    st = await replay.status_json()
    assert st["clock"]["last_minute_ts"] == LAST_MINUTE and st["clock"]["source"] == "engine"
    assert st["daemon"]["running"] and st["daemon"]["state"] == "running" and st["trading"]
    rc, text = await replay.bot_status()
    assert f"last minute {fmt_short(LAST_MINUTE)} UTC" in text, text
    assert f"last minute {fmt_short(LAST_MINUTE)}" in await replay.telegram()("/status", [])


async def test_skips_of_the_last_hour_are_on_the_exchange_clock(replay: Replay) -> None:
    state = await read_state(replay.dash)
    got = {r["reason"]: r["count"] for r in state["decisions"]["skips_last_hour"]}
    assert got == replay.day.skips_last_hour  # the kill_switch skip two hours before is not in it


async def test_equity_chart_draws_the_runs_snapshots(replay: Replay) -> None:
    d = replay.day
    e = (await read_state(replay.dash))["equity"]
    assert e["ts"], "no equity point drawn from the run's snapshots"
    from bot.ops.read_model import EQUITY_POINTS, ReadModel

    assert len(d.snapshots) > EQUITY_POINTS  # bucketed, not one point per snapshot
    assert e["ts"][0] == RUN_START and e["ts"][-1] == LAST_MINUTE and len(e["ts"]) <= EQUITY_POINTS + 1
    snap = dict(d.snapshots)
    assert all(snap[t] == pytest.approx(v) for t, v in zip(e["ts"], e["equity"], strict=True))
    # each point after the first is the last snapshot of its bucket (buckets from the run's start)
    b = e["bucket_minutes"] * MINUTE_MS
    assert b == -(-(LAST_MINUTE - RUN_START + MINUTE_MS) // EQUITY_POINTS // MINUTE_MS) * MINUTE_MS
    want = sorted({min(RUN_START + (k + 1) * b - MINUTE_MS, LAST_MINUTE) for k in range(-(-(LAST_MINUTE - RUN_START + MINUTE_MS) // b))})
    assert e["ts"][1:] == want
    capped = await ReadModel(replay.pool, "paper", SYMBOLS, equity_hours=6).view()
    assert capped.equity.ts[0] == LAST_MINUTE - 6 * 3_600_000 + MINUTE_MS and capped.equity.ts[-1] == LAST_MINUTE

    runner, base = await replay.served()
    try:
        dom = await asyncio.to_thread(dump_dom, base + "/", 1300, budget_ms=3000)
    finally:
        await runner.cleanup()
    chart = dom.split('id="chart">', 1)[1].split("</section>", 1)[0]
    assert "No equity snapshots yet" not in chart and "<polyline" in chart
    line = dom.split('id="equity-line" points="', 1)[1].split('"', 1)[0]
    assert len(line.split()) == len(e["ts"])
    cards = dom.split('id="cards">', 1)[1].split("</section>", 1)[0]
    assert money(d.today_pnl) in cards and "21:16" in cards and "2065d" not in dom and "–" not in cards


async def test_equity_chart_of_a_year_long_run(replay: Replay) -> None:
    """A run a year long: buckets of over 14 hours (bucket x points passes 2^31 ms), still at
    most 601 points from the run's first snapshot to the last minute."""
    year_ago = RUN_START - 365 * DAY_MS
    await replay.pool.execute("INSERT INTO equity_snapshots VALUES ($1, 'paper', 9000.0, 9000.0, 0, 0)", year_ago)
    e = (await read_state(replay.dash))["equity"]
    assert e["ts"][0] == year_ago and e["equity"][0] == 9000.0 and e["ts"][-1] == LAST_MINUTE
    assert e["bucket_minutes"] == -(-(LAST_MINUTE - year_ago + MINUTE_MS) // 600 // MINUTE_MS) and len(e["ts"]) <= 601
    b = e["bucket_minutes"] * MINUTE_MS
    ts = [year_ago, *(t for t, _ in replay.day.snapshots)]
    want = {year_ago} | {max(t for t in ts if t <= year_ago + (k + 1) * b - MINUTE_MS)
                         for k in range(-(-(LAST_MINUTE - year_ago + MINUTE_MS) // b))}
    assert e["ts"] == sorted(want) and len(e["ts"]) > 2  # the first snapshot, then the last of each bucket


async def test_metrics_show_the_read_models_figures(replay: Replay) -> None:
    d = replay.day
    replay.metrics.account(equity=1.0, cash=1.0, gross_exposure=0.0, open_positions=0)  # a stale in-process figure
    text = await replay.fetch("/metrics")
    val = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert val[("bot_read_model_up", ())] == 1
    assert val[("bot_today_pnl_quote", ())] == pytest.approx(d.today_pnl)
    assert val[("bot_today_realised_quote", ())] == pytest.approx(d.today_realised)
    assert val[("bot_today_trades_closed", ())] == len(d.closed_today)
    assert val[("bot_equity_quote", ())] == pytest.approx(d.equity) and val[("bot_open_positions", ())] == 2
    assert val[("bot_unrealised_pnl_quote", ())] == pytest.approx(sum(d.unrealised(s) for s in d.open_positions))
    assert val[("bot_feed_lag_seconds", (("symbol", "SOLUSDT"),))] == 300
    assert val[("bot_feed_lag_seconds", (("symbol", "BTCUSDT"),))] == 0
    assert val[("bot_last_minute_timestamp_seconds", ())] == LAST_MINUTE / 1000
    assert 0 < val[("bot_engine_step_age_seconds", ())] < 600  # wall clock: the engine wrote its minute just now
    assert val[("bot_kill_switch_tripped", ())] == 0


async def test_pnl_per_day_week_and_symbol(replay: Replay) -> None:
    from bot.ops.read_model import ReadModel, week_start

    rm = ReadModel(replay.pool, "paper", SYMBOLS)
    days = await rm.pnl_by("day")
    assert [(p.label, p.start_ts, p.trades_closed) for p in days] == [("2021-04-10", DAY0 - DAY_MS, 1), ("2021-04-11", DAY0, 3)]
    assert days[1].realised == pytest.approx(replay.day.today_realised) and days[1].wins == 2
    weeks = await rm.pnl_by("week")  # 2021-04-10 is a Saturday, 04-11 the Sunday of the same ISO week
    assert [(p.label, p.start_ts, p.trades_closed) for p in weeks] == [("2021-W14", DAY0 - 6 * DAY_MS, 4)]
    assert week_start(DAY0) == DAY0 - 6 * DAY_MS and week_start(DAY0 + DAY_MS) == DAY0 + DAY_MS  # Monday 04-12
    syms = await rm.pnl_by("symbol")
    assert [(p.label, p.realised) for p in syms] == [("BTCUSDT", 29.5), ("SOLUSDT", 13.0), ("ETHUSDT", 4.25), ("XRPUSDT", -7.0)]
    assert [p.trades_closed for p in await rm.pnl_by("day", since_ts=DAY0)] == [3]
    with pytest.raises(ValueError, match="day"):
        await rm.pnl_by("month")  # type: ignore[arg-type]


async def test_a_view_is_read_in_one_snapshot(replay: Replay) -> None:
    """A trade the daemon closes while a view is being read does not half-appear in it (one
    REPEATABLE READ transaction): the view's today is of one moment; the next view has it."""
    from bot.ops.read_model import ReadModel

    rm = ReadModel(replay.pool, "paper", SYMBOLS)
    wrote: list[bool] = []
    real_fetch = asyncpg.connection.Connection.fetch

    async def fetch_then_write(self, query: str, *args: Any, **kw: Any):  # noqa: ANN001, ANN202
        rows = await real_fetch(self, query, *args, **kw)
        if "status = 'open'" in query and not wrote:  # the first read of the view; the daemon writes meanwhile
            wrote.append(True)
            await replay.pool.execute(
                "INSERT INTO positions (mode, symbol, status, qty, entry_price, entry_ts, exit_price, exit_ts, exit_reason, pnl) "
                "VALUES ('paper', 'SOLUSDT', 'closed', 1, 100, $1, 110, $2, 'tp', 1000.0)", LAST_MINUTE - 5 * MINUTE_MS, LAST_MINUTE)
        return rows

    asyncpg.connection.Connection.fetch = fetch_then_write  # type: ignore[method-assign]
    try:
        v = await rm.view()
    finally:
        asyncpg.connection.Connection.fetch = real_fetch  # type: ignore[method-assign]
    assert wrote and v.today.realised == pytest.approx(replay.day.today_realised)
    assert v.today.trades_closed == len(replay.day.closed_today) and v.trades[0].pnl != 1000.0
    after = await rm.view()
    assert after.today.realised == pytest.approx(replay.day.today_realised + 1000.0) and after.trades[0].pnl == 1000.0
