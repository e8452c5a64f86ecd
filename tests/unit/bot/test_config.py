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
        ("costs:\n  fee_rate: 0.5\n", "costs.fee_rate: must be <= 0.01, got 0.5"),
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


def test_the_old_retrain_process_keys_are_read_into_training_and_said(tmp_path: Path) -> None:
    """`daemon.retrain_nice/threads/memory_mb/timeout_s` moved to `training:`: an old file still
    gives the same limits, with one notice per key naming the new one; the template has only the
    new names."""
    p = write(tmp_path, "daemon:\n  retrain_cron: ''\n  retrain_nice: 5\n  retrain_threads: 2\n"
                        "  retrain_memory_mb: 1500\n  retrain_timeout_s: 600\n")  # fmt: skip
    cfg = load_config(p, env={})
    t = cfg.training
    assert (t.nice, t.threads, t.memory_mb, t.timeout_s) == (5, 2, 1500, 600)
    assert cfg.notices == tuple(f"daemon.{old} is now training.{new} (read from the old name; rename it in the config)"
                                for old, new in (("retrain_nice", "nice"), ("retrain_threads", "threads"),
                                                 ("retrain_memory_mb", "memory_mb"), ("retrain_timeout_s", "timeout_s")))  # fmt: skip
    assert cfg.model_copy(update={"mode": "paper"}).notices == cfg.notices
    assert load_config(write(tmp_path, "training:\n  memory_mb: 1500\n", "new.yaml"), env={}).notices == ()
    assert "retrain_memory_mb" not in render_default_yaml() and "\ntraining:\n" in render_default_yaml()
    r = _bot("config", "check", "--config", str(p))
    assert r.returncode == 0 and "note: daemon.retrain_memory_mb is now training.memory_mb" in r.stdout, r.stdout + r.stderr


def test_the_training_window_is_checked_against_the_folds_and_the_cap(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "training:\n  window_days: 42\n"), env={}).training.effective_window_days == 42
    assert Config().training.effective_window_days == 365  # 0 = all the store has, up to the cap
    assert problems(tmp_path, "training:\n  window_days: 366\n") == [
        "training.window_days: 366 is above training.max_window_days (365)"]
    (line,) = problems(tmp_path, "training:\n  max_window_days: 30\n")  # the cap is the window when window_days is 0
    assert line.startswith("training.max_window_days: 30 days leave 2 for the first fold's training")
