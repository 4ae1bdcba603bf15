"""The Slurm executor: the unfinished cells as one job array, submitted through submitit, requeued on pre-emption."""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from results import write_json
from sweeps.executors.base import Executor
from sweeps.grid import (CELLS_DIR, SWEEP_FILE, Sweep, SweepError, cell_state, print_table, read_sweep_file, say,
                         write_attempt)

try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # submitit is in requirements.txt; without it only the local executor works
    submitit, Checkpointable, DelayedSubmission = None, object, None

# The project's root: a Slurm job imports main and this package from there (through PYTHONPATH), and
# unpickles CellJob by its name in this module.
ROOT = Path(__file__).resolve().parents[2]


class SlurmExecutor(Executor):
    """One Slurm job array of the unfinished cells; with --wait, wait for it and print the status table."""

    cells_run_here = False  # the compute nodes load the datasets and pick the device

    @staticmethod
    def add_arguments(parser) -> None:  # noqa: D102 - see Executor
        slurm = parser.add_argument_group("slurm executor")
        slurm.add_argument("--partition", default="", help="Slurm partition (default: the cluster's default)")
        slurm.add_argument("--time_min", type=int, default=60, help="time limit of each cell's job, minutes")
        slurm.add_argument("--cpus", type=int, default=1, help="CPUs per cell (and its torch threads)")
        slurm.add_argument("--gpus", type=int, default=0, help="GPUs per cell")
        slurm.add_argument("--mem_gb", type=float, default=4, help="memory per cell, GB")
        slurm.add_argument("--array_parallelism", type=int, default=256, help="cells running at a time")
        slurm.add_argument("--max_timeouts", type=int, default=5,
                           help="requeues after a timeout, per cell (pre-emptions are not counted)")
        slurm.add_argument("--signal_delay_s", type=int, default=90,
                           help="Slurm warns a job (SIGUSR2) this many seconds before its time limit")
        slurm.add_argument("--wait", action="store_true", help="wait for the jobs, then print the status table")

    @staticmethod
    def check_arguments(args) -> None:  # noqa: D102 - see Executor
        for name in ("time_min", "cpus", "array_parallelism"):
            if getattr(args, name) < 1:
                raise SweepError(f"--{name} must be at least 1, got {getattr(args, name)}")

    def validate(self, sweep: Sweep) -> None:  # noqa: D102 - see Executor
        if not shutil.which("sbatch"):
            raise SweepError("--executor slurm: sbatch is not on this machine (a local cluster: "
                             "sudo bash scripts/local_slurm.sh)")
        if submitit is None:
            raise SweepError("--executor slurm needs submitit: pip install -r requirements.txt")

    def run(self, sweep: Sweep, cells: list) -> int:
        """Submit ``cells`` as one job array; with --wait, wait for it and print the table."""
        args = self.args
        record = read_sweep_file(sweep.out)
        if cells:
            jobs = _submit(sweep, cells, args)
            record["slurm_jobs"] = {**record.get("slurm_jobs", {}), **{c.name: j.job_id for c, j in zip(cells, jobs)}}
            write_json(sweep.out / SWEEP_FILE, record)
            for cell, job in zip(cells, jobs):
                write_attempt(cell.path, executor="slurm", job=job.job_id, exit=None)
                say(f"submit {cell.name}: Slurm job {job.job_id}")
        else:
            say("nothing to submit")
        mine = {record["slurm_jobs"][c.name] for c in sweep.cells if c.name in record.get("slurm_jobs", {})}
        if not args.wait:
            print(f"check with: python sweep.py --out {shlex.quote(str(sweep.out))} --status  (or squeue); "
                  f"submitit logs in {sweep.out / 'slurm'}, each cell's output in its log.txt", flush=True)
            return 0
        return wait(sweep, mine)

    @classmethod
    def held(cls, record: dict) -> dict:  # noqa: D102 - see Executor
        recorded = record.get("slurm_jobs", {})
        live = slurm_queue() if recorded else {}
        return {name: f"Slurm job {job} is {live[job]}" for name, job in recorded.items() if job in live}

    @classmethod
    def job_column(cls, record: dict) -> tuple | None:  # noqa: D102 - see Executor
        if not record.get("slurm_jobs"):
            return None
        live = slurm_queue()
        return "slurm job", {n: (f"{j} {live[j]}" if j in live else j) for n, j in record["slurm_jobs"].items()}


def _submit(sweep: Sweep, cells: list, args) -> list:
    """submitit's jobs, one array task per cell (SweepError when Slurm refuses them)."""
    executor = submitit.AutoExecutor(folder=str(sweep.out / "slurm"), cluster="slurm",
                                     slurm_max_num_timeout=args.max_timeouts)
    params = dict(name=f"sweep-{sweep.name}", timeout_min=args.time_min, cpus_per_task=args.cpus,
                  mem_gb=args.mem_gb, slurm_array_parallelism=args.array_parallelism,
                  slurm_signal_delay_s=args.signal_delay_s,
                  slurm_setup=[f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"])
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.gpus:
        params["gpus_per_node"] = args.gpus
    executor.update_parameters(**params)
    job_fn = CellJob(threads=args.cpus, wandb_group=sweep.name, no_wandb=sweep.no_wandb)
    try:
        return executor.map_array(job_fn, [str(c.path) for c in cells])
    except Exception as err:  # sbatch refused: partition, limits, …
        raise SweepError(f"Slurm refused the jobs: {' '.join(str(err).split())[:500]}") from None


class CellJob(Checkpointable):
    """What one Slurm array task runs: ``main.main(["--resume", cell, …])`` in the job's process.

    submitit catches SIGUSR2, which Slurm sends ``--signal_delay_s`` before the time limit (and which a
    pre-emption sends too), calls ``checkpoint`` and requeues the job; the requeued job calls this
    again with the same cell, and main.py continues from the cell's last finished round.
    """

    def __init__(self, threads: int = 1, wandb_group: str = "", no_wandb: bool = False):
        self.threads, self.wandb_group, self.no_wandb = threads, wandb_group, no_wandb

    def argv(self, cell: str) -> list:
        return ["--resume", str(cell), "--threads", str(self.threads),
                *(["--wandb_group", self.wandb_group] if self.wandb_group else []),
                *(["--no-wandb"] if self.no_wandb else [])]

    def __call__(self, cell: str) -> int:
        job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "?"))
        if os.environ.get("SLURM_ARRAY_TASK_ID"):
            job += "_" + os.environ["SLURM_ARRAY_TASK_ID"]
        write_attempt(cell, executor="slurm", host=os.uname().nodename, pid=os.getpid(), job=job, exit=None)
        with _output_to(Path(cell) / "log.txt",
                        f"sweep.py (slurm job {job}, restart {os.environ.get('SLURM_RESTART_COUNT', '0')}): "
                        f"main.py {shlex.join(self.argv(cell))}"):
            import main  # in the job's process: the entry point it runs (imported from ROOT, on PYTHONPATH)
            rc = main.main(self.argv(cell))
        write_attempt(cell, executor="slurm", host=os.uname().nodename, pid=os.getpid(), job=job, exit=rc)
        if rc != 0:
            # 130: stopped by a signal (scancel, the time limit, or the SIGTERM of a requeue, after which
            # the requeued job continues the cell); 1 or 2: see the cell's log.txt.
            raise RuntimeError(f"main.py --resume {cell} exited with {rc}; log: {Path(cell) / 'log.txt'}")
        return rc

    def checkpoint(self, cell: str) -> "DelayedSubmission":
        """Requeue the same cell: every finished round is already saved in its folder."""
        return DelayedSubmission(self, cell)


@contextlib.contextmanager
def _output_to(path: Path, header: str):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path`` (appending)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {header}\n".encode())
        log.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def slurm_queue() -> dict:
    """{job id: state} of the jobs Slurm knows now (array tasks as ``ARRAY_TASK``); {} without an answer."""
    return _squeue() or {}


def _squeue() -> dict | None:
    """What slurm_queue says, but None when squeue is there and fails (a busy controller times out)."""
    if not shutil.which("squeue"):
        return {}
    try:
        text = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True,
                              timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return dict(line.split("|", 1) for line in text.splitlines() if "|" in line)


def wait(sweep: Sweep, job_ids: set, poll_s: float = 3.0) -> int:
    """Wait until Slurm holds none of ``job_ids`` (requeued jobs count as held), then print the table."""
    names = [c.name for c in sweep.cells]
    last = {n: cell_state(sweep.out / CELLS_DIR / n)["status"] for n in names}
    empty_polls = 0
    try:
        while True:
            live = _squeue()
            for name in names:
                status = cell_state(sweep.out / CELLS_DIR / name)["status"]
                if status != last[name]:
                    say(f"{name}: {status}")
                    last[name] = status
            # A failed squeue call says nothing about the jobs: counted as empty, two of them in a row (a
            # controller slow to answer under load) ended the wait while a requeued task was still pending.
            if live is not None:
                empty_polls = 0 if job_ids & set(live) else empty_polls + 1
            if empty_polls >= 2:  # twice in a row
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        say("stopped waiting; the jobs go on (sweep.py --status shows them)")
        return 130
    jobs = read_sweep_file(sweep.out).get("slurm_jobs", {})
    return print_table(sweep.out, names, [("slurm job", jobs)])
