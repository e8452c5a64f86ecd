"""`bot run` as an operator meets it, with real processes: the exchange cannot be reached (one
clear line, retries, watchdog fed through a real NOTIFY_SOCKET, recovery when it comes back),
a second daemon on the same database is refused and told who holds it, and `bot db status|stop`
see and respect the running daemon."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.exchange_sim.replay import CandleBook
from bot.exchange_sim.server import ExchangeSimulator, SimSettings
from tests.support.daemon_ops import (
    APR21_0000,
    ROOT,
    Lines,
    NotifySocket,
    bot,
    free_port,
    start,
    stop,
    write_config,
)
from tests.support.shared_data import DATA_DIR

pytestmark = pytest.mark.slow  # real processes, each with its own embedded cluster (15-40 s a test)


@pytest.fixture
def home() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="bot-ops-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        subprocess.run([sys.executable, "-m", "bot", "--config", str(d / "config.yaml"), "db", "stop", "--force"],
                       cwd=ROOT, capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(d, ignore_errors=True)
















def test_exchange_unreachable_said_once_watchdog_fed_and_recovers(home: Path) -> None:
    port = free_port()
    cfg = write_config(home, "127.0.0.1", port, ["BTCUSDT", "ETHUSDT"])
    notify = NotifySocket(home / "notify.sock")
    proc = start(cfg, "--no-train", env={"NOTIFY_SOCKET": str(home / "notify.sock"), "WATCHDOG_USEC": "1000000"})
    lines = Lines(proc)
    sim: ExchangeSimulator | None = None
    loop = asyncio.new_event_loop()
    try:
        line = lines.wait_for("EXCHANGE unreachable")
        assert "connection refused" in line and f"127.0.0.1:{port}" in line
        t_down = time.monotonic()
        time.sleep(3.0)  # several retries with backoff meanwhile
        assert proc.poll() is None, "the daemon died while the exchange was unreachable"
        assert lines.count("EXCHANGE unreachable") == 1, lines.lines  # one line, not one per retry
        pings = [t for t in notify.times("WATCHDOG=1") if t >= t_down]
        assert len(pings) >= 5, f"watchdog starved while unreachable: {len(pings)} pings in 3 s"
        assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < 1.0  # never a whole WatchdogSec without one
        # READY comes when the daemon does its job (here: collecting candles), not while it cannot
        # reach the exchange (systemd's TimeoutStartSec bounds that; the watchdog is fed meanwhile)
        assert "READY=1" not in [m for _, m in notify.messages]
        # The exchange comes up on that port: the daemon reaches it and goes on (no model: collects candles).
        book = CandleBook.from_directory(DATA_DIR, ["BTCUSDT", "ETHUSDT"])
        sim = ExchangeSimulator(book, SimSettings(speed=60, start_ms=APR21_0000, update_interval_s=0.2))
        threading.Thread(target=loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(sim.start(port=port), loop).result(30)
        lines.wait_for("EXCHANGE reachable again")
        lines.wait_for("WATCH ONLY: no model")
        lines.wait_for("FEED websocket up")
        assert [m for _, m in notify.messages].count("READY=1") == 1
        # The exchange goes away mid-run (the simulator stops), then comes back.
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        deadline = time.monotonic() + 30
        while lines.count("EXCHANGE unreachable") < 2:
            assert time.monotonic() < deadline, "\n".join(lines.lines)
            time.sleep(0.1)
        time.sleep(3.0)
        assert proc.poll() is None and lines.count("EXCHANGE unreachable") == 2  # one line per outage
        assert lines.count("exchange_retry") == 0 and lines.count("feed_poll_failed") == 0, lines.lines  # no flood
        sim = ExchangeSimulator(book, SimSettings(speed=60, start_ms=APR21_0000 + 5 * 60_000, update_interval_s=0.2))
        asyncio.run_coroutine_threadsafe(sim.start(port=port), loop).result(30)
        deadline = time.monotonic() + 60
        while lines.count("EXCHANGE reachable again") < 2:
            assert time.monotonic() < deadline, "\n".join(lines.lines)
            time.sleep(0.1)
        assert stop(proc, lines) == 0, "\n".join(lines.lines)
        assert "STOPPING=1" in [m for _, m in notify.messages]
        assert lines.count("STOP paper  (SIGTERM)") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        if sim is not None:
            asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
        notify.close()


def test_dns_failure_is_said_in_one_clear_line(home: Path) -> None:
    cfg = write_config(home, "exchange.invalid", 80, ["BTCUSDT"])
    proc = start(cfg, "--no-train")
    lines = Lines(proc)
    try:
        line = lines.wait_for("EXCHANGE unreachable")
        assert "DNS lookup failed" in line, line
        time.sleep(1.5)
        assert proc.poll() is None and lines.count("EXCHANGE unreachable") == 1
        # The connection holding the daemon lock is cut (e.g. the database restarted): the daemon
        # takes the lock again (bot.store.outage) and goes on ...
        import asyncpg

        dsn = f"postgresql://bot@/bot?host={home}/var/pgdata&port=5432"
        cut_sql = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                   "WHERE application_name LIKE 'bot run pid=%' AND pid <> pg_backend_pid()")  # fmt: skip

        async def cut() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return await conn.fetchval(cut_sql)
            finally:
                await conn.close()

        assert asyncio.run(cut()) == 1
        lines.wait_for("LOCK taken again", timeout=60)
        assert proc.poll() is None
        # ... but when another daemon took it first, it can no longer prove it is the only one,
        # so it stops (systemd restarts it, through the lock).
        async def cut_and_take() -> int:
            conn = await asyncpg.connect(dsn, server_settings={"application_name": "bot run pid=4242 host=elsewhere"})
            try:
                assert await conn.fetchval(cut_sql) == 1
                for _ in range(200):
                    if await conn.fetchval("SELECT pg_try_advisory_lock(7264002)"):
                        break
                    await asyncio.sleep(0.05)
                return await asyncio.to_thread(proc.wait, 60)
            finally:
                await conn.close()

        assert asyncio.run(cut_and_take()) == 4, "\n".join(lines.lines)
        line = lines.wait_for("LOCK lost")
        assert "pid 4242 on host elsewhere" in line, line
    finally:
        if proc.poll() is None:
            proc.kill()


def test_second_daemon_refused_naming_the_first_and_db_commands_respect_it(home: Path) -> None:
    cfg = write_config(home, "127.0.0.1", free_port(), ["BTCUSDT"])
    first = start(cfg, "--no-train")
    lines1 = Lines(first)
    try:
        lines1.wait_for("EXCHANGE unreachable")  # up, holding the lock, waiting for the exchange
        second = subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), "run", "--no-train"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert second.returncode == 3, second.stderr
        host = socket.gethostname()
        assert re.search(rf"another `bot run` already runs on this database: pid {first.pid} on host {re.escape(host)}, "
                         r"since \d{4}-\d\d-\d\d \d\d:\d\d UTC", second.stderr), second.stderr  # fmt: skip
        assert first.poll() is None, "the first daemon was disturbed by the second"
        # The refused daemon did not take the cluster down with it.
        st = bot(cfg, "db", "status")
        assert st.returncode == 0, st.stderr
        assert "state:  running" in st.stdout and f"daemon: pid {first.pid} on host {host}" in st.stdout
        assert f"psql -h {home}/var/pgdata -p 5432 -U bot -d bot" in st.stdout
        assert re.search(rf"bot run pid={first.pid} host=", st.stdout), st.stdout
        refused = bot(cfg, "db", "stop")
        assert refused.returncode == 1 and f"a daemon uses this database (pid {first.pid}" in refused.stderr
        assert first.poll() is None
        assert stop(first, lines1) == 0, "\n".join(lines1.lines)
    finally:
        if first.poll() is None:
            first.kill()
    # The daemon owned the cluster: it is stopped now, and status says so without starting it.
    st = bot(cfg, "db", "status")
    assert "state:  stopped" in st.stdout, st.stdout
    assert not (home / "var" / "pgdata" / "postmaster.pid").exists()
    # A daemon killed with -9 leaves the cluster up; the next `bot run` adopts and stops it.
    again = start(cfg, "--no-train")
    lines = Lines(again)
    lines.wait_for("EXCHANGE unreachable")
    again.kill()
    again.wait(30)
    assert "state:  running" in bot(cfg, "db", "status").stdout
    third = start(cfg, "--no-train")
    lines3 = Lines(third)
    try:
        lines3.wait_for("EXCHANGE unreachable")  # the killed daemon's lock died with its connection
        assert stop(third, lines3) == 0
    finally:
        if third.poll() is None:
            third.kill()
    assert "state:  stopped" in bot(cfg, "db", "status").stdout


def test_symbols_the_exchange_does_not_list_stop_the_start_naming_them(home: Path) -> None:
    port = free_port()
    cfg = write_config(home, "127.0.0.1", port, ["BTCUSDT", "NOPEUSDT", "ETHUSDT", "ZZZUSDT"])
    book = CandleBook.from_directory(DATA_DIR, ["BTCUSDT", "ETHUSDT"])
    sim = ExchangeSimulator(book, SimSettings(speed=0, start_ms=APR21_0000))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(sim.start(port=port), loop).result(30)
    try:
        res = subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), "run", "--no-train"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
    assert res.returncode == 2, res.stderr
    assert "symbols not listed by the exchange: NOPEUSDT, ZZZUSDT; remove them" in res.stderr, res.stderr
    assert "STOP paper  (exit 2)" in res.stderr
    assert not (home / "var" / "pgdata" / "postmaster.pid").exists()  # the daemon's cluster is stopped


def test_the_daemon_pushes_its_lines_to_telegram(home: Path) -> None:
    """`bot run` with telegram.enabled: the same human lines reach the (fake) Bot API, the
    stop line included (sent on the way out)."""
    from tests.support.fake_telegram import FakeTelegram

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    fake = asyncio.run_coroutine_threadsafe(FakeTelegram("123:TOKEN").start(), loop).result(30)
    cfg = write_config(home, "127.0.0.1", free_port(), ["BTCUSDT", "ETHUSDT"])
    data = yaml.safe_load(cfg.read_text())
    data["telegram"] = {"enabled": True, "api_base": fake.url, "min_interval_s": 0.1}
    cfg.write_text(yaml.safe_dump(data))
    proc = start(cfg, "--no-train", env={"BOT_TELEGRAM_TOKEN": "123:TOKEN", "BOT_TELEGRAM_CHAT_ID": "42"})
    lines = Lines(proc)
    try:
        lines.wait_for("EXCHANGE unreachable")
        deadline = time.monotonic() + 30
        while not any("EXCHANGE unreachable" in t for t in fake.texts("42")):
            assert time.monotonic() < deadline, fake.texts()
            time.sleep(0.2)
        assert stop(proc, lines) == 0, "\n".join(lines.lines)
        sent = "\n".join(fake.texts("42"))
        assert " UP paper mode" in sent and "STOP paper  (SIGTERM)" in sent, sent
        assert "123:TOKEN" not in (home / "logs" / "bot.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
