"""sd_notify through a real NOTIFY_SOCKET (a unix datagram socket the test binds, as systemd
does): READY, WATCHDOG pings from the event loop, STOPPING; a stalled loop stops the pings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.shared_data import ROOT


class NotifySocket:
    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.got: list[tuple[float, str]] = []

    def read_until(self, state: str, timeout: float) -> list[tuple[float, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), msg))
            if state in msg:
                return self.got
        raise AssertionError(f"no {state} within {timeout}s; got {self.got}")

    def close(self) -> None:
        self.sock.close()


STALLER = textwrap.dedent(
    """
    import asyncio, time
    from bot.runtime import sdnotify

    async def main():
        assert sdnotify.notify("READY=1")
        dog = asyncio.create_task(sdnotify.keep_watchdog())
        await asyncio.sleep(1.0)
        time.sleep(1.5)          # the event loop stalls: no pings may arrive now
        await asyncio.sleep(0.6)
        sdnotify.notify("STOPPING=1")
        dog.cancel()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_watchdog_stopping_and_a_stalled_loop_stops_the_pings(tmp_path: Path, abstract: bool) -> None:
    if abstract:
        name = f"cryptobot-test-{os.getpid()}-{time.monotonic_ns()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + name)
        ns = NotifySocket.__new__(NotifySocket)
        ns.sock, ns.got = sock, []
        sock.settimeout(0.2)
        env_sock = "@" + name
    else:
        ns = NotifySocket(tmp_path / "notify.sock")
        env_sock = str(ns.path)
    env = {**os.environ, "NOTIFY_SOCKET": env_sock, "WATCHDOG_USEC": "200000"}  # ping every 0.1 s
    proc = subprocess.Popen([sys.executable, "-c", STALLER], cwd=ROOT, env=env)
    try:
        got = ns.read_until("STOPPING=1", timeout=30)
    finally:
        proc.wait(timeout=30)
        ns.close()
    states = [m for _, m in got]
    assert states[0] == "READY=1" and states[-1] == "STOPPING=1"
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    assert len(pings) >= 8
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) >= 1.3  # the stall: systemd would have seen no ping for 1.5 s
    assert sorted(gaps)[len(gaps) // 2] < 0.3  # otherwise the pings keep their 0.1 s cadence
    assert proc.returncode == 0


def test_watchdog_is_off_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.runtime import sdnotify

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "120000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == 60.0


def test_the_daemon_speaks_sd_notify(tmp_path: Path, db_dsn: str) -> None:
    """`bot run` under a NOTIFY_SOCKET against the exchange simulator: READY once it does its
    job (no model, --no-train: collecting candles), WATCHDOG pings, STOPPING on SIGTERM."""
    import asyncio
    import threading

    from bot.exchange_sim.replay import CandleBook
    from bot.exchange_sim.server import ExchangeSimulator, SimSettings
    from tests.support.daemon_ops import APR21_0000, free_port, write_config
    from tests.support.shared_data import DATA_DIR

    port = free_port()
    book = CandleBook.from_directory(DATA_DIR, ["BTCUSDT", "ETHUSDT"])
    sim = ExchangeSimulator(book, SimSettings(speed=60, start_ms=APR21_0000, update_interval_s=0.2))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(sim.start(port=port), loop).result(30)
    ns = NotifySocket(tmp_path / "notify.sock")
    cfg = write_config(tmp_path, "127.0.0.1", port, ["BTCUSDT", "ETHUSDT"])
    env = {**os.environ, "NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": "400000", "BOT_DATABASE_DSN": db_dsn}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(cfg), "run", "--no-train"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        ns.read_until("READY=1", timeout=90)
        t_ready = time.monotonic()
        while sum(m == "WATCHDOG=1" and t >= t_ready for t, m in ns.got) < 3:
            ns.read_until("WATCHDOG=1", timeout=10)
        proc.send_signal(signal.SIGTERM)
        ns.read_until("STOPPING=1", timeout=60)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        ns.close()
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
    states = [m for _, m in ns.got]
    # (pings may also come before READY: the daemon keeps the watchdog fed while it warms up)
    assert states.count("READY=1") == 1 and states[-1] == "STOPPING=1"
    assert states[states.index("READY=1"):].count("WATCHDOG=1") >= 3
