"""Bad input, configs (issue 15): every malformed config of tests/support/bad_configs.py is refused by
`bot config check` and by `bot run` before anything starts -- no database cluster, no lock,
no file written -- with one line that names the key path and the reason.

In `make test` both commands run in this process through `bot.cli.main.main` (fast); under
`make reliability` each one also runs as a real `bot` process."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli.main import main as bot_main
from tests.support.bad_configs import CORPUS, BadConfig
from tests.support.reliability_figures import record


@pytest.fixture(scope="module")
def ro_dir() -> Iterator[Path]:
    """A directory this process cannot write: a read-only tmpfs when we are root (root ignores
    mode bits), else a mode 0555 directory."""
    base = Path(tempfile.mkdtemp(prefix="bot-ro-", dir="/tmp"))
    mounted = False
    if os.geteuid() == 0:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(base)], capture_output=True)
        mounted = r.returncode == 0
    if not mounted:
        os.chmod(base, 0o555)
    try:
        assert not os.access(base, os.W_OK), "could not make an unwritable directory"
        yield base
    finally:
        if mounted:
            subprocess.run(["umount", str(base)], check=False)
        else:
            os.chmod(base, 0o755)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def full_dir() -> Iterator[Path | None]:
    """A directory on a full file system (a small tmpfs filled to the last block), or None when
    this process may not mount one (not root): the cases using it are then skipped, since no
    unprivileged way fills a disk without filling the machine's."""
    if os.geteuid() != 0:
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="bot-full-", dir="/tmp"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(base)], capture_output=True)
    if r.returncode != 0:
        base.rmdir()
        yield None
        return
    try:
        with contextlib.suppress(OSError), open(base / "filler", "wb") as f:  # close() may raise too
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        assert os.statvfs(base).f_bfree == 0, "could not fill the tmpfs"
        yield base
    finally:
        subprocess.run(["umount", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def materialise(case: BadConfig, home: Path, ro: Path, full: Path | None) -> Path:
    """The case's config file (and the files it refers to) under `home`."""
    if "{full}" in case.text and full is None:
        pytest.skip("a full file system needs root to mount (tmpfs)")
    s600, s644 = home / "secrets600.yaml", home / "secrets644.yaml"
    for p, mode in ((s600, 0o600), (s644, 0o644)):
        p.write_text("api_key: K-abcdef123\napi_secret: S-abcdef123\n")
        os.chmod(p, mode)
    cfg = home / "config.yaml"
    cfg.write_text(case.text.format(home=home, ro=ro, full=full, secrets_600=s600, secrets_644=s644))
    return cfg


def snapshot(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*")}


def problem_lines(stderr: str) -> list[str]:
    """The problems of a ConfigError print: `invalid config X:` then one indented line each."""
    lines = stderr.strip().splitlines()
    assert lines and lines[0].startswith("invalid config "), stderr
    return [line.strip() for line in lines[1:]]


def assert_one_clear_line(case: BadConfig, stderr: str) -> None:
    probs = problem_lines(stderr)
    assert len(probs) == 1, f"{case.name}: expected one problem line, got {probs}"
    line = probs[0]
    assert line.startswith(f"{case.key}: ") or line.startswith(f"{case.key} "), f"{case.name}: {line!r} does not name {case.key}"
    assert case.reason in line, f"{case.name}: {line!r} lacks {case.reason!r}"
    assert "Traceback" not in stderr


def test_the_corpus_is_big_and_varied() -> None:
    assert len(CORPUS) >= 80
    assert len({c.name for c in CORPUS}) == len(CORPUS)
    kinds = {c.kind for c in CORPUS}
    assert {"type", "range", "unknown", "yaml", "live", "contradiction", "exchange", "cron", "paths", "secrets",
            "impossible", "database", "telegram"} <= kinds


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_bad_config_refused_by_check_and_run_before_anything_starts(
    case: BadConfig, ro_dir: Path, full_dir: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cfg = materialise(case, home, ro_dir, full_dir)
    monkeypatch.chdir(home)  # relative default paths (var/...) would land here
    for k in ("BOT_API_KEY", "BOT_API_SECRET", "BOT_DATABASE_DSN", "BOT_CONFIG", "BOT_TELEGRAM_TOKEN", "BOT_TELEGRAM_CHAT_ID"):
        monkeypatch.delenv(k, raising=False)
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    started: list[bool] = []

    async def no_daemon(*_a: object, **_k: object) -> int:  # a guard: validation must stop before this
        started.append(True)
        return 99

    monkeypatch.setattr("bot.live.daemon.run_daemon", no_daemon)
    before = snapshot(home)
    capsys.readouterr()
    assert bot_main(["--config", str(cfg), "config", "check"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert_one_clear_line(case, out.err)
    with pytest.raises(SystemExit) as ei:
        bot_main(["--config", str(cfg), "run"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert_one_clear_line(case, err)
    assert not started
    assert snapshot(home) == before, "a refused config wrote files"


@pytest.mark.reliability
def test_bad_configs_refused_by_real_processes(ro_dir: Path, full_dir: Path | None, tmp_path: Path) -> None:
    """Every case, as `bot config check` and `bot run` processes: exit 2, one clear line, no
    file written (no cluster, no lock, no log). The figures go to docs/reliability.*."""
    clear = 0
    failures: list[str] = []
    cases = [c for c in CORPUS if full_dir is not None or "{full}" not in c.text]
    for case in cases:
        home = tmp_path / case.name
        home.mkdir()
        cfg = materialise(case, home, ro_dir, full_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")} | case.env
        before = snapshot(home)
        ok = True
        for args in (["config", "check"], ["run"]):
            r = subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), *args], cwd=home, env=env,
                               capture_output=True, text=True, timeout=120)  # fmt: skip
            try:
                assert r.returncode == 2, f"exit {r.returncode}"
                assert_one_clear_line(case, r.stderr)
                assert snapshot(home) == before, "files written"
            except AssertionError as e:
                ok = False
                failures.append(f"{case.name} ({' '.join(args)}): {e}\n{r.stderr[-500:]}")
        clear += ok
    record("bad_configs", {"tried": len(cases), "clear_error": clear,
                           "kinds": sorted({c.kind for c in cases})})  # fmt: skip
    assert not failures, "\n".join(failures)
    assert clear == len(cases)
