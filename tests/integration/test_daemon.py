"""The daemon skeleton on the embedded Postgres: starts, says it is up, stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.shared_data import ROOT


@pytest.fixture
def home() -> Iterator[Path]:
    """A temp dir every user can traverse (the embedded server may run as `postgres`)."""
    d = Path(tempfile.mkdtemp(prefix="bot-daemon-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _start(home: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cfg = home / "config.yaml"
    cfg.write_text(f"paths:\n  data_dir: {home}/var\n  models_dir: {home}/var/models\n  logs_dir: {home}/logs\n")
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(cfg), "run"],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, **(extra_env or {})},
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if needle in line:
            return lines
    proc.kill()
    raise AssertionError(f"never saw {needle!r}; got:\n" + "\n".join(lines))


# Each case boots a daemon with its own embedded cluster (~10 s with teardown on the loaded
# 2-core machine): SIGTERM (what systemd sends) stays in make test-fast, SIGINT runs in make test.
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_run_starts_embedded_db_and_stops_cleanly(home: Path, sig: signal.Signals) -> None:
    proc = _start(home, {"BOT_API_KEY": "KEY-should-not-leak-1"})
    try:
        up = _wait_for(proc, " UP ")
        assert any("paper mode" in line for line in up)
        assert (home / "var" / "pgdata" / "postmaster.pid").exists()
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert f"STOP paper  ({sig.name})  up " in rest
    assert not (home / "var" / "pgdata" / "postmaster.pid").exists(), "embedded Postgres left running"
    # JSON log: one object per line, with the events, and no secret anywhere.
    events = [json.loads(line) for line in (home / "logs" / "bot.jsonl").read_text().splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "daemon_starting" and "daemon_up" in names and names[-1] == "daemon_stop"
    assert all("timestamp" in e and "level" in e for e in events)
    for f in ("bot.jsonl", "bot.log"):
        assert "KEY-should-not-leak-1" not in (home / "logs" / f).read_text()


def test_restart_reuses_the_cluster_and_data(home: Path) -> None:
    for _ in range(2):
        proc = _start(home)
        try:
            _wait_for(proc, " UP ")
            proc.send_signal(signal.SIGTERM)
            _, out = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out
    log = (home / "logs" / "bot.log").read_text()
    assert log.count("db initdb") == 1 and log.count("STOP paper  (SIGTERM)") == 2


def test_a_sigterm_while_it_is_still_starting_is_a_clean_stop(home: Path) -> None:
    """systemd may stop the service at any moment of its start: a SIGTERM sent as soon as the log
    file exists (logs set up, the heavy modules still importing, no event loop yet) ends the
    daemon with status 0 and its stop line, not with the default kill (-15)."""
    proc = _start(home)
    try:
        deadline = time.monotonic() + 60
        while not (home / "logs" / "bot.jsonl").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        assert (home / "logs" / "bot.jsonl").exists(), "the daemon never set up its logs"
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "(SIGTERM)" in (home / "logs" / "bot.log").read_text(), rest
