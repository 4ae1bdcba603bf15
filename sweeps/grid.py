"""A sweep's grid, its cells and its folder: parsing, names, validation before anything is created, status.

Every cell of the grid (the product of its values) is one run of ``main.py`` in its own folder
``OUT/cells/<cell name>``; ``OUT/sweep.json`` records the grid and the pass-through flags. The executors
(``sweeps.executors``) run the cells; this module never starts one.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import math
import os
import re
import reprlib
import shlex
import sys
import time
from pathlib import Path

import yaml

from config import OPERATIONAL_FIELDS, Config, ConfigError, parse_config
from data import DataUnavailable, load_dataset
from memory import check_budget, resolve_device
from preflight import preflight
from registries import CHOICES
from results import (RUN_NAME_MAX, DamagedRun, OutputError, config_differences, prepare_run_folder, read_config,
                     read_run, run_status, write_json)

SWEEP_FILE = "sweep.json"
CELLS_DIR = "cells"
MAX_NAME = min(120, RUN_NAME_MAX)  # a cell's name is its run name, which main.py limits
SAFE_VALUE = re.compile(r"[A-Za-z0-9._+=,@-]+")  # the characters main.py allows in a run name
MAX_CELLS = 10_000  # the default --max_cells: every cell is parsed and checked (about 10 ms each) up front
MAX_YAML_DEPTH = 8  # a grid file is a mapping of lists of scalars (3 levels); deeper is a mistake or an attack
BRIEF_CHARS = 80  # how much of a user's value an error message quotes
# Config fields that the sweep sets for every cell, and fields that make no sense in one: neither may be
# a grid key or a pass-through flag.
SET_BY_SWEEP = {"resume": "each cell runs as main.py --resume CELL",
                "output_dir": "cells go to OUT/cells/<cell name>",
                "run_name": "a cell's run name is its cell name",
                "wandb_group": "every cell's wandb group is the sweep's name (the basename of --out)",
                "threads": "the sweep sets --threads (local: cores // --workers; slurm: --cpus)",
                "experiment": "a sweep's seeds are a grid key (--grid seed=1,2,3)",
                "seeds": "a sweep's seeds are a grid key (--grid seed=1,2,3)",
                "export_to": "it exports one run's labelled images; every cell would put its own into the same "
                             "folder"}


class SweepError(Exception):
    """Bad input to the sweep: reported as ``error: <message>`` on stderr, exit code 2."""


# ---------------------------------------------------------------------------------------------------
# Short descriptions of user input, for one-line error messages

# reprlib never builds the whole repr of a big value: it stops after a few items and characters.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = BRIEF_CHARS
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 6
_REPR.maxlevel = 3


def shorten(text: str, limit: int = BRIEF_CHARS) -> str:
    """``text``, cut to ``limit`` characters with a note of its length when longer."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def brief(value) -> str:
    """A short repr of a user's value (a key, a grid value, a YAML node) for an error message."""
    return shorten(_REPR.repr(value))


def say(message: str) -> None:
    """A progress line on stdout, with the time."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# ---------------------------------------------------------------------------------------------------
# The grid


def parse_grid(flags: list, grid_file: str = "") -> dict:
    """{key: [value strings]} from a YAML file (first) and ``KEY=V1,V2`` flags, in the order given."""
    grid: dict = {}

    def add(key, values, where):
        key = str(key).strip().removeprefix("--")
        if key in grid:
            raise SweepError(f"grid key {brief(key)} is given twice ({where})")
        if not values:
            raise SweepError(f"grid key {brief(key)} has no values ({where})")
        strings = [_value_string(key, v) for v in values]
        repeated = sorted(v for v, n in collections.Counter(strings).items() if n > 1)
        if repeated:
            raise SweepError(f"grid key {brief(key)} repeats the value(s) {shorten(', '.join(repeated))} ({where})")
        grid[key] = strings

    if grid_file:
        for key, values in _read_grid_file(grid_file).items():
            add(key, values if isinstance(values, list) else [values], shorten(grid_file))
    for flag in flags:
        key, sep, values = flag.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--grid {brief(flag)}: expected KEY=V1,V2,…")
        add(key, values.split(",") if values.strip() else [], f"--grid {shorten(flag)}")
    return grid


class _GridFileRefused(Exception):
    """A grid file that is valid YAML but not allowed: anchors, aliases, deep nesting."""


class _GridLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases, and with a nesting limit.

    A few hundred bytes of nested aliases expand to gigabytes (each alias repeats a whole node), and a
    grid file has no use for them; deep nesting costs recursion. Both are refused while the file is
    composed, before any value is built.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):  # noqa: D102 - yaml.composer hook, called once per node
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise _GridFileRefused(f"line {event.start_mark.line + 1}: YAML anchors and aliases (& and *) are not "
                                   "allowed in a grid file; write every value out")
        if self.depth >= MAX_YAML_DEPTH:
            raise _GridFileRefused(f"line {event.start_mark.line + 1}: nested deeper than {MAX_YAML_DEPTH} levels; "
                                   "a grid file maps main.py flags to lists of values")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _read_grid_file(path: str) -> dict:
    where = f"--grid_file {shorten(path)}"
    try:
        with open(path, encoding="utf-8") as f:
            loader = _GridLoader(f)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except OSError as err:
        raise SweepError(f"cannot read {where}: {err.strerror or err}") from None
    except _GridFileRefused as err:
        raise SweepError(f"{where}: {err}") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{where} is not valid YAML: {shorten(' '.join(str(err).split()), 300)}") from None
    except UnicodeDecodeError as err:
        raise SweepError(f"{where} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(data, dict) or not data:
        raise SweepError(f"{where} must be a mapping of main.py flags to lists of values")
    return data


def _value_string(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (list, dict)):
        raise SweepError(f"grid key {brief(key)}: a value must be a number or a string, got {brief(value)}")
    text = str(value).strip()
    if not text:
        raise SweepError(f"grid key {brief(key)} has an empty value")
    return text


def check_grid_keys(grid: dict) -> None:
    """Every grid key must be a main.py flag that a cell may vary."""
    fields = {f.name for f in dataclasses.fields(Config)}
    for key in grid:
        if key in SET_BY_SWEEP:
            raise SweepError(f"grid key {key!r} cannot vary: {SET_BY_SWEEP[key]}")
        if key not in fields:
            raise SweepError(f"unknown grid key {brief(key)}: not a main.py flag (see python main.py --help)")
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
                raise SweepError(f"{shorten(token)} cannot be passed to the cells: {SET_BY_SWEEP[field]}")
            if field in grid:
                raise SweepError(f"--{field} is both a grid key and a pass-through flag")
            break


def check_size(grid: dict, max_cells: int) -> None:
    """The number of cells, from the value lists alone, must not exceed ``max_cells``."""
    count = math.prod(len(values) for values in grid.values())
    if count > max_cells:
        sizes = " × ".join(str(len(values)) for values in grid.values())
        raise SweepError(f"the grid has {count:,} cells ({sizes}), more than --max_cells {max_cells:,}; every cell "
                         "is parsed and checked before anything runs: use fewer values, or raise --max_cells")


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


def _grid_text(grid: dict) -> str:
    return " ".join(f"{k}={','.join(v)}" for k, v in grid.items())


# ---------------------------------------------------------------------------------------------------
# Cells and the sweep folder


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
    def from_command(cls, out: Path, flags: list, grid_file: str, passthrough: list,
                     max_cells: int = MAX_CELLS) -> "Sweep":
        """Cells from the command line (or, given neither grid nor flags, from OUT/sweep.json), not yet validated."""
        grid = parse_grid(flags, grid_file)
        if not grid and not passthrough and (out / SWEEP_FILE).exists():
            recorded = read_sweep_file(out)  # "sweep.py --out OUT" continues the recorded sweep
            grid, passthrough = recorded["grid"], recorded["passthrough"]
        if not grid:
            raise SweepError("no grid: give --grid KEY=V1,V2 (repeatable) or --grid_file FILE")
        check_grid_keys(grid)
        check_passthrough(passthrough, grid)
        check_size(grid, max_cells)
        cells = []
        for combo in itertools.product(*grid.values()):
            values = dict(zip(grid, combo))
            cells.append(Cell(cell_name(values), values, [*passthrough, *cell_flags(values)]))
        names = [c.name for c in cells]
        if len(set(names)) != len(names):  # cannot happen with distinct values; kept as a guard
            raise SweepError("two cells got the same name; use simpler grid values")
        return cls(out, grid, passthrough, cells)

    def validate(self, executor) -> None:
        """Check every cell as main.py would before it starts; report every invalid cell at once.

        Every cell is parsed (presets, choices, ranges) and its strategy checked; its labelling budget is
        checked against its dataset's size, which is loaded here once per dataset. Where the executor
        declares that cells run elsewhere (``executor.cells_run_here`` false), a dataset this machine
        cannot load and the --device are left to the machines that run them.
        """
        here = executor.cells_run_here
        problems, seen, budgets = [], {}, {}
        for cell in self.cells:
            try:
                cfg = parse_config(cell.argv, CHOICES)
                preflight(cfg, unattended=True)
                device = resolve_device(cfg.device) if here else None  # elsewhere: the compute node's
                size = _dataset_size(cfg.dataset, cfg.data_dir, required=here, image_size=cfg.image_size,
                                     test_fraction=cfg.test_fraction)
                if size:
                    _check_budget_once(cfg, size, budgets, device)
            except (ConfigError, DataUnavailable) as err:
                problems.append(f"{cell.name}: {shorten(str(err), 400)}")
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
        if os.path.lexists(self.out) and not self.out.is_dir():
            raise SweepError(f"--out {self.out} exists and is not a folder: give a new folder or a sweep's")
        if not (self.out / SWEEP_FILE).exists():
            if self.out.exists() and any(self.out.iterdir()):
                raise SweepError(f"{self.out} exists and is not a sweep folder (no {SWEEP_FILE}); use another --out")
            return
        recorded = read_sweep_file(self.out)
        mine = {c.name: c for c in self.cells}
        missing = [n for n in recorded["cells"] if n not in mine]
        if list(recorded["grid"]) != list(self.grid) or missing:
            raise SweepError(
                f"{self.out} holds another sweep (grid {shorten(_grid_text(recorded['grid']))}, flags "
                f"{shorten(shlex.join(recorded['passthrough'])) or '(none)'}); this command's grid is "
                f"{shorten(_grid_text(self.grid))}: use another --out (values may only be added to the recorded grid)")
        changed = []
        for name in recorded["cells"]:
            try:
                saved = read_config(mine[name].path)
            except (OSError, OutputError):
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
        """One sweep.py at a time on OUT (an advisory lock on OUT/.lock, released when the process ends).
        An OUT this call created and that holds nothing but the lock when the block fails is removed again."""
        new = not os.path.lexists(self.out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            f = open(self.out / ".lock", "w")
        except OSError as err:
            raise SweepError(f"cannot use --out {self.out}: {err.strerror or err}") from None
        try:
            with f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise SweepError(f"another sweep.py is working on {self.out}") from None
                yield
        except OutputError as err:  # a file of the sweep could not be written (full disk, read-only)
            raise SweepError(str(err)) from None
        finally:
            if new and os.listdir(self.out) == [".lock"]:
                (self.out / ".lock").unlink()
                self.out.rmdir()

    def create(self) -> None:
        """sweep.json and every cell's folder (kept as it is when it exists with this configuration)."""
        recorded = read_sweep_file(self.out) if (self.out / SWEEP_FILE).exists() else {}
        record = {"name": self.name, "grid": self.grid, "grid_keys": list(self.grid), "passthrough": self.passthrough,
                  "cells": [c.name for c in self.cells], "slurm_jobs": recorded.get("slurm_jobs", {})}
        if record != recorded:
            write_json(self.out / SWEEP_FILE, record)
        for cell in self.cells:
            try:
                prepare_run_folder(cell.path, cell.config)
            except DamagedRun:  # config.json damaged: left as it is; the cell fails and its log says why
                pass
            except OutputError as err:
                raise SweepError(str(err)) from None

    def cells_to_run(self, held: dict) -> list:
        """The cells that are not complete and not being run elsewhere: a live process, or a job that an
        executor's scheduler holds (``held``: {cell name: why})."""
        todo = []
        for cell in self.cells:
            status = run_status(cell.path)
            if status == "complete":
                say(f"skip   {cell.name}: complete")
            elif cell.name in held:
                say(f"skip   {cell.name}: {held[cell.name]}")
            elif status == "running":
                say(f"skip   {cell.name}: running in another process (see its summary.json)")
            else:
                todo.append(cell)
        return todo

    @property
    def no_wandb(self) -> bool:
        """--no-wandb in this command (wandb cannot be a grid key): passed on to every resumed cell."""
        return not self.cells[0].config["wandb"]


_DATASET_SIZES: dict = {}  # (dataset, data_dir, options) -> (training images, classes) or None, once per process


def _dataset_size(name: str, data_dir: str, required: bool, **options):
    """(training images, classes) of a dataset; None when it cannot be loaded here and is not required.

    ``options`` are load_dataset's (image_size, test_fraction: ``folder``'s train size depends on them).
    """
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


def _check_budget_once(cfg: Config, size: tuple, answers: dict, device) -> None:
    """check_budget, asked once per configuration apart from its seed (``answers``: the answers so far).

    A seed changes what a run draws, never what it holds; seeds are the grid key that every sweep has
    (it cannot have --seeds), and check_budget builds a model's head on the meta device (milliseconds).
    """
    key = (size, str(device), _identity({**cfg.to_dict(), "seed": None}))
    if key not in answers:
        try:
            check_budget(cfg, *size, device=device)
            answers[key] = ""
        except ConfigError as err:
            answers[key] = str(err)
    if answers[key]:
        raise ConfigError(answers[key])


def _identity(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in OPERATIONAL_FIELDS}, sort_keys=True)


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
# A cell's run files are read by results (read_config, read_run, run_status); the sweep adds its own
# attempt.json.


def cell_state(path: Path) -> dict:
    """Status, rounds finished and expected, final test accuracy and last exit code of one cell folder.

    A cell whose run files are damaged is "damaged" (the status table lists it and goes on), or
    "failed" once an attempt at it has failed."""
    path = Path(path)
    state = {"status": run_status(path), "rounds": 0, "rounds_total": None, "test_acc": None, "exit": None}
    try:
        state["rounds_total"] = read_config(path)["n_round"] + 1
        rounds, _ = read_run(path)
        state["rounds"] = len(rounds)
        state["test_acc"] = rounds[-1]["test_acc"] if rounds else None
    except FileNotFoundError:
        pass  # not created yet
    except DamagedRun:
        state["status"] = "damaged"
    with contextlib.suppress(OSError, ValueError):
        attempt = json.loads((path / "attempt.json").read_text(encoding="utf-8"))
        state["exit"] = attempt.get("exit") if isinstance(attempt, dict) else None
    # A run that main.py could not even start (a damaged folder, bad input, a crash before its first
    # write) stays "pending" or "running" in summary.json: the last attempt's exit code (1 or 2) says it
    # failed. (130 is an interruption; a negative code is a worker killed by a signal.)
    if state["status"] != "complete" and isinstance(state["exit"], int) and state["exit"] in (1, 2):
        state["status"] = "failed"
    return state


def write_attempt(path: Path, **fields) -> None:
    """CELL/attempt.json: the sweep's record of the last attempt at a cell (executor, host, pid, exit)."""
    with contextlib.suppress(OSError):
        write_json(Path(path) / "attempt.json", {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **fields})


# ---------------------------------------------------------------------------------------------------
# Status


def status_table(out: Path, names: list, columns: list = ()) -> tuple:
    """(the table text, {cell: status}); ``columns``: more columns, each (header, {cell: text})."""
    rows, statuses = [], {}
    for name in names:
        state = cell_state(out / CELLS_DIR / name)
        statuses[name] = state["status"]
        total = state["rounds_total"]
        row = [name, state["status"], f"{state['rounds']}/{total if total is not None else '?'}",
               f"{state['test_acc']:.4f}" if state["test_acc"] is not None else "–"]
        rows.append(row + [texts.get(name, "–") for _, texts in columns])
    head = ["cell", "status", "rounds", "test_acc"] + [header for header, _ in columns]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    counts = {s: list(statuses.values()).count(s) for s in dict.fromkeys(statuses.values())}
    lines.append(f"{len(names)} cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines), statuses


def print_table(out: Path, names: list, columns: list = ()) -> int:
    """Print the status table; 0 when every cell is complete, else 1."""
    table, statuses = status_table(out, names, columns)
    print(table, flush=True)
    return 0 if all(s == "complete" for s in statuses.values()) else 1
