"""The operator's commands against a real `bot run` (paper) on the exchange simulator replaying
the 30 symbols' real candles, with a real Postgres and a real bundle, through each interface:
`bot ctl` (the store channel), Telegram (a local fake Bot API, tests/support/fake_telegram.py)
and the dashboard (`POST /api/control` behind its token). One daemon run, and one restart,
exercise the commands in sequence:
force-exit of one symbol (each interface); pause (no entry decided after it, the positions held
still exit, the pause survives a restart); reload with a bad file (nothing changes) and a good
one; resume; flatten refused without its confirmation, a code that only its asker can use, then
confirmed (no position left, the entries still waiting dropped); retrain now, and again while it
runs; P&L per day, week and symbol; strangers (another chat, no or a wrong token) refused and recorded, nothing done. Every
command is in the store with who asked and what was answered."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml

from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from bot.ops.control.client import cli_identity
from models.timeutil import MINUTE_MS
from tests.support.fake_telegram import FakeTelegram
from tests.support.paper_daemon import (
    SPEED,
    Daemon,
    assert_books_consistent,
    bot_ctl,
    bot_status,
    free_port,
    promote_bundle,
    run_until,
    store_books,
    window,
    write_config,
)

pytestmark = pytest.mark.slow

EXITS = ("tp", "sl", "timeout", "gap_timeout")
TOKEN = "123456:FAKE-token-abcdefghijklmnop"
OWNER, STRANGER = 777001, 999002


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def open_positions(dsn: str) -> dict[str, int]:
    rows = await fetch(dsn, "SELECT symbol, entry_ts FROM positions WHERE mode = 'paper' AND status = 'open'")
    return {r["symbol"]: r["entry_ts"] for r in rows}


async def last_command_id(dsn: str) -> int:
    return int((await fetch(dsn, "SELECT coalesce(max(id), 0) AS n FROM commands"))[0]["n"])


class Operator:
    """The three interfaces, each returning (status, answer text, result)."""

    def __init__(self, cfg: Path, dsn: str, fake: FakeTelegram, port: int, token_file: Path):
        self.cfg, self.dsn, self.fake, self.port, self.token_file = cfg, dsn, fake, port, token_file

    async def cli(self, *args: str, cfg: Path | None = None) -> tuple[int, str]:
        """`bot ctl ...` as a subprocess with no terminal on stdin (the simulator runs on this loop)."""
        return await bot_ctl(cfg or self.cfg, *args)

    async def chat(self, text: str, chat_id: int = OWNER) -> tuple[str, str, dict]:
        """A chat message to the bot; the command's row and (for the owner) the reply in the chat."""
        after = await last_command_id(self.dsn)
        self.fake.user_sends(chat_id, text)
        deadline = time.monotonic() + 60
        while True:
            rows = await fetch(self.dsn, "SELECT status, answer, result FROM commands WHERE id > $1 AND interface = 'telegram' "
                                         "AND status NOT IN ('pending', 'running') ORDER BY id LIMIT 1", after)  # fmt: skip
            if rows and (chat_id != OWNER or rows[0]["answer"] in self.fake.texts(str(OWNER))):
                r = rows[0]
                return r["status"], r["answer"], json.loads(r["result"]) if r["result"] else {}
            assert time.monotonic() < deadline, f"no answer to {text!r}; chat: {self.fake.texts()[-5:]}"
            await asyncio.sleep(0.1)

    async def web(self, command: str, *args: str, token: str | None = "file") -> tuple[int, dict]:
        headers = {}
        if token is not None:
            headers["Authorization"] = "Bearer " + (self.token_file.read_text().strip() if token == "file" else token)
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{self.port}/api/control", headers=headers,
                                                        json={"command": command, "args": list(args)}) as r:  # fmt: skip
            return r.status, await r.json()


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


async def test_each_command_through_each_interface_against_a_running_paper_daemon(db_dsn, book30, bundle_path, tmp_path,
                                                                                  monkeypatch) -> None:  # fmt: skip  # noqa: ANN001
    start, end, horizon = window(bundle_path, 12)
    sim = ExchangeSimulator(book30, SimSettings(speed=0, start_ms=start, update_interval_s=0.5))
    await sim.start()
    fake = await FakeTelegram(TOKEN).start()
    await promote_bundle(db_dsn, bundle_path)
    port = free_port()
    cfg = write_config(tmp_path, db_dsn, sim, dashboard_port=port)
    data = yaml.safe_load(cfg.read_text())
    data["telegram"] = {"enabled": True, "api_base": fake.url, "poll_timeout_s": 1, "min_interval_s": 0.25, "level": "warning"}
    cfg.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("BOT_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("BOT_TELEGRAM_CHAT_ID", str(OWNER))
    token_file = tmp_path / "var" / "dashboard.token"
    op = Operator(cfg, db_dsn, fake, port, token_file)
    me = cli_identity()
    d = Daemon(cfg, tmp_path, db_dsn)
    try:
        await d.start()
        await d.wait_event("engine_ready")
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

        async def held(n: int) -> bool:
            return len(await open_positions(db_dsn)) >= n

        await clock_until(sim, lambda: held(3))
        before = await open_positions(db_dsn)

        # strangers: another chat, no token, a wrong token: refused, recorded, nothing done
        status, answer, _ = await op.chat("/flatten", STRANGER)
        assert (status, answer) == ("refused", "refused: not the configured chat")
        code, ans = await op.web("flatten", token=None)
        assert code == 401 and ans["status"] == "refused"
        code, ans = await op.web("pause", token="x" * 32)
        assert code == 403 and ans["text"] == "wrong token: nothing done"
        code, ans = await op.web("flatten", token=token_file.read_text().strip()[:-1] + "?")
        assert code == 403
        assert await open_positions(db_dsn) == before
        assert not (await fetch(db_dsn, "SELECT paused FROM control_state"))  # never paused

        # force-exit of one symbol through each interface (paper: no confirmation); the others stay
        a, b, c = sorted(before)[:3]
        rc, out = await op.cli("force-exit", a.lower())
        assert rc == 0 and out.startswith(f"closed 1 position(s): {a} "), out
        assert set(await open_positions(db_dsn)) == set(before) - {a}
        status, answer, _ = await op.chat(f"/force_exit {b}")
        assert status == "done" and answer.startswith(f"closed 1 position(s): {b} "), answer
        assert set(await open_positions(db_dsn)) == set(before) - {a, b}
        code, ans = await op.web("force_exit", c)
        assert code == 200 and ans["status"] == "done" and ans["result"]["closed"] == [c], ans
        assert set(await open_positions(db_dsn)) == set(before) - {a, b, c}
        reasons = await fetch(db_dsn, "SELECT symbol, exit_reason FROM positions WHERE mode = 'paper' AND status = 'closed' "
                                      "AND symbol = ANY($1) AND entry_ts = ANY($2)", [a, b, c], [before[s] for s in (a, b, c)])  # fmt: skip
        assert sorted((r["symbol"], r["exit_reason"]) for r in reasons) == [(s, "force_exit") for s in (a, b, c)]
        rc, out = await op.cli("force-exit", a)
        assert rc == 1 and out.startswith(f"no open position in {a}"), out

        # the minimum number of positions for the pause to show its exits
        await clock_until(sim, lambda: held(2))
        # pause (Telegram; then again from the others: already paused); it survives a restart
        status, answer, res = await op.chat("/pause")
        assert status == "done" and "entries PAUSED" in answer and res["paused"]
        paused_at = int(res["last_minute_ts"])
        code, ans = await op.web("pause")
        assert code == 200 and ans["text"].startswith("entries already paused") and "telegram owner chat" in ans["text"]
        rc, out = await op.cli("pause")
        assert rc == 0 and out.startswith("entries already paused"), out
        held_at_pause = await open_positions(db_dsn)
        n = len(d.events())
        assert await d.terminate() == 0
        await d.start()
        said = await d.wait_event("control_paused_at_start", after=n)
        assert said["by"] == "telegram owner chat"
        await d.wait_event("engine_ready", after=n)
        rc, text = await bot_status(cfg)  # the pause is in the operator read model: bot status, the page
        assert "entries: PAUSED since " in text and "by telegram owner chat" in text, text
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/api/state") as r:
            assert "by telegram owner chat" in (await r.json())["status"]["paused_text"]
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

        # reload: a bad file changes nothing and says why (each interface); a good one applies its risk section
        ctl_cfg = tmp_path / "ctl.yaml"  # `bot ctl --config` of another (valid) file on the same store
        ctl_cfg.write_text(cfg.read_text())
        set_risk(cfg, max_positions=0, max_drawdown=2)
        rc, out = await op.cli("reload")  # bot ctl reads the same file: it finds the problems first
        assert rc == 2 and "risk.max_positions: must be >= 1" in out and "nothing was sent to the daemon" in out, out
        rc, out = await op.cli("reload", cfg=ctl_cfg)  # the daemon reads its own file through the one loader
        assert rc == 1 and "not reloaded, nothing changed" in out, out
        assert "risk.max_positions: must be >= 1" in out and "risk.max_drawdown: " in out, out
        status, answer, _ = await op.chat("/reload")
        assert status == "refused" and "not reloaded, nothing changed" in answer and "risk.max_positions" in answer
        code, ans = await op.web("reload")
        assert code == 200 and ans["status"] == "refused" and ans["result"]["problems"][0].startswith("risk.max_")
        set_risk(cfg, max_positions=2, max_drawdown=0.15)
        code, ans = await op.web("reload")
        assert ans["status"] == "done" and ans["result"]["changes"] == ["risk.max_positions 5 -> 2"], ans  # still 5

        # resume (dashboard; the others: already allowed): entries again, at most 2 at a time now
        code, ans = await op.web("resume")
        assert ans["status"] == "done" and ans["text"].startswith("entries RESUMED")
        rc, text = await bot_status(cfg)
        assert "PAUSED" not in text, text
        resumed_at = int(ans["result"]["last_minute_ts"])
        status, answer, _ = await op.chat("/resume")
        assert answer.startswith("entries already allowed")
        rc, out = await op.cli("resume")
        assert rc == 0 and out.startswith("entries already allowed"), out

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
        rc, out = await op.cli("flatten")
        assert rc == 1 and "confirm within 60 s: confirm " in out and "not confirmed" in out, out
        status, answer, res = await op.chat("/flatten")
        assert status == "confirm" and answer.endswith(f"/confirm {res['code']}"), answer
        code, ans = await op.web("confirm", res["code"])  # a code is its asker's only
        assert ans["status"] == "refused"
        assert await open_positions(db_dsn) == held_now
        status, answer, _ = await op.chat(f"/confirm {res['code']}")
        assert status == "done" and answer.startswith(f"closed {len(held_now)} position(s)"), answer
        assert not await open_positions(db_dsn)  # written before the answer
        flat_at = (await d.last_minute()) or 0
        waiting = await fetch(db_dsn, "SELECT client_order_id FROM orders WHERE mode = 'paper' AND leg = 'entry' "
                                      "AND decision_ts = $1", flat_at)  # fmt: skip

        async def past(ts: int) -> bool:
            return ((await d.last_minute()) or 0) >= ts

        await clock_until(sim, lambda: past(flat_at + 3 * MINUTE_MS))
        late = await fetch(db_dsn, "SELECT symbol FROM positions WHERE mode = 'paper' AND entry_ts <= $1 AND status = 'open'",
                           flat_at + MINUTE_MS)  # fmt: skip
        assert not late  # an entry that was waiting at the flatten never filled
        await clock_until(sim, lambda: held(1))
        code, ans = await op.web("flatten")
        assert ans["status"] == "confirm", ans
        code, ans = await op.web("confirm", ans["result"]["code"])
        assert ans["status"] == "done" and ans["result"]["closed"] and not await open_positions(db_dsn), ans
        rc, out = await op.cli("flatten", "--yes")
        assert rc == 0 and out == "no open position: nothing to flatten", out

        # P&L per day (cli), per week (telegram), per symbol (dashboard): the read model's figures
        pnl = await fetch(db_dsn, "SELECT symbol, sum(pnl) AS pnl, count(*) AS n FROM positions WHERE mode = 'paper' "
                                  "AND status = 'closed' GROUP BY symbol")  # fmt: skip
        total, trades = sum(r["pnl"] for r in pnl), sum(r["n"] for r in pnl)
        rc, out = await op.cli("daily")
        assert rc == 0 and out.startswith("realised P&L per UTC day, last 7 day(s):"), out
        assert out.splitlines()[-1] == f"total  {total:+,.2f} USDT  {trades} trades", out  # the replay is < 1 day
        status, answer, res = await op.chat("/weekly 2")
        assert status == "done" and sum(r["realised"] for r in res["rows"]) == pytest.approx(total), answer
        code, ans = await op.web("performance")
        rows = ans["result"]["rows"]
        assert {r["label"]: r["trades"] for r in rows} == {r["symbol"]: r["n"] for r in pnl}
        assert [r["realised"] for r in rows] == sorted((r["realised"] for r in rows), reverse=True)
        rc, out = await op.cli("daily", "0")
        assert rc == 1 and "1..60" in out, out

        # retrain now, and again while it runs
        rc, out = await op.cli("retrain")
        assert rc == 0 and out.startswith("retrain started"), out
        status, answer, _ = await op.chat("/retrain")
        assert status == "refused" and "a retrain is already running" in answer
        code, ans = await op.web("retrain")
        assert ans["status"] == "refused" and "a retrain is already running" in ans["text"]
        assert await d.terminate() == 0
    finally:
        if d.proc is not None and d.proc.returncode is None:
            d.proc.kill()
        await sim.stop()
        await fake.stop()
    books = await store_books(db_dsn)
    assert_books_consistent(books)
    # the entries waiting at the flatten are cancelled orders (not 'submitted' forever); others filled
    assert {c for c, why in books["cancelled"] if why == "flatten"} >= {r["client_order_id"] for r in waiting}
    rows = await fetch(db_dsn, "SELECT interface, identity, command, status, answer FROM commands ORDER BY id")
    assert all(r["answer"] for r in rows)
    assert [(r["interface"], r["identity"], r["command"], r["status"]) for r in rows[:4]] == [
        ("telegram", f"chat {STRANGER}", "flatten", "refused"), ("dashboard", "127.0.0.1", "flatten", "refused"),
        ("dashboard", "127.0.0.1", "pause", "refused"), ("dashboard", "127.0.0.1", "flatten", "refused")]  # fmt: skip
    who = {(r["interface"], r["identity"]) for r in rows[4:]}
    assert who == {("cli", me), ("telegram", "owner chat"), ("dashboard", "127.0.0.1")}
    for interface in ("cli", "telegram", "dashboard"):
        done = {r["command"] for r in rows[4:] if r["interface"] == interface}
        assert done >= {"force_exit", "pause", "resume", "reload", "flatten", "retrain"}, (interface, done)
        assert done & {"daily", "weekly", "performance"}, (interface, done)
    st = await fetch(db_dsn, "SELECT paused, changed_by FROM control_state WHERE mode = 'paper'")
    assert not st[0]["paused"] and st[0]["changed_by"] == "dashboard 127.0.0.1"
    # the dashboard's token and the chat's secrets never reached the logs or the store
    token = token_file.read_text().strip()
    logs = (tmp_path / "logs" / "bot.jsonl").read_text() + (tmp_path / "logs" / "bot.log").read_text()
    dump = json.dumps([dict(r) for r in await fetch(db_dsn, "SELECT * FROM commands")], default=str)
    for secret in (token, TOKEN, str(OWNER)):
        assert secret not in logs and secret not in dump
