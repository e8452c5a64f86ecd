"""The one training-process launcher (`bot.training.launcher`) with tiny jobs in real spawned
children: the limits as the child sees them, the result handed back, each kind of exit
classified and said in one line, and the child never outliving its parent or its await."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

from bot.training.launcher import Exit, Limits, out_of_memory, run_in_child
from tests.support import child_targets as jobs
from tests.support.shared_data import ROOT


def gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


async def test_the_child_runs_under_the_limits() -> None:
    limits = Limits(nice=7, threads=1, memory_mb=900, timeout_s=60)
    res = await run_in_child(jobs.report_limits, limits=limits)
    assert res.ok and res.exit is Exit.OK, res.line()
    got = res.value
    cap = 900 * 2**20
    assert got["rlimit_as"][0] == cap  # the soft limit; the hard one is left to lift it for the report
    assert got["proc_limits_line"].split()[3] == str(cap), got["proc_limits_line"]  # the kernel's own view
    assert got["nice"] == min(19, os.nice(0) + 7)
    assert got["threads_env"] == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert got["ppid"] == os.getpid() and got["pid"] == res.pid != os.getpid()
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != cap  # the parent is untouched
    # no limits: nothing set
    free = await run_in_child(jobs.report_limits, limits=Limits())
    assert free.ok and free.value["rlimit_as"] == resource.getrlimit(resource.RLIMIT_AS)
    assert free.value["nice"] == os.nice(0)


async def test_the_result_comes_back_as_it_was_returned() -> None:
    res = await run_in_child(jobs.numpy_result, limits=Limits(timeout_s=60))
    assert res.ok and res.exitcode == 0 and res.line().startswith("training process finished in ")
    assert isinstance(res.value["pf"], np.float64) and res.value["pf"] == 1.25 and res.value["trades"] == 42
    assert res.value["rows"].dtype == np.float32 and res.value["rows"].tolist() == [0.0, 1.0, 2.0]
    assert (await run_in_child(jobs.sleep_then, 0.0, "x", limits=Limits())).value == "x"


async def test_past_the_memory_limit_the_child_fails_and_says_which_limit() -> None:
    limits = Limits(memory_mb=600, timeout_s=60)
    small = await run_in_child(jobs.allocate_mb, 50, limits=limits)
    assert small.ok and small.value == 50, small.line()  # under the limit it works: the limit is what fails it
    big = await run_in_child(jobs.allocate_mb, 900, limits=limits)
    assert big.exit is Exit.MEMORY and big.exitcode == 1, big.line()
    line = big.line()
    assert line.startswith("training process ran out of memory at its address-space limit training.memory_mb=600 MB")
    assert "MemoryError" in line and "MB mapped before the job ran" in line, line
    unlimited = await run_in_child(jobs.allocate_mb, 900, limits=Limits(timeout_s=60))
    assert unlimited.ok and unlimited.value == 900  # the same job without the limit
    # the peaks the child measured: it touched 900 MB, so its resident peak is at least that
    assert 900 <= unlimited.rss_peak_mb <= unlimited.vm_peak_mb, (unlimited.rss_peak_mb, unlimited.vm_peak_mb)
    assert small.rss_peak_mb < 600 and "MB address space" in unlimited.line() and "MB resident" in unlimited.line()


async def test_a_library_s_bad_alloc_counts_as_memory() -> None:
    res = await run_in_child(jobs.bad_alloc_from_a_library, limits=Limits(memory_mb=2000))
    assert res.exit is Exit.MEMORY and "std::bad_alloc" in res.line() and "training.memory_mb=2000 MB" in res.line()


def test_out_of_memory_reads_the_cause_chain() -> None:
    assert out_of_memory(MemoryError())
    assert out_of_memory(OSError(errno.ENOMEM, "Cannot allocate memory"))
    assert out_of_memory(ImportError("libgomp.so.1: failed to map segment from shared object"))
    try:
        try:
            raise MemoryError
        except MemoryError as e:
            raise RuntimeError("training failed") from e
    except RuntimeError as wrapped:
        assert out_of_memory(wrapped)
    assert not out_of_memory(ValueError("no candles for BTCUSDT"))
    assert not out_of_memory(OSError(errno.ENOENT, "No such file"))


async def test_over_the_time_limit_the_child_is_killed() -> None:
    pids: list[int] = []
    t0 = time.monotonic()
    res = await run_in_child(jobs.sleep_then, 60, limits=Limits(timeout_s=1.0), on_start=pids.append)
    assert res.exit is Exit.TIMEOUT and time.monotonic() - t0 < 15
    assert res.line() == "training process over its time limit training.timeout_s=1 s: killed"
    assert pids == [res.pid] and gone(pids[0])


@pytest.mark.parametrize(("job", "args", "exit", "words"), [
    (jobs.raise_value_error, ("no candles for BTCUSDT",), Exit.CRASHED, "training process failed: ValueError: no candles for BTCUSDT"),
    (jobs.exit_with, (7,), Exit.CRASHED, "training process exited with status 7 without a result"),
    (jobs.kill_self, (jobs.SIGTERM,), Exit.SIGNAL, "training process killed by SIGTERM"),
    (jobs.kill_self, (int(signal.SIGKILL),), Exit.SIGNAL, "training process killed by SIGKILL (kill -9 or the kernel's OOM killer)"),
])  # fmt: skip
async def test_each_other_exit_is_classified_in_one_line(job, args, exit, words) -> None:  # noqa: ANN001
    res = await run_in_child(job, *args, limits=Limits(timeout_s=60))
    assert res.exit is exit and not res.ok, res.line()
    assert res.line().startswith(words) and "\n" not in res.line(), res.line()


async def test_a_stop_or_a_cancel_kills_the_child() -> None:
    stop = asyncio.Event()
    pids: list[int] = []
    task = asyncio.ensure_future(run_in_child(jobs.sleep_then, 60, limits=Limits(), on_start=pids.append, stop=stop))
    while not pids:
        await asyncio.sleep(0.05)
    stop.set()
    res = await asyncio.wait_for(task, 15)
    assert res.exit is Exit.STOPPED and "stop requested" in res.line() and gone(pids[0])

    pids.clear()
    task = asyncio.ensure_future(run_in_child(jobs.sleep_then, 60, limits=Limits(), on_start=pids.append))
    while not pids:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(pids[0])


def test_the_child_dies_with_its_parent() -> None:
    """kill -9 of the process that launched a training: nothing reaches the child but the
    kernel's parent-death signal (`bot.training.childguard`); it must be gone within seconds."""
    script = textwrap.dedent("""
        import asyncio
        from bot.training.launcher import Limits, run_in_child
        from tests.support.child_targets import sleep_then
        asyncio.run(run_in_child(sleep_then, 600, limits=Limits(nice=5), on_start=lambda pid: print(pid, flush=True)))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        time.sleep(0.5)
        assert psutil.Process(child).ppid() == parent.pid and psutil.Process(child).status() != psutil.STATUS_ZOMBIE
        parent.kill()
        parent.wait(10)
        assert gone(child), "the training process outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


async def test_a_child_stuck_at_its_memory_cap_is_killed_as_out_of_memory() -> None:
    """A library that cannot allocate and then waits forever (CatBoost's TBB spins) would hold a
    core until the time limit; at the cap and unchanged for `stuck_s` it is killed as memory."""
    pids: list[int] = []
    t0 = time.monotonic()
    res = await run_in_child(jobs.fill_then_wait, 120, limits=Limits(memory_mb=400, timeout_s=100, stuck_s=2.0),
                             on_start=pids.append)  # fmt: skip
    assert res.exit is Exit.MEMORY and res.stuck and time.monotonic() - t0 < 30, res.line()
    assert res.line() == ("training process ran out of memory at its address-space limit training.memory_mb=400 MB: stuck "
                          "there for 2 s without failing (a library waiting on an allocation that cannot succeed): killed")
    assert gone(pids[0])
    # below the cap, a long quiet wait is left alone
    res = await run_in_child(jobs.sleep_then, 4, "done", limits=Limits(memory_mb=400, timeout_s=100, stuck_s=1.0))
    assert res.ok and res.value == "done", res.line()
