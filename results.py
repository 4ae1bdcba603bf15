"""Run folders: config, per-round metrics, acquired indices and summary, written atomically.

A run folder is self-describing: everything a report needs is in it. Every file is rewritten through
a temporary file and os.replace, so a run killed at any moment leaves each file either at its previous
complete version or at its new one, never half-written. Folders are created exclusively: a new run
never writes into an earlier run's folder.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from config import OPERATIONAL_FIELDS

ROUND_COLUMNS = ["round", "n_labeled", "train_loss", "train_epochs", "train_steps", "val_acc", "val_loss",
                 "test_acc", "test_loss", "test_error", "n_scored", "train_s", "eval_s", "query_s", "round_s"]
ACQUIRED_COLUMNS = ["round", "pool_position", "dataset_index", "label", "score"]
TIMING_COLUMNS = ["train_s", "eval_s", "query_s", "round_s"]
# summary.json "status": pending (prepared, never started), running, complete, failed, interrupted
# (Ctrl-C, SIGTERM, or a process that died: see run_status).
STATUSES = ("pending", "running", "complete", "failed", "interrupted")


class OutputError(RuntimeError):
    """The output folder cannot be used (reported as one line, exit code 2)."""


def check_writable(folder: str) -> None:
    """Create ``folder`` if needed and prove a file can be written in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"cannot write to --output_dir {folder!r}: {err.strerror or err}") from None


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (write a sibling temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _csv_text(rows: list, columns: list) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class RunDir:
    """One run's folder: config.json, rounds.csv, acquired.csv and summary.json."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rounds: list = []
        self.acquired: list = []

    @classmethod
    def create(cls, parent: str, name: str) -> "RunDir":
        """A new, empty folder ``parent/name_<time>`` (with a -2, -3 … suffix if that exists)."""
        os.makedirs(parent, exist_ok=True)
        base = Path(parent) / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"
        for attempt in range(1, 1000):
            path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise OutputError(f"cannot find a free run folder name next to {base}")

    @property
    def name(self) -> str:
        return self.path.name

    def write_config(self, config: dict) -> None:
        write_json(self.path / "config.json", config)

    def record_acquired(self, acquired: list) -> None:
        """Add labelled items to acquired.csv (round -1 is the initial set), atomically."""
        self.acquired.extend(acquired)
        atomic_write_text(self.path / "acquired.csv", _csv_text(self.acquired, ACQUIRED_COLUMNS))

    def append_round(self, row: dict, acquired: list) -> None:
        """Add one finished round's metrics and the items it queried; rewrite both files atomically."""
        self.record_acquired(acquired)
        self.rounds.append(row)
        atomic_write_text(self.path / "rounds.csv", _csv_text(self.rounds, ROUND_COLUMNS))

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / "summary.json", summary)


def config_differences(saved: dict, requested: dict) -> list:
    """Names of the fields (operational ones aside) whose values differ between two config dicts."""
    keys = (set(saved) | set(requested)) - OPERATIONAL_FIELDS
    return sorted(k for k in keys if saved.get(k) != requested.get(k))


def prepare_run_folder(path, config: dict) -> "RunDir":
    """A run folder at exactly ``path``, ready for ``main.py --resume path``.

    A new folder gets config.json and a "pending" summary.json. An existing one is kept as it is when
    its config.json matches ``config`` (operational fields aside), and refused (OutputError) otherwise.
    """
    path = Path(path)
    saved_file = path / "config.json"
    if saved_file.exists():
        diff = config_differences(json.loads(saved_file.read_text()), config)
        if diff:
            raise OutputError(f"{path} holds a run with another configuration (differs in: {', '.join(diff)})")
        return RunDir(path)
    path.mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    run.write_config(config)
    run.write_summary({"status": "pending", "rounds_completed": 0})
    return run


def run_status(run_path) -> str:
    """The status of a run folder as it is now, one of STATUSES.

    summary.json says "running" while a process works on the run. A process that was killed (kill -9,
    a dead node) cannot update it, so "running" with a recorded pid that no longer exists on this host
    is reported as "interrupted". A folder without summary.json is "pending".
    """
    try:
        summary = json.loads((Path(run_path) / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return "pending"
    status = summary.get("status", "pending")
    if status == "running" and summary.get("host") == platform.node() and not _pid_alive(summary.get("pid")):
        return "interrupted"
    return status


def _pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_rounds(run_path) -> pd.DataFrame:
    """rounds.csv of a run folder as a DataFrame."""
    return pd.read_csv(Path(run_path) / "rounds.csv")


def aggregate_runs(run_paths: list) -> tuple:
    """(per-round mean and standard error across runs, one row per run with its final round).

    Only rounds that every run finished are aggregated, so a crashed seed cannot shift the curve.
    """
    frames = []
    for path in run_paths:
        df = read_rounds(path)
        df.insert(0, "run", Path(path).name)
        df.insert(1, "seed", json.loads((Path(path) / "config.json").read_text())["seed"])
        frames.append(df)
    runs = pd.concat(frames, ignore_index=True)
    common = runs.groupby("round")["run"].nunique()
    runs_complete = runs[runs["round"].isin(common[common == len(run_paths)].index)]
    metrics = ["n_labeled", "val_acc", "test_acc", "test_error", *TIMING_COLUMNS]
    grouped = runs_complete.groupby("round")[metrics]
    per_round = grouped.mean().add_suffix("_mean").join(grouped.sem(ddof=1).add_suffix("_sem"))
    per_round.insert(0, "n_runs", len(run_paths))
    finals = runs.sort_values("round").groupby("run").tail(1).reset_index(drop=True)
    return per_round.reset_index(), finals


def mean_sem(values) -> tuple:
    """Mean and standard error of the mean (NaN error for a single value)."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)
