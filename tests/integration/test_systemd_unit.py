"""The systemd unit: `systemd-analyze verify` finds nothing to complain about, and it keeps the
properties the daemon relies on (notify + watchdog, restart, memory cap, hardening)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.shared_data import ROOT

UNIT = ROOT / "systemd" / "cryptobot.service"


def installed_copy(tmp_path: Path) -> Path:
    """The unit as scripts/install-service.sh writes it, for a prefix where ExecStart exists."""
    prefix = tmp_path / "opt"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    bot = prefix / ".venv" / "bin" / "bot"
    bot.symlink_to(ROOT / ".venv" / "bin" / "bot")
    unit = tmp_path / "cryptobot.service"
    unit.write_text(UNIT.read_text().replace("/opt/cryptobot", str(prefix)))
    return unit


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze missing: `make install` installs Debian's systemd package")
    unit = installed_copy(tmp_path)
    r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
    # and it would complain: a misspelt key is reported
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    r = subprocess.run([exe, "verify", str(bad)], capture_output=True, text=True)
    assert "WatchdogSecs" in r.stdout + r.stderr


def test_unit_keeps_notify_watchdog_restart_memory_and_hardening() -> None:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment]
    cp.read_string(UNIT.read_text())
    s = cp["Service"]
    assert s["Type"] == "notify" and int(s["WatchdogSec"]) > 0 and s["Restart"] in ("always", "on-failure")
    assert s["MemoryMax"] and s["User"] == "cryptobot" and s["NoNewPrivileges"] == "true"
    assert s["ProtectSystem"] == "strict" and s["ReadWritePaths"].endswith("/var")
    assert s["EnvironmentFile"].startswith("-") and "bot" in s["ExecStart"] and s["ExecStart"].endswith(" run")
    assert cp["Install"]["WantedBy"] == "multi-user.target"
    # exit 2 (config error) and 3 (another daemon) are not restarted; start-up may be slow (READY after warm-up)
    assert s["RestartPreventExitStatus"].split() == ["2", "3"] and s["TimeoutStartSec"] == "15min"
