"""The local dashboard: store reads against the real Postgres fixture with rows inserted (a live
run: the exchange clock and the wall clock agree; the replayed 2021 day is in
tests/integration/test_read_model.py), the HTTP endpoints served by `start_dashboard`, /metrics
parsed by prometheus_client's own parser, and the page rendered in headless Chromium (equity chart
and positions on the screenshot)."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Config, ConfigError, load_config
from bot.ops.dashboard.config import DashboardConfig
from bot.ops.dashboard.metrics import DaemonMetrics
from bot.ops.dashboard.server import make_app, page, start_dashboard
from bot.ops.dashboard.state import DashboardState, now_ms, read_state
from bot.store.daemon_lock import DaemonLock
from models.textfmt import MISSING, money
from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, fmt_short, fmt_ts
from tests.support.headless_chromium import (
    color_share,
    dump_dom,
    inject_probe,
    probe_box,
    screenshot,
)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
# a daemon_status table as the daemon's migration defines it (created here only when absent)
DAEMON_STATUS_DDL = """CREATE TABLE IF NOT EXISTS daemon_status (
    id boolean PRIMARY KEY DEFAULT true CHECK (id), pid integer NOT NULL, host text NOT NULL,
    started_ts bigint NOT NULL, heartbeat_ts bigint NOT NULL, stopped_ts bigint, mode text NOT NULL,
    model_version text, watch_only boolean NOT NULL DEFAULT false, watch_reason text, last_minute_ts bigint,
    details jsonb NOT NULL DEFAULT '{}'::jsonb)"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fixture:
    """Rows written into a fresh database, and what the page must show for them."""

    def __init__(self, now: int):
        self.now = now
        self.m0 = now // MINUTE_MS * MINUTE_MS  # the current (open) minute
        self.last = self.m0 - MINUTE_MS  # the last minute the daemon processed (its heartbeat row says so)
        day0 = self.last // DAY_MS * DAY_MS  # "today" is the last minute's day
        # equity: one snapshot a minute over the last 6 h up to the last minute, rising 10,000 ->
        # 10,120 with a wiggle, plus one from two days ago (the run's first)
        self.eq = [(self.last - (360 - i) * MINUTE_MS, 10_000.0 + i / 3.0 + 4.0 * math.sin(i / 9.0)) for i in range(361)]
        self.old = (self.m0 - 2 * DAY_MS, 9_990.0)
        before = [e for t, e in [self.old, *self.eq] if t < day0]
        today = [e for t, e in self.eq if t >= day0]
        self.today_base = before[-1] if before else today[0]
        self.last_eq = self.eq[-1][1]


async def populate(dsn: str, now: int, *, daemon_status: bool) -> Fixture:
    fx = Fixture(now)
    m0 = fx.m0
    conn = await asyncpg.connect(dsn)
    try:
        # candles: BTC fresh (closed a minute ago), ETH 5 min late, SOL two hours stale, XRP never
        rows = []
        for sym, last, close in (("BTCUSDT", m0 - MINUTE_MS, 50_500.0), ("ETHUSDT", m0 - 6 * MINUTE_MS, 2_900.0),
                                 ("SOLUSDT", m0 - 2 * HOUR_MS, 150.0)):  # fmt: skip
            for k in range(3):
                c = close if k == 0 else close * (1 - 0.001 * k)
                rows.append((sym, last - k * MINUTE_MS, c, c, c, c, 1.0))
        await conn.copy_records_to_table("candles", records=rows,
                                         columns=["symbol", "ts", "open", "high", "low", "close", "volume"])  # fmt: skip
        await conn.executemany(
            "INSERT INTO equity_snapshots (ts, mode, equity, cash, gross_exposure, open_positions) VALUES ($1, 'paper', $2, $3, $4, $5)",
            [(t, e, e - 2_450.0, 2_450.0, 2) for t, e in [fx.old, *fx.eq]],
        )
        pos = "INSERT INTO positions (mode, symbol, status, qty, entry_price, entry_ts, take_profit, stop_loss, expires_ts, exit_price, exit_ts, exit_reason, pnl, model_version) VALUES ('paper', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'v-champ')"
        await conn.executemany(pos, [
            ("BTCUSDT", "open", 0.02, 50_000.0, m0 - 40 * MINUTE_MS, 50_800.0, 49_600.0, m0 + 80 * MINUTE_MS, None, None, None, None),
            ("ETHUSDT", "open", 0.5, 3_000.0, m0 - 90 * MINUTE_MS, 3_050.0, 2_880.0, m0 + 30 * MINUTE_MS, None, None, None, None),
            ("SOLUSDT", "closed", 2.0, 140.0, m0 - 5 * HOUR_MS, 146.0, 137.0, None, 146.0, m0 - 4 * HOUR_MS, "tp", 11.72),
            ("XRPUSDT", "closed", 500.0, 1.0, m0 - 3 * HOUR_MS, 1.02, 0.98, None, 0.98, m0 - 2 * HOUR_MS, "sl", -10.99),
            ("BTCUSDT", "closed", 0.01, 49_000.0, m0 - 9 * HOUR_MS, 49_700.0, 48_600.0, None, 49_200.0, m0 - 8 * HOUR_MS, "timeout", 1.01),
        ])  # fmt: skip
        dec = "INSERT INTO decisions (ts, mode, symbol, action, reason, er, probability, size_fraction, model_version) VALUES ($1, 'paper', $2, $3, $4, $5, $6, $7, 'v-champ')"
        drows = [(m0 - (k + 1) * MINUTE_MS, "SOLUSDT", "skip", "low_probability", 0.001, 0.41, None) for k in range(5)]
        drows += [(m0 - (k + 2) * MINUTE_MS, "ETHUSDT", "skip", "correlation", 0.002, 0.66, None) for k in range(2)]
        drows += [(m0 - 40 * MINUTE_MS - MINUTE_MS, "BTCUSDT", "enter", "taken", 0.0031, 0.71, 0.021)]
        drows += [(m0 - 3 * HOUR_MS, "XRPUSDT", "skip", "kill_switch", None, None, None)]  # older than an hour
        await conn.executemany(dec, drows)
        mv = "INSERT INTO model_versions (version, path, status, created_ts, promoted_ts, data_from_ts, data_to_ts, metrics) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
        await conn.executemany(mv, [
            ("v-champ", "/m/a", "champion", m0 - 3 * DAY_MS, m0 - 2 * DAY_MS, m0 - 40 * DAY_MS, m0 - 3 * DAY_MS,
             json.dumps({"walk_forward": {"profit_factor": 1.31, "trades": 812}})),
            ("v-new", "/m/b", "candidate", m0 - DAY_MS, None, m0 - 30 * DAY_MS, m0 - DAY_MS,
             json.dumps({"walk_forward": {"profit_factor": 0.87, "trades": 640}})),
        ])  # fmt: skip
        if daemon_status:
            await conn.execute(DAEMON_STATUS_DDL)
            await conn.execute(
                "INSERT INTO daemon_status (pid, host, started_ts, heartbeat_ts, mode, model_version, watch_only, last_minute_ts) "
                "VALUES (4242, 'testhost', $1, $2, 'paper', 'v-champ', false, $3)",
                m0 - 7 * HOUR_MS, now - 5_000, fx.last,
            )
        else:
            await conn.execute("DROP TABLE IF EXISTS daemon_status")
    finally:
        await conn.close()
    return fx


@pytest.fixture
async def dash(db_dsn: str):
    """A populated database (daemon_status present, the daemon's lock held), a pool, metrics and the app state."""
    now = now_ms()
    fx = await populate(db_dsn, now, daemon_status=True)
    lock = await DaemonLock.acquire(db_dsn)
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    metrics = DaemonMetrics()
    metrics.model_in_use("v-champ", watch_only=False)
    st = DashboardState(db=pool, mode="paper", symbols=SYMBOLS, metrics=metrics,
                        notice="demo: trading a model without a validated edge, paper only")  # fmt: skip
    try:
        yield fx, st, metrics
    finally:
        await pool.close()
        await lock.release()


async def test_state_from_the_store(dash) -> None:
    fx, st, _ = dash
    s = await read_state(st, now=fx.now)
    status = s["status"]
    assert status["state"] == "running" and status["pid"] == 4242 and status["state_text"] == "running (pid 4242 on testhost)"
    assert status["model_version"] == "v-champ" and status["watch_only"] is False
    assert status["last_minute_text"] == fmt_ts(fx.last)

    a = s["account"]
    assert a["equity"] == pytest.approx(fx.last_eq) and a["open_positions"] == 2
    assert a["today_pnl"] == pytest.approx(fx.last_eq - fx.today_base)
    assert a["today_pnl_text"] == money(fx.last_eq - fx.today_base) and a["equity_text"] == money(fx.last_eq, sign=False)

    e = s["equity"]
    # the whole run (from the two-day-old snapshot) in at most 600 buckets: the first snapshot,
    # then the last snapshot of each bucket counted from the run's start
    snaps = [fx.old, *fx.eq]
    start, end = fx.old[0], fx.last
    b = -(-(end - start + MINUTE_MS) // 600 // MINUTE_MS) * MINUTE_MS
    assert e["bucket_minutes"] * MINUTE_MS == b and e["hours"] is None
    want = {start}
    for k in range(-(-(end - start + MINUTE_MS) // b)):
        inside = [t for t, _ in snaps if start <= t <= start + (k + 1) * b - 1]
        if inside:
            want.add(max(inside))
    assert e["ts"] == sorted(want) and len(e["ts"]) <= 601
    assert e["equity"] == [dict(snaps)[t] for t in e["ts"]]
    assert e["equity"][-1] == pytest.approx(fx.last_eq) and e["ts"][0] == fx.old[0]
    assert len(e["ticks"]) == 6 and all(":" in t["text"] for t in e["ticks"]) and len(e["y_ticks"]) == 5
    st.equity_hours = 6.0  # a short span: one point per snapshot, the two-day-old one left out
    e6 = (await read_state(st, now=fx.now))["equity"]
    assert e6["bucket_minutes"] == 1 and e6["ts"] == [t for t, _ in fx.eq if t > fx.last - 6 * HOUR_MS]

    pos = {p["symbol"]: p for p in s["positions"]}
    assert set(pos) == {"BTCUSDT", "ETHUSDT"}
    assert pos["BTCUSDT"]["last_price"] == 50_500.0 and pos["BTCUSDT"]["upnl"] == pytest.approx(0.02 * 500)
    assert pos["ETHUSDT"]["upnl"] == pytest.approx(0.5 * -100) and pos["ETHUSDT"]["upnl_pct"] == pytest.approx(2900 / 3000 - 1)
    assert pos["BTCUSDT"]["entry_text"] == fmt_short(fx.m0 - 40 * MINUTE_MS)
    assert pos["BTCUSDT"]["held_text"] == "40m" and pos["ETHUSDT"]["held_text"] == "1h30m"  # to the last minute's close
    assert pos["BTCUSDT"]["upnl_text"] == "+10.00" and pos["ETHUSDT"]["upnl_pct_text"] == "-3.33%"

    assert [t["symbol"] for t in s["trades"]] == ["XRPUSDT", "SOLUSDT", "BTCUSDT"]  # newest exit first
    assert s["trades"][0]["pnl"] == pytest.approx(-10.99) and s["trades"][0]["reason"] == "sl"
    assert s["trades"][1]["pnl_pct"] == pytest.approx(11.72 / 280.0)

    d = s["decisions"]
    assert [(r["reason"], r["count"]) for r in d["skips_last_hour"]] == [("low_probability", 5), ("correlation", 2)]
    assert len(d["recent"]) == 9 and d["recent"][0]["symbol"] == "SOLUSDT"
    assert d["recent"][0]["er_text"] == "+0.100%" and d["recent"][0]["size_text"] == MISSING

    feed = {f["symbol"]: f for f in s["feed"]}
    assert [feed[x]["health"] for x in SYMBOLS] == ["ok", "late", "stale", "none"]
    assert feed["BTCUSDT"]["age_s"] == 0 and feed["ETHUSDT"]["age_s"] == 300  # behind the last minute's close
    assert [feed[x]["age_text"] for x in SYMBOLS] == ["0s", "5m", "1h59m", MISSING]

    models = s["models"]
    assert [m["version"] for m in models] == ["v-champ", "v-new"]  # the champion first
    assert models[0]["pf"] == 1.31 and models[0]["trades"] == 812 and models[1]["status"] == "candidate"
    assert models[0]["pf_text"] == "1.31" and models[1]["trades_text"] == "640"
    assert s["decisions"]["recent"][0]["time_text"] == fmt_short(fx.m0 - MINUTE_MS)  # times as UTC text


async def test_stale_stopped_vanished_and_never(db_dsn: str) -> None:
    """Running is the advisory lock (as `bot status` says); the heartbeat row tells the rest."""
    now = now_ms()
    await populate(db_dsn, now, daemon_status=True)
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1)
    lock = await DaemonLock.acquire(db_dsn)
    try:
        st = DashboardState(db=pool, mode="paper", symbols=SYMBOLS)
        await pool.execute("UPDATE daemon_status SET heartbeat_ts = $1", now - 10 * MINUTE_MS)
        s = await read_state(st, now=now)
        assert s["status"]["state"] == "stale" and "no heartbeat for 10m" in s["status"]["state_text"]
        await lock.release()  # killed: no lock, no clean stop
        s = await read_state(st, now=now)
        assert s["status"]["state"] == "vanished" and "did not stop cleanly" in s["status"]["state_text"]
        await pool.execute("UPDATE daemon_status SET stopped_ts = $1", now - MINUTE_MS)
        assert (await read_state(st, now=now))["status"]["state"] == "stopped"
        await pool.execute("DROP TABLE daemon_status")
        s = await read_state(st, now=now)  # an older schema: degrade, do not fail
        assert s["status"]["state"] == "never" and s["account"]["open_positions"] == 2
    finally:
        await lock.release()
        await pool.close()


async def test_endpoints_and_prometheus_text(dash) -> None:
    fx, st, metrics = dash
    metrics.step_done(symbol_bars=30, latency_s=0.0021)
    metrics.step_done(symbol_bars=30, latency_s=0.0035)
    metrics.account(equity=10_120.5, cash=7_670.5, gross_exposure=2_450.0, open_positions=2)
    metrics.order_sent("buy")
    metrics.trade_closed("tp")
    metrics.skipped({"low_probability": 5, "correlation": 0})
    port = free_port()
    cfg = DashboardConfig(port=port, refresh_s=2)
    runner = await start_dashboard(st, cfg)
    assert runner is not None
    try:
        await asyncio.sleep(1.3)  # the loop-lag monitor samples once a second
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(base + "/api/state") as r:
                assert r.status == 200
                state = await r.json()
            assert state["account"]["equity"] == pytest.approx(fx.last_eq)
            assert state["status"]["bars_processed"] == 60 and state["status"]["decision_latency_ms"] == pytest.approx(3.5)
            assert state["notice"].startswith("demo:")
            async with http.get(base + "/") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
                body = await r.text()
            assert "<link" not in body and "src=\"http" not in body and "v-champ" in body
            async with http.post(base + "/api/state") as r:
                assert r.status == 405  # read-only
            async with http.get(base + "/metrics") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                text = await r.text()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        val = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
        assert val[("bot_bars_processed_total", ())] == 60
        assert val[("bot_steps_total", ())] == 2
        assert val[("bot_decision_latency_seconds_count", ())] == 2
        assert val[("bot_decision_latency_seconds_sum", ())] == pytest.approx(0.0056)
        assert val[("bot_decision_latency_seconds_bucket", (("le", "0.005"),))] == 2
        assert val[("bot_decision_latency_seconds_bucket", (("le", "0.002"),))] == 0
        # the read model's figures at the scrape (the same as the page's): ETH's candle 5 minutes behind
        assert val[("bot_feed_lag_seconds", (("symbol", "ETHUSDT"),))] == 300.0
        assert val[("bot_feed_lag_seconds", (("symbol", "BTCUSDT"),))] == 0.0
        assert val[("bot_equity_quote", ())] == pytest.approx(fx.last_eq) and val[("bot_open_positions", ())] == 2
        assert val[("bot_today_pnl_quote", ())] == pytest.approx(state["account"]["today_pnl"])
        assert val[("bot_read_model_up", ())] == 1
        assert val[("bot_orders_total", (("side", "buy"),))] == 1
        assert val[("bot_trades_closed_total", (("reason", "tp"),))] == 1
        assert val[("bot_entry_skips_total", (("reason", "low_probability"),))] == 5
        assert ("bot_entry_skips_total", (("reason", "correlation"),)) not in val
        assert val[("bot_model_info", (("version", "v-champ"),))] == 1 and val[("bot_watch_only", ())] == 0
        assert val[("bot_event_loop_lag_seconds_count", ())] >= 1
        assert val[("process_resident_memory_bytes", ())] > 50 * 2**20
    finally:
        await runner.cleanup()


async def test_disabled_busy_port_and_config(dash) -> None:
    _, st, _ = dash
    assert await start_dashboard(st, DashboardConfig(enabled=False)) is None
    assert await start_dashboard(st, Config(dashboard={"enabled": False})) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert await start_dashboard(st, DashboardConfig(port=busy)) is None  # logged, the daemon goes on
    with pytest.raises(ValueError, match="loopback"):
        DashboardConfig(host="0.0.0.0")


def test_config_names_the_bad_dashboard_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("dashboard:\n  host: 0.0.0.0\n  port: 70000\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "dashboard.host" in msg and "loopback" in msg and "dashboard.port" in msg


async def test_page_renders_in_headless_chromium(dash, tmp_path: Path) -> None:
    fx, st, metrics = dash
    metrics.step_done(symbol_bars=30, latency_s=0.0021)
    cfg = DashboardConfig(refresh_s=60, equity_hours=8)
    app = make_app(st, cfg)

    async def probed(request: web.Request) -> web.Response:  # the real page plus the test's probe
        resp = await page(request)
        return web.Response(text=inject_probe(resp.text, ["equity-svg", "positions"]), content_type="text/html")

    app.router.add_get("/probe", probed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}/probe"
        height = 1300
        dom = await asyncio.to_thread(dump_dom, url, height, budget_ms=3000)
        px = await asyncio.to_thread(screenshot, url, tmp_path / "dash.png", height, budget_ms=3000)
    finally:
        await runner.cleanup()
    assert "data-rendered=" in dom
    notices = dom.split('id="notices">', 1)[1].split('<div class="cards"', 1)[0]
    assert "page error" not in notices and "cannot reach" not in notices, notices
    # the equity chart: an SVG polyline with one point per snapshot, drawn rising (green)
    line = dom.split('id="equity-line" points="', 1)[1].split('"', 1)[0]
    assert len(line.split()) == len(fx.eq)  # 8 h: every snapshot of the last 6 h, not the 2-day-old one
    # positions table with both open positions and their unrealised P&L
    positions = dom.split('id="positions">', 1)[1].split("</table>", 1)[0]
    assert "BTCUSDT" in positions and "ETHUSDT" in positions and "+10.00" in positions and "-50.00" in positions
    assert "v-champ" in dom and "demo: trading a model without a validated edge" in dom
    assert "XRPUSDT" in dom.split('id="feed">', 1)[1]

    left, top, w, h, _ = probe_box(dom, "equity-svg")
    assert w > 1000 and h >= 250 and top + h <= height
    chart = px[top : top + h, left : left + w]
    assert color_share(chart, "#34d399", tol=0.1) > 0.002, "the equity line is not on the screenshot"
    pl, pt, pw, ph, _ = probe_box(dom, "positions")
    assert pt + ph <= height and ph > 60
    table = px[pt : pt + ph, pl : pl + pw]
    assert table.std() > 0.03, "the positions table is blank"
    assert color_share(table, "#f87171", tol=0.1) > 0.0002  # ETH's loss, drawn red
