"""Runs that survive interruption: --resume, honest summary.json, consistent files, SIGTERM, full disk,
run names, and --experiment seeds that fail alone."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import loop
import main
from config import parse_config
from conftest import (RESUMABLE, ROOT, Run, fill_disk, interrupt_during_wandb_start, run_dirs, run_process,
                      unreachable_wandb_env)
from results import ROUND_COLUMNS, TIMING_COLUMNS, RunDir, prepare_run_folder, read_run, run_status

ARGS = RESUMABLE
BASE = RESUMABLE[:RESUMABLE.index("--strategy")]  # the data, budget and engine flags, without strategy or noise


def _popen(*argv):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *map(str, argv)], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_rounds(output_dir: Path, n: int, proc, timeout=180) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        folders = run_dirs(output_dir)
        if folders and len(read_run(folders[0])[0]) >= n:
            return folders[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not reach the rounds in time")


def _metrics(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "rounds.csv").drop(columns=TIMING_COLUMNS)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_killed_run_resumes_to_the_same_numbers(tmp_path, uninterrupted, sig):
    proc = _popen(*ARGS, "--output_dir", tmp_path)
    folder = _wait_rounds(tmp_path, 2, proc)
    proc.send_signal(sig)  # the next round is training now
    _, err = proc.communicate(timeout=60)
    done = len(read_run(folder)[0])
    assert 2 <= done < 6
    if sig == signal.SIGTERM:  # handled like Ctrl-C: status written, exit 130, no traceback
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert Run(folder).summary["status"] == "interrupted"
        assert Run(folder).summary["rounds_completed"] == done
    else:  # the file could not be updated, but a reader is told the truth
        assert Run(folder).summary["status"] == "running"
        assert run_status(folder) == "interrupted"

    resumed = run_process("--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {folder} at round {done}" in resumed.stderr
    run = Run(folder)
    assert run.summary["status"] == "complete" and run.summary["rounds_completed"] == 6
    pd.testing.assert_frame_equal(_metrics(folder), _metrics(uninterrupted))
    assert (folder / "acquired.csv").read_text() == (uninterrupted / "acquired.csv").read_text()
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in uninterrupted.iterdir())


def test_resume_with_the_same_command_and_of_a_complete_run(tmp_path, uninterrupted):
    """The full command plus --resume is accepted; a complete run is left as it is."""
    before = {p.name: p.read_bytes() for p in uninterrupted.iterdir() if p.name != "summary.json"}
    proc = run_process(*ARGS, "--threads", "2", "--resume", uninterrupted)  # threads are operational
    assert proc.returncode == 0, proc.stderr
    assert "all 6 rounds are finished already" in proc.stderr
    assert {p.name: p.read_bytes() for p in uninterrupted.iterdir() if p.name != "summary.json"} == before
    assert Run(uninterrupted).summary["status"] == "complete"


@pytest.mark.parametrize("change", [["--epochs", "2"], ["--strategy", "entropy"], ["--seed", "1"],
                                    ["--noise_rate", "0.3"]], ids=["epochs", "strategy", "seed", "noise"])
def test_resume_refuses_another_configuration(tmp_path, uninterrupted, change, capsys):
    before = (uninterrupted / "rounds.csv").read_bytes()
    # In-process: the refusal comes before any data or model (test_cli checks a real process's one line).
    assert main.main([*ARGS, *change, "--resume", str(uninterrupted)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another configuration" in err, err
    assert f"--{change[0][2:]}" in err
    assert (uninterrupted / "rounds.csv").read_bytes() == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main.main(["--resume", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "config.json not found" in err and "Traceback" not in err


def test_a_round_cut_between_its_two_writes_is_not_counted(tmp_path, uninterrupted, capsys):
    """acquired.csv is written before rounds.csv: a reader drops queries of a round rounds.csv lacks."""
    folder = tmp_path / "cut"
    folder.mkdir()
    for name in ("config.json", "acquired.csv"):
        (folder / name).write_bytes((uninterrupted / name).read_bytes())
    rounds = pd.read_csv(uninterrupted / "rounds.csv")
    rounds.head(3).to_csv(folder / "rounds.csv", index=False)  # acquired.csv still holds rounds 3 and 4
    finished, acquired = read_run(folder)
    assert [r["round"] for r in finished] == [0, 1, 2]
    assert max(r["round"] for r in acquired) == 2 and len(acquired) == 20 + 3 * 10
    assert main.main(["--resume", str(folder)]) == 0, capsys.readouterr().err  # in-process: no interpreter start
    pd.testing.assert_frame_equal(_metrics(folder), _metrics(uninterrupted))
    assert (folder / "acquired.csv").read_text() == (uninterrupted / "acquired.csv").read_text()


def test_summary_is_rewritten_after_every_round(tmp_path):
    run = RunDir(tmp_path)
    run.planned_rounds = 3
    row = {**{c: 0.0 for c in ROUND_COLUMNS}, "round": 0, "n_labeled": 20, "n_scored": 5, "val_acc": 0.5,
           "test_acc": 0.4, "round_s": 1.0, "train_s": 0.5, "eval_s": 0.1, "query_s": 0.4}
    for r in range(2):
        run.append_round({**row, "round": r}, [])
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["status"] == "running" and summary["rounds_completed"] == r + 1
        assert summary["pid"] == os.getpid() and summary["rounds_planned"] == 3
    assert run_status(tmp_path) == "running"  # this process is alive
    summary["pid"] = 2 ** 22 + 12345  # beyond pid_max: no such process
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert run_status(tmp_path) == "interrupted"
    assert run_status(tmp_path / "never-made") == "pending"


def test_prepared_folder_starts_on_resume_and_refuses_another_config(tmp_path):
    cfg = parse_config(BASE + ["--strategy", "bald", "--n_round", "1", "--min_steps", "20"], main.CHOICES)
    folder = tmp_path / "cell"
    prepare_run_folder(folder, cfg.to_dict())
    assert run_status(folder) == "pending"
    prepare_run_folder(folder, cfg.replace(threads=2).to_dict())  # operational: same run
    with pytest.raises(Exception, match="another configuration"):
        prepare_run_folder(folder, cfg.replace(lr=0.01).to_dict())
    assert main.main(["--resume", str(folder)]) == 0
    assert run_status(folder) == "complete" and len(read_run(folder)[0]) == 2


@pytest.mark.parametrize("name", ["../../x", "a/b", "bad\nname", "x" * 300, ".hidden", ""],
                         ids=["dotdot", "slash", "control", "long", "dot", "empty-ok"])
def test_run_name_never_leaves_output_dir(tmp_path, capsys, name):
    out = tmp_path / "out" / "runs"
    rc = main.main([*BASE, "--n_round", "0", "--min_steps", "5", "--run_name", name, "--output_dir", str(out)])
    err = capsys.readouterr().err
    if name == "":  # the default name
        assert rc == 0, err
        assert [p.parent for p in run_dirs(out)] == [out]
        return
    assert rc == 2 and err.count("\n") == 1 and "--run_name" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_experiment_reports_a_failing_seed_and_runs_the_others(tmp_path, monkeypatch, capsys):
    real = loop.run_round

    def fails_for_seed_2(cfg, *args, **kwargs):
        if cfg.seed == 2:
            raise RuntimeError("seed 2 is broken")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(loop, "run_round", fails_for_seed_2)
    argv = [*BASE, "--n_round", "1", "--min_steps", "20", "--experiment", "--seeds", "1", "2", "3",
            "--output_dir", str(tmp_path)]
    assert main.main(argv) == 1
    err = capsys.readouterr().err
    assert "1 of 3 seeds failed: 2" in err
    [exp] = [p for p in tmp_path.iterdir() if p.name.startswith("experiment_")]
    seeds = {json.loads((p / "config.json").read_text())["seed"]: p for p in exp.iterdir() if p.is_dir()}
    assert run_status(seeds[1]) == run_status(seeds[3]) == "complete" and run_status(seeds[2]) == "failed"
    assert "seed 2 is broken" in (seeds[2] / "error.txt").read_text()
    assert pd.read_csv(exp / "final_rounds.csv")["seed"].tolist() == [1, 3]
    assert not list(exp.rglob(".*.tmp"))

    # Resuming the experiment folder runs only what is unfinished: the failed seed, now fixed.
    monkeypatch.setattr(loop, "run_round", real)
    assert main.main(["--resume", str(exp)]) == 0
    assert run_status(seeds[2]) == "complete"
    assert pd.read_csv(exp / "final_rounds.csv")["seed"].tolist() == [1, 2, 3]


def test_an_already_full_disk_is_refused_before_any_folder(small_disk, capsys):
    (small_disk / "runs").mkdir()
    fill_disk(small_disk)
    rc = main.main([*ARGS, "--output_dir", str(small_disk / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "cannot write" in err and "No space left" in err
    assert list((small_disk / "runs").iterdir()) == []


def test_a_disk_that_fills_during_the_run(small_disk, capsys):
    out = small_disk / "runs"
    proc = _popen(*ARGS, "--n_round", "6", "--min_steps", "60", "--output_dir", out)
    folder = _wait_rounds(out, 2, proc)
    fill_disk(small_disk)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if "INFO" not in line]
    assert lines == [lines[0]] and lines[0].startswith("error: cannot write") and "No space left" in lines[0]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    finished, acquired = read_run(folder)  # the finished rounds stay readable and consistent
    assert len(finished) >= 2 and {r["round"] for r in acquired} <= {-1} | {r["round"] for r in finished}
    assert run_status(folder) in ("failed", "interrupted")
    os.remove(small_disk / "filler")
    assert main.main(["--resume", str(folder), "--n_round", "3"]) == 2  # n_round differs (refused in-process)
    assert "another configuration" in capsys.readouterr().err
    resumed = run_process("--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    assert len(read_run(folder)[0]) == 7


def test_ctrl_c_during_wandb_start_up_keeps_an_honest_summary(tmp_path):
    """main.py with wandb online but unreachable: Ctrl-C while wandb starts exits 130 at once, and the
    run folder's summary.json says interrupted."""
    argv = [a for a in ARGS if a != "--no-wandb"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *argv, "--output_dir", str(tmp_path / "runs")],
                            cwd=ROOT, env=unreachable_wandb_env(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err, elapsed = interrupt_during_wandb_start(proc, tmp_path / "runs")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert elapsed < 8.0
    [folder] = run_dirs(tmp_path / "runs")
    summary = Run(folder).summary if (folder / "rounds.csv").exists() else json.loads(
        (folder / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] == 0


def test_summary_names_the_code_that_made_the_numbers(uninterrupted, tmp_path, monkeypatch):
    """summary.json's environment holds this checkout's commit and whether tracked files had changes;
    outside a git checkout (or without git) both are None, and the run is not stopped by it."""
    environment = json.loads((uninterrupted / "summary.json").read_text())["environment"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert environment["commit"] == head.stdout.strip()
    assert isinstance(environment["dirty"], bool)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to be found
    assert main.code_version() == {"commit": None, "dirty": None}


def test_a_killed_run_on_self_supervised_features_resumes_to_the_same_files(tmp_path):
    """--embedding self_supervised: two processes with their own caches train the same encoder (seeded, CPU),
    and a run killed after two rounds resumes, reading its cache, to the uninterrupted run's numbers and picks."""
    argv = [*BASE, "--strategy", "typiclust", "--embedding", "self_supervised", "--ssl_epochs", "1"]
    whole = run_process(*argv, "--embedding_cache", tmp_path / "cache_a", "--output_dir", tmp_path / "a")
    assert whole.returncode == 0 and "training the encoder" in whole.stderr, whole.stderr
    [uninterrupted] = run_dirs(tmp_path / "a")
    proc = _popen(*argv, "--embedding_cache", tmp_path / "cache_b", "--output_dir", tmp_path / "b")
    folder = _wait_rounds(tmp_path / "b", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert len(read_run(folder)[0]) < 6
    resumed = run_process("--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    assert "training the encoder" not in resumed.stderr  # the cache the killed process wrote is read back
    assert Run(folder).summary["status"] == "complete"
    pd.testing.assert_frame_equal(_metrics(folder), _metrics(uninterrupted))
    assert (folder / "acquired.csv").read_text() == (uninterrupted / "acquired.csv").read_text()
    a, b = (torch.load(next((tmp_path / c).glob("ssl_*.pt")), weights_only=True) for c in ("cache_a", "cache_b"))
    assert a["key"] == b["key"] and torch.equal(a["features"], b["features"])
