"""The local executor: ``--workers`` cells at a time, each a ``main.py --resume CELL`` process on this machine.

Why not submitit's own local executor (``submitit.LocalExecutor``, ``AutoExecutor(cluster="local")``,
read in submitit 1.5.4): it starts every submitted job at once (``map_array`` has no limit on jobs
running together; ``array_parallelism`` is Slurm's), so it cannot run N cells at a time without a pool
of our own around it; it sets ``CUDA_VISIBLE_DEVICES`` to the GPUs requested per job, which is empty
by default, so a ``--device cuda`` cell that passed validation here would find no GPU; its jobs stay in
the sweep's process group and its ``cancel`` sends SIGINT then SIGKILL about a second later, so a Ctrl-C
reaches every cell at once and gives it a second, not STOP_GRACE_S, to save (a second Ctrl-C cannot be
told apart); a job's exit code and the signal that killed it are lost (a killed job only "has not
produced any output"), which the status line of a finished cell reports; it kills a job after
``timeout_min`` (2 minutes by default); and its logs go to ``<folder>/<controller pid>_0_log.out``
beside pickles, not to the cell's log.txt. Its one gain, the same job callable as Slurm's, is small
beside these, so the pool stays hand-made, here.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeps.executors.base import Executor
from sweeps.grid import Sweep, SweepError, cell_state, print_table, say, write_attempt
from workers import STOP_GRACE_S, signal_workers, start_worker

MAIN_PY = Path(__file__).resolve().parents[2] / "main.py"  # each cell is a process of main.py


class LocalExecutor(Executor):
    """Worker processes on this machine, ``--workers`` at a time, each with ``cores // workers`` threads."""

    cells_run_here = True

    @staticmethod
    def add_arguments(parser) -> None:  # noqa: D102 - see Executor
        parser.add_argument("--workers", type=int, default=1, help="local: cells run at a time")

    @staticmethod
    def check_arguments(args) -> None:  # noqa: D102 - see Executor
        if args.workers < 1:
            raise SweepError(f"--workers must be at least 1, got {args.workers}")

    def run(self, sweep: Sweep, cells: list) -> int:
        """Run ``cells``, ``--workers`` at a time, each a ``main.py --resume`` process.

        Workers run in their own sessions, so a Ctrl-C at the terminal reaches only the sweep, which passes
        SIGTERM on to them (they save and exit 130; a second Ctrl-C kills them). A sweep killed with
        SIGKILL leaves its workers to finish their cells; a rerun meanwhile skips them as running.
        """
        workers = self.args.workers
        cores = len(os.sched_getaffinity(0))
        threads = max(1, cores // workers)
        todo = list(cells)
        total = len(todo)
        running: dict = {}  # Popen -> (cell, start time, log file)
        stop = {"signal": None, "count": 0}

        def on_signal(signum, frame):
            stop["signal"], stop["count"] = signum, stop["count"] + 1
            if stop["count"] > 1:  # a second Ctrl-C: no more waiting
                signal_workers(running, signal.SIGKILL, group=True)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        started = 0
        try:
            while todo or running:
                while todo and len(running) < workers and stop["signal"] is None:
                    cell = todo.pop(0)
                    started += 1
                    proc, log = _start(cell, sweep, threads)
                    running[proc] = (cell, time.monotonic(), log)
                    say(f"start  {cell.name} ({started} of {total}, pid {proc.pid}, {threads} thread"
                        f"{'s' if threads > 1 else ''})")
                if stop["signal"] is not None:
                    todo.clear()
                    _stop(running, stop)
                for proc in [p for p in running if p.poll() is not None]:
                    _finish(proc, *running.pop(proc))
                time.sleep(0.2)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        rc = print_table(sweep.out, [c.name for c in sweep.cells])
        if stop["signal"] is not None:
            say("interrupted: run the same command again to continue")
            return 130
        return rc


def _start(cell, sweep: Sweep, threads: int) -> tuple:
    """(process, log file) of a new ``main.py --resume CELL`` worker in its own session."""
    cmd = [sys.executable, str(MAIN_PY), "--resume", str(cell.path), "--threads", str(threads),
           "--wandb_group", sweep.name, *(["--no-wandb"] if sweep.no_wandb else [])]
    log = open(cell.path / "log.txt", "ab")
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} sweep.py: {shlex.join(cmd)}\n".encode())
    log.flush()
    proc = start_worker(cmd, log)  # left to finish its cell if the sweep is killed (a rerun skips it)
    write_attempt(cell.path, executor="local", host=os.uname().nodename, pid=proc.pid, exit=None)
    return proc, log


def _stop(running: dict, stop: dict) -> None:
    """Ask the workers to save and exit (SIGTERM) once; kill them STOP_GRACE_S later."""
    if "sent" not in stop:
        stop["sent"] = time.monotonic()
        say(f"stopping: {len(running)} running cell(s) save their finished rounds and exit")
        signal_workers(running, signal.SIGTERM)
    elif time.monotonic() - stop["sent"] > STOP_GRACE_S:
        signal_workers(running, signal.SIGKILL, group=True)


def _finish(proc: subprocess.Popen, cell, t0: float, log) -> None:
    """Record a worker's exit in the cell's log.txt and attempt.json, and say how the cell ended."""
    log.write(f"=== exit {proc.returncode}\n".encode())
    log.close()
    write_attempt(cell.path, executor="local", host=os.uname().nodename, pid=proc.pid, exit=proc.returncode)
    status = cell_state(cell.path)["status"]
    how = f"exit {proc.returncode}" if proc.returncode >= 0 else f"killed by signal {-proc.returncode}"
    hint = "" if status == "complete" else f"; log: {cell.path / 'log.txt'}"
    say(f"finish {cell.name}: {status} ({how}, {time.monotonic() - t0:.0f} s{hint})")
