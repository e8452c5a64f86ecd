"""Tiny jobs for `bot.training.launcher` tests: module-level, so a spawned child can load them."""

from __future__ import annotations

import os
import resource
import signal
import time
from typing import Any


def report_limits() -> dict[str, Any]:
    """What the child runs under, read from inside it."""
    limits = open("/proc/self/limits").read()  # noqa: SIM115 - tiny file
    line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
    return {"rlimit_as": resource.getrlimit(resource.RLIMIT_AS), "proc_limits_line": line, "nice": os.nice(0),
            "threads_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            "pid": os.getpid(), "ppid": os.getppid()}  # fmt: skip


def allocate_mb(mb: int) -> int:
    """Touch `mb` MB (numpy): fails with MemoryError under a smaller RLIMIT_AS."""
    import numpy as np

    a = np.ones(mb * 2**20, dtype=np.uint8)
    return int(a.sum() // 2**20)


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def numpy_result() -> dict[str, Any]:
    import numpy as np

    return {"pf": np.float64(1.25), "trades": np.int64(42), "rows": np.arange(3, dtype=np.float32)}


def raise_value_error(msg: str) -> None:
    raise ValueError(msg)


def exit_with(code: int) -> None:
    os._exit(code)


def kill_self(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(10)


def bad_alloc_from_a_library() -> None:
    """What LightGBM raises when its C++ side cannot allocate."""
    raise RuntimeError("std::bad_alloc")


SIGTERM = int(signal.SIGTERM)


def fill_then_wait(seconds: float) -> None:
    """Take the address space up to the cap, then wait without failing: what CatBoost's TBB
    does when it cannot allocate its thread pool (it spins instead of raising)."""
    import mmap

    held = []
    size = 64 * 2**20
    while size >= 2**20:
        try:
            held.append(mmap.mmap(-1, size))
        except (OSError, MemoryError):
            size //= 2
    time.sleep(seconds)
