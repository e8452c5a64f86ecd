"""The operator's commands against a real `bot run` (paper) on the exchange simulator replaying
the 30 symbols' real candles, with a real Postgres and a real bundle; one daemon run (and one
restart) exercises the commands in sequence through `bot ctl`:
force-exit of one symbol; pause (no entry decided after it, the positions held still exit,
the pause survives a restart); reload with a bad file (nothing changes) and a good one;
resume; flatten refused without its confirmation, then confirmed (no position left, the
entries still waiting dropped); retrain now, and again while it runs. Every command is in the
store with who asked and what was answered."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from bot.ops.control.client import cli_identity
from models.timeutil import MINUTE_MS
from tests.support.paper_daemon import (
    SPEED,
    Daemon,
    assert_books_consistent,
    promote_bundle,
    run_until,
    store_books,
    window,
    write_config,
)
from tests.support.shared_data import ROOT

pytestmark = pytest.mark.slow

EXITS = ("tp", "sl", "timeout", "gap_timeout")


async def bot_ctl(cfg: Path, *args: str) -> tuple[int, str]:
    """`bot ctl ...` as a subprocess with no terminal on stdin (the simulator runs on this loop)."""
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "--config", str(cfg), "ctl", *args, cwd=ROOT,
                                             stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(p.communicate(), 120)
    return p.returncode or 0, (out.decode() + err.decode()).strip()


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def open_positions(dsn: str) -> dict[str, int]:
    rows = await fetch(dsn, "SELECT symbol, entry_ts FROM positions WHERE mode = 'paper' AND status = 'open'")
    return {r["symbol"]: r["entry_ts"] for r in rows}


async def clock_until(sim: ExchangeSimulator, cond: Callable[[], Awaitable[bool]], timeout: float = 180) -> None:
    """Run the exchange clock fast until `cond()`, then hold it (and let the minute in flight land)."""
    sim.clock.set(speed=SPEED)
    deadline = time.monotonic() + timeout
    try:
        while not await cond():
            assert time.monotonic() < deadline, "condition never met"
            await asyncio.sleep(0.1)
    finally:
        sim.clock.set(speed=0)
    await asyncio.sleep(2.0)


def set_risk(cfg: Path, **risk: Any) -> None:
    data = yaml.safe_load(cfg.read_text())
    data["risk"] = {**data.get("risk", {}), **risk}
    cfg.write_text(yaml.safe_dump(data))


async def test_each_command_through_bot_ctl_against_a_running_paper_daemon(db_dsn, book30, bundle_path, tmp_path) -> None:  # noqa: ANN001
    start, end, horizon = window(bundle_path, 12)
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    await promote_bundle(db_dsn, bundle_path)
    cfg = write_config(tmp_path, db_dsn, sim)
    d = Daemon(cfg, tmp_path, db_dsn)
    try:
        await d.start()
        await d.wait_event("engine_ready")

        async def held(n: int) -> bool:
            return len(await open_positions(db_dsn)) >= n

        await clock_until(sim, lambda: held(3))
        before = await open_positions(db_dsn)

        # force-exit of one symbol (paper: no confirmation); the others stay
        one = sorted(before)[0]
        rc, out = await bot_ctl(cfg, "force-exit", one.lower())
        assert rc == 0 and out.startswith(f"closed 1 position(s): {one} "), out
        row = (await fetch(db_dsn, "SELECT status, exit_reason FROM positions WHERE mode = 'paper' AND symbol = $1 "
                                   "AND entry_ts = $2", one, before[one]))[0]  # fmt: skip
        assert (row["status"], row["exit_reason"]) == ("closed", "force_exit")
        assert set(await open_positions(db_dsn)) == set(before) - {one}
        rc, out = await bot_ctl(cfg, "force-exit", one)
        assert rc == 1 and out.startswith(f"no open position in {one}"), out

        # pause: nothing entered after it, across a restart; the positions held still exit
        rc, out = await bot_ctl(cfg, "pause", "--json")
        ans = json.loads(out.splitlines()[-1])
        assert rc == 0 and ans["status"] == "done" and ans["result"]["paused"], out
        paused_at = int(ans["result"]["last_minute_ts"])
        held_at_pause = await open_positions(db_dsn)
        assert held_at_pause
        n = len(d.events())
        assert await d.terminate() == 0
        await d.start()
        said = await d.wait_event("control_paused_at_start", after=n)
        assert said["by"] == f"cli {cli_identity()}"
        await d.wait_event("engine_ready", after=n)
        await run_until(sim, paused_at + horizon + 30 * MINUTE_MS)
        await d.wait_minute(paused_at + horizon + 30 * MINUTE_MS)
        entered = await fetch(db_dsn, "SELECT symbol, ts FROM decisions WHERE mode = 'paper' AND action = 'enter' "
                                      "AND ts > $1", paused_at + MINUTE_MS)  # fmt: skip
        assert not entered, entered  # (the minute in flight when the pause came may have entered)
        skipped = await fetch(db_dsn, "SELECT count(*) AS n FROM decisions WHERE mode = 'paper' AND reason = 'paused'")
        assert skipped[0]["n"] >= 5
        exits = await fetch(db_dsn, "SELECT symbol, exit_reason FROM positions WHERE mode = 'paper' AND status = 'closed' "
                                    "AND exit_ts > $1", paused_at)  # fmt: skip
        assert {r["symbol"] for r in exits} >= set(held_at_pause) and {r["exit_reason"] for r in exits} <= set(EXITS)
        assert not await open_positions(db_dsn)

        # reload: a bad file changes nothing and says why; a good one applies its risk section
        ctl_cfg = tmp_path / "ctl.yaml"  # `bot ctl --config` of another (valid) file on the same store
        ctl_cfg.write_text(cfg.read_text())
        set_risk(cfg, max_positions=0, max_drawdown=2)
        rc, out = await bot_ctl(cfg, "reload")  # bot ctl reads the same file: it finds the problems first
        assert rc == 2 and "risk.max_positions: must be >= 1" in out and "nothing was sent to the daemon" in out, out
        rc, out = await bot_ctl(ctl_cfg, "reload")  # the daemon reads its own file through the one loader
        assert rc == 1 and "not reloaded, nothing changed" in out, out
        assert "risk.max_positions: must be >= 1" in out and "risk.max_drawdown: " in out, out
        set_risk(cfg, max_positions=2, max_drawdown=0.15)
        rc, out = await bot_ctl(cfg, "reload")
        assert rc == 0 and "risk.max_positions 5 -> 2" in out and "max_drawdown" not in out, out  # still 5 after the bad file

        # resume: entries again, at most 2 at a time now
        rc, out = await bot_ctl(cfg, "resume", "--json")
        resumed_at = int(json.loads(out.splitlines()[-1])["result"]["last_minute_ts"])
        assert rc == 0
        async def limit_binds() -> bool:
            return bool(await fetch(db_dsn, "SELECT 1 FROM decisions WHERE mode = 'paper' AND reason = 'max_positions' "
                                            "AND ts > $1", resumed_at)) and await held(1)  # fmt: skip

        await clock_until(sim, limit_binds)
        most = await fetch(db_dsn, """SELECT max((SELECT count(*) FROM positions b WHERE b.mode = 'paper'
                                          AND b.entry_ts <= a.entry_ts AND coalesce(b.exit_ts, 9e18) >= a.entry_ts)) AS n
                                      FROM positions a WHERE a.mode = 'paper' AND a.entry_ts > $1""", resumed_at)  # fmt: skip
        assert most[0]["n"] == 2

        # flatten asks for a confirmation: none given (no terminal, no --yes): nothing done
        held_now = await open_positions(db_dsn)
        rc, out = await bot_ctl(cfg, "flatten")
        assert rc == 1 and "confirm within 60 s: confirm " in out and "not confirmed" in out, out
        assert await open_positions(db_dsn) == held_now
        rc, out = await bot_ctl(cfg, "flatten", "--yes")
        assert rc == 0 and f"closed {len(held_now)} position(s)" in out, out
        assert not await open_positions(db_dsn)  # written before the answer
        flat_at = (await d.last_minute()) or 0
        async def past(ts: int) -> bool:
            return ((await d.last_minute()) or 0) >= ts

        await clock_until(sim, lambda: past(flat_at + 3 * MINUTE_MS))
        late = await fetch(db_dsn, "SELECT symbol FROM positions WHERE mode = 'paper' AND entry_ts <= $1 AND status = 'open'",
                           flat_at + MINUTE_MS)  # fmt: skip
        assert not late  # an entry that was waiting at the flatten never filled
        waiting = await fetch(db_dsn, "SELECT client_order_id FROM orders WHERE mode = 'paper' AND leg = 'entry' "
                                      "AND decision_ts = $1", flat_at)  # fmt: skip

        # retrain now, and again while it runs
        rc, out = await bot_ctl(cfg, "retrain")
        assert rc == 0 and out.startswith("retrain started"), out
        rc, out = await bot_ctl(cfg, "retrain")
        assert rc == 1 and "a retrain is already running" in out, out
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
    books = await store_books(db_dsn)
    assert_books_consistent(books)
    # the entries waiting at the flatten are cancelled orders (not 'submitted' forever); others filled
    assert {c for c, why in books["cancelled"] if why == "flatten"} == {r["client_order_id"] for r in waiting}
    rows = await fetch(db_dsn, "SELECT interface, identity, command, status, answer FROM commands ORDER BY id")
    assert {(r["interface"], r["identity"]) for r in rows} == {("cli", cli_identity())}
    assert [(r["command"], r["status"]) for r in rows] == [
        ("force_exit", "done"), ("force_exit", "refused"), ("pause", "done"), ("reload", "refused"), ("reload", "done"),
        ("resume", "done"), ("flatten", "confirm"), ("flatten", "confirm"), ("confirm", "done"), ("retrain", "done"),
        ("retrain", "refused")]  # fmt: skip
    assert all(r["answer"] for r in rows)
    st = await fetch(db_dsn, "SELECT paused, changed_by FROM control_state WHERE mode = 'paper'")
    assert not st[0]["paused"] and st[0]["changed_by"] == f"cli {cli_identity()}"
