"""Run folders: config, per-round metrics, acquired indices and summary, written atomically.

A run folder is self-describing: everything a report needs is in it.

- Every file is rewritten through an exclusively created temporary file in the same folder, fsync and
  os.replace, so a run killed at any moment leaves each file at its previous complete version or at its
  new one, never half-written. A failed write (a full disk) removes its temporary file.
- rounds.csv is the record of which rounds finished. A round writes acquired.csv (its queries) first
  and rounds.csv second, so acquired.csv can hold one round more than rounds.csv (the process died
  between the two writes), never fewer. Readers use read_run, which drops such rows; a resumed run
  rewrites acquired.csv without them.
- summary.json is rewritten after every round with the status, the rounds completed and the pid and
  host of the process; run_status tells a live run from one whose process died.
- Folders are created exclusively: a new run never writes into an earlier run's folder.
"""
from __future__ import annotations

import csv
import contextlib
import io
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import pandas as pd

from config import DEFAULT_CONFIG, OPERATIONAL_FIELDS

# n_skipped: queried images the oracle did not label ("I don't know"); label_s: seconds the oracle took to
# answer (a person labelling; ~0 when simulated), not counted in query_s.
ROUND_COLUMNS = ["round", "n_labeled", "n_corrupted", "n_skipped", "train_loss", "train_epochs", "train_steps",
                 "val_acc", "val_loss", "test_acc", "test_loss", "test_error", "n_scored", "train_s", "eval_s",
                 "query_s", "label_s", "round_s"]
# label: the label the oracle gave (training uses it; -1: not answered, "I don't know"); true_label: the
# dataset's (differs under label noise; -1 for an image the dataset has no label for).
ACQUIRED_COLUMNS = ["round", "pool_position", "dataset_index", "label", "true_label", "score"]
TIMING_COLUMNS = ["train_s", "eval_s", "query_s", "label_s", "round_s"]
# summary.json "status": pending (prepared, never started), running, complete, failed, interrupted
# (Ctrl-C, SIGTERM, or a process that died: see run_status).
STATUSES = ("pending", "running", "complete", "failed", "interrupted")
RUN_NAME_MAX = 100
_RUN_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,@-]*")
WRITE_CHECK_BYTES = 1 << 20  # check_writable writes this much: a full disk fails here, not mid-run
# --warm_start: the last two rounds' trained weights (a round writes it before its rounds.csv row, so a
# resumed round finds the weights of the round before it whichever side of that row the run stopped).
WEIGHTS_FILE = "weights.pt"


class OutputError(RuntimeError):
    """The output folder cannot be used (reported as one line, exit code 2)."""


def check_run_name(name: str) -> None:
    """A run name is one plain folder name: no path separators, no '..', no control characters."""
    if len(name) > RUN_NAME_MAX:
        raise OutputError(f"--run_name is {len(name)} characters long; at most {RUN_NAME_MAX} are allowed")
    if not _RUN_NAME_OK.fullmatch(name):
        raise OutputError(f"--run_name {name!r} must start with a letter or digit and hold only letters, "
                          "digits and . _ + = , @ - (it names one folder inside --output_dir)")


def check_writable(folder: str) -> None:
    """Create ``folder`` if needed and prove that a run's files fit in it (a full disk fails here)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-") as f:
            f.write(b"\0" * WRITE_CHECK_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise OutputError(f"cannot write to --output_dir {folder!r}: {err.strerror or err}") from None


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (exclusive temp file, fsync, rename).

    Raises OutputError (one line) when the file cannot be written, for example on a full disk; the
    previous version of ``path`` is then untouched and no temporary file is left behind.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` in one step, as atomic_write_text does; ``mode``: the new file's
    permission bits (mkstemp's 0600 when None)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
        raise


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


def _read_csv_rows(path: Path) -> list:
    """Rows of a CSV written by _csv_text, with numbers parsed back exactly (ints as int)."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_run(run_path) -> tuple:
    """(finished round rows, acquired rows) of a run folder, consistent with each other.

    Acquired rows of a round that is not in rounds.csv (queried, then the process died before the round
    was recorded) are dropped; the initial set (round -1) is kept.
    """
    path = Path(run_path)
    rounds = _read_csv_rows(path / "rounds.csv")
    finished = {row["round"] for row in rounds}
    acquired = [row for row in _read_csv_rows(path / "acquired.csv")
                if row["round"] == -1 or row["round"] in finished]
    return rounds, acquired


class RunDir:
    """One run's folder: config.json, rounds.csv, acquired.csv and summary.json."""

    def __init__(self, path: Path, environment: dict | None = None):
        self.path = Path(path)
        self.rounds: list = []
        self.acquired: list = []
        self.environment = environment or {}
        self.planned_rounds = None

    @classmethod
    def create(cls, parent: str, name: str) -> "RunDir":
        """A new, empty folder ``parent/name_<time>`` (with a -2, -3 … suffix if that exists)."""
        check_run_name(name)
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

    @classmethod
    def open(cls, path) -> "RunDir":
        """An existing run folder, with its finished rounds and their acquired items loaded."""
        run = cls(path)
        run.rounds, run.acquired = read_run(path)
        return run

    @property
    def name(self) -> str:
        return self.path.name

    def write_config(self, config: dict) -> None:
        write_json(self.path / "config.json", config)

    def read_config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def write_weights(self, data: bytes) -> None:
        """Replace weights.pt (the trained weights a warm-started round starts from), atomically."""
        atomic_write_bytes(self.path / WEIGHTS_FILE, data)

    def read_weights(self) -> bytes | None:
        """weights.pt's bytes, or None when the run has not written it."""
        path = self.path / WEIGHTS_FILE
        return path.read_bytes() if path.exists() else None

    def record_acquired(self, acquired: list) -> None:
        """Add labelled items to acquired.csv (round -1 is the initial set), atomically."""
        self.acquired.extend(acquired)
        atomic_write_text(self.path / "acquired.csv", _csv_text(self.acquired, ACQUIRED_COLUMNS))

    def reset_acquired(self, acquired: list) -> None:
        """Rewrite acquired.csv with exactly these rows (a resumed run drops an unfinished round's)."""
        self.acquired = []
        self.record_acquired(acquired)

    def append_round(self, row: dict, acquired: list) -> None:
        """Record one finished round: its queries, then its metrics (the commit), then the summary."""
        self.record_acquired(acquired)
        self.rounds.append(row)
        atomic_write_text(self.path / "rounds.csv", _csv_text(self.rounds, ROUND_COLUMNS))
        self.write_summary(self.summary("running"))

    def summary(self, status: str) -> dict:
        """summary.json: status, progress, final metrics, timing medians, process and environment."""
        rows = self.rounds
        last = rows[-1] if rows else {}
        queried = [r for r in rows if r["n_scored"] > 0]  # the last round trains and evaluates only

        def median(key, subset=rows):
            return float(pd.Series([r[key] for r in subset]).median()) if subset else None

        return {"status": status, "rounds_completed": len(rows), "rounds_planned": self.planned_rounds,
                "final_round": last.get("round"), "final_n_labeled": last.get("n_labeled"),
                "final_val_acc": last.get("val_acc"), "final_test_acc": last.get("test_acc"),
                "median_round_s": median("round_s"), "median_train_s": median("train_s"),
                "median_query_s": median("query_s", queried), "median_eval_s": median("eval_s"),
                "pid": os.getpid(), "host": platform.node(), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "environment": self.environment}

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / "summary.json", summary)

    def finish(self, status: str) -> dict:
        """Write the final summary. On a full disk, overwrite the old summary in place as a last resort."""
        summary = self.summary(status)
        try:
            self.write_summary(summary)
        except OutputError:
            _overwrite_in_place(self.path / "summary.json", {"status": status, "rounds_completed": len(self.rounds),
                                                             "error": "the disk was full"})
        return summary


def _overwrite_in_place(path: Path, obj: dict) -> None:
    """Best effort on a full disk: rewrite an existing file's blocks, padding with spaces (valid JSON)."""
    text = json.dumps(obj)
    try:
        size = path.stat().st_size
        if len(text) <= size:
            with open(path, "r+", encoding="utf-8") as f:
                f.write(text + " " * (size - len(text)))
                f.flush()
                os.fsync(f.fileno())
    except OSError:
        pass


def config_differences(saved: dict, requested: dict) -> list:
    """Names of the fields (operational ones aside) whose values differ between two config dicts.

    A field that a saved config.json lacks (it was added to Config after that run was made) counts as
    its default, which is what a resumed run uses; new fields keep the old behaviour as their default.
    """
    keys = (set(saved) | set(requested)) - OPERATIONAL_FIELDS
    saved = {**DEFAULT_CONFIG, **saved}
    return sorted(k for k in keys if saved.get(k) != requested.get(k))


def prepare_run_folder(path, config: dict) -> "RunDir":
    """A run folder at exactly ``path``, ready for ``main.py --resume path``.

    A new folder gets config.json and a "pending" summary.json. An existing one is kept as it is when
    its config.json matches ``config`` (operational fields aside), and refused (OutputError) otherwise.
    """
    path = Path(path)
    check_run_name(path.name)
    saved_file = path / "config.json"
    if saved_file.exists():
        diff = config_differences(json.loads(saved_file.read_text()), config)
        if diff:
            raise OutputError(f"{path} holds a run with another configuration (differs in: {', '.join(diff)})")
        return RunDir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create run folder {path}: {err.strerror or err}") from None
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
