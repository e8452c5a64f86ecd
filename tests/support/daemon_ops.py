"""`bot run` started and stopped as a plain process, its console lines read as they come."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from tests.support.shared_data import ROOT

APR21_0000 = 1618963200000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(home: Path, host: str, port: int, symbols: list[str]) -> Path:
    cfg = home / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "symbols": symbols,
        "paths": {"data_dir": f"{home}/var", "models_dir": f"{home}/var/models", "logs_dir": f"{home}/logs"},
        "exchange": {"urls": {"public": f"http://{host}:{port}/api/v3", "private": f"http://{host}:{port}/api/v3",
                              "ws": f"ws://{host}:{port}/stream/ws"},
                     "rate_limit_ms": 0, "timeout_ms": 2000, "retry_base_s": 0.1, "retry_max_s": 0.5},
        "feed": {"backfill_days": 0, "rest_poll_interval_s": 0.5, "flush_interval_s": 0.2},
        "dashboard": {"enabled": False},
    }))  # fmt: skip
    return cfg


class Lines:
    """Collect a process's stderr lines in a thread; wait for one that matches."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.proc = proc
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.lines.append(line.rstrip())

    def wait_for(self, needle: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line
            if self.proc.poll() is not None and not self._t.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"never saw {needle!r}; got:\n" + "\n".join(self.lines))

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)


class NotifySocket:
    """A real sd_notify datagram socket, as systemd provides it."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop = True
        self._t.join(2)
        self.sock.close()

    def times(self, msg: str) -> list[float]:
        return [t for t, m in self.messages if m == msg]


def start(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bot", "--config", str(cfg), "run", *args], cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})  # fmt: skip


def stop(proc: subprocess.Popen[str], lines: Lines, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def bot(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
