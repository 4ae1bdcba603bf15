"""bench/reproduce.py: the labels-to-accuracy tables, and a two-round run of the documented command."""
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import reproduce  # noqa: E402


def curves():
    """Two strategies × two seeds; bald seed 2 never reaches 0.9."""
    rows = []
    for strategy, seed, accs in [("random", 1, [0.5, 0.8, 0.91, 0.96]), ("random", 2, [0.6, 0.92, 0.93, 0.94]),
                                 ("bald", 1, [0.5, 0.9, 0.95, 0.97]), ("bald", 2, [0.4, 0.7, 0.8, 0.85])]:
        rows += [{"strategy": strategy, "seed": seed, "n_labeled": 20 + 10 * i, "test_acc": a}
                 for i, a in enumerate(accs)]
    return pd.DataFrame(rows)


def test_labels_needed_is_the_first_size_at_or_above_the_target():
    got = reproduce.labels_needed(curves(), 0.9)  # reporting.stats.labels_needed, shared with report.py
    assert got[("random", 1)] == 40 and got[("random", 2)] == 30 and got[("bald", 1)] == 30
    assert pd.isna(got[("bald", 2)])


def test_targets_table_shows_mean_range_partial_and_the_paper():
    table = reproduce.targets_table(curves(), ["random", "bald"], [0.9, 0.95], "gal2017")
    lines = table.splitlines()
    assert lines[0] == ("| strategy | labels to 90% acc. | labels to 95% acc. | paper: 10% error | "
                        "paper: 5% error |")
    assert lines[2] == "| random | 35 (30–40) | 50 (50–50), 1 of 2 seeds | 255 | 835 |"
    assert lines[3] == "| bald | 30 (30–30), 1 of 2 seeds | 40 (40–40), 1 of 2 seeds | 145 | 335 |"
    assert "not reached" in reproduce.targets_table(curves(), ["bald"], [0.99], "")


def test_accuracy_table_mean_and_standard_error():
    table = reproduce.accuracy_table(curves(), ["random"], [30])
    assert table.splitlines()[2] == "| random | 0.860 ± 0.060 |"


def test_two_round_reproduction_runs_and_reuses_finished_runs(tmp_path):
    out, md = tmp_path / "runs", tmp_path / "RESULTS.md"
    cmd = [sys.executable, str(ROOT / "bench" / "reproduce.py"), "--preset", "gal2017", "--dataset", "mnist_5k",
           "--strategies", "random", "bald", "--seeds", "1", "--n_round", "2", "--mc_samples", "5",
           "--pool_subset", "200", "--at", "20", "40", "--out", str(out), "--markdown", str(md), "--jobs", "2"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr[-3000:]
    text = md.read_text()
    assert text.startswith("Command: `python bench/reproduce.py --preset gal2017")
    assert "| random |" in text and "| bald |" in text and "| 255 | 835 |" in text
    folders = sorted(p.parent for p in out.rglob("summary.json"))
    assert len(folders) == 2
    assert pd.read_csv(folders[0] / "rounds.csv")["n_labeled"].tolist() == [20, 30, 40]
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0 and "done:" not in again.stderr  # nothing was run twice
    assert sorted(p.parent for p in out.rglob("summary.json")) == folders
    assert md.read_text() == text


def test_a_failed_run_is_listed_and_the_others_are_still_tabulated(tmp_path):
    md = tmp_path / "R.md"
    cmd = [sys.executable, str(ROOT / "bench" / "reproduce.py"), "--dataset", "mnist_5k", "--strategies", "random",
           "no_such_strategy", "--seeds", "1", "--n_round", "1", "--n_init_labeled", "20", "--n_query", "10",
           "--epochs", "2", "--min_steps", "0", "--at", "20", "--out", str(tmp_path / "runs"), "--markdown", str(md)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert "failed: no_such_strategy seed 1" in proc.stderr and "invalid choice" in proc.stderr
    text = md.read_text()
    assert "| random |" in text and "Failed runs, left out above: no_such_strategy seed 1" in text
