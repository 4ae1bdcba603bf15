"""results.py: exclusive run folders, atomic round files."""
import json

import pandas as pd
import pytest

from results import ROUND_COLUMNS, OutputError, RunDir, atomic_write_text, check_writable


def row(r, acc, n=10):
    base = {c: 0.0 for c in ROUND_COLUMNS}
    return {**base, "round": r, "n_labeled": n + 5 * r, "test_acc": acc, "val_acc": acc, "test_error": 1 - acc}


def test_create_never_reuses_a_folder(tmp_path):
    a = RunDir.create(str(tmp_path), "x")
    b = RunDir.create(str(tmp_path), "x")
    c = RunDir.create(str(tmp_path), "x")
    assert len({a.path, b.path, c.path}) == 3
    assert all(p.path.is_dir() for p in (a, b, c))


def test_rounds_are_appended_and_files_replaced_atomically(tmp_path):
    run = RunDir.create(str(tmp_path), "r")
    run.record_acquired([{"round": -1, "pool_position": 3, "dataset_index": 9, "label": 1, "score": float("nan")}])
    for r in range(3):
        run.append_round(row(r, 0.5 + r / 10), [{"round": r, "pool_position": 10 + r, "dataset_index": 20 + r,
                                                 "label": r, "score": 1.0}])
        df = pd.read_csv(run.path / "rounds.csv")
        assert list(df.columns) == ROUND_COLUMNS and df["round"].tolist() == list(range(r + 1))
    acquired = pd.read_csv(run.path / "acquired.csv")
    assert acquired["round"].tolist() == [-1, 0, 1, 2]
    assert not list(run.path.glob(".*tmp")), "no temporary file is left behind"


def test_atomic_write_keeps_old_content_until_replaced(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_check_writable(tmp_path):
    check_writable(str(tmp_path / "new" / "nested"))
    assert (tmp_path / "new" / "nested").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        check_writable(str(blocker / "runs"))


def test_config_json_is_written(tmp_path):
    run = RunDir.create(str(tmp_path), "c")
    run.write_config({"seed": 1, "seeds": [1, 2]})
    assert json.loads((run.path / "config.json").read_text()) == {"seed": 1, "seeds": [1, 2]}


def test_a_field_missing_from_an_older_config_counts_as_its_default():
    from config import DEFAULT_CONFIG
    from results import config_differences

    older = {k: v for k, v in DEFAULT_CONFIG.items() if k not in ("stop_loss", "warm_start")}
    assert config_differences(older, dict(DEFAULT_CONFIG)) == []
    assert config_differences(older, {**DEFAULT_CONFIG, "warm_start": "continue"}) == ["warm_start"]
