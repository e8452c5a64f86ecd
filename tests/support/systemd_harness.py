"""A stand-in for systemd's service manager, for `systemd/cryptobot.service` (issue 15).

systemd cannot run as PID 1 here, so this plays its part for one `Type=notify` service, with
the settings read from the real unit file:

- start: ExecStart's process with a real `NOTIFY_SOCKET` (an AF_UNIX datagram socket this
  harness binds, as systemd does), `WATCHDOG_USEC` and `WATCHDOG_PID` (the service's own pid:
  the command is started through `sh -c 'WATCHDOG_PID=$$ exec ...'`, so the pid is the one
  that exec's the daemon, as systemd sets it between fork and exec);
- start-up: `READY=1` within `TimeoutStartSec`, or the start failed (SIGTERM, then SIGKILL);
- the watchdog, armed once start-up is complete (systemd.service(5): "The watchdog is
  activated when the start-up is completed"): no `WATCHDOG=1` for `WatchdogSec` -> the service
  failed with result "watchdog": `WatchdogSignal` (SIGABRT by default) followed by SIGCONT
  (systemd sends SIGCONT after the kill signal so that a stopped process can act on it), then
  SIGKILL if it is still there after `TimeoutAbortSec` (default: `TimeoutStopSec`);
- exit: restarted per `Restart=` (no / always / on-success / on-failure / on-abnormal /
  on-watchdog / on-abort) after `RestartSec`, except for the exit codes of
  `RestartPreventExitStatus=`; no more than `StartLimitBurst` starts in
  `StartLimitIntervalSec` (then the unit stays failed: "start-limit-hit");
- stop: `KillSignal` (SIGTERM), SIGKILL after `TimeoutStopSec`.

`scale` multiplies every duration of the unit (a test runs the real unit's timings at, say,
1/30 of their length: the ratios between them stay the unit's). Everything that happens is
appended to `events` with its monotonic time, for the tests to check and to measure.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(usec|us|msec|ms|seconds?|sec|s|minutes?|min|m|hours?|hr|h|days?|d)?", re.I)
_UNIT_S = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60,
           "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "d": 86400,
           "day": 86400, "days": 86400}  # fmt: skip


def parse_timespan(text: str) -> float:
    """systemd.time(7) spans: "10" (seconds), "15min", "1min 30s", "500ms", "infinity"."""
    t = text.strip()
    if t in ("infinity", ""):
        return float("inf") if t else 0.0
    pos, total = 0, 0.0
    for m in _SPAN.finditer(t):
        if t[pos : m.start()].strip():
            raise ValueError(f"not a systemd time span: {text!r}")
        total += float(m.group(1)) * _UNIT_S[(m.group(2) or "s").lower()]
        pos = m.end()
    if pos != len(t) or pos == 0:
        raise ValueError(f"not a systemd time span: {text!r}")
    return total


@dataclass(frozen=True)
class ServiceUnit:
    """The [Service]/[Unit] settings the harness acts on, as systemd reads them."""

    type: str
    exec_start: list[str]
    restart: str = "no"
    restart_sec: float = 0.1  # systemd's default RestartSec=100ms
    watchdog_sec: float = 0.0
    timeout_start_sec: float = 90.0
    timeout_stop_sec: float = 90.0
    timeout_abort_sec: float | None = None  # default: TimeoutStopSec
    restart_prevent_exit_status: frozenset[int] = frozenset()
    kill_signal: int = signal.SIGTERM
    watchdog_signal: int = signal.SIGABRT
    start_limit_interval_sec: float = 10.0
    start_limit_burst: int = 5
    notify_access: str = "none"

    @classmethod
    def from_file(cls, path: Path) -> ServiceUnit:
        cp = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read_string(Path(path).read_text())
        s, u = cp["Service"], cp["Unit"] if cp.has_section("Unit") else {}

        def span(sec: Any, key: str, default: float) -> float:
            return parse_timespan(sec[key]) if key in sec else default

        def sig(name: str | None, default: int) -> int:
            return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name]) if name else default

        stop = span(s, "TimeoutStopSec", 90.0)
        return cls(
            type=s.get("Type", "simple"), exec_start=shlex.split(s["ExecStart"]), restart=s.get("Restart", "no"),
            restart_sec=span(s, "RestartSec", 0.1), watchdog_sec=span(s, "WatchdogSec", 0.0),
            timeout_start_sec=span(s, "TimeoutStartSec", 90.0), timeout_stop_sec=stop,
            timeout_abort_sec=span(s, "TimeoutAbortSec", stop),
            restart_prevent_exit_status=frozenset(int(x) for x in s.get("RestartPreventExitStatus", "").split() if x.isdigit()),
            kill_signal=sig(s.get("KillSignal"), signal.SIGTERM), watchdog_signal=sig(s.get("WatchdogSignal"), signal.SIGABRT),
            start_limit_interval_sec=span(u, "StartLimitIntervalSec", 10.0),
            start_limit_burst=int(u.get("StartLimitBurst", 5)), notify_access=s.get("NotifyAccess", "none"),
        )  # fmt: skip

    def scaled(self, k: float) -> ServiceUnit:
        """Every duration times `k` (the tests run the unit's timings faster, ratios kept)."""
        import dataclasses

        return dataclasses.replace(
            self, restart_sec=self.restart_sec * k, watchdog_sec=self.watchdog_sec * k,
            timeout_start_sec=self.timeout_start_sec * k, timeout_stop_sec=self.timeout_stop_sec * k,
            timeout_abort_sec=None if self.timeout_abort_sec is None else self.timeout_abort_sec * k,
            start_limit_interval_sec=self.start_limit_interval_sec * k,
        )  # fmt: skip


def restart_wanted(policy: str, result: str, exit_code: int | None) -> bool:
    """systemd.service(5)'s table: does `Restart=policy` restart after this `result`?
    result: success | exit-code | signal | timeout | watchdog (core-dump counts as signal)."""
    clean = result == "success"
    table = {
        "no": False,
        "always": True,
        "on-success": clean,
        "on-failure": not clean,
        "on-abnormal": result in ("signal", "timeout", "watchdog"),
        "on-watchdog": result == "watchdog",
        "on-abort": result == "signal",
    }
    if policy not in table:
        raise ValueError(f"Restart={policy} is not a systemd restart policy")
    return table[policy]


@dataclass
class Event:
    t: float
    kind: str  # start, ready, watchdog_ping, watchdog_timeout, kill, exit, restart_scheduled, start_timeout, failed, stopping
    detail: dict[str, Any] = field(default_factory=dict)


class ServiceHarness:
    """Runs one service as systemd would (see the module docstring). `start()`, then watch
    `events` / `wait_for(...)`; `stop()` ends it (and the supervision thread)."""

    def __init__(self, unit: ServiceUnit, *, argv: list[str] | None = None, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, log_path: Path | None = None) -> None:  # fmt: skip
        if unit.type != "notify":
            raise ValueError(f"the harness plays Type=notify only, the unit has Type={unit.type}")
        self.unit = unit
        self.argv = argv or unit.exec_start
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.events: list[Event] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = "inactive"  # activating, active, deactivating, auto-restart, failed, inactive
        self._dir = tempfile.mkdtemp(prefix="sd-harness-")
        self.notify_path = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.notify_path)
        self._sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._starts: list[float] = []

    # -- what tests use --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="sd-harness", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 120) -> None:
        """`systemctl stop`: KillSignal, SIGKILL after TimeoutStopSec; no restart."""
        self._stop_requested.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.notify_path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    def kinds(self) -> list[str]:
        with self._lock:
            return [e.kind for e in self.events if e.kind != "watchdog_ping"]

    def of(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 120) -> Event:
        """Until the `count`-th event of `kind`; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = self.of(kind)
            if len(evs) >= count:
                return evs[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"no {kind} #{count} within {timeout:.0f} s; events: {self.kinds()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- systemd's part ----------------------------------------------------------------------

    def _note(self, kind: str, **detail: Any) -> Event:
        e = Event(time.monotonic(), kind, detail)
        with self._lock:
            self.events.append(e)
        return e

    def _spawn(self) -> None:
        u = self.unit
        env = dict(self.env if self.env is not None else os.environ)
        env["NOTIFY_SOCKET"] = self.notify_path
        env.pop("WATCHDOG_PID", None)
        env.pop("WATCHDOG_USEC", None)
        if u.watchdog_sec > 0:
            env["WATCHDOG_USEC"] = str(int(u.watchdog_sec * 1e6))
        # WATCHDOG_PID is the service's own pid: `sh` learns it ($$) and exec's the command in place
        cmd = ["sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"' if u.watchdog_sec > 0 else 'exec "$@"', "sh",
               *self.argv]  # fmt: skip
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.cwd, stdout=out, stderr=out, start_new_session=True)
        if self.log_path:
            out.close()  # type: ignore[union-attr]
        self._starts.append(time.monotonic())
        self.state = "activating"
        self._note("start", pid=self.proc.pid)

    def _messages(self) -> list[tuple[str, int | None]]:
        out = []
        while True:
            try:
                data, anc, _flags, _addr = self._sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (TimeoutError, BlockingIOError):
                return out
            except OSError:
                return out
            sender = None
            for level, typ, cdata in anc:  # SO_PASSCRED: the kernel says who sent it (NotifyAccess=main)
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    sender = int.from_bytes(cdata[:4], "little")
            out.append((data.decode(errors="replace"), sender))
            self._sock.settimeout(0)  # drain what else is queued without waiting

    def _kill(self, sig: int, why: str) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        self._note("kill", signal=signal.Signals(sig).name, why=why, pid=p.pid)
        try:
            os.kill(p.pid, sig)
            if sig not in (signal.SIGKILL, signal.SIGCONT):
                os.kill(p.pid, signal.SIGCONT)  # as systemd: a stopped process must be able to act on it
        except ProcessLookupError:
            pass

    def _supervise(self) -> None:  # noqa: C901 - systemd's state machine, in one place
        u = self.unit
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._spawn()
        last_ping: float | None = None
        phase_deadline: float | None = time.monotonic() + u.timeout_start_sec
        kill_deadline: float | None = None
        result: str | None = None  # why the current run is ending (timeout, watchdog) before it exits
        restart_at: float | None = None
        while True:
            self._sock.settimeout(0.05)
            now = time.monotonic()
            for msg, sender in self._messages():
                p = self.proc
                if u.notify_access == "main" and p is not None and sender is not None and sender != p.pid:
                    self._note("notify_refused", message=msg, sender=sender)
                    continue
                for line in msg.splitlines():
                    if line == "READY=1" and self.state == "activating":
                        self.state = "active"
                        phase_deadline = None
                        last_ping = now  # the watchdog is armed now
                        self._note("ready", pid=p.pid if p else None)
                    elif line == "WATCHDOG=1":
                        last_ping = now
                        self._note("watchdog_ping")
                    elif line == "STOPPING=1":
                        self._note("stopping")
                    elif line == "WATCHDOG=trigger":
                        last_ping = -float("inf")
            p = self.proc
            if p is not None and p.poll() is None:
                if self._stop_requested.is_set() and self.state != "deactivating":
                    self.state, result = "deactivating", "stop"
                    self._kill(u.kill_signal, "stop requested")
                    kill_deadline = now + u.timeout_stop_sec
                elif self.state == "activating" and phase_deadline is not None and now > phase_deadline:
                    self.state, result = "deactivating", "timeout"
                    self._note("start_timeout", after_s=u.timeout_start_sec)
                    self._kill(u.kill_signal, "start timeout")
                    kill_deadline = now + u.timeout_stop_sec
                elif (self.state == "active" and u.watchdog_sec > 0 and last_ping is not None
                      and now - last_ping > u.watchdog_sec):  # fmt: skip
                    self.state, result = "deactivating", "watchdog"
                    self._note("watchdog_timeout", silent_s=round(now - last_ping, 2), pid=p.pid)
                    self._kill(u.watchdog_signal, "watchdog")
                    kill_deadline = now + (u.timeout_abort_sec if u.timeout_abort_sec is not None else u.timeout_stop_sec)
                elif kill_deadline is not None and now > kill_deadline:
                    self._kill(signal.SIGKILL, "did not exit in time")
                    kill_deadline = None
            elif p is not None and restart_at is None and self.state not in ("failed", "inactive"):
                code = p.returncode
                if result is None:
                    result = "success" if code == 0 else ("signal" if code < 0 else "exit-code")
                sig_name = signal.Signals(-code).name if code < 0 else None
                self._note("exit", pid=p.pid, code=code, signal=sig_name, result=result)
                stopping = self._stop_requested.is_set()
                prevented = code > 0 and code in u.restart_prevent_exit_status
                if stopping or result == "stop" or prevented or not restart_wanted(u.restart, result, code):
                    self.state = "inactive" if (stopping or result in ("success", "stop")) else "failed"
                    self._note("failed" if self.state == "failed" else "inactive", result=result,
                               prevented=prevented)  # fmt: skip
                else:
                    self.state = "auto-restart"
                    restart_at = now + u.restart_sec
                    self._note("restart_scheduled", in_s=u.restart_sec, result=result)
                result, kill_deadline, last_ping = None, None, None
            if restart_at is not None and now >= restart_at:
                restart_at = None
                recent = [t for t in self._starts if now - t < u.start_limit_interval_sec]
                if self._stop_requested.is_set():
                    self.state = "inactive"
                elif len(recent) >= u.start_limit_burst:
                    self.state = "failed"
                    self._note("failed", result="start-limit-hit", starts=len(recent))
                else:
                    self._spawn()
                    phase_deadline = time.monotonic() + u.timeout_start_sec
            if self._stop_requested.is_set() and (self.proc is None or self.proc.poll() is not None) and restart_at is None:
                if self.proc is not None and self.state not in ("inactive", "failed"):
                    continue  # let the exit be noted first
                return
            if self.state in ("failed", "inactive") and not self._stop_requested.is_set():
                self._stop_requested.wait(0.05)
                if self._stop_requested.is_set():
                    return

