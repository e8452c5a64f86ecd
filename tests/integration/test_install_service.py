"""`make install-service` / `make uninstall-service` for real, as root, into a temporary prefix.

systemd is not the init system here (no /run/systemd/system), so the scripts are pointed at a
directory of the test's own for that check (`SYSTEMD_RUN_DIR`) and a stub `systemctl` is put
first on PATH: it records its arguments. Everything else is real: the service user is created
with useradd (a unique name, removed at the end), the code is copied, the virtualenv is built
with pip from the configured package index, the unit is written and checked with
`systemd-analyze verify`. Slow (the virtualenv build: ~1-2 minutes on the 2-core machine).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.shared_data import ROOT

pytestmark = pytest.mark.slow


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_install_service_then_uninstall_into_a_temporary_prefix(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test runs the installer as root (CI runs `make test` as root)")
    user = "cbt" + uuid.uuid4().hex[:8]
    prefix, units, etc, run_dir, stub = (tmp_path / d for d in ("opt", "units", "etc", "run-systemd", "bin"))
    run_dir.mkdir()
    stub.mkdir()
    calls = tmp_path / "systemctl.calls"
    (stub / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (stub / "systemctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "SERVICE_USER": user, "UNIT_DIR": str(units),
           "ETC_DIR": str(etc), "SYSTEMD_RUN_DIR": str(run_dir)}  # fmt: skip
    env.pop("VIRTUAL_ENV", None)

    def make(target: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "--no-print-directory", target, f"PREFIX={prefix}"], cwd=ROOT, text=True,
                              capture_output=True, env={**env, **extra}, timeout=900)  # fmt: skip

    try:
        r = make("install-service")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "installed and enabled" in r.stdout, r.stdout
        # the service user: a system account without a login shell, home = the prefix
        pw = pwd.getpwnam(user)
        assert pw.pw_dir == str(prefix) and pw.pw_shell.endswith("nologin") and pw.pw_uid < 1000
        assert grp.getgrgid(pw.pw_gid).gr_name == user
        # the code: root-owned, without the repository's venv, data or git metadata
        for f in ("bot/__init__.py", "models/__init__.py", "risk/__init__.py", "config.yaml", "systemd/cryptobot.service"):
            assert (prefix / f).is_file(), f
            assert (prefix / f).stat().st_uid == 0, f
        assert not (prefix / ".git").exists() and not list(prefix.glob("*.egg-info")) and not (prefix / "build").exists()
        assert (prefix / "config.yaml").read_text() == (ROOT / "config.yaml").read_text()
        # the only writable place: var/, the service user's, 0750
        var = prefix / "var"
        assert var.stat().st_uid == pw.pw_uid and stat.S_IMODE(var.stat().st_mode) == 0o750
        assert (var / "models").is_dir() and (var / "logs").is_dir()
        # secrets: 0600 in a 0700 directory, root's
        secrets = etc / "secrets.env"
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o600 and stat.S_IMODE(etc.stat().st_mode) == 0o700
        assert "BOT_API_KEY" in secrets.read_text()
        # the virtualenv: its own interpreter, the package installed into it (not the checkout)
        v = subprocess.run([str(prefix / ".venv" / "bin" / "python"), "-c", "import bot, lightgbm, asyncpg; print(bot.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
        assert v.returncode == 0 and v.stdout.strip().startswith(str(prefix / ".venv")), v.stdout + v.stderr
        h = subprocess.run([str(prefix / ".venv" / "bin" / "bot"), "--help"], capture_output=True, text=True, timeout=120)
        assert h.returncode == 0 and "run" in h.stdout, h.stdout + h.stderr
        # the unit: this prefix, this user, these secrets, and systemd-analyze has nothing to say
        unit = units / "cryptobot.service"
        text = unit.read_text()
        assert f"ExecStart={prefix}/.venv/bin/bot --config {prefix}/config.yaml run" in text
        assert f"User={user}\n" in text and f"Group={user}\n" in text and f"EnvironmentFile=-{etc}/secrets.env" in text
        assert f"ReadWritePaths={prefix}/var" in text and "/opt/cryptobot" not in text
        sa = shutil.which("systemd-analyze")
        assert sa, "systemd-analyze missing: `make install` installs Debian's systemd package"
        ver = subprocess.run([sa, "verify", str(unit)], capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
        assert ver.returncode == 0 and not (ver.stdout + ver.stderr).strip(), ver.stdout + ver.stderr
        assert calls.read_text().splitlines() == ["daemon-reload", "enable cryptobot.service"]

        # uninstall: unit and code gone; data, secrets and the user kept
        calls.unlink()
        (var / "logs" / "bot.log").write_text("data to keep\n")
        r = make("uninstall-service")
        assert r.returncode == 0 and "kept" in r.stdout, r.stdout + r.stderr
        assert calls.read_text().splitlines() == ["disable --now cryptobot.service", "daemon-reload"]
        assert not unit.exists() and not (prefix / "bot").exists() and not (prefix / ".venv").exists()
        assert (var / "logs" / "bot.log").read_text() == "data to keep\n" and secrets.exists() and _user_exists(user)
        # PURGE=1: data, secrets and the user too
        r = make("uninstall-service", PURGE="1")
        assert r.returncode == 0, r.stdout + r.stderr
        assert not prefix.exists() and not etc.exists() and not _user_exists(user)
    finally:
        if _user_exists(user):
            subprocess.run(["userdel", user], check=False)
        with_group = subprocess.run(["getent", "group", user], capture_output=True)
        if with_group.returncode == 0:
            subprocess.run(["groupdel", user], check=False)


def test_the_installer_refuses_to_run_without_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test switches to an unprivileged user with runuser (CI runs as root)")
    for script in ("install-service.sh", "uninstall-service.sh"):
        r = subprocess.run(["runuser", "-u", "nobody", "--", "sh", str(ROOT / "scripts" / script)], capture_output=True,
                           text=True, env={**os.environ, "PREFIX": str(tmp_path / "opt")}, timeout=60)  # fmt: skip
        assert r.returncode == 1 and "run as root" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "opt").exists()
