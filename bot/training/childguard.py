"""A training process never outlives the daemon that started it.

The daemon starts its training jobs with multiprocessing's spawn context. When the daemon is
killed (`kill -9`, the OOM killer, a systemd restart after a watchdog miss) nothing reaches
the child: it would go on training for up to hours as an orphan, holding its memory, while
the restarted daemon starts its own training beside it (two trainers on a small PC), and it
could still record a model version nobody waits for. `die_with_parent` asks the Linux kernel
to SIGKILL the calling process when its parent dies (prctl PR_SET_PDEATHSIG) and closes the
race where the parent died before the request was made. Elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None) -> bool:
    """In a child process: be killed when the parent dies. Returns whether the guard is armed.
    Exits at once (status 1) if the parent `parent_pid` is already gone.

    The kernel ties the signal to the parent *thread* that created the child: start the child
    from a thread that lives as long as the parent (the daemon starts it from the event loop's
    thread)."""
    armed = False
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the guard was armed: nobody waits for this work
    return armed
