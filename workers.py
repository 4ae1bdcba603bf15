"""Worker processes: ``main.py --resume FOLDER`` children for an experiment's seeds and a local sweep's cells.

One way to start them (their own session, so that a Ctrl-C at the terminal reaches only the parent, which
passes SIGTERM on; output appended to the folder's log.txt) and one way to stop them (SIGTERM, so they save
their finished rounds and exit; SIGKILL to their process group STOP_GRACE_S later). A worker started with
``die_with_parent`` also gets SIGTERM when its parent dies, even by kill -9 (Linux's PR_SET_PDEATHSIG, set by
the child itself in ``follow_parent``, called first thing by main.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time

STOP_GRACE_S = 60  # how long stopped workers get to save and exit before they are killed
PARENT_ENV = "ACTIVE_LEARNING_PARENT_PID"  # set for a worker that dies with its parent: the parent's pid
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def start_worker(cmd: list, log_file, die_with_parent: bool = False) -> subprocess.Popen:
    """Start ``cmd`` in its own session, stdout and stderr into ``log_file``, no stdin."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(PARENT_ENV, None)
    if die_with_parent:
        env[PARENT_ENV] = str(os.getpid())
    return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)


def follow_parent() -> None:
    """In a worker started with ``die_with_parent``: ask the kernel for SIGTERM when the parent dies, and
    stop at once if it has died already. Nothing elsewhere (or where prctl is not available)."""
    expected = os.environ.pop(PARENT_ENV, None)
    if expected is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if str(os.getppid()) != expected:  # the parent died before the request: reparented already
        os.kill(os.getpid(), signal.SIGTERM)


def signal_workers(procs, signum: int, group: bool = False) -> None:
    """Send ``signum`` to each worker (or its process group) that has not been reaped yet."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum) if group else os.kill(proc.pid, signum)


def stop_workers(procs: list, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM to every worker, wait up to ``grace`` seconds for them all, then SIGKILL what is left."""
    signal_workers(procs, signal.SIGTERM)
    try:
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
    finally:  # also at a second Ctrl-C while waiting
        signal_workers(procs, signal.SIGKILL, group=True)
