"""The one way a training runs in another process: spawned, tied to its parent, limited, classified.

Every training the daemon or the CLI starts in another process goes through `run_in_child`:
the daemon's first model (`bot.live.trader`), the scheduled retrain, `bot retrain --now` and
`bot train --promote` (`bot.training.retrain`), `bot train --spawn`. Another process, so the
event loop never stalls and the training's memory goes back to the OS when it ends. The limits
are the `training:` config section (`Limits.of`), for all of them alike.

- The child is started with multiprocessing's **spawn** context (not fork: LightGBM's OpenMP
  runtime hangs in a forked child once OpenMP ran in the parent), from the event loop's thread.
- In the child, first: `die_with_parent` (`bot.training.childguard`: killed when the daemon
  dies), `os.nice`, the thread count in OMP/OPENBLAS/MKL_NUM_THREADS (set before the job's
  modules load, which read them then). Then the job (function and arguments, pickled apart
  for that reason) is loaded, the address space capped (`RLIMIT_AS`, the soft limit: an
  allocation past it fails in the child with MemoryError, never in the daemon; the child lifts
  it again to report), and the job runs.
- The result comes back as a pickle file, written atomically. The parent polls the exit code
  (never blocks the loop) and kills the child at the time limit or when `stop` is set.
- The exit is classified (`Exit`: ok, memory, timeout, crashed, signal, stopped) and said in
  one line naming the limit that ended it (`ChildResult.line`).
- A child whose address space sits at its cap, unchanged, for `Limits.stuck_s` is killed as out
  of memory: an allocation failed inside a library that then waits forever instead of failing
  (CatBoost's bundled TBB spins in `terminate_on_exception` when it cannot allocate its thread
  pool; seen at 700 MB on a 5-symbol training, which would otherwise spin a core until the time
  limit).

This module imports nothing heavy at the top: the child imports it before its limits are set.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import multiprocessing
import os
import pickle
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import Config
    from bot.training.config import TrainingConfig

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
POLL_S = 0.2


@dataclass(frozen=True)
class Limits:
    """What a training process may use. 0 = no limit (threads: leave the libraries' default)."""

    nice: int = 0
    threads: int = 0
    memory_mb: int = 0
    timeout_s: float = 0.0
    stuck_s: float = 60.0  # at the cap and unchanged this long: out of memory (see the module docstring)

    @classmethod
    def of(cls, t: TrainingConfig, *, timeout_s: float | None = None) -> Limits:
        return cls(nice=t.nice, threads=t.threads, memory_mb=t.memory_mb,
                   timeout_s=float(t.timeout_s if timeout_s is None else timeout_s))  # fmt: skip

    def describe(self) -> str:
        """For start lines: `nice +10, 1 thread, 4096 MB address space, 4 h`."""
        parts = [f"nice +{self.nice}"] if self.nice else []
        if self.threads:
            parts.append(f"{self.threads} thread{'s' if self.threads > 1 else ''}")
        parts.append(f"{self.memory_mb} MB address space" if self.memory_mb else "no memory limit")
        parts.append(_duration(self.timeout_s) if self.timeout_s else "no time limit")
        return ", ".join(parts)


class Exit(enum.StrEnum):
    OK = "ok"
    MEMORY = "memory"  # ran out of memory (at the address-space limit, if one is set)
    TIMEOUT = "timeout"  # killed at the time limit
    CRASHED = "crashed"  # raised, or exited with a status and no result
    SIGNAL = "signal"  # killed by a signal from outside (kill -9, the OOM killer)
    STOPPED = "stopped"  # killed because the caller stopped (the daemon is stopping)


@dataclass
class ChildResult:
    exit: Exit
    limits: Limits
    value: Any = None  # what the job returned (Exit.OK)
    error: str = ""  # the child's own words (an exception), if any
    pid: int | None = None
    exitcode: int | None = None
    seconds: float = 0.0
    mapped_mb: float | None = None  # the child's address space when its limit was set
    stuck: bool = False  # killed at its cap, stuck (see the module docstring)
    vm_peak_mb: float | None = None  # the child's peak address space (VmPeak), what training.memory_mb caps
    rss_peak_mb: float | None = None  # its peak resident memory (VmHWM)

    @property
    def ok(self) -> bool:
        return self.exit is Exit.OK

    def line(self) -> str:
        """One line: how the training process ended, and which limit ended it."""
        lim = self.limits
        if self.exit is Exit.OK:
            peaks = (f" (peak {self.vm_peak_mb:,.0f} MB address space, {self.rss_peak_mb:,.0f} MB resident)"
                     if self.vm_peak_mb is not None and self.rss_peak_mb is not None else "")  # fmt: skip
            return f"training process finished in {self.seconds:.1f} s{peaks}"
        if self.exit is Exit.MEMORY:
            at = f"its address-space limit training.memory_mb={lim.memory_mb} MB" if lim.memory_mb else "memory (no limit set)"
            if self.stuck:
                return (f"training process ran out of memory at {at}: stuck there for {lim.stuck_s:g} s without "
                        "failing (a library waiting on an allocation that cannot succeed): killed")
            start = f", {self.mapped_mb:.0f} MB mapped before the job ran" if self.mapped_mb is not None and lim.memory_mb else ""
            return f"training process ran out of memory at {at} ({self.error[:160]}{start})"
        if self.exit is Exit.TIMEOUT:
            return f"training process over its time limit training.timeout_s={lim.timeout_s:g} s: killed"
        if self.exit is Exit.STOPPED:
            return f"training process abandoned after {self.seconds:.0f} s: stop requested"
        if self.exit is Exit.SIGNAL:
            name = _signal_name(-(self.exitcode or 0))
            why = " (kill -9 or the kernel's OOM killer)" if self.exitcode == -signal.SIGKILL else ""
            return f"training process killed by {name}{why} after {self.seconds:.0f} s"
        if self.error:
            return f"training process failed: {self.error[:300]}"
        return f"training process exited with status {self.exitcode} without a result"


async def run_in_child(fn: Callable[..., Any], *args: Any, limits: Limits, name: str = "training",
                       log_config: Config | None = None, on_start: Callable[[int], None] | None = None,
                       stop: asyncio.Event | None = None) -> ChildResult:  # fmt: skip
    """Run `fn(*args)` in a spawned child under `limits` and await it without blocking the loop.

    `fn` and `args` must be picklable (`fn` a module-level function); `log_config`: the child
    logs to that config's files (the daemon's progress lines). `on_start(pid)` is called once the
    child runs. Cancelling the await kills the child."""
    payload = pickle.dumps((fn, args, log_config))
    fd, result_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".result")
    os.close(fd)
    os.unlink(result_path)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_child_main, args=(limits, payload, result_path, os.getpid()), name=name, daemon=True)
    t0 = time.monotonic()
    proc.start()
    killed: Exit | None = None
    at_cap = _AtCap(proc.pid or 0, limits)
    try:
        if on_start is not None:
            on_start(proc.pid or 0)
        while proc.exitcode is None:  # waitpid(WNOHANG): never blocks
            if limits.timeout_s and time.monotonic() - t0 > limits.timeout_s:
                killed = Exit.TIMEOUT
            elif stop is not None and stop.is_set():
                killed = Exit.STOPPED
            elif at_cap.stuck():
                killed = Exit.MEMORY
            if killed is not None:
                proc.kill()
                await asyncio.to_thread(proc.join, 10)
                break
            await asyncio.sleep(POLL_S)
    except BaseException:  # cancelled (or on_start raised): the child must not outlive the await
        proc.kill()
        with contextlib.suppress(OSError):
            os.unlink(result_path)
        raise
    res = ChildResult(Exit.CRASHED, limits, pid=proc.pid, exitcode=proc.exitcode, seconds=round(time.monotonic() - t0, 1))
    out = _read_result(result_path)
    if killed is not None:
        res.exit, res.stuck = killed, killed is Exit.MEMORY
    elif out is not None:
        res.mapped_mb, res.vm_peak_mb, res.rss_peak_mb = out.get("mapped_mb"), out.get("vm_peak_mb"), out.get("rss_peak_mb")
        if out["kind"] == "ok" and proc.exitcode == 0:
            res.exit, res.value = Exit.OK, out["value"]
        else:
            res.exit = Exit.MEMORY if out["kind"] == "memory" else Exit.CRASHED
            res.error = str(out.get("error") or "")
    elif (proc.exitcode or 0) < 0:
        res.exit = Exit.SIGNAL
    return res


class _AtCap:
    """In the parent: whether the child's address space has sat at its cap, unchanged, for
    `limits.stuck_s` (within max(16 MB, 1 %) of it: the allocation that failed was larger)."""

    def __init__(self, pid: int, limits: Limits):
        self.path = f"/proc/{pid}/status"
        self.cap_kb = limits.memory_mb * 1024
        self.band_kb = max(16 * 1024, self.cap_kb // 100)
        self.stuck_s = limits.stuck_s
        self.last: int | None = None
        self.since: float | None = None

    def stuck(self) -> bool:
        if not self.cap_kb or not self.stuck_s:
            return False
        size = _vm_kb(self.path)
        now = time.monotonic()
        if size is None or size < self.cap_kb - self.band_kb or size != self.last:
            self.last, self.since = size, (now if size is not None and size >= self.cap_kb - self.band_kb else None)
            return False
        return self.since is not None and now - self.since >= self.stuck_s


def _vm_kb(status_path: str, field: str = "VmSize") -> int | None:
    """A `kB` field of a /proc/PID/status file."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(status_path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    return None


def _read_result(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            out = pickle.load(f)  # noqa: S301 - written by our own child, in a file only this user can write
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return out if isinstance(out, dict) and "kind" in out else None


# --- in the child ----------------------------------------------------------------------------


def _child_main(limits: Limits, payload: bytes, result_path: str, parent_pid: int) -> None:
    """The spawned process: guard, priority, threads, load the job, cap memory, run, report, exit."""
    from bot.training.childguard import die_with_parent

    die_with_parent(parent_pid)
    if limits.nice:
        with contextlib.suppress(OSError):
            os.nice(limits.nice)
    if limits.threads:
        for var in THREAD_VARS:
            os.environ[var] = str(limits.threads)
    out: dict[str, Any]
    code = 0
    lifted: int | None = None
    mapped: float | None = None
    try:
        fn, args, log_config = pickle.loads(payload)  # noqa: S301 - from our parent
        if log_config is not None:
            from bot.logs.setup import setup_from_config

            setup_from_config(log_config, console=False)
        mapped = _status_mb("VmSize")
        lifted = _cap_address_space(limits.memory_mb)
        out = {"kind": "ok", "value": fn(*args), "mapped_mb": mapped}
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which carries on
        _lift(lifted)  # room to say what happened
        out = {"kind": "memory" if out_of_memory(e) else "error", "error": f"{type(e).__name__}: {str(e)[:400]}".rstrip(": "),
               "mapped_mb": mapped}  # fmt: skip
        code = 1
    _lift(lifted)
    out["vm_peak_mb"], out["rss_peak_mb"] = _status_mb("VmPeak"), _status_mb("VmHWM")
    try:
        tmp = result_path + ".tmp"
        try:
            data = pickle.dumps(out)
        except Exception as e:  # noqa: BLE001 - a result that cannot cross the boundary is a failure
            data = pickle.dumps({"kind": "error", "error": f"the result cannot be pickled: {type(e).__name__}: {e}"})
            code = 1
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, result_path)
    except BaseException:  # noqa: BLE001 - nothing to report with; the exit status says it
        code = code or 1
    os._exit(code)  # no atexit work (thread pools, OpenMP) that could hang the exit


def _cap_address_space(memory_mb: int) -> int | None:
    """Set the soft RLIMIT_AS to `memory_mb`; return the soft limit it replaced (None if none set)."""
    if not memory_mb:
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = int(memory_mb) * 2**20
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return soft


def _lift(previous: int | None) -> None:
    if previous is None:
        return
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (previous, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _status_mb(field: str) -> float | None:
    """A field of this process's /proc/self/status (VmSize, VmPeak, VmHWM), MB."""
    kb = _vm_kb("/proc/self/status", field)
    return None if kb is None else round(kb / 1024, 1)


_OOM_WORDS = ("bad_alloc", "cannot allocate memory", "out of memory", "unable to allocate", "failed to map segment",
              "can't start new thread")  # fmt: skip


def out_of_memory(e: BaseException | None) -> bool:
    """Whether `e` (or what caused it) is an allocation that failed: MemoryError, ENOMEM, or a
    library's own words for it (LightGBM/CatBoost report C++ `std::bad_alloc` as their error; a
    thread stack or a shared library that cannot be mapped under RLIMIT_AS)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno == errno.ENOMEM):
            return True
        if any(w in str(e).lower() for w in _OOM_WORDS):
            return True
        e = e.__cause__ or e.__context__
    return False


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _duration(s: float) -> str:
    if s >= 3600 and s % 3600 == 0:
        return f"{s / 3600:g} h"
    if s >= 60 and s % 60 == 0:
        return f"{s / 60:g} min"
    return f"{s:g} s"
