"""Config loading: defaults, the shipped config.yaml, secrets, and one clear line per problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Config, ConfigError, load_config, mask_dsn, render_default_yaml
from tests.support.shared_data import ROOT


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text), env=env or {})
    return ei.value.problems


def test_embedded_defaults_are_paper_and_embedded_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.yaml here
    cfg = load_config(None, env={})
    assert cfg.mode == "paper"
    assert cfg.database.dsn.get_secret_value() == ""
    assert len(cfg.symbols) == 30 and len(set(cfg.symbols)) == 30
    assert all(s.endswith("USDT") for s in cfg.symbols)
    assert cfg.costs.fee_rate == pytest.approx(0.001)


def test_shipped_config_yaml_is_the_complete_commented_default() -> None:
    text = (ROOT / "config.yaml").read_text()
    assert text == render_default_yaml(), "config.yaml drifted from the schema: run `bot config template > config.yaml`"
    cfg = load_config(ROOT / "config.yaml", env={})
    assert cfg.model_dump() == Config().model_dump()


def test_env_var_selects_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "risk:\n  max_positions: 3\n")
    monkeypatch.setenv("BOT_CONFIG", str(p))
    assert load_config(None).risk.max_positions == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("risk:\n  max_positions: 0\n", "risk.max_positions: must be >= 1, got 0"),
        ("risk:\n  max_positions: many\n", "risk.max_positions: must be an integer, got 'many'"),
        ("risk:\n  daily_loss_limit: -0.1\n", "risk.daily_loss_limit: must be > 0, got -0.1"),
        ("risk:\n  max_positons: 3\n", "risk.max_positons: unknown key"),
        ("colour: blue\n", "colour: unknown key"),
        ("symbols: []\n", "symbols: must have at least 1 item(s), got 0"),
        ("symbols:\n", "symbols: must list at least 1 symbol"),
        ("symbols: [BTCUSDT, BTCUSDT]\n", "symbols: BTCUSDT is listed twice"),
        ("symbols: [BTCEUR]\n", "symbols: BTCEUR do not end in the quote asset"),
        ("mode: yolo\n", "mode: must be one of 'paper' or 'live', got 'yolo'"),
        ("costs:\n  fee_rate: 0.5\n", "costs.fee_rate: must be <= 0.01 (a fraction per side: 0.001 = 0.1 %), got 0.5"),
        ("database:\n  pool_min: 5\n  pool_max: 2\n", "database: pool_max (2) must be >= pool_min (5)"),
        ("logging:\n  console: sometimes\n", "logging.console: must be true or false, got 'sometimes'"),
        ("risk: 5\n", "risk: must be a mapping, got 5"),
        ("- just\n- a list\n", "(top level): must be a mapping of sections, got list"),
        ("risk:\n  max_positions: [1\n", "not valid YAML at line"),
        ("mode: live\n", "mode: live needs API keys"),
        ("exchange:\n  api_key: abc123\n", "exchange.api_key: secrets are not read from the config file"),
    ],
)
def test_bad_config_gives_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    lines = problems(tmp_path, text)
    assert any(expected in line for line in lines), lines


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    lines = problems(tmp_path, "risk:\n  max_positions: 0\n  max_correlation: 2\nmode: yolo\n")
    assert len(lines) == 3
    assert {line.split(":")[0] for line in lines} == {"risk.max_positions", "risk.max_correlation", "mode"}


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "nope.yaml", env={})
    assert "nope.yaml does not exist" in ei.value.problems[0]


def test_live_mode_with_keys_from_env_is_accepted_and_keys_stay_hidden(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "mode: live\n"), env={"BOT_API_KEY": "KEY-abcdef", "BOT_API_SECRET": "SEC-uvwxyz"})
    assert cfg.secrets.complete
    assert cfg.secrets.api_key.get_secret_value() == "KEY-abcdef"
    shown = repr(cfg) + str(cfg.masked()) + str(cfg.model_dump())
    assert "KEY-abcdef" not in shown and "SEC-uvwxyz" not in shown


def test_secrets_file_must_be_0600(tmp_path: Path) -> None:
    sf = write(tmp_path, "api_key: K-123456\napi_secret: S-123456\n", "secrets.yaml")
    os.chmod(sf, 0o644)
    lines = problems(tmp_path, f"mode: live\nexchange:\n  secrets_file: {sf}\n")
    assert any("must be 0600" in line for line in lines), lines
    os.chmod(sf, 0o600)
    cfg = load_config(write(tmp_path, f"mode: live\nexchange:\n  secrets_file: {sf}\n"), env={})
    assert cfg.secrets.api_secret.get_secret_value() == "S-123456"


def test_dsn_password_is_masked() -> None:
    assert mask_dsn("postgresql://bot:hunter2@db.local:5432/bot") == "postgresql://bot:***@db.local:5432/bot"
    assert "hunter2" not in mask_dsn("host=db user=bot password=hunter2")
    cfg = Config.model_validate({"database": {"dsn": "postgresql://u:hunter2@h/db"}})
    assert "hunter2" not in str(cfg.masked()) and "hunter2" not in repr(cfg)


def _bot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})}, timeout=60,
    )  # fmt: skip


def test_cli_config_check_ok_and_masks_secrets(tmp_path: Path) -> None:
    p = write(tmp_path, "mode: live\n")
    env = {"BOT_API_KEY": "KEY-abcdef", "BOT_API_SECRET": "SEC-uvwxyz"}
    short = _bot("config", "check", "--config", str(p), env=env)
    assert short.returncode == 0, short.stderr
    assert short.stdout.startswith("config OK: ") and "mode live" in short.stdout.splitlines()[0]
    assert len(short.stdout.splitlines()) <= 3  # the verdict, not a 200-line dump
    r = _bot("config", "check", "--show", "--config", str(p), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("config OK: ")  # the verdict comes first, then the dump
    assert "mode: live" in r.stdout and "********" in r.stdout and len(r.stdout.splitlines()) > 50
    assert "KEY-abcdef" not in r.stdout + r.stderr and "SEC-uvwxyz" not in r.stdout + r.stderr


def test_cli_config_check_fails_with_key_path(tmp_path: Path) -> None:
    p = write(tmp_path, "risk:\n  max_positions: 0\n")
    r = _bot("--config", str(p), "config", "check")
    assert r.returncode != 0
    assert "risk.max_positions: must be >= 1, got 0" in r.stderr


def test_cli_run_refuses_live_without_confirmation(tmp_path: Path) -> None:
    p = write(tmp_path, "mode: live\n")
    r = _bot("--config", str(p), "run", env={"BOT_API_KEY": "KEY-abcdef", "BOT_API_SECRET": "SEC-uvwxyz"})
    assert r.returncode == 2
    assert "--confirm-live" in r.stderr


# --- issue 21: what the schema alone let through ----------------------------------------------


@pytest.mark.parametrize(
    ("expr", "normalised", "weekday"),
    [
        ("0 3 * * 6", "0 3 * * sat", "Saturday"),  # APScheduler alone reads 6 as a Sunday
        ("0 3 * * 0", "0 3 * * sun", "Sunday"),
        ("0 3 * * 7", "0 3 * * sun", "Sunday"),  # crontab's second Sunday; APScheduler alone refuses 7
        ("0 3 * * 1-5", "0 3 * * mon,tue,wed,thu,fri", "Tuesday"),  # from a Monday noon
        ("0 3 * * */2", "0 3 * * sun,tue,thu,sat", "Tuesday"),
        ("0 3 * * SAT", "0 3 * * sat", "Saturday"),
        ("0 3 * * 0-6", "0 3 * * *", "Tuesday"),
        ("*/8 * * * *", "*/8 * * * *", "Monday"),
    ],
)
def test_the_retrain_cron_is_read_as_a_standard_crontab(expr: str, normalised: str, weekday: str) -> None:
    from datetime import UTC, datetime

    from apscheduler.triggers.cron import CronTrigger

    from bot.config import DaemonConfig

    got = DaemonConfig(retrain_cron=expr).retrain_cron
    assert got == normalised
    monday = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # a Monday noon
    nxt = CronTrigger.from_crontab(got, timezone=UTC).get_next_fire_time(None, monday)
    assert nxt.strftime("%A") == weekday


def test_the_default_retrain_is_on_saturdays_as_the_readme_says() -> None:
    from datetime import UTC, datetime

    from apscheduler.triggers.cron import CronTrigger

    cron = Config().daemon.retrain_cron
    nxt = CronTrigger.from_crontab(cron, timezone=UTC).get_next_fire_time(None, datetime(2026, 12, 7, tzinfo=UTC))
    assert (nxt.strftime("%A"), nxt.hour) == ("Saturday", 3)
    assert "Saturdays 03:00" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://bot@/bot?host=/tmp/pg/pgdata&port=5432",  # a Unix socket, as the tests' clusters
        "postgres://bot:pw@db.local:5432/bot",
        "postgresql://bot@h1:5432,h2:5433/bot",
        "postgresql://bot@[::1]:5432/bot",
        "postgresql://localhost/bot",
    ],
)
def test_database_urls_asyncpg_reads_are_accepted(tmp_path: Path, dsn: str) -> None:
    cfg = load_config(write(tmp_path, f"database:\n  dsn: '{dsn}'\n"), env={})
    assert cfg.database.dsn.get_secret_value() == dsn


def test_a_bad_database_url_is_refused_without_showing_its_password(tmp_path: Path) -> None:
    for dsn in ("mysql://bot:hunter2@h/db", "postgresql://bot:hunter2@h:54x2/db", "host=h password=hunter2"):
        lines = problems(tmp_path, "mode: paper\n", env={"BOT_DATABASE_DSN": dsn})
        assert len(lines) == 1 and lines[0].startswith("database.dsn: "), lines
        assert "hunter2" not in lines[0]


def test_tilde_in_a_path_is_the_home_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    sf = home / "secrets.yaml"
    sf.write_text("api_key: K-123456\napi_secret: S-123456\n")
    os.chmod(sf, 0o600)
    text = "paths:\n  data_dir: ~/bot\n  models_dir: ~/bot/models\n  logs_dir: ~/bot/logs\nexchange:\n  secrets_file: ~/secrets.yaml\n"
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        cfg = load_config(write(tmp_path, text), env={})
    finally:
        if old is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old
    assert cfg.paths.data_dir == home / "bot" and cfg.paths.logs_dir == home / "bot" / "logs"
    assert cfg.secrets.api_key.get_secret_value() == "K-123456"


def test_the_directory_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    from bot.config import check_paths

    (tmp_path / "var").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    cfg = Config.model_validate({"paths": {"data_dir": str(tmp_path / "var"), "models_dir": str(tmp_path / "var" / "m"),
                                           "logs_dir": str(tmp_path / "new" / "logs")}})  # fmt: skip
    assert check_paths(cfg) == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def _as_nobody(fn, *args):  # noqa: ANN001, ANN202
    """`fn(*args)` in a forked child running as uid/gid 65534 (what a non-root user sees)."""
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, json.dumps(fn(*args)).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return json.loads(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_directories_and_ports_as_a_user_without_rights(tmp_path: Path) -> None:
    """Root may write anywhere and listen on port 80; the same config run by another user may not:
    checked by trying, as that user."""
    import tempfile

    from bot.config_checks import directory_problem, listen_problem

    base = Path(tempfile.mkdtemp(prefix="bot-perm-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        (base / "root_only").mkdir(mode=0o755)
        (base / "closed").mkdir(mode=0o700)
        target, hidden = base / "root_only" / "var", base / "closed" / "var"
        assert directory_problem(target, 1) is None and directory_problem(hidden, 1) is None  # root: fine
        assert "not writable by this user (EACCES)" in _as_nobody(lambda: directory_problem(target, 1))
        assert "cannot be reached" in _as_nobody(lambda: directory_problem(hidden, 1))
        low = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) - 1
        if low >= 1:
            assert listen_problem("127.0.0.1", low) is None  # root may
            assert "privileged" in _as_nobody(lambda: listen_problem("127.0.0.1", low))
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_a_dashboard_port_in_use_is_not_a_config_error(tmp_path: Path) -> None:
    """The port may be held by this very daemon when `bot status` loads the config; the daemon
    says so at start (dashboard_unavailable) and runs on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        cfg = load_config(write(tmp_path, f"dashboard:\n  port: {port}\n"), env={})
    assert cfg.dashboard.port == port


def test_an_address_this_machine_lacks_is_refused() -> None:
    from bot.config_checks import listen_problem

    assert "cannot listen on 192.0.2.1" in listen_problem("192.0.2.1", 8787)  # TEST-NET-1: never local


def test_good_telegram_secrets_are_accepted(tmp_path: Path) -> None:
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    p = write(tmp_path, "telegram:\n  enabled: true\n")
    for chat in ("123456789", "-1001234567890"):
        cfg = load_config(p, env={"BOT_TELEGRAM_TOKEN": token, "BOT_TELEGRAM_CHAT_ID": chat})
        assert cfg.secrets.telegram_chat_id.get_secret_value() == chat
    push_only = write(tmp_path, "telegram:\n  enabled: true\n  commands: false\n", "push.yaml")
    cfg = load_config(push_only, env={"BOT_TELEGRAM_TOKEN": token, "BOT_TELEGRAM_CHAT_ID": "@my_channel"})
    assert cfg.telegram.enabled
    lines = problems(tmp_path, "telegram:\n  enabled: true\n", env={"BOT_TELEGRAM_TOKEN": "AAHdq TcvCH1vGWJx",
                                                                   "BOT_TELEGRAM_CHAT_ID": "12"})  # fmt: skip
    assert lines == ["secrets.telegram_token: not a Bot API token (<digits>:<letters and digits>, as @BotFather gives "
                     "it); not shown"]  # fmt: skip


def test_an_external_file_without_its_columns_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "fg.csv"
    f.write_text("date,greed\n2021-04-01,50\n")
    lines = problems(tmp_path, f"features:\n  external_daily_file: {f}\n")
    assert lines == [f"features.external_daily_file: {f} has no column(s) fear_greed (features.external_columns); "
                     "its header is ['date', 'greed']"]  # fmt: skip
    f.write_text("date,fear_greed\n2021-04-01,50\n")
    assert load_config(write(tmp_path, f"features:\n  external_daily_file: {f}\n"), env={}).features.external_daily_file


def test_the_summary_counts_one_symbol_in_the_singular(tmp_path: Path) -> None:
    one = _bot("config", "check", "--config", str(write(tmp_path, "symbols: [BTCUSDT]\n")))
    assert one.returncode == 0, one.stderr
    assert ", 1 symbol, " in one.stdout.splitlines()[0], one.stdout
    two = _bot("config", "check", "--config", str(write(tmp_path, "symbols: [BTCUSDT, ETHUSDT]\n", "two.yaml")))
    assert ", 2 symbols, " in two.stdout.splitlines()[0], two.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_a_data_dir_without_room_for_the_embedded_database_is_refused(tmp_path: Path) -> None:
    """A 32 MB disk takes the logs and a bundle, not the embedded cluster (~40-50 MB after initdb)."""
    small = tmp_path / "small"
    small.mkdir()
    assert subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(small)]).returncode == 0
    try:
        paths = f"paths:\n  data_dir: {small}/var\n  models_dir: {small}/m\n  logs_dir: {small}/l\n"
        lines = problems(tmp_path, paths)
        assert len(lines) == 1 and lines[0].startswith(f"paths.data_dir: {small}/var: its disk is (nearly) full: "), lines
        assert "needs at least 64 MB" in lines[0]
        external = paths + "database:\n  dsn: postgresql://bot@127.0.0.1:5432/bot\n"
        assert load_config(write(tmp_path, external, "ext.yaml"), env={}).paths.data_dir == small / "var"
    finally:
        subprocess.run(["umount", str(small)], check=False)
