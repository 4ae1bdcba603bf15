"""Run a grid of main.py configurations (a sweep), locally or on Slurm, resumably.

    python sweep.py --out runs/sweeps/noise --grid strategy=random,bald --grid noise=none,gaussian \\
        --grid seed=1,2 --workers 2 -- --dataset mnist_5k --n_round 10 --no-wandb
    python sweep.py --out runs/sweeps/noise --grid_file grid.yaml -- --dataset mnist_5k   # the same grid from YAML
    python sweep.py --out runs/sweeps/noise --status                                      # table, runs nothing

Every cell of the grid (the product of its values) is one run of ``main.py`` in its own folder
``OUT/cells/<cell name>``, the name made of the grid's keys and the cell's values
(``strategy-bald_noise-gaussian_seed-1``). Flags after ``--`` go to every cell unchanged. Every cell's
configuration is parsed and checked before anything is created. ``OUT/sweep.json`` records the grid and
the pass-through flags; running the command again skips complete cells and continues the others
(``main.py --resume``) from their last finished round. A command whose cells differ from those recorded
in OUT (other flags, another grid) is refused; adding values to a grid key adds cells and keeps the
existing ones.

Executors: ``local`` runs ``--workers`` cells at a time as ``main.py`` processes (each with
``--threads cores // workers``, at least 1; output in ``CELL/log.txt``); ``slurm`` submits the
unfinished cells as one job array through submitit, requeued (and resumed) on pre-emption and timeout.

Exit codes: 0 every cell complete (or, for slurm without --wait, submitted), 1 a cell is not complete,
2 bad input (a line starting ``error:`` on stderr; nothing created), 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config import OPERATIONAL_FIELDS, Config, ConfigError  # noqa: E402  (standard library only)
from results import RUN_NAME_MAX  # noqa: E402

SWEEP_FILE = "sweep.json"
CELLS_DIR = "cells"
MAX_NAME = min(120, RUN_NAME_MAX)  # a cell's name is its run name, which main.py limits
SAFE_VALUE = re.compile(r"[A-Za-z0-9._+=,@-]+")  # the characters main.py allows in a run name
# Config fields that the sweep sets for every cell, and fields that make no sense in one: neither may be
# a grid key or a pass-through flag.
SET_BY_SWEEP = {"resume": "each cell runs as main.py --resume CELL",
                "output_dir": "cells go to OUT/cells/<cell name>",
                "run_name": "a cell's run name is its cell name",
                "wandb_group": "every cell's wandb group is the sweep's name (the basename of --out)",
                "threads": "the sweep sets --threads (local: cores // --workers; slurm: --cpus)",
                "experiment": "a sweep's seeds are a grid key (--grid seed=1,2,3)",
                "seeds": "a sweep's seeds are a grid key (--grid seed=1,2,3)"}
STOP_GRACE_S = 60  # how long stopped workers get to save and exit before they are killed


class SweepError(Exception):
    """Bad input to the sweep: reported as ``error: <message>`` on stderr, exit code 2."""


# ---------------------------------------------------------------------------------------------------
# The command line


def parse_args(argv: list) -> tuple:
    """(sweep options, pass-through main.py flags): everything after the first ``--`` passes through."""
    if "--" in argv:
        cut = argv.index("--")
        own, passthrough = argv[:cut], argv[cut + 1:]
    else:
        own, passthrough = argv, []
    p = _Parser(prog="sweep.py", description=__doc__.splitlines()[0], allow_abbrev=False,
                epilog="main.py flags for every cell go after --.")
    p.add_argument("--out", required=True, help="the sweep's folder; its basename is the sweep's name")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a main.py flag and its values (repeat for more keys)")
    p.add_argument("--grid_file", default="", help="YAML mapping of main.py flags to lists of values")
    p.add_argument("--executor", choices=("local", "slurm"), default="local")
    p.add_argument("--workers", type=int, default=1, help="local: cells run at a time")
    p.add_argument("--dry_run", action="store_true", help="print the cells and create nothing")
    p.add_argument("--status", action="store_true", help="print the status table of OUT and run nothing")
    slurm = p.add_argument_group("slurm executor")
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
    args, unknown = p.parse_known_args(own)
    if unknown:
        raise SweepError(f"unrecognized arguments: {shlex.join(unknown)} (main.py flags go after --; "
                         "see sweep.py --help)")
    if args.workers < 1:
        raise SweepError(f"--workers must be at least 1, got {args.workers}")
    for name in ("time_min", "cpus", "array_parallelism"):
        if getattr(args, name) < 1:
            raise SweepError(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args, passthrough


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # noqa: D102 - argparse hook: one line, exit code 2, from main()
        raise SweepError(f"{message} (see sweep.py --help)")


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, passthrough = parse_args(argv)
        out = Path(args.out).absolute()
        if args.status:
            return print_status(out)
        sweep = Sweep.from_command(out, args, passthrough)
        if args.dry_run:
            return sweep.dry_run()
        with sweep.lock():
            sweep.create()
            if args.executor == "slurm":
                return run_slurm(sweep, args)
            return run_local(sweep, args.workers)
    except (SweepError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------------
# Grid, cells and the sweep folder


def parse_grid(flags: list, grid_file: str = "") -> dict:
    """{key: [value strings]} from a YAML file (first) and ``KEY=V1,V2`` flags, in the order given."""
    grid: dict = {}

    def add(key, values, where):
        key = str(key).strip().removeprefix("--")
        if key in grid:
            raise SweepError(f"grid key {key!r} is given twice ({where})")
        if not values:
            raise SweepError(f"grid key {key!r} has no values ({where})")
        strings = [_value_string(key, v) for v in values]
        repeated = sorted({v for v in strings if strings.count(v) > 1})
        if repeated:
            raise SweepError(f"grid key {key!r} repeats the value(s) {', '.join(repeated)} ({where})")
        grid[key] = strings

    if grid_file:
        for key, values in _read_grid_file(grid_file).items():
            add(key, values if isinstance(values, list) else [values], grid_file)
    for flag in flags:
        key, sep, values = flag.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--grid {flag!r}: expected KEY=V1,V2,…")
        add(key, values.split(",") if values.strip() else [], f"--grid {flag}")
    return grid


def _read_grid_file(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise SweepError(f"cannot read --grid_file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SweepError(f"--grid_file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict) or not data:
        raise SweepError(f"--grid_file {path} must be a mapping of main.py flags to lists of values")
    return data


def _value_string(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (list, dict)):
        raise SweepError(f"grid key {key!r}: a value must be a number or a string, got {value!r}")
    text = str(value).strip()
    if not text:
        raise SweepError(f"grid key {key!r} has an empty value")
    return text


def check_grid_keys(grid: dict) -> None:
    """Every grid key must be a main.py flag that a cell may vary."""
    fields = {f.name for f in dataclasses.fields(Config)}
    for key in grid:
        if key in SET_BY_SWEEP:
            raise SweepError(f"grid key {key!r} cannot vary: {SET_BY_SWEEP[key]}")
        if key not in fields:
            raise SweepError(f"unknown grid key {key!r}: not a main.py flag (see python main.py --help)")
        if key in OPERATIONAL_FIELDS:
            raise SweepError(f"grid key {key!r} cannot vary: it does not change what a run computes "
                             f"(give --{key} after --, for every cell)")


def check_passthrough(passthrough: list, grid: dict) -> None:
    """Pass-through flags may not set what the sweep sets, nor a grid key."""
    fields = [f.name for f in dataclasses.fields(Config)]
    for token in passthrough:
        if not token.startswith("--") or token == "--":
            continue
        name = token[2:].split("=", 1)[0]
        for candidate in (name, name.removeprefix("no-")):
            matches = [f for f in fields if f == candidate] or [f for f in fields if f.startswith(candidate)]
            if len(matches) != 1:
                continue
            field = matches[0]
            if field in SET_BY_SWEEP:
                raise SweepError(f"{token} cannot be passed to the cells: {SET_BY_SWEEP[field]}")
            if field in grid:
                raise SweepError(f"--{field} is both a grid key and a pass-through flag")
            break


def cell_name(values: dict) -> str:
    """The folder name of a cell: ``key-value`` for every grid key, joined by ``_``.

    Only the cell's own values decide its name, so adding values to a grid keeps existing names. A
    value with other characters than [A-Za-z0-9._+=,@-] (those main.py allows in a run name), or a name
    over MAX_NAME characters, gets a stable 8-character hash of the cell's values (other characters
    become ``-``).
    """
    parts, lossy = [], False
    for key, value in values.items():
        if not SAFE_VALUE.fullmatch(value):
            lossy = True
            value = re.sub(r"[^A-Za-z0-9._+=,@-]", "-", value)
        parts.append(f"{key}-{value}")
    name = "_".join(parts)
    if lossy or len(name) > MAX_NAME:
        digest = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}-{digest}"
    return name


def cell_flags(values: dict) -> list:
    """The main.py flags that set a cell's grid values (grid keys are never switches: those are operational)."""
    return [token for key, value in values.items() for token in (f"--{key}", value)]


@dataclasses.dataclass
class Cell:
    name: str
    values: dict  # grid key -> value string
    argv: list  # the full main.py command line that defines the cell (pass-through flags, then the grid's)
    config: dict | None = None  # the resolved config.json, once validated
    path: Path | None = None


class Sweep:
    """The cells of one command, and the sweep folder OUT they live in."""

    def __init__(self, out: Path, grid: dict, passthrough: list, cells: list):
        self.out, self.grid, self.passthrough, self.cells = out, grid, passthrough, cells
        self.name = out.name
        for cell in cells:
            cell.path = out / CELLS_DIR / cell.name

    @classmethod
    def from_command(cls, out: Path, args, passthrough: list) -> "Sweep":
        """Cells from the command line (or, given neither grid nor flags, from OUT/sweep.json), validated."""
        grid = parse_grid(args.grid, args.grid_file)
        if not grid and not passthrough and (out / SWEEP_FILE).exists():
            recorded = read_sweep_file(out)  # "sweep.py --out OUT" continues the recorded sweep
            grid, passthrough = recorded["grid"], recorded["passthrough"]
        if not grid:
            raise SweepError("no grid: give --grid KEY=V1,V2 (repeatable) or --grid_file FILE")
        check_grid_keys(grid)
        check_passthrough(passthrough, grid)
        cells = []
        for combo in itertools.product(*grid.values()):
            values = dict(zip(grid, combo))
            cells.append(Cell(cell_name(values), values, [*passthrough, *cell_flags(values)]))
        names = [c.name for c in cells]
        if len(set(names)) != len(names):  # cannot happen with distinct values; kept as a guard
            raise SweepError("two cells got the same name; use simpler grid values")
        sweep = cls(out, grid, passthrough, cells)
        sweep.validate(local=args.executor == "local")
        sweep.check_against_recorded()
        return sweep

    def validate(self, local: bool) -> None:
        """Check every cell as main.py would before it starts; report every invalid cell at once.

        Every cell is parsed (presets, choices, ranges) and its strategy checked; its labelling budget is
        checked against its dataset's size, which is loaded here once per dataset. For the slurm
        executor, a dataset this machine cannot load and the --device are left to the compute nodes.
        """
        import main
        from config import parse_config
        from data import DataUnavailable
        from loop import check_strategy
        from memory import check_budget, resolve_device

        problems, seen = [], {}
        for cell in self.cells:
            try:
                cfg = parse_config(cell.argv, main.CHOICES)
                if cfg.oracle == "human":
                    raise ConfigError("--oracle human waits for a person at a web page; sweep cells run "
                                      "unattended: run main.py --oracle human yourself")
                check_strategy(cfg)
                device = resolve_device(cfg.device) if local else None  # Slurm's: the compute node's
                size = _dataset_size(cfg.dataset, cfg.data_dir, required=local, image_size=cfg.image_size,
                                     test_fraction=cfg.test_fraction)
                if size:
                    check_budget(cfg, *size, device=device)
            except (ConfigError, DataUnavailable) as err:
                problems.append(f"{cell.name}: {err}")
                continue
            cell.config = cfg.replace(resume="", run_name=cell.name, output_dir=str(self.out / CELLS_DIR),
                                      wandb_group=self.name).to_dict()
            same = seen.setdefault(_identity(cell.config), cell.name)
            if same != cell.name:
                problems.append(f"{cell.name}: the same configuration as {same}")
        if problems:
            raise SweepError(f"{len(problems)} of {len(self.cells)} cells are invalid (nothing was created):\n  "
                             + "\n  ".join(problems))

    def check_against_recorded(self) -> None:
        """OUT may hold only this sweep: every recorded cell must be here with the same configuration."""
        from results import config_differences

        if not (self.out / SWEEP_FILE).exists():
            if self.out.exists() and any(self.out.iterdir()):
                raise SweepError(f"{self.out} exists and is not a sweep folder (no {SWEEP_FILE}); use another --out")
            return
        recorded = read_sweep_file(self.out)
        mine = {c.name: c for c in self.cells}
        missing = [n for n in recorded["cells"] if n not in mine]
        if list(recorded["grid"]) != list(self.grid) or missing:
            raise SweepError(
                f"{self.out} holds another sweep (grid {_grid_text(recorded['grid'])}, flags "
                f"{shlex.join(recorded['passthrough']) or '(none)'}); this command's grid is "
                f"{_grid_text(self.grid)}: use another --out (values may only be added to the recorded grid)")
        changed = []
        for name in recorded["cells"]:
            try:
                saved = json.loads((mine[name].path / "config.json").read_text())
            except (OSError, ValueError):
                continue  # a missing cell is created again; a damaged one fails alone (main.py says why)
            diff = config_differences(saved, mine[name].config)
            if diff:
                changed.append(f"{name} ({', '.join(diff)})")
        if changed:
            raise SweepError(f"{self.out} holds another sweep: its cells differ from this command's in "
                             f"{'; '.join(changed[:3])}{' …' if len(changed) > 3 else ''}; use another --out")

    def dry_run(self) -> int:
        for cell in self.cells:
            print(f"{cell.name}  {shlex.join(cell_flags(cell.values))}")
        print(f"dry run: {len(self.cells)} cells in {self.out / CELLS_DIR}, every one with "
              f"{shlex.join(self.passthrough) or '(no pass-through flags)'}; nothing created", file=sys.stderr)
        return 0

    @contextlib.contextmanager
    def lock(self):
        """One sweep.py at a time on OUT (an advisory lock on OUT/.lock, released when the process ends)."""
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SweepError(f"another sweep.py is working on {self.out}") from None
            yield

    def create(self) -> None:
        """sweep.json and every cell's folder (kept as it is when it exists with this configuration)."""
        from results import OutputError, prepare_run_folder, write_json

        recorded = read_sweep_file(self.out) if (self.out / SWEEP_FILE).exists() else {}
        record = {"name": self.name, "grid": self.grid, "grid_keys": list(self.grid), "passthrough": self.passthrough,
                  "cells": [c.name for c in self.cells], "slurm_jobs": recorded.get("slurm_jobs", {})}
        if record != recorded:
            write_json(self.out / SWEEP_FILE, record)
        for cell in self.cells:
            try:
                prepare_run_folder(cell.path, cell.config)
            except OutputError as err:
                raise SweepError(str(err)) from None
            except ValueError:  # config.json damaged: left as it is; the cell fails and its log says why
                pass

    @property
    def no_wandb(self) -> bool:
        """--no-wandb in this command (wandb cannot be a grid key): passed on to every resumed cell."""
        return not self.cells[0].config["wandb"]


_DATASET_SIZES: dict = {}  # (dataset, data_dir, options) -> (training images, classes) or None, once per process


def _dataset_size(name: str, data_dir: str, required: bool, **options):
    """(training images, classes) of a dataset; None when it cannot be loaded here and is not required.

    ``options`` are load_dataset's (image_size, test_fraction: ``folder``'s train size depends on them).
    """
    from data import DataUnavailable, load_dataset

    key = (name, data_dir, *sorted(options.items()))
    if key not in _DATASET_SIZES or (required and _DATASET_SIZES[key] is None):
        try:
            data = load_dataset(name, data_dir, **options)
            _DATASET_SIZES[key] = (data.train_y.numel(), data.num_classes)
        except DataUnavailable as err:
            if required:
                raise
            print(f"note: {name} cannot be loaded here, so its budget is checked on the nodes ({err})",
                  file=sys.stderr)
            _DATASET_SIZES[key] = None
    return _DATASET_SIZES[key]


def _identity(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in OPERATIONAL_FIELDS}, sort_keys=True)


def _grid_text(grid: dict) -> str:
    return " ".join(f"{k}={','.join(v)}" for k, v in grid.items())


def read_sweep_file(out: Path) -> dict:
    """OUT/sweep.json, with the grid's keys in their order (JSON objects are written with sorted keys)."""
    try:
        record = json.loads((Path(out) / SWEEP_FILE).read_text())
        record["grid"] = {k: record["grid"][k] for k in record.get("grid_keys", record["grid"])}
        return record
    except FileNotFoundError:
        raise SweepError(f"{out} is not a sweep folder (no {SWEEP_FILE})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SweepError(f"{Path(out) / SWEEP_FILE} is damaged: {err}") from None


# ---------------------------------------------------------------------------------------------------
# Cell status


def cell_state(path: Path) -> dict:
    """Status, rounds finished and expected, final test accuracy and last exit code of one cell folder."""
    from results import read_run, run_status

    path = Path(path)
    state = {"status": run_status(path), "rounds": 0, "rounds_total": None, "test_acc": None, "exit": None}
    with contextlib.suppress(OSError, ValueError, KeyError):
        state["rounds_total"] = json.loads((path / "config.json").read_text())["n_round"] + 1
    with contextlib.suppress(OSError, ValueError, KeyError):
        rounds, _ = read_run(path)
        state["rounds"] = len(rounds)
        state["test_acc"] = rounds[-1]["test_acc"] if rounds else None
    with contextlib.suppress(OSError, ValueError):
        state["exit"] = json.loads((path / "attempt.json").read_text()).get("exit")
    # A run that main.py could not even start (a damaged folder, bad input, a crash before its first
    # write) stays "pending" or "running" in summary.json: the last attempt's exit code (1 or 2) says it
    # failed. (130 is an interruption; a negative code is a worker killed by a signal.)
    if state["status"] != "complete" and isinstance(state["exit"], int) and state["exit"] in (1, 2):
        state["status"] = "failed"
    return state


def write_attempt(path: Path, **fields) -> None:
    """CELL/attempt.json: the sweep's record of the last attempt at a cell (executor, host, pid, exit)."""
    from results import write_json

    with contextlib.suppress(OSError):
        write_json(Path(path) / "attempt.json", {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **fields})


def status_table(out: Path, names: list, jobs: dict | None = None) -> tuple:
    """(the table text, {cell: status})."""
    rows, statuses = [], {}
    for name in names:
        state = cell_state(out / CELLS_DIR / name)
        statuses[name] = state["status"]
        total = state["rounds_total"]
        row = [name, state["status"], f"{state['rounds']}/{total if total is not None else '?'}",
               f"{state['test_acc']:.4f}" if state["test_acc"] is not None else "–"]
        if jobs is not None:
            row.append(jobs.get(name, "–"))
        rows.append(row)
    head = ["cell", "status", "rounds", "test_acc"] + (["slurm job"] if jobs is not None else [])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    counts = {s: list(statuses.values()).count(s) for s in dict.fromkeys(statuses.values())}
    lines.append(f"{len(names)} cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines), statuses


def print_status(out: Path) -> int:
    """``--status``: the table of every recorded cell (and its Slurm job, if queued); runs nothing."""
    recorded = read_sweep_file(out)
    jobs = None
    if recorded.get("slurm_jobs"):
        live = slurm_queue()
        jobs = {n: (f"{j} {live[j]}" if j in live else j) for n, j in recorded["slurm_jobs"].items()}
    table, statuses = status_table(out, recorded["cells"], jobs)
    print(table)
    return 0 if all(s == "complete" for s in statuses.values()) else 1


# ---------------------------------------------------------------------------------------------------
# Executor: local worker processes


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def cells_to_run(sweep: Sweep) -> list:
    """The cells that are not complete and not being run elsewhere (a live process or a queued job)."""
    from results import run_status

    recorded_jobs = read_sweep_file(sweep.out).get("slurm_jobs", {})
    live_jobs = slurm_queue() if recorded_jobs else {}
    todo = []
    for cell in sweep.cells:
        status = run_status(cell.path)
        job = recorded_jobs.get(cell.name)
        if status == "complete":
            _say(f"skip   {cell.name}: complete")
        elif job in live_jobs:
            _say(f"skip   {cell.name}: Slurm job {job} is {live_jobs[job]}")
        elif status == "running":
            _say(f"skip   {cell.name}: running in another process (see its summary.json)")
        else:
            todo.append(cell)
    return todo


def run_local(sweep: Sweep, workers: int) -> int:
    """Run the unfinished cells, ``workers`` at a time, each a ``main.py --resume`` process.

    Workers run in their own sessions, so a Ctrl-C at the terminal reaches only the sweep, which passes
    SIGTERM on to them (they save and exit 130; a second Ctrl-C kills them). A sweep killed with
    SIGKILL leaves its workers to finish their cells; a rerun meanwhile skips them as running.
    """
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // workers)
    todo = cells_to_run(sweep)
    total = len(todo)
    running: dict = {}  # Popen -> (cell, start time, log file)
    stop = {"signal": None, "count": 0}

    def on_signal(signum, frame):
        stop["signal"], stop["count"] = signum, stop["count"] + 1
        if stop["count"] > 1:  # a second Ctrl-C: no more waiting
            for proc in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = 0
    try:
        while todo or running:
            while todo and len(running) < workers and stop["signal"] is None:
                cell = todo.pop(0)
                started += 1
                cmd = [sys.executable, str(ROOT / "main.py"), "--resume", str(cell.path), "--threads", str(threads),
                       "--wandb_group", sweep.name, *(["--no-wandb"] if sweep.no_wandb else [])]
                log = open(cell.path / "log.txt", "ab")
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} sweep.py: {shlex.join(cmd)}\n".encode())
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                write_attempt(cell.path, executor="local", host=os.uname().nodename, pid=proc.pid, exit=None)
                running[proc] = (cell, time.monotonic(), log)
                _say(f"start  {cell.name} ({started} of {total}, pid {proc.pid}, {threads} thread"
                     f"{'s' if threads > 1 else ''})")
            if stop["signal"] is not None:
                todo.clear()
                if "sent" not in stop:
                    stop["sent"] = time.monotonic()
                    _say(f"stopping: {len(running)} running cell(s) save their finished rounds and exit")
                    for proc in running:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(proc.pid, signal.SIGTERM)
                elif time.monotonic() - stop["sent"] > STOP_GRACE_S:
                    for proc in running:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
            for proc in [p for p in running if p.poll() is not None]:
                cell, t0, log = running.pop(proc)
                log.write(f"=== exit {proc.returncode}\n".encode())
                log.close()
                write_attempt(cell.path, executor="local", host=os.uname().nodename, pid=proc.pid,
                              exit=proc.returncode)
                status = cell_state(cell.path)["status"]
                how = f"exit {proc.returncode}" if proc.returncode >= 0 else f"killed by signal {-proc.returncode}"
                hint = "" if status == "complete" else f"; log: {cell.path / 'log.txt'}"
                _say(f"finish {cell.name}: {status} ({how}, {time.monotonic() - t0:.0f} s{hint})")
            time.sleep(0.2)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    table, statuses = status_table(sweep.out, [c.name for c in sweep.cells])
    print(table, flush=True)
    if stop["signal"] is not None:
        _say("interrupted: run the same command again to continue")
        return 130
    return 0 if all(s == "complete" for s in statuses.values()) else 1


# ---------------------------------------------------------------------------------------------------
# Executor: Slurm, through submitit

try:
    from submitit.helpers import Checkpointable as _Checkpointable
    from submitit.helpers import DelayedSubmission
except ImportError:  # submitit is in requirements.txt; without it only the local executor works
    _Checkpointable, DelayedSubmission = object, None


class CellJob(_Checkpointable):
    """What one Slurm array task runs: ``main.main(["--resume", cell, …])`` in the job's process.

    submitit catches SIGUSR2, which Slurm sends ``--signal_delay_s`` before the time limit (and which a
    pre-emption sends too), calls ``checkpoint`` and requeues the job; the requeued job calls this
    again with the same cell, and main.py continues from the cell's last finished round.
    """

    def __init__(self, threads: int = 1, wandb_group: str = "", no_wandb: bool = False):
        self.threads, self.wandb_group, self.no_wandb = threads, wandb_group, no_wandb
        self.root = str(ROOT)

    def argv(self, cell: str) -> list:
        return ["--resume", str(cell), "--threads", str(self.threads),
                *(["--wandb_group", self.wandb_group] if self.wandb_group else []),
                *(["--no-wandb"] if self.no_wandb else [])]

    def __call__(self, cell: str) -> int:
        if self.root not in sys.path:
            sys.path.insert(0, self.root)
        import main

        job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "?"))
        if os.environ.get("SLURM_ARRAY_TASK_ID"):
            job += "_" + os.environ["SLURM_ARRAY_TASK_ID"]
        write_attempt(cell, executor="slurm", host=os.uname().nodename, pid=os.getpid(), job=job, exit=None)
        with _output_to(Path(cell) / "log.txt",
                        f"sweep.py (slurm job {job}, restart {os.environ.get('SLURM_RESTART_COUNT', '0')}): "
                        f"main.py {shlex.join(self.argv(cell))}"):
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
    """{job id: state} of the jobs Slurm knows now (array tasks as ``ARRAY_TASK``); {} without squeue."""
    if not shutil.which("squeue"):
        return {}
    try:
        text = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True,
                              timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    return dict(line.split("|", 1) for line in text.splitlines() if "|" in line)


def run_slurm(sweep: Sweep, args) -> int:
    """Submit the unfinished cells as one job array; with --wait, wait for it and print the table."""
    import submitit
    from results import write_json

    if not shutil.which("sbatch"):
        raise SweepError("--executor slurm: sbatch is not on this machine (a local cluster: "
                         "sudo bash scripts/local_slurm.sh)")
    todo = cells_to_run(sweep)
    record = read_sweep_file(sweep.out)
    if todo:
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
            jobs = executor.map_array(job_fn, [str(c.path) for c in todo])
        except Exception as err:  # sbatch refused: partition, limits, …
            raise SweepError(f"Slurm refused the jobs: {' '.join(str(err).split())[:500]}") from None
        record["slurm_jobs"] = {**record.get("slurm_jobs", {}), **{c.name: j.job_id for c, j in zip(todo, jobs)}}
        write_json(sweep.out / SWEEP_FILE, record)
        for cell, job in zip(todo, jobs):
            write_attempt(cell.path, executor="slurm", job=job.job_id, exit=None)
            _say(f"submit {cell.name}: Slurm job {job.job_id}")
    else:
        _say("nothing to submit")
    mine = {record["slurm_jobs"][c.name] for c in sweep.cells if c.name in record.get("slurm_jobs", {})}
    if not args.wait:
        print(f"check with: python sweep.py --out {shlex.quote(str(sweep.out))} --status  (or squeue); "
              f"submitit logs in {sweep.out / 'slurm'}, each cell's output in its log.txt", flush=True)
        return 0
    return wait_slurm(sweep, mine)


def wait_slurm(sweep: Sweep, job_ids: set, poll_s: float = 3.0) -> int:
    """Wait until Slurm holds none of ``job_ids`` (requeued jobs count as held), then print the table."""
    names = [c.name for c in sweep.cells]
    last = {n: cell_state(sweep.out / CELLS_DIR / n)["status"] for n in names}
    empty_polls = 0
    try:
        while True:
            live = slurm_queue()
            for name in names:
                status = cell_state(sweep.out / CELLS_DIR / name)["status"]
                if status != last[name]:
                    _say(f"{name}: {status}")
                    last[name] = status
            empty_polls = 0 if job_ids & set(live) else empty_polls + 1
            if empty_polls >= 2:  # twice in a row: one failed squeue call does not end the wait
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _say("stopped waiting; the jobs go on (sweep.py --status shows them)")
        return 130
    table, statuses = status_table(sweep.out, names, read_sweep_file(sweep.out).get("slurm_jobs", {}))
    print(table, flush=True)
    return 0 if all(s == "complete" for s in statuses.values()) else 1


if __name__ == "__main__":
    # Run as the module "sweep", not "__main__", so that submitit pickles CellJob by reference
    # (a Slurm job imports it from this file through PYTHONPATH).
    import sweep as _sweep

    sys.exit(_sweep.main())
