"""The operator's controller and its store channel on a real Postgres: a `bot ctl` row is
claimed and answered, an old one is never executed, the pause is persisted, a confirmation
code works only for who asked and only once, a bad config file changes nothing, strangers are
recorded. The engine-side commands (flatten, force-exit, a reload applied to a running engine)
run against a real daemon in tests/integration/test_control_daemon.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest
import yaml
from pydantic import SecretStr

from bot.config import load_config
from bot.ops.control.client import send
from bot.ops.control.commands import normalise_name, parse, parse_text
from bot.ops.control.controller import Controller
from bot.store import control as sc


def _trader(cfg, **kw) -> SimpleNamespace:  # noqa: ANN001
    """The parts of `LiveTrader` the controller reads, for a daemon with no engine yet (starting
    up): the commands that need one must say so."""
    base = dict(cfg=cfg, engine=None, feed=None, live=None, retrainer=None, last_minute=None,
                stop=asyncio.Event(), health=SimpleNamespace(up=True))  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def _config(tmp_path: Path, risk: dict | None = None) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump({"paths": {"data_dir": str(tmp_path / "var"), "models_dir": str(tmp_path / "var/m"),
                                           "logs_dir": str(tmp_path / "logs")}, "risk": risk or {}}))  # fmt: skip
    return p


def test_the_command_words_of_every_interface() -> None:
    assert normalise_name("/Force-Exit@cryptobot") == "force_exit"
    assert parse_text("/flatten solusdt").args == ["solusdt"] and parse_text("/flatten").error is None
    assert parse("force-exit", []).error == "usage: force_exit SYMBOL"
    assert parse("flatten", ["A", "B"]).error == "usage: flatten [SYMBOL]"
    assert "unknown command 'sell'" in (parse("sell", []).error or "")


async def test_a_cli_row_is_claimed_answered_and_an_old_one_never_runs(store, tmp_path) -> None:  # noqa: ANN001
    cfg = load_config(_config(tmp_path))
    ctl = Controller(cfg, store, _trader(cfg))
    async with store.pool.acquire() as conn:
        old = await sc.insert_command(conn, "cli", "bob@pc", "pause", [])
        await conn.execute("UPDATE commands SET created_ts = created_ts - 60000 WHERE id = $1", old.id)
    served = asyncio.create_task(ctl.serve())
    try:
        conn = await asyncpg.connect(store.dsn)
        try:
            row = await send(conn, "alice@pc", "resume", [], timeout_s=5)
            assert row.status == "done" and row.answer.startswith("entries already allowed"), row
            assert (await sc.get_command(conn, old.id)).status == "expired"  # not executed: still not paused
            assert not (await sc.read_control_state(conn, "paper")).paused and not ctl.paused
            row = await send(conn, "alice@pc", "pause", [], timeout_s=5)
            assert row.status == "done" and "PAUSED" in row.answer and ctl.paused
            st = await sc.read_control_state(conn, "paper")
            assert st.paused and st.changed_by == "cli alice@pc"
            row = await send(conn, "alice@pc", "flatten", [], timeout_s=5)  # no engine yet: says so
            assert row.status == "refused" and "engine is not trading" in row.answer
            row = await send(conn, "alice@pc", "retrain", [], timeout_s=5)
            assert row.status == "refused" and "no retrain schedule runs now" in row.answer
        finally:
            await conn.close()
    finally:
        served.cancel()
    # a restarted daemon reads the pause back
    again = Controller(cfg, store, _trader(cfg))
    await again.load()
    assert again.paused and again.details()["paused_by"] == "cli alice@pc"


async def test_no_daemon_no_action(store) -> None:  # noqa: ANN001
    async with store.pool.acquire() as conn:
        row = await send(conn, "alice@pc", "pause", [], timeout_s=0.5)
        assert row.status == "expired" and "no daemon took it" in row.answer
        claimed, expired = await sc.claim_pending(conn, 30_000)
        assert claimed == [] and expired == 0  # an expired row is never claimed


async def test_a_confirmation_code_is_for_who_asked_and_only_once(store, tmp_path) -> None:  # noqa: ANN001
    cfg = load_config(_config(tmp_path))
    eng = SimpleNamespace(positions={"SOLUSDT": SimpleNamespace(qty=1.0)}, broker=SimpleNamespace(pending=list))
    closed: list = []

    async def engine_op(op):  # noqa: ANN001, ANN202 - records what would run between two minutes
        closed.append(op)
        return SimpleNamespace(closed=[], cancelled=[])

    tr = _trader(cfg, engine=eng, feed=object(), engine_op=engine_op)
    ctl = Controller(cfg, store, tr)
    ask = await ctl.submit("telegram", "owner chat", "/flatten")
    assert ask.status == "confirm" and ask.text.endswith(f"/confirm {ask.result['code']}") and "SOLUSDT" in ask.text
    other = await ctl.submit("dashboard", "127.0.0.1", "confirm", [ask.result["code"]])
    assert other.status == "refused" and not closed
    done = await ctl.submit("telegram", "owner chat", "confirm", [ask.result["code"]])
    assert done.status == "done" and len(closed) == 1
    twice = await ctl.submit("telegram", "owner chat", "confirm", [ask.result["code"]])
    assert twice.status == "refused" and len(closed) == 1
    # live mode asks twice
    live = Controller(cfg.model_copy(update={"mode": "live"}), store, tr)
    live.cfg = live.cfg.model_copy(update={"secrets": live.cfg.secrets.model_copy(
        update={"api_key": SecretStr("k"), "api_secret": SecretStr("s")})})  # fmt: skip
    a = await live.submit("cli", "alice@pc", "force-exit", ["solusdt"])
    assert a.status == "confirm" and a.result["left"] == 1
    b = await live.submit("cli", "alice@pc", "flatten")
    c = await live.submit("cli", "alice@pc", "confirm", [b.result["code"]])
    assert c.status == "confirm" and "LIVE mode" in c.text and len(closed) == 1
    d = await live.submit("cli", "alice@pc", "confirm", [c.result["code"]])
    assert d.status == "done" and len(closed) == 2
    async with store.pool.acquire() as conn:
        rows = await sc.recent_commands(conn, 20)
    assert [(r.interface, r.command, r.status) for r in rows[::-1]] == [
        ("telegram", "flatten", "confirm"), ("dashboard", "confirm", "refused"), ("telegram", "confirm", "done"),
        ("telegram", "confirm", "refused"), ("cli", "force_exit", "confirm"), ("cli", "flatten", "confirm"),
        ("cli", "confirm", "confirm"), ("cli", "confirm", "done")]  # fmt: skip


async def test_reload_validates_the_whole_file_first_and_a_bad_one_changes_nothing(store, tmp_path) -> None:  # noqa: ANN001
    path = _config(tmp_path, {"max_positions": 3})
    cfg = load_config(path)
    tr = _trader(cfg)
    ctl = Controller(cfg, store, tr, config_path=path)
    path.write_text(path.read_text().replace("max_positions: 3", "max_positions: 0\n  max_drawdown: 2"))
    bad = await ctl.submit("cli", "alice@pc", "reload")
    assert bad.status == "refused" and "nothing changed" in bad.text
    assert "risk.max_positions: " in bad.text and "risk.max_drawdown: " in bad.text and tr.cfg.risk.max_positions == 3
    path.write_text(path.read_text().replace("max_positions: 0\n  max_drawdown: 2", "max_positions: 2"))
    good = await ctl.submit("cli", "alice@pc", "reload")
    assert good.status == "done" and good.result["changes"] == ["risk.max_positions 3 -> 2"]
    assert tr.cfg.risk.max_positions == 2 and ctl.cfg.risk.max_positions == 2


async def test_reload_names_a_changed_protection_key_by_its_dotted_path(store, tmp_path) -> None:  # noqa: ANN001
    path = _config(tmp_path)
    cfg = load_config(path)
    tr = _trader(cfg)
    ctl = Controller(cfg, store, tr, config_path=path)
    path.write_text(path.read_text().replace("risk: {}", "risk:\n  stop_loss_guard:\n    stop_losses: 4\n    scope: symbol"))
    good = await ctl.submit("cli", "alice@pc", "reload")
    assert good.status == "done", good.text
    assert good.result["changes"] == ["risk.stop_loss_guard.stop_losses 0 -> 4", "risk.stop_loss_guard.scope 'global' -> 'symbol'"]
    assert tr.cfg.risk.stop_loss_guard.stop_losses == 4 and "protections" in good.text


async def test_strangers_are_recorded_and_a_flood_of_them_is_bounded(store, tmp_path) -> None:  # noqa: ANN001
    cfg = load_config(_config(tmp_path))
    ctl = Controller(cfg, store, _trader(cfg))
    for _ in range(40):
        await ctl.refuse("telegram", "chat 999002", "/flatten", [], "not the configured chat")
    async with store.pool.acquire() as conn:
        n = await conn.fetchval("SELECT count(*) FROM commands WHERE status = 'refused' AND identity = 'chat 999002'")
    assert n == 30 and ctl.refused_unrecorded == 10


@pytest.mark.parametrize("word", ["pause", "flatten"])
async def test_with_the_store_away_an_in_process_command_does_nothing_and_says_why(word, tmp_path) -> None:  # noqa: ANN001
    cfg = load_config(_config(tmp_path))

    class Away:
        def acquire(self, timeout=None):  # noqa: ANN001, ANN202
            raise ConnectionRefusedError("connection refused")

    ctl = Controller(cfg, SimpleNamespace(pool=Away()), _trader(cfg))
    ans = await ctl.submit("telegram", "owner chat", word)
    assert ans.status == "refused" and "store is unavailable" in ans.text and not ctl.paused


def test_the_dashboard_token_file_is_0600_kept_across_starts_and_replaced_if_others_can_read_it(tmp_path) -> None:  # noqa: ANN001
    from bot.logs.setup import _mask_value
    from bot.ops.control.dashboard import load_or_create_token, token_path

    path = token_path(tmp_path / "var")
    first = load_or_create_token(path)
    assert len(first) >= 30 and oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_or_create_token(path) == first  # a bookmarked page keeps working after a restart
    assert first not in _mask_value(f"token={first}")  # masked should it reach a log line
    path.chmod(0o644)
    second = load_or_create_token(path)
    assert second != first and oct(path.stat().st_mode & 0o777) == "0o600"
