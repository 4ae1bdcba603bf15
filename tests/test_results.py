"""results.py: exclusive run folders, atomic round files, empty cells, older folders, the summary's new fields."""
import json
import math

import pandas as pd
import pytest

from results import (NEWER_ROUND_COLUMNS, ROUND_COLUMNS, DamagedRun, OutputError, RunDir, atomic_write_text,
                     check_writable, read_rounds, read_run)


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


def _finished_rounds(tmp_path):
    """A run folder of three rounds: round 0's stop_kappa is NaN, the initial set's scores too."""
    run = RunDir.create(str(tmp_path), "r")
    run.record_acquired([{"round": -1, "pool_position": 3, "dataset_index": 9, "label": 1, "true_label": 1,
                          "score": float("nan"), "noisy": 1}])
    for r in range(3):
        run.append_round({**row(r, 0.5 + r / 10), "n_noisy": r, "stop_kappa": float("nan") if r == 0 else 0.9},
                         [{"round": r, "pool_position": 10 + r, "dataset_index": 20 + r, "label": r, "true_label": r,
                           "score": 1.0, "noisy": int(r > 0)}])
    return run.path


def test_an_empty_cell_reads_as_nan_as_pandas_writes_it(tmp_path):
    """A file rewritten with pandas (a hand edit) has an empty cell where NaN was: it reads as NaN, not as a
    damaged file (the reader took an empty cell for damage)."""
    folder = _finished_rounds(tmp_path)
    assert read_rounds(folder)["stop_kappa"].isna().tolist() == [True, False, False]  # written as "nan"
    for name in ("rounds.csv", "acquired.csv"):
        pd.read_csv(folder / name).to_csv(folder / name, index=False)
    rounds_lines = (folder / "rounds.csv").read_text().splitlines()
    assert ",," in (folder / "acquired.csv").read_text() and [",," in line for line in rounds_lines] == [False, True,
                                                                                                          False, False]
    rounds, acquired = read_run(folder)
    assert math.isnan(rounds[0]["stop_kappa"]) and rounds[1]["stop_kappa"] == 0.9
    assert math.isnan(acquired[0]["score"]) and [a["noisy"] for a in acquired] == [1, 0, 1, 1]
    assert read_rounds(folder)["stop_kappa"].isna().tolist() == [True, False, False]


def test_an_empty_index_or_round_is_still_damage(tmp_path):
    folder = _finished_rounds(tmp_path)
    acquired = pd.read_csv(folder / "acquired.csv")
    acquired.loc[1, "pool_position"] = None
    acquired.to_csv(folder / "acquired.csv", index=False)
    with pytest.raises(DamagedRun, match="acquired.csv"):
        read_run(folder)
    rounds = pd.read_csv(folder / "rounds.csv")
    rounds.loc[2, "round"] = None
    rounds.to_csv(folder / "rounds.csv", index=False)
    with pytest.raises(DamagedRun, match="round number"):
        read_rounds(folder)


def test_a_folder_from_before_the_noise_and_stopping_columns_reads(tmp_path):
    folder = _finished_rounds(tmp_path)
    pd.read_csv(folder / "rounds.csv").drop(columns=["n_noisy", "stop_kappa"]).to_csv(folder / "rounds.csv", index=False)
    pd.read_csv(folder / "acquired.csv").drop(columns=["noisy"]).to_csv(folder / "acquired.csv", index=False)
    rounds, acquired = read_run(folder)
    assert len(rounds) == 3 and "stop_kappa" not in rounds[0] and "noisy" not in acquired[0]
    assert read_rounds(folder)["test_acc"].tolist() == [0.5, 0.6, 0.7]


def test_summary_keeps_the_stop_reason_and_the_pools_noisy_fraction_when_reopened(tmp_path):
    folder = _finished_rounds(tmp_path)
    run = RunDir.open(folder)
    assert run.stopped_because is None and run.pool_noisy_fraction is None
    run.stopped_because, run.pool_noisy_fraction = "predictions stable", 0.3
    run.finish("complete")
    again = RunDir.open(folder)
    assert (again.stopped_because, again.pool_noisy_fraction) == ("predictions stable", 0.3)
    summary = again.finish("complete")
    assert summary["stopped_because"] == "predictions stable" and summary["pool_noisy_fraction"] == 0.3


def test_the_run_folder_owns_the_round_record_and_upgrades_an_older_folder(tmp_path):
    """A round record must hold exactly rounds.csv's columns; a folder from before the newer columns is
    completed by results (the dataset's label and noise of each position, 0 or NaN where not known)."""
    run = RunDir.create(str(tmp_path), "r")
    with pytest.raises(ValueError, match=r"missing \['stop_kappa'\], unknown \['stop_kapa'\]"):
        run.append_round({**{k: v for k, v in row(0, 0.5).items() if k != "stop_kappa"}, "stop_kapa": 0.1}, [])
    assert not (run.path / "rounds.csv").exists()
    older = RunDir.create(str(tmp_path), "older")
    older.acquired = [{"round": -1, "pool_position": 3, "dataset_index": 9, "label": 1, "score": float("nan")},
                      {"round": 0, "pool_position": 7, "dataset_index": 4, "label": 2, "score": 0.5}]
    old_row = {k: v for k, v in row(0, 0.5).items() if k not in NEWER_ROUND_COLUMNS}
    older.rounds = [dict(old_row)]
    older.upgrade_records(true_label=lambda p: p % 3, noisy=lambda p: int(p == 7))
    assert [(a["true_label"], a["noisy"]) for a in older.acquired] == [(0, 0), (1, 1)]
    [upgraded] = older.rounds
    assert set(upgraded) == set(ROUND_COLUMNS) and upgraded["n_noisy"] == 1 and upgraded["n_corrupted"] == 0
    assert upgraded["member_test_acc"] == old_row["test_acc"] and math.isnan(upgraded["stop_kappa"])
    older.append_round({**row(1, 0.6)}, [])  # the upgraded record and a new one are both whole
    assert read_rounds(older.path)["round"].tolist() == [0, 1]
