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
import sys
from pathlib import Path

from sweeps.executors.base import Executor
from sweeps.grid import Sweep, SweepError, cell_state, print_table, say, write_attempt
from workers import Job, WorkerPool, exit_text

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
        """Run ``cells``, ``--workers`` at a time, each a ``main.py --resume`` process (workers.WorkerPool).

        Workers run in their own sessions, so a Ctrl-C at the terminal reaches only the sweep, which passes
        SIGTERM on to them (they save and exit 130; a second Ctrl-C kills them). A sweep killed with
        SIGKILL leaves its workers to finish their cells; a rerun meanwhile skips them as running.
        """
        workers = self.args.workers
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        # not die_with_parent: a killed sweep's cells finish (a rerun skips them)
        pool = WorkerPool(workers, on_stop=lambda n: say(f"stopping: {n} running cell(s) save their finished rounds "
                                                         "and exit"))
        pool.run([_cell_job(cell, sweep, threads, len(cells)) for cell in cells])
        rc = print_table(sweep.out, [c.name for c in sweep.cells])
        if pool.stopping:
            say("interrupted: run the same command again to continue")
            return 130
        return rc


def _cell_job(cell, sweep: Sweep, threads: int, total: int) -> Job:
    """A ``main.py --resume CELL`` worker; its start and exit recorded in the cell's attempt.json and said."""
    cmd = [sys.executable, str(MAIN_PY), "--resume", str(cell.path), "--threads", str(threads),
           "--wandb_group", sweep.name, *(["--no-wandb"] if sweep.no_wandb else [])]

    def started(proc, number: int) -> None:
        write_attempt(cell.path, executor="local", host=os.uname().nodename, pid=proc.pid, exit=None)
        say(f"start  {cell.name} ({number} of {total}, pid {proc.pid}, {threads} thread{'s' if threads > 1 else ''})")

    def finished(proc, seconds: float, output: str) -> None:
        write_attempt(cell.path, executor="local", host=os.uname().nodename, pid=proc.pid, exit=proc.returncode)
        status = cell_state(cell.path)["status"]
        hint = "" if status == "complete" else f"; log: {cell.path / 'log.txt'}"
        say(f"finish {cell.name}: {status} ({exit_text(proc.returncode)}, {seconds:.0f} s{hint})")

    return Job(cmd, cell.path / "log.txt", "sweep.py", started, finished)
