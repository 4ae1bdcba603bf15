"""The run folder has one reader: damaged files are one error line naming the file (exit 2), a refused
resume changes nothing, a folder is run by one process at a time (its lock), and the command line
never guesses an abbreviated flag."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import main
from conftest import ROOT, SMALL, finished_run, run_process
from results import DamagedRun, locked, read_config, read_run, read_summary, run_status

ARGS = [*SMALL, "--n_round", "2", "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("finished"), *ARGS)


def unfinished_copy(finished: Path, to: Path) -> Path:
    """A copy of the finished run with only round 0 recorded: a --resume would run rounds 1 and 2."""
    folder = to / "run"
    shutil.copytree(finished, folder, ignore=shutil.ignore_patterns(".lock"))
    rounds = (folder / "rounds.csv").read_text().splitlines(keepends=True)
    (folder / "rounds.csv").write_text("".join(rounds[:2]))
    return folder


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".lock"}


def _acquired_lines(folder):
    return (folder / "acquired.csv").read_text().splitlines(keepends=True)


def duplicate_acquired_row(folder):
    lines = _acquired_lines(folder)  # lines[1]: an image of the initial set
    (folder / "acquired.csv").write_text("".join(lines[:2] + lines[1:]))


def query_repeats_an_initial_position(folder):
    df = pd.read_csv(folder / "acquired.csv")
    initial = df[df["round"] == -1].iloc[0]
    i = df.index[df["round"] == 0][0]
    df.loc[i, ["pool_position", "dataset_index", "true_label"]] = initial[["pool_position", "dataset_index",
                                                                           "true_label"]].to_numpy()
    df.to_csv(folder / "acquired.csv", index=False)


def label_99(folder):
    df = pd.read_csv(folder / "acquired.csv")
    df.loc[0, "label"] = 99
    df.to_csv(folder / "acquired.csv", index=False)


def label_changed_by_hand(folder):
    df = pd.read_csv(folder / "acquired.csv")  # the clean oracle answered the true label; a hand edit did not
    i = df.index[df["round"] == 0][0]
    df.loc[i, "label"] = (df.loc[i, "label"] + 1) % 10
    df.to_csv(folder / "acquired.csv", index=False)


def rounds_cut_mid_line(folder):
    text = (folder / "rounds.csv").read_text()
    (folder / "rounds.csv").write_text(text[:-20])


def text_in_a_number(folder):
    df = pd.read_csv(folder / "rounds.csv")
    df["test_acc"] = df["test_acc"].astype(object)
    df.loc[0, "test_acc"] = "abc"
    df.to_csv(folder / "rounds.csv", index=False)


def missing_rounds_column(folder):
    pd.read_csv(folder / "rounds.csv").drop(columns=["val_acc"]).to_csv(folder / "rounds.csv", index=False)


def config_is_a_list(folder):
    (folder / "config.json").write_text("[1, 2]")


def seeds_is_a_number(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "seeds": 5}))


def config_not_utf8(folder):
    (folder / "config.json").write_bytes(b"\xff\xfe{}")


def acquired_index_not_whole(folder):
    df = pd.read_csv(folder / "acquired.csv")
    df["pool_position"] = df["pool_position"].astype(float)
    df.loc[0, "pool_position"] += 0.5
    df.to_csv(folder / "acquired.csv", index=False)


DAMAGES = {  # damage → the file the error line must name
    duplicate_acquired_row: "acquired.csv", query_repeats_an_initial_position: "acquired.csv",
    label_99: "acquired.csv", label_changed_by_hand: "acquired.csv", acquired_index_not_whole: "acquired.csv", rounds_cut_mid_line: "rounds.csv",
    text_in_a_number: "rounds.csv", missing_rounds_column: "rounds.csv", config_is_a_list: "config.json",
    seeds_is_a_number: "config.json", config_not_utf8: "config.json",
}


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_a_damaged_run_folder_is_refused_in_one_line_and_left_as_it_was(tmp_path, finished, damage, capsys):
    folder = unfinished_copy(finished, tmp_path)
    damage(folder)
    before = snapshot(folder)
    assert main.main(["--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert DAMAGES[damage] in err
    assert snapshot(folder) == before  # a refused resume changes nothing, summary.json included


@pytest.mark.parametrize("summary", [b"[1, 2]", b"\xff\xfe", b'{"status": "running", "pid": "abc"}',
                                     b'{"status": "finished?"}', b"{" * 5000],
                         ids=["list", "not-utf8", "text-pid", "unknown-status", "deep"])
def test_a_damaged_summary_is_reported_as_such_and_a_resume_rewrites_it(tmp_path, finished, summary, capsys):
    folder = unfinished_copy(finished, tmp_path)
    (folder / "summary.json").write_bytes(summary)
    with pytest.raises(DamagedRun, match="summary.json"):
        read_summary(folder)
    assert run_status(folder) == "damaged"
    # summary.json is the run's own progress note: rewritten (in-process: no interpreter start per case)
    assert main.main(["--resume", str(folder)]) == 0, capsys.readouterr().err
    assert read_summary(folder)["status"] == "complete" and run_status(folder) == "complete"


def test_the_readers_return_what_the_run_wrote(finished):
    config = read_config(finished)
    assert config["n_round"] == 2 and config["seed"] == 42
    rounds, acquired = read_run(finished)
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(isinstance(r["n_labeled"], int) for r in rounds)
    assert len(acquired) == 20 + 2 * 10
    assert read_summary(finished)["status"] == "complete"


def test_a_second_process_is_refused_while_a_run_folder_is_locked(tmp_path, finished, capsys):
    folder = unfinished_copy(finished, tmp_path)
    before = snapshot(folder)
    with locked(folder):  # another process (this test) runs the folder now
        start = time.perf_counter()
        proc = run_process("--resume", folder)
        refused_in = time.perf_counter() - start
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "another process" in proc.stderr, proc.stderr
    assert snapshot(folder) == before
    assert refused_in < 60  # refused before training anything (a resume trains for minutes here)
    # once the lock is released, it resumes (in-process: no second interpreter start)
    assert main.main(["--resume", str(folder)]) == 0, capsys.readouterr().err


def test_two_resumes_started_together_never_both_run(tmp_path, finished):
    folder = unfinished_copy(finished, tmp_path)
    procs = [subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--resume", str(folder)], cwd=ROOT,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(rc for rc, _ in results) == [0, 2], results
    assert any("another process" in err or "still running" in err for rc, err in results if rc == 2), results
    assert [r["round"] for r in read_run(folder)[0]] == [0, 1, 2]


@pytest.mark.parametrize("argv", [["--n_q", "20"], ["--n_query", "10", "--epo", "3"], ["--thr", "2"],
                                  ["--no-wan"]])
def test_an_abbreviated_flag_is_refused_on_resume(tmp_path, finished, argv, capsys):
    folder = unfinished_copy(finished, tmp_path)
    before = snapshot(folder)
    assert main.main(["--resume", str(folder), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments") and err.count("\n") == 1, err
    assert snapshot(folder) == before


def test_a_flag_repeated_with_its_saved_value_is_accepted_on_resume(tmp_path, finished, capsys):
    folder = unfinished_copy(finished, tmp_path)
    # as saved; others not given
    assert main.main(["--resume", str(folder), "--n_query", "10", "--seed", "42"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main.main(["--resume", str(folder), "--n_query", "5"]) == 2
    err = capsys.readouterr().err
    assert "--n_query 10 (saved) vs 5" in err
    assert err.count("--") == 1 + err.count("--resume"), err  # names only it


@pytest.mark.parametrize("damage", [config_is_a_list, rounds_cut_mid_line, text_in_a_number],
                         ids=lambda f: f.__name__)
def test_a_report_skips_a_damaged_folder_says_so_and_reports_the_rest(tmp_path, finished, damage, capsys):
    import report

    runs = tmp_path / "runs"
    shutil.copytree(finished, runs / "good")
    shutil.copytree(finished, runs / "bad")
    damage(runs / "bad")
    assert report.main([str(runs), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: skipped damaged run folder") and "bad" in err, err
    table = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert [Path(r).name for r in table["run"]] == ["good"]


def test_a_sweep_status_lists_a_damaged_cell_and_goes_on(tmp_path, finished):
    from sweeps.grid import CELLS_DIR, status_table

    for name in ("a", "b", "c"):
        shutil.copytree(finished, tmp_path / CELLS_DIR / name)
    text_in_a_number(tmp_path / CELLS_DIR / "b")
    (tmp_path / CELLS_DIR / "c" / "summary.json").write_text("[]")
    table, statuses = status_table(tmp_path, ["a", "b", "c"])
    assert statuses == {"a": "complete", "b": "damaged", "c": "damaged"}, table
    assert "3 cells: 1 complete, 2 damaged" in table
