"""Worker processes: ``main.py --resume FOLDER`` children for an experiment's seeds and a local sweep's cells
(and Background, one thread: a round's training while the previous round's model chooses, --query_lag 1).

One pool runs both (WorkerPool): N at a time, in order, each in its own session (a Ctrl-C at the terminal
reaches only the parent, which passes SIGTERM on), its output appended to the folder's log.txt; stopped by
SIGTERM (they save their finished rounds and exit), SIGKILL to their process groups STOP_GRACE_S later or
at a second Ctrl-C. A pool with ``die_with_parent`` also has its workers get SIGTERM when the parent dies,
even by kill -9 (Linux's PR_SET_PDEATHSIG, set by the child itself in ``follow_parent``, called first thing
by main.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from results import OutputError

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


@dataclass
class Job:
    """One worker for WorkerPool.run: its command, the log.txt it appends to (headed by ``caller`` and the
    command), and what to do when it has started (``started(proc, number)``, number counting from 1) and
    when it has ended (``finished(proc, seconds, output)``, output: what it wrote to the log)."""

    cmd: list
    log_path: Path
    caller: str
    started: Callable = field(default=lambda proc, number: None)
    finished: Callable = field(default=lambda proc, seconds, output: None)


class WorkerPool:
    """Runs jobs ``size`` at a time, in order, as workers; ``stopping`` is set once a signal (or an error)
    has stopped it, so that ``finished`` can tell an interrupted worker from a failed one. ``on_stop(n)`` is
    called when the n running workers are asked to stop (to say so at once)."""

    def __init__(self, size: int, die_with_parent: bool = False, on_stop: Callable = lambda n: None,
                 poll_s: float = 0.2):
        self.size, self.die_with_parent, self.on_stop, self.poll_s = size, die_with_parent, on_stop, poll_s
        self.stopping = False
        self.running: dict = {}  # Popen -> (job, start time, log file, log offset)
        self._signals, self._term_sent = 0, None

    def run(self, jobs: list) -> bool:
        """Run every job; True when SIGINT or SIGTERM stopped the pool (no new job starts; the running ones
        get SIGTERM once, SIGKILL STOP_GRACE_S later or at a second signal), else False. An exception (from
        a callback, or a log that cannot be opened) stops the workers the same way and propagates."""
        todo, started = list(jobs), 0
        previous = ({s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
                    if _in_main_thread() else {})
        try:
            while todo or self.running:
                while todo and len(self.running) < self.size and not self.stopping:
                    started += 1
                    self._start(todo.pop(0), started)
                if self.stopping:
                    todo.clear()
                    self._stop_running()
                for proc in [p for p in self.running if p.poll() is not None]:
                    self._finish(proc)
                time.sleep(self.poll_s)
        except BaseException:
            self.stopping = True
            stop_workers(list(self.running))
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.stopping

    def _on_signal(self, signum, frame) -> None:
        self.stopping, self._signals = True, self._signals + 1
        if self._signals > 1:  # a second Ctrl-C: no more waiting
            signal_workers(self.running, signal.SIGKILL, group=True)

    def _start(self, job: Job, number: int) -> None:
        try:
            log = open(job.log_path, "ab", buffering=0)  # unbuffered: the worker appends to it too
        except OSError as err:
            raise OutputError(f"cannot write {job.log_path}: {err.strerror or err}") from None
        offset = log.tell()
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.caller}: {shlex.join(job.cmd)}\n".encode())
        proc = start_worker(job.cmd, log, die_with_parent=self.die_with_parent)
        self.running[proc] = (job, time.monotonic(), log, offset)
        job.started(proc, number)

    def _stop_running(self) -> None:
        """SIGTERM to the running workers once; SIGKILL to those left STOP_GRACE_S later."""
        if self._term_sent is None:
            self._term_sent = time.monotonic()
            if self.running:
                self.on_stop(len(self.running))
            signal_workers(self.running, signal.SIGTERM)
        elif time.monotonic() - self._term_sent > STOP_GRACE_S:
            signal_workers(self.running, signal.SIGKILL, group=True)

    def _finish(self, proc: subprocess.Popen) -> None:
        job, t0, log, offset = self.running.pop(proc)
        with open(job.log_path, "rb") as f:
            f.seek(offset)
            output = f.read().decode("utf-8", errors="replace")
        with log:
            log.write(f"=== exit {proc.returncode}\n".encode())
        job.finished(proc, time.monotonic() - t0, output)


class Background:
    """``fn()`` in a daemon thread (a Ctrl-C or SIGTERM in the main thread ends the process without waiting
    for it); ``result()`` waits for it and returns its value, or raises its exception."""

    def __init__(self, fn: Callable, name: str = "background"):
        self._value, self._error = None, None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable) -> None:
        try:
            self._value = fn()
        except BaseException as err:  # handed to result(): the caller decides
            self._error = err

    def result(self):
        while self._thread.is_alive():
            self._thread.join(0.5)  # short waits: Ctrl-C and SIGTERM get through to the main thread
        if self._error is not None:
            raise self._error
        return self._value


def exit_text(code: int) -> str:
    """How a worker ended, as its Popen return code says: "exit N", or "killed by signal N" (negative codes)."""
    return f"exit {code}" if code >= 0 else f"killed by signal {-code}"


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
