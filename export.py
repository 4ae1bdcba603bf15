"""The labelled files of a ``--dataset folder`` run: labels.csv's rows, and --export_to's copies of them.

labels.csv (in the run folder, written through results.RunDir) lists every labelled image's file, relative
to --data_dir, with its label as the next round trains on it (a correction included), who gave it (the
person, or the folder's own label) and when. It is rewritten after every recorded round.

``--export_to DIR`` puts each file of labels.csv into ``DIR/<class name>/`` when the run finishes: a hard
link when DIR is on the same filesystem as the images, else a copy. Inside its class folder a file keeps
its path below ``train/<class>/`` or ``unlabeled/`` (a name taken twice gets ``-2``, ``-3``…). DIR must be
new, empty, or hold only an earlier export of the same run (listed in DIR's MARKER file): a file a user
has there is never overwritten, and the export deletes nothing. What it exports comes from the run's
checked records (acquired.csv, corrections.csv), never from labels.csv, which is a report to read.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from config import ConfigError
from data import DATASETS
from results import OutputError, write_json

MARKER = ".active_learning_export.json"  # in DIR: the run that exported there, and the files it wrote


def label_rows(data, state, answered_at: dict, labelled_by: dict | None = None) -> list:
    """labels.csv's rows (results.LABEL_COLUMNS): the labelled pool images in pool order, their labels now.

    ``data``: loop.StudyData with ``files``; ``state``: the PoolState; ``answered_at`` and ``labelled_by``:
    when each label was given and under which name, by pool position (a person's answers and corrections;
    the folder's own labels have neither)."""
    labelled_by = labelled_by or {}
    positions = state.labeled_positions()
    dataset_idx = data.pool_idx.cpu()[positions].tolist()
    true = data.pool_y.cpu()[positions].tolist()
    rounds = (state.round_P[positions] - 1).tolist()  # as acquired.csv counts: -1 is the initial set
    return [{"path": data.files[d], "label_name": data.classes[label], "label": label, "round": r,
             "answered_at": answered_at.get(p, ""), "who": "folder" if t >= 0 else "person",
             "pool_position": p, "dataset_index": d, "labeller": labelled_by.get(p, ""), "flagged": 0}
            for p, d, label, t, r in zip(positions.tolist(), dataset_idx, state.labels_of(positions).tolist(), true,
                                         rounds)]


def flagged_rows(data, state, acquired: list) -> list:
    """labels.csv's rows of the images a person flagged ("none of these") and nobody labelled since: no class
    (label -1), listed for the person to look at, never exported into a class folder."""
    flagged = {row["pool_position"]: row for row in acquired if row.get("flagged") and row["label"] < 0}
    return [{"path": data.files[row["dataset_index"]], "label_name": "", "label": -1, "round": row["round"],
             "answered_at": "", "who": "person", "pool_position": p, "dataset_index": row["dataset_index"],
             "labeller": row.get("labeller", ""), "flagged": 1}
            for p, row in sorted(flagged.items()) if int(state.round_P[p]) < 0]


class LabelsFile:
    """labels.csv (and labels.jsonl) of one run (kept for folder datasets only: the others have no files to name)."""

    def __init__(self, data, run_dir):
        self.data, self.run_dir = data, run_dir
        # When each label was given and by whom: read back on --resume (no other file keeps earlier rounds'
        # answer times), then the oracle's, newer, on every update
        self.answered_at = {row["pool_position"]: row["answered_at"] for row in run_dir.labels}
        self.labelled_by = {row["pool_position"]: row.get("labeller", "") for row in run_dir.labels}

    def update(self, state, answered_at: dict, labelled_by: dict | None = None) -> None:
        """Rewrite labels.csv from the labelled set (its labels as the next round trains on them), then the
        images flagged "none of these"."""
        if self.data.files is None:
            return
        self.answered_at.update(answered_at)
        self.labelled_by.update(labelled_by or {})
        self.run_dir.write_labels(label_rows(self.data, state, self.answered_at, self.labelled_by)
                                  + flagged_rows(self.data, state, self.run_dir.acquired))


def check_export_dir(cfg, run_path=None) -> None:
    """ConfigError (before a run starts) unless --export_to can be done: a folder dataset, one run, and
    a folder that does not exist, holds no file, or only those an earlier export of the run at
    ``run_path`` (a resumed one) wrote. Checked on the configuration a --resume resolved to."""
    folder = cfg.export_to
    if not DATASETS[cfg.dataset].has_files:
        raise ConfigError("--export_to copies the labelled images' files: it needs --dataset folder")
    if cfg.experiment:
        raise ConfigError("--export_to exports one run's labels: it cannot be combined with --experiment")
    dest = Path(folder)
    for split in ("train", "test", "unlabeled"):
        inside = Path(cfg.data_dir, split).resolve()
        if dest.resolve() == inside or inside in dest.resolve().parents:
            raise ConfigError(f"--export_to {folder} is inside the dataset's {split}/ folder: the export would add "
                              f"its class folders to the dataset; give a folder outside {cfg.data_dir}'s train/, "
                              "test/ and unlabeled/")
    if os.path.lexists(dest):
        if not dest.is_dir():
            raise ConfigError(f"--export_to {folder}: it exists and is not a folder; give a new or empty folder")
        foreign = _foreign_files(dest, _exported_before(dest, run_path))
        if foreign:
            raise ConfigError(f"--export_to {folder} is not empty: it holds {len(foreign)} file(s) that this run "
                              f"did not export (such as {foreign[0]}); give a new or empty folder (a file there is "
                              "never overwritten)")
    _check_can_write(dest, folder)


def _check_can_write(dest: Path, folder: str) -> None:
    """ConfigError unless a file can be created in ``dest``, or (when it does not exist yet) in the nearest
    folder above it that does: found before a run, not after an hour of labelling."""
    base = dest
    while not os.path.lexists(base) and base.parent != base:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"--export_to {folder}: {base} is not a folder, so the export cannot be written there")
    try:
        with tempfile.NamedTemporaryFile(dir=base, prefix=".export-write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"--export_to {folder}: cannot write in {base}: {err.strerror or err}") from None


def export_labelled(rows: list, data, folder: str, run_path) -> tuple:
    """Put each file of ``rows`` (label_rows' rows, built from the run's own records) into
    ``folder``/<label name>/: (hard links made, copies made).

    Nothing here trusts a row: its path must be one of ``data``'s files and its class one of its classes,
    and every target must lie inside ``folder`` (OutputError otherwise, before anything is written). Nothing
    is deleted or overwritten: a target that is there already must be this file (a hard link or the same
    bytes) and listed by an earlier export of this run."""
    dest = Path(folder)
    wanted = export_names(checked_rows(rows, data))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--export_to: cannot create {folder}: {err.strerror or err}") from None
    with _locked_folder(dest):  # checked again under the lock: two runs never mix their images in one DIR
        return _export(wanted, Path(data.root), dest, folder, run_path)


@contextlib.contextmanager
def _locked_folder(dest: Path):
    """Hold an exclusive flock on the folder ``dest`` itself (no lock file to list, leave or remove)."""
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"--export_to {dest}: another run is exporting into it now; nothing was exported "
                              "(give another folder)") from None
        yield
    finally:
        os.close(fd)


def _export(wanted: dict, root: Path, dest: Path, folder: str, run_path) -> tuple:
    """export_labelled's work, with ``dest`` locked."""
    ours = _exported_before(dest, run_path)
    foreign = _foreign_files(dest, ours | set(wanted))  # a file at a wanted name: reported as taken below
    taken = [rel for rel in wanted if os.path.lexists(dest / rel)
             and not (rel in ours and _same_file(root / wanted[rel], dest / rel))]
    if foreign:
        raise OutputError(f"--export_to {folder} is not empty: it holds {len(foreign)} file(s) that this run did "
                          f"not export (such as {foreign[0]}); nothing was exported")
    if taken:
        raise OutputError(f"--export_to: {dest / taken[0]} exists and was not exported by this run; nothing was "
                          f"exported (a file there is never overwritten): move it away, then export again with "
                          f"main.py --resume {run_path} --export_to {folder}")
    # Listed first, so that whatever a crash leaves half-done is known as this run's
    _write_marker(dest, run_path, ours | set(wanted))
    linked = copied = 0
    for rel, path in wanted.items():
        source, target = root / path, dest / rel
        if os.path.lexists(target):  # this run's earlier export of the same file (checked above)
            continue
        how = _place(source, target, dest)
        linked, copied = linked + (how == "link"), copied + (how == "copy")
    _write_marker(dest, run_path, ours | set(wanted))
    return linked, copied


def checked_rows(rows: list, data) -> list:
    """``rows``, after checking each names one of the dataset's files and one of its classes (OutputError
    naming the first that does not)."""
    files, classes = set(data.files or ()), list(data.classes or ())
    for row in rows:
        if row["path"] not in files:
            raise OutputError(f"--export_to: {row['path']!r} is not one of the dataset's files; nothing was exported")
        if row["label_name"] not in classes or classes.index(row["label_name"]) != row["label"]:
            raise OutputError(f"--export_to: {row['label_name']!r} (label {row['label']}) is not a class of the "
                              "dataset; nothing was exported")
    return rows


def export_names(rows: list) -> dict:
    """{path inside the export folder: the image's path} for labels.csv's ``rows``: <label name>/, then the
    file's path below train/<class>/ or unlabeled/; a name taken twice gets -2, -3… before its suffix."""
    names: dict = {}
    for row in sorted(rows, key=lambda row: row["path"]):
        parts = Path(row["path"]).parts
        inner = parts[2:] if parts[0] == "train" and len(parts) > 2 else parts[1:] if len(parts) > 1 else parts
        name = Path(row["label_name"], *inner)
        stem, n = name, 1
        while name.as_posix() in names:
            n += 1
            name = stem.with_name(f"{stem.stem}-{n}{stem.suffix}")
        names[name.as_posix()] = row["path"]
    return names


def _place(source: Path, target: Path, dest: Path) -> str:
    """Hard-link ``source`` at ``target``, or copy it where a link cannot be made ("link" or "copy"); never
    over a file (OutputError when one appeared there meanwhile), never outside ``dest``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(dest.resolve()):  # a folder there links elsewhere
            raise OutputError(f"--export_to: {target.parent} leads outside {dest}; nothing is written there")
        try:
            os.link(source, target)
            return "link"
        except FileExistsError:
            raise
        except OSError:  # another filesystem, or one without hard links
            pass
        # A copy under a name of its own first, so that a crash never leaves a partial file at ``target``
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        out = open(partial, "xb")
        try:
            with out, open(source, "rb") as src:
                shutil.copyfileobj(src, out)
            os.link(partial, target)
        finally:
            partial.unlink()  # the file this call created just above
        return "copy"
    except FileExistsError:
        raise OutputError(f"--export_to: {target} appeared while exporting; it was not overwritten") from None
    except OSError as err:
        raise OutputError(f"--export_to: cannot write {target}: {err.strerror or err}") from None


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``b`` is ``a`` (a hard link) or a byte-for-byte copy of it."""
    try:
        if os.path.samefile(a, b):
            return True
        if a.stat().st_size != b.stat().st_size:
            return False
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def _files(dest: Path) -> list:
    """Every file (and link) under ``dest`` but the marker, relative and sorted; folders do not count."""
    found = []
    for folder, dirs, files in os.walk(dest):
        dirs.sort()
        found += [Path(folder, f).relative_to(dest).as_posix() for f in files]
        found += [Path(folder, d).relative_to(dest).as_posix() for d in dirs if Path(folder, d).is_symlink()]
    return sorted(rel for rel in found if rel != MARKER)


def _foreign_files(dest: Path, known: set) -> list:
    """The files (and links) in ``dest`` that are not in ``known``, relative and sorted."""
    return [rel for rel in _files(dest) if rel not in known]


def _exported_before(dest: Path, run_path) -> set:
    """The files an earlier export of the run at ``run_path`` wrote in ``dest`` (none for another run's)."""
    try:
        marker = json.loads((dest / MARKER).read_text())
        if run_path is not None and marker["run"] == str(Path(run_path).resolve()):
            return set(marker["files"])
    except (OSError, ValueError, TypeError, KeyError):  # none, or not ours: its files are not this run's
        pass
    return set()


def _write_marker(dest: Path, run_path, files: set) -> None:
    write_json(dest / MARKER, {"run": str(Path(run_path).resolve()), "files": sorted(files)})
