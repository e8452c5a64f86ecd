"""`bot tail`: last lines across rotated backups, filters, and following a real writer process
that rotates its log while `bot tail -f` runs (no line lost, none repeated)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from bot.ops.tail import Filter, log_chain, parse_since, tail_records

BOT = [sys.executable, "-m", "bot"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

WRITER = textwrap.dedent(
    """
    import sys, time, structlog
    from bot.logs.setup import setup_logging
    n, pause = int(sys.argv[2]), float(sys.argv[3])
    setup_logging(sys.argv[1], console=False, max_bytes=4096, backups=5)
    log = structlog.get_logger("writer")
    for i in range(n):
        if i % 10 == 9:
            log.warning("kill_switch", reason="daily_loss", value=-0.03, seq=i)
        else:
            log.info("trade_open", symbol="SOLUSDT", qty=1.2, price=98.31, er=0.0021, p=0.64,
                     size_fraction=0.021, mode="paper", seq=i)
        if pause:
            time.sleep(pause)
    """
)


def write_log(logs: Path, n: int, pause: float = 0.0) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(logs), str(n), str(pause)], check=True, env=ENV, timeout=120)


def test_last_lines_span_rotated_backups_and_filters(tmp_path: Path) -> None:
    write_log(tmp_path, 200)
    path = tmp_path / "bot.jsonl"
    chain = log_chain(path)
    assert len(chain) == 6 and chain[-1] == path and chain[0].name == "bot.jsonl.5"  # bounded: 5 backups
    recs = list(tail_records(path, Filter(), 60))
    assert [r["seq"] for r in recs] == list(range(140, 200))  # more than the current file holds
    warn = list(tail_records(path, Filter(min_level="warning"), 3))
    assert [r["seq"] for r in warn] == [179, 189, 199]
    assert list(tail_records(path, Filter(since_ms=int(time.time() * 1000) + 60_000), None)) == []


def test_cli_human_lines_json_and_errors(tmp_path: Path) -> None:
    write_log(tmp_path, 30)
    f = str(tmp_path / "bot.jsonl")
    out = subprocess.run([*BOT, "tail", "--file", f, "-n", "2"], capture_output=True, text=True, env=ENV, check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("# times are UTC") and len(lines) == 3
    assert lines[1].endswith("BUY SOLUSDT 1.20 @ 98.31  er +0.21%  p 0.64  size 2.1%  [paper]")
    assert lines[2].endswith("WARN KILL SWITCH daily_loss -3.00%: no new entries")
    out = subprocess.run([*BOT, "tail", "--file", f, "--level", "warning", "--since", "1h", "--json"],
                         capture_output=True, text=True, env=ENV, check=True).stdout  # fmt: skip
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [9, 19, 29]
    bad = subprocess.run([*BOT, "tail", "--file", f, "--since", "yesterday-ish"], capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and "--since" in bad.stderr
    missing = subprocess.run([*BOT, "tail", "--file", str(tmp_path / "nope.jsonl")], capture_output=True, text=True, env=ENV)
    assert missing.returncode == 1 and "no log at" in missing.stderr


def test_parse_since() -> None:
    assert parse_since("90m", now_ms=10_000_000) == 10_000_000 - 90 * 60_000
    assert parse_since("2d", now_ms=500_000_000) == 500_000_000 - 2 * 86_400_000
    assert parse_since("2021-04-30T12:00") == 1619784000000


def test_follow_across_rotation_with_a_real_writer(tmp_path: Path) -> None:
    n = 400
    path = tmp_path / "bot.jsonl"
    path.write_text(json.dumps({"event": "sentinel", "level": "info", "seq": -1}) + "\n")
    args = [*BOT, "tail", "-f", "-n", "1", "--json", "--file", str(path)]
    tail = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(tail.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline:  # tail is up: it printed the sentinel
            time.sleep(0.05)
        write_log(tmp_path, n, pause=0.01)
        rotations = len(log_chain(path)) - 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(lines) < n + 1:
            time.sleep(0.1)
        time.sleep(0.5)  # anything extra (a repeated line) would arrive now
    finally:
        tail.terminate()
        tail.wait(timeout=10)
        reader.join(timeout=5)
    assert rotations == 5  # the writer rotated (many times: 5 backups are kept)
    assert [json.loads(x)["seq"] for x in lines] == [-1, *range(n)]  # every line once, in order


def test_following_a_log_that_does_not_exist_yet_prints_all_of_it(tmp_path: Path) -> None:
    path = tmp_path / "bot.jsonl"
    got = []
    stop_at = time.monotonic() + 20

    def appear() -> None:
        time.sleep(0.3)
        path.write_text("".join(json.dumps({"event": "x", "level": "info", "seq": i}) + "\n" for i in range(3)))

    threading.Thread(target=appear, daemon=True).start()
    for rec in tail_records(path, Filter(), 0, follow=True, interval_s=0.05, stop=lambda: len(got) >= 3 or time.monotonic() > stop_at):
        got.append(rec["seq"])
    assert got == [0, 1, 2]


def test_tail_follows_a_running_daemon_and_reads_it_after_it_stopped(tmp_path: Path, db_dsn: str) -> None:
    """`bot tail -f` against `bot run`: the lines it prints are exactly bot.log's lines, live
    while the daemon runs and afterwards from the files alone."""
    import signal

    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"paths:\n  data_dir: {tmp_path}/var\n  models_dir: {tmp_path}/var/models\n  logs_dir: {tmp_path}/logs\n"
                   "logging:\n  console: false\n")  # fmt: skip
    env = {**ENV, "BOT_DATABASE_DSN": db_dsn}
    daemon = subprocess.Popen([*BOT, "--config", str(cfg), "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tail = None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "logs" / "bot.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        tail = subprocess.Popen([*BOT, "--config", str(cfg), "tail", "-f", "-n", "1000"], env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        reader = threading.Thread(target=lambda: lines.extend(iter(tail.stdout.readline, "")), daemon=True)
        reader.start()
        time.sleep(2.0)
        n_before = len(lines)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        time.sleep(1.5)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        if tail is not None:
            tail.terminate()
            tail.wait(timeout=10)
    human = (tmp_path / "logs" / "bot.log").read_text().splitlines()
    followed = [x.rstrip("\n") for x in lines if not x.startswith("#")]
    assert len(human) >= 2 and followed == human
    assert len(lines) > n_before  # the shutdown lines arrived while following
    after = subprocess.run([*BOT, "--config", str(cfg), "tail", "-n", "1000"], env=ENV, capture_output=True, text=True, check=True)
    assert after.stdout.splitlines()[1:] == human  # and the same from the files once it stopped


def test_follower_reads_a_file_that_came_and_went_between_two_polls(tmp_path: Path) -> None:
    from bot.ops.tail import Follower

    path = tmp_path / "bot.jsonl"

    def rotate() -> None:  # what RotatingFileHandler does: .1 -> .2, current -> .1
        if (tmp_path / "bot.jsonl.1").exists():
            (tmp_path / "bot.jsonl.1").rename(tmp_path / "bot.jsonl.2")
        path.rename(tmp_path / "bot.jsonl.1")

    path.write_text("a\n")
    fol = Follower(path, from_start=True)
    assert fol.poll() == ["a"]
    with open(path, "a") as f:
        f.write("b\n")
    rotate()
    path.write_text("c\nd\n")  # a whole file written and rotated away before the next poll
    rotate()
    path.write_text("e\npartial")
    assert fol.poll() == ["b", "c", "d", "e"]
    with open(path, "a") as f:
        f.write(" line\n")
    assert fol.poll() == ["partial line"]
    fol.close()
