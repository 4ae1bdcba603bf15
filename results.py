"""Run folders: config, per-round metrics, acquired indices and summary, written atomically.

A run folder is self-describing: everything a report needs is in it.

- Every file is rewritten through an exclusively created temporary file in the same folder, fsync and
  os.replace, so a run killed at any moment leaves each file at its previous complete version or at its
  new one, never half-written. A failed write (a full disk) removes its temporary file.
- rounds.csv is the record of which rounds finished. A round writes acquired.csv (its queries) first
  and rounds.csv second, so acquired.csv can hold one round more than rounds.csv (the process died
  between the two writes), never fewer. Readers use read_run, which drops such rows; a resumed run
  rewrites acquired.csv without them.
- A round's corrections (corrections.csv: an oracle changed an earlier answer) are written with its
  queries, before its rounds.csv row; read_corrections drops those of a round that did not finish.
  labels.csv (--dataset folder: each labelled image's file and label) is rewritten after every round.
- Every file of a run folder is read here and only here (read_config, read_summary, read_run,
  read_corrections, read_labels, read_rounds, run_status); a damaged file is a DamagedRun naming it.
- A process that runs a folder holds its lock (``locked``): a second process is refused at once.
- summary.json is rewritten after every round with the status, the rounds completed and the pid and
  host of the process; run_status tells a live run from one whose process died.
- Folders are created exclusively: a new run never writes into an earlier run's folder.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import pandas as pd

from config import DEFAULT_CONFIG, LEGACY_DEFAULTS, OPERATIONAL_FIELDS, Config, ConfigError

# n_skipped: queried images the oracle did not label ("I don't know"); label_s: seconds the oracle took to
# answer (a person labelling; ~0 when simulated), not counted in query_s. n_noisy: the round's queried
# images whose input carries noise; stop_kappa: Cohen's kappa between this round's and the previous round's
# predictions on the stop set (empty in round 0, and where the previous round's are not known).
# member_test_acc: the mean test accuracy of an ensemble's members (test_acc is their mean prediction's);
# a single network is its own only member.
ROUND_COLUMNS = ["round", "n_labeled", "n_corrupted", "n_skipped", "train_loss", "train_epochs", "train_steps",
                 "val_acc", "val_loss", "test_acc", "test_loss", "test_error", "member_test_acc", "n_scored",
                 "train_s", "eval_s", "query_s", "label_s", "round_s", "n_noisy", "stop_kappa", "test_acc_clean",
                 "test_acc_noisy"]
# label: the label the oracle gave (training uses it; -1: not answered, "I don't know"); true_label: the
# dataset's (differs under label noise; -1 for an image the dataset has no label for); noisy: 1 when the
# image's input carries noise (--noise), else 0; chosen_by: the round whose model chose it (round − 1 with
# --query_lag 1; -1 for the initial set); flagged: 1 when a person answered "none of these" (label -1);
# labeller: the name the person answered under ("" when none was given, and for other oracles).
ACQUIRED_COLUMNS = ["round", "pool_position", "dataset_index", "label", "true_label", "score", "noisy", "draw_prob",
                    "chosen_by", "flagged", "labeller"]
TIMING_COLUMNS = ["train_s", "eval_s", "query_s", "label_s", "round_s"]
# corrections.csv: an answer the oracle changed after it was recorded (a person's correction), made while
# round ``round``'s batch was open, so round + 1 trains on ``label`` (acquired.csv keeps the first answer).
CORRECTION_COLUMNS = ["round", "pool_position", "dataset_index", "old_label", "label", "at"]
# labels.csv (--dataset folder): every labelled image's file (relative to --data_dir) and its label as the
# next round trains on it; who: "person" or "folder" (the folder's own label); round as in acquired.csv.
# labeller: the name the label's person gave ("" when none); flagged: 1 for an image a person answered "none
# of these" (label -1, no class: listed, never exported into a class folder).
LABEL_COLUMNS = ["path", "label_name", "label", "round", "answered_at", "who", "pool_position", "dataset_index",
                 "labeller", "flagged"]
# summary.json "status": pending (prepared, never started), running, complete, failed, interrupted
# (Ctrl-C, SIGTERM, or a process that died: see run_status).
STATUSES = ("pending", "running", "complete", "failed", "interrupted")
RUN_NAME_MAX = 100
_RUN_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,@-]*")
WRITE_CHECK_BYTES = 1 << 20  # check_writable writes this much: a full disk fails here, not mid-run
# --warm_start: the last two rounds' trained weights (a round writes it before its rounds.csv row, so a
# resumed round finds the weights of the round before it whichever side of that row the run stopped).
WEIGHTS_FILE = "weights.pt"
LOCK_FILE = ".lock"  # flock'ed by the process that runs the folder (see locked)


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


def spreadsheet_text(value):
    """``value``, with an apostrophe before it when it is text a spreadsheet would take for a formula."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _csv_text(rows: list, columns: list) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- reading
# This module is the only reader of a run folder's files: each reader checks what it reads, and a
# damaged file is one DamagedRun line naming it, never a traceback deep in a caller.

# Columns a run folder of any version has; newer columns (n_corrupted, n_skipped, label_s, member_test_acc,
# n_noisy, stop_kappa, true_label, noisy) are filled in by the loop when an older folder is resumed.
NEWER_ROUND_COLUMNS = ("n_corrupted", "n_skipped", "label_s", "member_test_acc", "n_noisy", "stop_kappa",
                       "test_acc_clean", "test_acc_noisy")
REQUIRED_ROUND_COLUMNS = [c for c in ROUND_COLUMNS if c not in NEWER_ROUND_COLUMNS]
REQUIRED_ACQUIRED_COLUMNS = [c for c in ACQUIRED_COLUMNS if c not in ("true_label", "noisy", "draw_prob",
                                                                                  "chosen_by", "flagged", "labeller")]
_TEXT_ACQUIRED = {"labeller"}
_FLOAT_ACQUIRED = {"score", "draw_prob"}
_TEXT_CORRECTIONS = {"at"}
_TEXT_LABELS = {"path", "label_name", "answered_at", "who", "labeller"}


class DamagedRun(OutputError):
    """A run folder's file cannot be read as this project writes it (one line naming the file, exit 2)."""


def _damaged(path: Path, what: str) -> DamagedRun:
    return DamagedRun(f"{path} cannot be read: {what} (the run folder is damaged: restore the file, or start a "
                      "new run)")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, "it is not UTF-8 text") from None
    except IsADirectoryError:
        raise _damaged(path, "it is a folder, not a file") from None
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise _damaged(path, str(err.strerror or err)) from None


def _read_json_object(path: Path) -> dict:
    """A JSON object from ``path`` (FileNotFoundError when it is missing, DamagedRun when it is not one)."""
    try:
        obj = json.loads(_read_text(path))
    except (json.JSONDecodeError, RecursionError) as err:
        raise _damaged(path, f"it is not valid JSON ({type(err).__name__})") from None
    if not isinstance(obj, dict):
        raise _damaged(path, f"it holds a JSON {type(obj).__name__}, not an object")
    return obj


def is_run_folder(path) -> bool:
    """Whether ``path`` holds a run (its config.json)."""
    return (Path(path) / "config.json").is_file()


FINGERPRINT_KEY = "dataset_fingerprint"  # in config.json beside the flags: Dataset.fingerprint


def read_config(run_path) -> dict:
    """config.json of a run folder, every field present (older folders: new fields at their defaults)
    and valid by Config's own rules (the registries' names are checked by the caller that has them).

    FileNotFoundError when there is no config.json; DamagedRun when it is not a valid configuration.
    """
    path = Path(run_path) / "config.json"
    saved = _read_json_object(path)
    saved.pop(FINGERPRINT_KEY, None)  # not a flag: read_fingerprint
    try:
        return Config.from_dict({**DEFAULT_CONFIG, **LEGACY_DEFAULTS, **saved}).validate().to_dict()
    except (ConfigError, TypeError) as err:
        raise _damaged(path, str(err).replace("\n", " ")) from None


def read_fingerprint(run_path) -> dict | None:
    """The dataset fingerprint config.json recorded (Dataset.fingerprint), or None (folders before it)."""
    path = Path(run_path) / "config.json"
    found = _read_json_object(path).get(FINGERPRINT_KEY)
    if found is not None and not (isinstance(found, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                for k, v in found.items())):
        raise _damaged(path, f"its {FINGERPRINT_KEY} is not a mapping of names to digests")
    return found


def read_summary(run_path) -> dict:
    """summary.json of a run folder ({} when there is none); DamagedRun when it is damaged."""
    path = Path(run_path) / "summary.json"
    try:
        summary = _read_json_object(path)
    except FileNotFoundError:
        return {}
    if summary.get("status", "pending") not in STATUSES:
        raise _damaged(path, f"it has an unknown status {str(summary.get('status'))[:40]!r}")
    pid = summary.get("pid")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
        raise _damaged(path, f"its pid is {str(pid)[:40]!r}, not a process number")
    return summary


def _read_csv_rows(path: Path, required: list, floats: set, texts: set = frozenset()) -> list:
    """Rows of a CSV this module wrote, numbers parsed back exactly (ints as int) and checked: every
    required column present, every cell a number of its kind (``texts``: kept as text); [] when the file
    does not exist."""
    try:
        text = _read_text(path)
    except FileNotFoundError:
        return []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise _damaged(path, f"it has no column {', '.join(missing)}")
    rows = []
    for line, row in enumerate(reader, start=2):
        if None in row or None in row.values():
            raise _damaged(path, f"line {line} has {'more' if None in row else 'fewer'} cells than the header")
        try:
            rows.append({k: v if k in texts else _number(v, float_only=k in floats) for k, v in row.items()})
        except ValueError:
            bad = next(k for k, v in row.items() if k not in texts and not _is_number(v))
            raise _damaged(path, f"line {line}, column {bad}: {row[bad][:40]!r} is not a number") from None
    return rows


def _number(text: str, float_only: bool = False):
    """A cell's number: an int when it is written as one (unless ``float_only``), else a float. An empty
    cell is NaN, no value (what pandas writes for NaN, e.g. round 0's stop_kappa after an edit)."""
    if text == "":
        return math.nan
    if not float_only:
        try:
            return int(text)
        except ValueError:
            pass
    return float(text)


def _is_number(text: str) -> bool:
    try:
        _number(text)
        return True
    except ValueError:
        return False


def read_run(run_path) -> tuple:
    """(finished round rows, acquired rows) of a run folder, consistent with each other.

    Acquired rows of a round that is not in rounds.csv (queried, then the process died before the round
    was recorded) are dropped; the initial set (round -1) is kept. DamagedRun when a file is damaged.
    """
    path = Path(run_path)
    rounds = _read_round_rows(path)
    finished = {row["round"] for row in rounds}
    acquired = [row for row in _read_csv_rows(path / "acquired.csv", REQUIRED_ACQUIRED_COLUMNS, _FLOAT_ACQUIRED,
                                              _TEXT_ACQUIRED)
                if row["round"] == -1 or row["round"] in finished]
    if any(isinstance(row[c], float) for row in acquired for c in row if c not in _FLOAT_ACQUIRED | _TEXT_ACQUIRED):
        raise _damaged(path / "acquired.csv", "an index, round or label is not a whole number")
    return rounds, acquired


def read_corrections(run_path, finished: set) -> list:
    """corrections.csv's rows of the finished rounds (a round's corrections are written before its
    rounds.csv row, as its queries are); [] when the run has none. DamagedRun when it is damaged."""
    path = Path(run_path) / "corrections.csv"
    rows = _read_csv_rows(path, CORRECTION_COLUMNS, floats=set(), texts=_TEXT_CORRECTIONS)
    if any(isinstance(row[c], float) for row in rows for c in row if c not in _TEXT_CORRECTIONS):
        raise _damaged(path, "an index, round or label is not a whole number")
    return [row for row in rows if row["round"] in finished]


def read_labels(run_path) -> list:
    """labels.csv's rows ([] when the run has none); DamagedRun when it is damaged."""
    required = [c for c in LABEL_COLUMNS if c not in ("labeller", "flagged")]  # newer columns: may be missing
    return _read_csv_rows(Path(run_path) / "labels.csv", required, floats=set(), texts=_TEXT_LABELS)


def _read_round_rows(path: Path) -> list:
    """rounds.csv's rows, checked: every round number whole and listed once."""
    rounds = _read_csv_rows(path / "rounds.csv", REQUIRED_ROUND_COLUMNS, floats=set())
    numbers = [row["round"] for row in rounds]
    if len(set(numbers)) != len(numbers) or any(isinstance(r, float) for r in numbers):
        raise _damaged(path / "rounds.csv", "a round number is repeated or not a whole number")
    return rounds


def read_rounds(run_path) -> pd.DataFrame:
    """rounds.csv of a run folder as a DataFrame (its finished rounds; acquired.csv is not read)."""
    rounds = _read_round_rows(Path(run_path))
    return pd.DataFrame(rounds, columns=list(rounds[0]) if rounds else ROUND_COLUMNS)


_HELD_LOCKS: set = set()


@contextlib.contextmanager
def locked(run_path):
    """Hold the run folder's lock (an exclusive flock on its LOCK_FILE) for the block: one process at a
    time writes a run; a second one is refused at once (OutputError) instead of interleaving its rounds."""
    path = (Path(run_path) / LOCK_FILE).resolve()
    if path in _HELD_LOCKS:  # this process holds it already (main locks a resumed folder before run_single)
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OutputError(f"cannot lock run folder {run_path}: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{run_path}: another process is running this run folder now (it holds "
                              f"{LOCK_FILE}); wait for it, or stop it first") from None
        _HELD_LOCKS.add(path)
        try:
            yield
        finally:
            _HELD_LOCKS.discard(path)
    finally:
        os.close(fd)  # closing releases the lock


class RunDir:
    """One run's folder: config.json, rounds.csv, acquired.csv and summary.json (and corrections.csv,
    labels.csv when a run has them)."""

    def __init__(self, path: Path, environment: dict | None = None):
        self.path = Path(path)
        self.rounds: list = []
        self.acquired: list = []
        self.corrections: list = []
        self.labels: list = []
        self.environment = environment or {}
        self.planned_rounds = None
        self.stopped_because = None  # why the run ended before its planned rounds (--stop_when_stable)
        self.pool_noisy_fraction = None  # the pool's fraction of images whose input carries noise

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
        run.corrections = read_corrections(path, {row["round"] for row in run.rounds})
        run.labels = read_labels(path)
        try:  # what the loop recorded about the run beside its rounds stays in a rewritten summary
            summary = read_summary(path)
        except DamagedRun:
            summary = {}
        run.stopped_because = summary.get("stopped_because")
        run.pool_noisy_fraction = summary.get("pool_noisy_fraction")
        return run

    @property
    def name(self) -> str:
        return self.path.name

    def write_config(self, config: dict, fingerprint: dict | None = None) -> None:
        """config.json: the run's flags, and the fingerprint of the data it runs on."""
        write_json(self.path / "config.json", {**config, **({FINGERPRINT_KEY: fingerprint} if fingerprint else {})})

    def read_config(self) -> dict:
        return read_config(self.path)

    def write_weights(self, data: bytes) -> None:
        """Replace weights.pt (the trained weights a warm-started round starts from), atomically."""
        atomic_write_bytes(self.path / WEIGHTS_FILE, data)

    def read_weights(self) -> bytes | None:
        """weights.pt's bytes, or None when the run has not written it."""
        path = self.path / WEIGHTS_FILE
        return path.read_bytes() if path.exists() else None

    def record_acquired(self, acquired: list) -> None:
        """Add labelled items to acquired.csv (round -1 is the initial set), atomically; a row that does not
        say which round's model chose it was chosen by its own round's."""
        self.acquired.extend({"flagged": 0, "labeller": "", **row, "chosen_by": row.get("chosen_by", row["round"])}
                             for row in acquired)
        safe = [{**row, "labeller": spreadsheet_text(row["labeller"])} for row in self.acquired]
        atomic_write_text(self.path / "acquired.csv", _csv_text(safe, ACQUIRED_COLUMNS))

    def reset_acquired(self, acquired: list) -> None:
        """Rewrite acquired.csv with exactly these rows (a resumed run drops an unfinished round's)."""
        self.acquired = []
        self.record_acquired(acquired)

    def record_corrections(self, corrections: list) -> None:
        """Add corrections to corrections.csv (created by the first), atomically."""
        if corrections:
            self.corrections.extend(corrections)
            atomic_write_text(self.path / "corrections.csv", _csv_text(self.corrections, CORRECTION_COLUMNS))

    def reset_corrections(self, corrections: list) -> None:
        """Rewrite corrections.csv, when the run has one, with exactly these rows (as reset_acquired)."""
        self.corrections = list(corrections)
        if (self.path / "corrections.csv").exists():
            atomic_write_text(self.path / "corrections.csv", _csv_text(self.corrections, CORRECTION_COLUMNS))

    def write_labels(self, rows: list) -> None:
        """Replace labels.csv and labels.jsonl with these rows, atomically; in labels.csv a text cell that a
        spreadsheet would run as a formula (=, +, -, @ first) is written with a leading apostrophe, as OWASP
        advises."""
        self.labels = list(rows)
        safe = [{k: spreadsheet_text(v) if k in _TEXT_LABELS else v for k, v in row.items()} for row in self.labels]
        atomic_write_text(self.path / "labels.csv", _csv_text(safe, LABEL_COLUMNS))
        # The same rows as JSON Lines, for labelling tools (values as they are: JSON runs no formulas)
        atomic_write_text(self.path / "labels.jsonl", "".join(
            json.dumps({c: row[c] for c in LABEL_COLUMNS}, ensure_ascii=False) + "\n" for row in self.labels))

    def upgrade_records(self, true_label, noisy) -> None:
        """Complete a folder written by an older version, in memory, so the rewritten files stay whole:
        acquired.csv's true_label and noisy (``true_label(p)``, ``noisy(p)`` of pool position p: the
        dataset's label, whether its input carries noise), and the NEWER_ROUND_COLUMNS of rounds.csv (0 where
        nothing of the kind existed then; NaN where it is not known)."""
        for row in self.acquired:
            with contextlib.suppress(IndexError):  # a position outside the pool: the resume's checks refuse it
                row.setdefault("true_label", true_label(row["pool_position"]))
                row.setdefault("noisy", noisy(row["pool_position"]))
            row.setdefault("draw_prob", math.nan)  # before stochastic acquisition: top-k, nothing drawn
            row.setdefault("chosen_by", row["round"])  # before --query_lag: the round's own model chose
            row.setdefault("flagged", 0)  # before "none of these": nothing flagged, nobody named
            row.setdefault("labeller", "")
        for row in self.rounds:
            row.setdefault("n_corrupted", 0)  # before label noise: clean labels only
            row.setdefault("n_skipped", 0)  # before the human oracle: nothing was skipped
            row.setdefault("label_s", 0.0)
            row.setdefault("member_test_acc", row["test_acc"])  # before ensembles: one model, its own member
            row.setdefault("n_noisy", sum(a.get("noisy", 0) for a in self.acquired if a["round"] == row["round"]))
            row.setdefault("stop_kappa", math.nan)
            row.setdefault("test_acc_clean", math.nan)  # before the clean/noisy split: not known
            row.setdefault("test_acc_noisy", math.nan)

    def append_round(self, row: dict, acquired: list, corrections: list = ()) -> None:
        """Record one finished round: its corrections and queries, then its metrics (the commit), then the
        summary. ``row`` must hold exactly ROUND_COLUMNS (ValueError naming the difference)."""
        if set(row) != set(ROUND_COLUMNS):
            raise ValueError(f"a round record must hold exactly rounds.csv's columns: missing "
                             f"{sorted(set(ROUND_COLUMNS) - set(row))}, unknown "
                             f"{sorted(set(row) - set(ROUND_COLUMNS))}")
        self.record_corrections(corrections)
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
                "stopped_because": self.stopped_because, "pool_noisy_fraction": self.pool_noisy_fraction,
                "pid": os.getpid(), "host": platform.node(), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "environment": self.environment}

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / "summary.json", summary)

    def finish(self, status: str) -> dict:
        """Write the final summary. On a full disk, overwrite the old summary in place as a last resort.
        A complete run's error.txt (an earlier attempt's failure) is kept under a name that says it is past."""
        if status == "complete" and (self.path / "error.txt").exists():
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            with contextlib.suppress(OSError):
                os.replace(self.path / "error.txt", self.path / f"error_before_{stamp}.txt")
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
    if is_run_folder(path):
        diff = config_differences(read_config(path), config)
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
    """The status of a run folder as it is now: one of STATUSES, or "damaged" (summary.json unreadable).

    summary.json says "running" while a process works on the run. A process that was killed (kill -9,
    a dead node) cannot update it, so "running" with a recorded pid that no longer exists on this host
    is reported as "interrupted". A folder without summary.json is "pending".
    """
    try:
        summary = read_summary(run_path)
    except DamagedRun:
        return "damaged"
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

