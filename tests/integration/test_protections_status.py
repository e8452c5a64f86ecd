"""The active protections in every operator renderer: the replayed day's store (real Postgres,
the daemon's lock held) with a risk state written by a real `RiskManager` whose stop-loss guard
and low-profit lock are active at the last minute and whose drawdown lookback already ended.
`bot status` (text and --json), Telegram's /status, the dashboard's state, page and /metrics
show the two active ones, with what they block and until when, and not the one that ended."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.ops.dashboard.state import read_state
from bot.ops.read_model import ReadModel
from models.timeutil import MINUTE_MS, fmt_short
from risk import MarketRules, RiskConfig, RiskManager
from tests.support.headless_chromium import dump_dom
from tests.support.replayed_day import LAST_MINUTE, SYMBOLS, Replay, replayed

STOP_TEXT = (f"stop-loss guard: every symbol paused until {fmt_short(LAST_MINUTE + 35 * MINUTE_MS)} UTC "
             "(2 stop-losses within 60 min)")  # fmt: skip
LOCK_TEXT = f"low-profit lock: SOLUSDT locked until {fmt_short(LAST_MINUTE + 115 * MINUTE_MS)} UTC (its last 2 trades -1.80%)"


def risk_state() -> dict:
    """What the engine persists after these losses (minutes relative to the last one, 21:16)."""
    cfg = RiskConfig(stop_loss_guard={"stop_losses": 2, "window_minutes": 60, "pause_minutes": 45},
                     low_profit_lock={"max_loss": 0.015, "trades": 2, "lock_minutes": 120},
                     drawdown_lookback={"max_drawdown": 0.02, "hours": 2, "pause_minutes": 30})  # fmt: skip
    m = RiskManager(cfg, SYMBOLS, {s: MarketRules(qty_step=0.001) for s in SYMBOLS}, 0.002)
    m.update_equity(10_000.0, LAST_MINUTE - 100 * MINUTE_MS)
    m.update_equity(9_780.0, LAST_MINUTE - 90 * MINUTE_MS)  # -2.2 %: the lookback trips, paused until -60
    assert m.protections.drawdown_lookback.to_dict()["blocks"]["*"]["until_ms"] == LAST_MINUTE - 60 * MINUTE_MS
    m.record_trade("BTCUSDT", LAST_MINUTE - 20 * MINUTE_MS, -0.004, stop_loss=True)
    m.record_trade("SOLUSDT", LAST_MINUTE - 10 * MINUTE_MS, -0.010, stop_loss=True)  # 2 stops: paused until +35
    m.record_trade("SOLUSDT", LAST_MINUTE - 5 * MINUTE_MS, -0.008, stop_loss=False)  # -1.8 %: locked until +115
    return m.to_dict()


@pytest.fixture
async def replay(db_dsn: str, tmp_path: Path) -> AsyncIterator[Replay]:
    async with replayed(db_dsn, tmp_path) as r:
        yield r


async def _write_risk(dsn: str, risk: dict) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        state = json.loads(await conn.fetchval("SELECT state FROM engine_state WHERE mode = 'paper'"))
        await conn.execute("UPDATE engine_state SET state = $1 WHERE mode = 'paper'", json.dumps({**state, "risk": risk}))
    finally:
        await conn.close()


async def test_active_protections_are_shown_by_every_renderer_while_active(replay: Replay) -> None:
    rm = ReadModel(replay.pool, "paper", SYMBOLS)
    assert (await rm.view()).protections == []  # the replayed day's state has none
    rc, text = await replay.bot_status()
    assert rc == 0 and "protection:" not in text, text

    await _write_risk(replay.dsn, risk_state())
    v = await rm.view()
    assert [(p.protection, p.scope, p.since_ts, p.until_ts) for p in v.protections] == [
        ("stop_loss_guard", "*", LAST_MINUTE - 10 * MINUTE_MS, LAST_MINUTE + 35 * MINUTE_MS),
        ("low_profit_lock", "SOLUSDT", LAST_MINUTE - 5 * MINUTE_MS, LAST_MINUTE + 115 * MINUTE_MS),
    ]  # the drawdown lookback's pause ended an hour before the last minute: not shown
    assert [p.text for p in v.protections] == [STOP_TEXT, LOCK_TEXT]

    rc, text = await replay.bot_status()
    assert rc == 0 and f"protection: {STOP_TEXT}\nprotection: {LOCK_TEXT}\n" in text, text
    assert "drawdown lookback" not in text
    st = await replay.status_json()
    assert [(p["protection"], p["until_ts"]) for p in st["protections"]] == [
        ("stop_loss_guard", LAST_MINUTE + 35 * MINUTE_MS), ("low_profit_lock", LAST_MINUTE + 115 * MINUTE_MS)]
    tg = await replay.telegram()("/status", [])
    assert STOP_TEXT in tg and LOCK_TEXT in tg

    state = await read_state(replay.dash)
    assert [p["text"] for p in state["status"]["protections"]] == [STOP_TEXT, LOCK_TEXT]
    metrics = await replay.fetch("/metrics")
    val = {(s.name, tuple(s.labels.items())): s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    assert [val[("bot_protections_active", (("protection", k),))] for k in
            ("drawdown_lookback", "stop_loss_guard", "low_profit_lock")] == [0, 1, 1]  # fmt: skip
    runner, base = await replay.served()
    try:
        dom = await asyncio.to_thread(dump_dom, base + "/", 1300, budget_ms=3000)
    finally:
        await runner.cleanup()
    for kind, text in (("stop_loss_guard", STOP_TEXT), ("low_profit_lock", LOCK_TEXT)):
        assert f'<div class="notice protection" data-protection="{kind}">{text}</div>' in dom
    assert 'data-protection="drawdown_lookback"' not in dom


async def test_a_block_that_ends_with_the_last_minute_is_no_longer_shown(replay: Replay) -> None:
    """The engine's next decision is at the minute after the last one (its close): a block that
    ends there blocks nothing more."""
    risk = risk_state()
    risk["protections"]["low_profit_lock"]["blocks"]["SOLUSDT"]["until_ms"] = LAST_MINUTE + MINUTE_MS
    risk["protections"]["stop_loss_guard"]["blocks"]["*"]["until_ms"] = LAST_MINUTE + 2 * MINUTE_MS
    await _write_risk(replay.dsn, risk)
    v = await ReadModel(replay.pool, "paper", SYMBOLS).view()
    assert [p.protection for p in v.protections] == ["stop_loss_guard"]
